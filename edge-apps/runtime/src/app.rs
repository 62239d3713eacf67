//! One deployed app: its compiled component, its (lazily created) sandboxed
//! instance, and the host functions it may call.
//!
//! Isolation, per call:
//! * **fuel** (`fuel_per_call`): deterministic instruction budget;
//! * **epoch deadline** (`time_ms_per_call`): wall-clock bound, also covering
//!   time spent in host calls' return paths;
//! * **memory** (`memory_bytes`): linear memory and tables, enforced by a
//!   [`wasmtime::ResourceLimiter`] that turns growth past the limit into a
//!   trap we can name;
//! * **output** (`max_output_readings`) and **log** lines per call.
//!
//! A trap discards the instance (its memory may be inconsistent); the next
//! call instantiates a fresh one and runs `init` again. Key-value writes of a
//! failed call are discarded: the store is transactional per call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use gatewayd_artifact::Manifest;
use gatewayd_ml::{Model, Tensor};
use gatewayd_model::Reading;
use tracing::{debug, error, info, trace, warn};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap};

use crate::bindings::gatewayd::edge::{host, types as wit};
use crate::bindings::{EdgeApp, EdgeAppPre};
use crate::config::LimitsConfig;
use crate::convert;

/// Why a call (or instantiation) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error("ran out of fuel ({0} units per call)")]
    OutOfFuel(u64),
    #[error("exceeded its memory limit of {0} bytes")]
    Memory(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("init failed: {0}")]
    Init(String),
    #[error("returned an error: {0}")]
    App(String),
    #[error("produced {got} output readings, more than its limit of {limit}")]
    OutputTooLarge { got: usize, limit: u32 },
    #[error("produced an invalid reading: {0}")]
    InvalidOutput(String),
}

impl Fault {
    /// Short name for counters and D-Bus.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Timeout(_) => "timeout",
            Fault::OutOfFuel(_) => "fuel",
            Fault::Memory(_) => "memory",
            Fault::Trap(_) => "trap",
            Fault::Instantiate(_) => "instantiate",
            Fault::Init(_) => "init",
            Fault::App(_) => "error",
            Fault::OutputTooLarge { .. } => "output",
            Fault::InvalidOutput(_) => "invalid-output",
        }
    }
}

/// The limits in force for one app: its manifest's, defaulted and capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub fuel_per_call: u64,
    pub time_ms_per_call: u64,
    pub memory_bytes: u64,
    pub max_output_readings: u32,
    pub kv_max_bytes: u64,
}

impl EffectiveLimits {
    pub fn resolve(m: &gatewayd_artifact::Limits, dflt: &LimitsConfig, max: &LimitsConfig) -> Self {
        EffectiveLimits {
            fuel_per_call: m
                .fuel_per_call
                .unwrap_or(dflt.fuel_per_call)
                .min(max.fuel_per_call),
            time_ms_per_call: m
                .time_ms_per_call
                .unwrap_or(dflt.time_ms_per_call)
                .clamp(1, max.time_ms_per_call),
            memory_bytes: m
                .memory_bytes
                .unwrap_or(dflt.memory_bytes)
                .min(max.memory_bytes),
            max_output_readings: m
                .max_output_readings
                .unwrap_or(dflt.max_output_readings)
                .min(max.max_output_readings),
            kv_max_bytes: m
                .kv_max_bytes
                .unwrap_or(dflt.kv_max_bytes)
                .min(max.kv_max_bytes),
        }
    }
}

/// Limits on keys and values of the key-value store.
pub const KV_MAX_KEY: usize = 256;
pub const KV_MAX_VALUE: usize = 64 << 10;
/// Log messages longer than this are truncated.
const LOG_MAX_BYTES: usize = 1024;

/// An app's key-value store as the host holds it: committed entries, plus
/// the changes of the call in progress (applied only if the call succeeds).
#[derive(Debug, Default, Clone)]
pub struct Kv {
    pub entries: BTreeMap<String, Vec<u8>>,
    pub bytes: u64,
}

impl Kv {
    fn size(k: &str, v: &[u8]) -> u64 {
        (k.len() + v.len()) as u64
    }

    pub fn insert(&mut self, k: String, v: Vec<u8>) {
        self.bytes += Self::size(&k, &v);
        if let Some(old) = self.entries.insert(k.clone(), v) {
            self.bytes -= Self::size(&k, &old);
        }
    }

    pub fn remove(&mut self, k: &str) {
        if let Some(old) = self.entries.remove(k) {
            self.bytes -= Self::size(k, &old);
        }
    }
}

/// The state a wasmtime `Store` carries for one app instance.
pub struct HostState {
    app: Arc<str>,
    limiter: Limiter,
    /// Committed key-value entries (moved in for a call, moved out after).
    kv: Kv,
    /// This call's writes: `None` = delete.
    kv_overlay: BTreeMap<String, Option<Vec<u8>>>,
    kv_overlay_bytes: i64,
    kv_max_bytes: u64,
    models: Arc<BTreeMap<String, Arc<Model>>>,
    log_budget: u32,
    log_suppressed: u32,
}

/// Memory/table limiter that remembers why it refused.
struct Limiter {
    memory_bytes: usize,
    exceeded: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded (wanted {desired})",
                self.memory_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element is a pointer; count it against the same budget.
        if desired.saturating_mul(8) > self.memory_bytes {
            self.exceeded = true;
            return Err(wasmtime::format_err!("table limit exceeded"));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // A component instance may contain a few core instances.
        16
    }

    fn memories(&self) -> usize {
        4
    }

    fn tables(&self) -> usize {
        8
    }
}

impl wit::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        if self.log_budget == 0 {
            self.log_suppressed += 1;
            return;
        }
        self.log_budget -= 1;
        let mut msg = message;
        if msg.len() > LOG_MAX_BYTES {
            let mut cut = LOG_MAX_BYTES;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let app = &*self.app;
        match level {
            wit::Level::Trace => trace!(app, "{msg}"),
            wit::Level::Debug => debug!(app, "{msg}"),
            wit::Level::Info => info!(app, "{msg}"),
            wit::Level::Warn => warn!(app, "{msg}"),
            wit::Level::Error => error!(app, "{msg}"),
        }
    }

    fn now_us(&mut self) -> i64 {
        crate::stage::now_us()
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        match self.kv_overlay.get(&key) {
            Some(v) => v.clone(),
            None => self.kv.entries.get(&key).cloned(),
        }
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.is_empty() || key.len() > KV_MAX_KEY {
            return Err(format!("key must be 1..={KV_MAX_KEY} bytes"));
        }
        if value.len() > KV_MAX_VALUE {
            return Err(format!("value must be at most {KV_MAX_VALUE} bytes"));
        }
        let old = self.kv_get(key.clone()).map(|v| v.len() as i64);
        let delta = value.len() as i64 - old.unwrap_or(-(key.len() as i64));
        let after = self.kv.bytes as i64 + self.kv_overlay_bytes + delta;
        if after > self.kv_max_bytes as i64 {
            return Err(format!(
                "key-value quota of {} bytes would be exceeded",
                self.kv_max_bytes
            ));
        }
        self.kv_overlay_bytes += delta;
        self.kv_overlay.insert(key, Some(value));
        Ok(())
    }

    fn kv_delete(&mut self, key: String) {
        if let Some(old) = self.kv_get(key.clone()) {
            self.kv_overlay_bytes -= (key.len() + old.len()) as i64;
            self.kv_overlay.insert(key, None);
        }
    }

    fn infer(&mut self, model: String, input: wit::Tensor) -> Result<wit::Tensor, String> {
        let m = self
            .models
            .get(&model)
            .ok_or_else(|| format!("model {model:?} is not referenced by this app's manifest"))?;
        let t = Tensor::new(
            input.shape.iter().map(|d| *d as usize).collect(),
            input.data,
        )
        .map_err(|e| e.to_string())?;
        let out = m.run(&t).map_err(|e| e.to_string())?;
        Ok(wit::Tensor {
            shape: out.shape().iter().map(|d| *d as u32).collect(),
            data: out.data().to_vec(),
        })
    }
}

/// A compiled app, ready to instantiate.
pub struct Prepared {
    pub manifest: Manifest,
    pub bundle_sha256: String,
    pub pre: EdgeAppPre<HostState>,
    pub models: Arc<BTreeMap<String, Arc<Model>>>,
    pub limits: EffectiveLimits,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    pub config_json: String,
}

/// Builds the linker every app is instantiated against.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    EdgeApp::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// What one successful call returned, converted and validated.
#[derive(Debug, Default)]
pub struct CallOutput {
    /// Per input reading; `None` = pass.
    pub verdicts: Vec<Verdict>,
    /// Emitted readings and alerts (as readings).
    pub emitted: Vec<Reading>,
    pub alerts: usize,
}

#[derive(Debug)]
pub enum Verdict {
    Pass,
    Drop,
    Replace(Box<Reading>),
}

/// A live instance.
struct Live {
    store: Store<HostState>,
    app: EdgeApp,
}

/// A deployed app and its sandbox.
pub struct AppInstance {
    pub prepared: Prepared,
    name: Arc<str>,
    live: Option<Live>,
    pub kv: Kv,
    /// Changes to persist: `None` = delete.
    pub kv_dirty: BTreeMap<String, Option<Vec<u8>>>,
    log_lines_per_call: u32,
    pub instantiations: u64,
}

impl AppInstance {
    pub fn new(prepared: Prepared, kv: Kv, log_lines_per_call: u32) -> Self {
        let name: Arc<str> = format!(
            "{}@{}",
            prepared.manifest.app.name, prepared.manifest.app.version
        )
        .into();
        AppInstance {
            prepared,
            name,
            live: None,
            kv,
            kv_dirty: BTreeMap::new(),
            log_lines_per_call,
            instantiations: 0,
        }
    }

    pub fn label(&self) -> &str {
        &self.name
    }

    fn new_store(&self, engine: &Engine, kv: Kv) -> Store<HostState> {
        let limits = &self.prepared.limits;
        let state = HostState {
            app: self.name.clone(),
            limiter: Limiter {
                memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                exceeded: false,
            },
            kv,
            kv_overlay: BTreeMap::new(),
            kv_overlay_bytes: 0,
            kv_max_bytes: limits.kv_max_bytes,
            models: self.prepared.models.clone(),
            log_budget: self.log_lines_per_call,
            log_suppressed: 0,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store
    }

    fn arm(&self, store: &mut Store<HostState>, tick_ms: u64) -> Result<(), Fault> {
        let l = &self.prepared.limits;
        store
            .set_fuel(l.fuel_per_call)
            .map_err(|e| Fault::Trap(e.to_string()))?;
        store.set_epoch_deadline(l.time_ms_per_call.div_ceil(tick_ms.max(1)).max(1));
        let s = store.data_mut();
        s.log_budget = self.log_lines_per_call;
        s.log_suppressed = 0;
        s.limiter.exceeded = false;
        Ok(())
    }

    fn classify(&self, err: wasmtime::Error, state: &HostState) -> Fault {
        let l = &self.prepared.limits;
        if state.limiter.exceeded {
            return Fault::Memory(l.memory_bytes);
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Fault::OutOfFuel(l.fuel_per_call),
            Some(Trap::Interrupt) => Fault::Timeout(l.time_ms_per_call),
            Some(t) => Fault::Trap(t.to_string()),
            None => Fault::Trap(format!("{err:#}")),
        }
    }

    /// Instantiates and runs `init` if there is no live instance.
    fn ensure_live(&mut self, engine: &Engine, tick_ms: u64) -> Result<(), Fault> {
        if self.live.is_some() {
            return Ok(());
        }
        let mut store = self.new_store(engine, Kv::default());
        self.arm(&mut store, tick_ms)?;
        self.instantiations += 1;
        let app = match self.prepared.pre.instantiate(&mut store) {
            Ok(a) => a,
            Err(e) => {
                return Err(match self.classify(e, store.data()) {
                    Fault::Trap(m) => Fault::Instantiate(m),
                    f => f,
                })
            }
        };
        // init may use the key-value store (e.g. to restore state).
        store.data_mut().kv = std::mem::take(&mut self.kv);
        let r = app.call_init(&mut store, &self.prepared.config_json);
        self.kv = std::mem::take(&mut store.data_mut().kv);
        match r {
            Ok(Ok(())) => {
                self.merge_overlay(store.data_mut());
                self.live = Some(Live { store, app });
                Ok(())
            }
            Ok(Err(msg)) => Err(Fault::Init(msg)),
            Err(e) => Err(match self.classify(e, store.data()) {
                Fault::Trap(m) => Fault::Init(format!("trapped: {m}")),
                f => f,
            }),
        }
    }

    fn merge_overlay(&mut self, state: &mut HostState) {
        for (k, v) in std::mem::take(&mut state.kv_overlay) {
            match &v {
                Some(val) => self.kv.insert(k.clone(), val.clone()),
                None => self.kv.remove(&k),
            }
            self.kv_dirty.insert(k, v);
        }
        state.kv_overlay_bytes = 0;
    }

    /// Drops the instance (after a fault, or to free memory).
    pub fn reset(&mut self) {
        self.live = None;
    }

    /// Calls `process`. `readings` are converted here; verdicts refer to
    /// their positions.
    pub fn call(
        &mut self,
        engine: &Engine,
        tick_ms: u64,
        readings: &[&Reading],
        window: Option<wit::Window>,
    ) -> Result<CallOutput, Fault> {
        self.ensure_live(engine, tick_ms)?;
        let input: Vec<wit::Reading> = readings
            .iter()
            .map(|r| convert::reading_to_wit(r))
            .collect();
        let mut live = self.live.take().expect("ensure_live made an instance");
        self.arm(&mut live.store, tick_ms)?;
        live.store.data_mut().kv = std::mem::take(&mut self.kv);
        let started = Instant::now();
        let r = live.app.call_process(&mut live.store, &input, window);
        self.kv = std::mem::take(&mut live.store.data_mut().kv);
        let suppressed = live.store.data().log_suppressed;
        if suppressed > 0 {
            warn!(app = %self.name, suppressed, "log lines over the per-call limit were dropped");
        }
        let out = match r {
            Ok(Ok(out)) => out,
            Ok(Err(msg)) => {
                live.store.data_mut().kv_overlay.clear();
                live.store.data_mut().kv_overlay_bytes = 0;
                self.live = Some(live);
                return Err(Fault::App(msg));
            }
            Err(e) => {
                let f = self.classify(e, live.store.data());
                debug!(app = %self.name, elapsed = ?started.elapsed(), fault = %f, "call failed; instance discarded");
                return Err(f);
            }
        };
        let limit = self.prepared.limits.max_output_readings;
        let replaced = out
            .verdicts
            .iter()
            .filter(|v| matches!(v, wit::Verdict::Replace(_)))
            .count();
        let got = out.emit.len() + out.alerts.len() + replaced;
        if got > limit as usize {
            // The instance is healthy; its output is refused.
            live.store.data_mut().kv_overlay.clear();
            live.store.data_mut().kv_overlay_bytes = 0;
            self.live = Some(live);
            return Err(Fault::OutputTooLarge { got, limit });
        }
        let app = self.prepared.manifest.app.name.clone();
        let converted = (|| -> Result<CallOutput, String> {
            let mut verdicts = Vec::with_capacity(out.verdicts.len().min(readings.len()));
            for v in out.verdicts.into_iter().take(readings.len()) {
                verdicts.push(match v {
                    wit::Verdict::Pass => Verdict::Pass,
                    wit::Verdict::Drop => Verdict::Drop,
                    wit::Verdict::Replace(r) => {
                        Verdict::Replace(Box::new(convert::reading_from_wit(r, &app)?))
                    }
                });
            }
            let mut emitted = Vec::with_capacity(out.emit.len() + out.alerts.len());
            for r in out.emit {
                emitted.push(convert::reading_from_wit(r, &app)?);
            }
            let alerts = out.alerts.len();
            for a in out.alerts {
                emitted.push(convert::alert_to_reading(a, &app)?);
            }
            Ok(CallOutput {
                verdicts,
                emitted,
                alerts,
            })
        })();
        match converted {
            Ok(o) => {
                self.merge_overlay(live.store.data_mut());
                self.live = Some(live);
                Ok(o)
            }
            Err(msg) => {
                live.store.data_mut().kv_overlay.clear();
                live.store.data_mut().kv_overlay_bytes = 0;
                self.live = Some(live);
                Err(Fault::InvalidOutput(msg))
            }
        }
    }
}
