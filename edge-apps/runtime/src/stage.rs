//! The apps stage: the state machine the runtime thread drives.
//!
//! Invariants (tested in `tests/`):
//! 1. Every reading that enters `process` leaves it exactly once: passed,
//!    replaced, dropped by an app's verdict, moved into an app's window
//!    (`keep_originals = false`, persisted in `apps.db` first) or held for
//!    a failing app (policy `hold`, persisted first). Nothing is dropped
//!    because an app failed.
//! 2. Apps run in ascending `(order, name)`; each sees the readings as left
//!    by the apps before it, including what they emitted.
//! 3. Lifecycle changes (deploy, upgrade, remove) are applied between two
//!    `process` calls, so every reading is processed by exactly one version
//!    of an app. An upgrade flushes the old version's open window first.
//! 4. State an app output depends on (closed windows, held readings being
//!    replayed) is deleted only when the writer confirms the output was
//!    committed to the buffer (`committed(token)`); after a crash it is
//!    processed again (at-least-once, never lost).
//! 5. A failing call never blocks the pipeline for longer than the app's
//!    time limit; after `max_consecutive` failures the app is disabled with
//!    exponential backoff.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewayd_artifact::{DeliveryMode, FailurePolicy, Manifest};
use gatewayd_ml::AnomalyStage;
use gatewayd_model::{Reading, Timestamp};
use serde::Serialize;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::app::{AppInstance, Fault, Prepared, Verdict};
use crate::bindings::gatewayd::edge::types as wit;
use crate::config::EdgeConfig;
use crate::db::{AppsDb, Batch, Op, Registered};
use crate::engine::Compiler;
use crate::error::EdgeError;

/// Something that happened to an app (for logs, D-Bus signals, tests).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppEvent {
    pub app: String,
    pub version: String,
    #[serde(flatten)]
    pub kind: AppEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum AppEventKind {
    Deployed { from_cache: bool },
    Upgraded { from: String, from_cache: bool },
    Removed,
    Failed { fault: String, reason: String },
    Disabled { for_ms: u64, reason: String },
    Enabled,
    Refused { file: String, reason: String },
}

/// Live state of one app, as `gatewayd apps list` and D-Bus show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub version: String,
    pub bundle_sha256: String,
    pub mode: String,
    pub on_failure: String,
    /// `running`, or `disabled` (crash loop, in backoff).
    pub state: String,
    pub disabled_for_ms: u64,
    pub compiled_from_cache: bool,
    pub instantiations: u64,
    pub calls: u64,
    pub readings_in: u64,
    pub dropped: u64,
    pub replaced: u64,
    pub emitted: u64,
    pub alerts: u64,
    pub failures: u64,
    pub passed_while_failing: u64,
    pub held: u64,
    pub window_len: u64,
    pub window_overflow: u64,
    pub last_error: Option<String>,
    pub kv_bytes: u64,
}

/// Output that belongs to no ingest (windows closed by time, replays,
/// flushes): the writer commits it and confirms with the token.
#[derive(Debug)]
pub struct Derived {
    pub readings: Vec<Reading>,
    pub token: Option<u64>,
}

/// What `process` returns.
#[derive(Debug, Default)]
pub struct Processed {
    /// The submitted groups, after the apps (same number, same order).
    pub groups: Vec<Vec<Reading>>,
    /// Readings the apps and detectors derived (emit, alerts, windows).
    pub derived: Vec<Reading>,
    /// Confirm with `committed(token)` once `groups` and `derived` are
    /// committed.
    pub token: Option<u64>,
}

#[derive(Debug)]
enum Confirm {
    DeleteWindow { app: String, win: i64 },
    DeleteHeldThrough { app: String, id: i64 },
}

#[derive(Debug, Default)]
struct Health {
    streak: u32,
    disabled_until: Option<Instant>,
    backoff_ms: u64,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct OpenWindow {
    readings: Vec<Reading>,
    /// Start/end of the window in µs (time windows: aligned to the period).
    start_us: i64,
    end_us: i64,
}

struct Slot {
    inst: AppInstance,
    health: Health,
    st: AppStatus,
    window: OpenWindow,
    next_win: i64,
    /// Closed windows whose output is not confirmed or failed (retry).
    closed_retry: VecDeque<i64>,
    /// Windows closed and awaiting confirmation.
    closed_inflight: Vec<i64>,
    held_inflight: bool,
}

impl Slot {
    fn manifest(&self) -> &Manifest {
        &self.inst.prepared.manifest
    }

    fn name(&self) -> &str {
        &self.inst.prepared.manifest.app.name
    }

    fn matches(&self, r: &Reading) -> bool {
        let dev = r.device.as_str();
        let profile = r.meta.extra.get("profile").map(String::as_str);
        self.manifest().select.iter().any(|s| {
            s.matches_device(dev)
                && s.matches_profile(profile)
                && (s.measurements.is_empty()
                    || r.measurements
                        .iter()
                        .any(|m| s.matches_measurement(&m.name)))
        })
    }

    fn disabled(&self, now: Instant) -> bool {
        matches!(self.health.disabled_until, Some(t) if t > now)
    }
}

/// Wall-clock time, µs since the UNIX epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The readings being processed: the submitted groups plus one group of
/// derived readings. `None` marks a reading removed from its group.
struct Work {
    groups: Vec<Vec<Option<Reading>>>,
}

impl Work {
    fn derived(&mut self) -> &mut Vec<Option<Reading>> {
        self.groups
            .last_mut()
            .expect("work always has a derived group")
    }
}

pub struct Stage {
    cfg: Arc<EdgeConfig>,
    compiler: Compiler,
    db: AppsDb,
    bundles_dir: PathBuf,
    slots: Vec<Slot>,
    anomaly: Vec<AnomalyStage>,
    pending: HashMap<u64, Vec<Confirm>>,
    next_token: u64,
    outbox: VecDeque<Derived>,
    events: broadcast::Sender<AppEvent>,
    /// Whether `process` has anything to do (apps or detectors); read by
    /// the writer to skip the round trip when not.
    active: Arc<AtomicBool>,
}

/// Bound on derived outputs waiting for the writer before time-driven work
/// (window closes, replays) pauses.
const OUTBOX_SOFT_LIMIT: usize = 8;
/// Held readings replayed per step.
const REPLAY_CHUNK: usize = 256;

impl Stage {
    pub fn new(
        cfg: Arc<EdgeConfig>,
        compiler: Compiler,
        db: AppsDb,
        bundles_dir: PathBuf,
        anomaly: Vec<AnomalyStage>,
        events: broadcast::Sender<AppEvent>,
    ) -> Self {
        Stage {
            cfg,
            compiler,
            db,
            bundles_dir,
            slots: Vec::new(),
            anomaly,
            pending: HashMap::new(),
            next_token: 1,
            outbox: VecDeque::new(),
            events,
            active: Arc::new(AtomicBool::new(false)),
        }
        .with_activity()
    }

    fn with_activity(self) -> Self {
        self.update_activity();
        self
    }

    fn update_activity(&self) {
        self.active.store(
            !self.slots.is_empty() || !self.anomaly.is_empty(),
            Ordering::SeqCst,
        );
    }

    pub fn activity(&self) -> Arc<AtomicBool> {
        self.active.clone()
    }

    fn emit(&self, slot_name: &str, version: &str, kind: AppEventKind) {
        let _ = self.events.send(AppEvent {
            app: slot_name.into(),
            version: version.into(),
            kind,
        });
    }

    pub fn statuses(&mut self) -> Vec<AppStatus> {
        let now = Instant::now();
        self.slots
            .iter_mut()
            .map(|s| {
                s.st.state = if s.disabled(now) {
                    "disabled"
                } else {
                    "running"
                }
                .into();
                s.st.disabled_for_ms = s
                    .health
                    .disabled_until
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64)
                    .unwrap_or(0);
                s.st.window_len = s.window.readings.len() as u64;
                s.st.last_error = s.health.last_error.clone();
                s.st.kv_bytes = s.inst.kv.bytes;
                s.st.instantiations = s.inst.instantiations;
                s.st.clone()
            })
            .collect()
    }

    pub fn take_outbox(&mut self) -> Option<Derived> {
        self.outbox.pop_front()
    }

    pub fn requeue_front(&mut self, d: Derived) {
        self.outbox.push_front(d);
    }

    fn token(&mut self, confirms: Vec<Confirm>) -> Option<u64> {
        if confirms.is_empty() {
            return None;
        }
        let t = self.next_token;
        self.next_token += 1;
        self.pending.insert(t, confirms);
        Some(t)
    }

    // ----------------------------------------------------------------
    // Lifecycle
    // ----------------------------------------------------------------

    /// Installs a prepared app: a new deploy, or an atomic upgrade.
    pub fn install(&mut self, prepared: Prepared, bundle: &[u8]) -> Result<(), EdgeError> {
        let name = prepared.manifest.app.name.clone();
        let version = prepared.manifest.app.version.clone();
        let existing = self.slots.iter().position(|s| s.name() == name);
        if existing.is_none() && self.slots.len() >= self.cfg.max_apps {
            return Err(EdgeError::TooManyApps(self.slots.len()));
        }
        // Step 1: store the bundle (so a restart finds it) and register.
        let path = self
            .bundles_dir
            .join(format!("{name}.{}.gwapp", prepared.bundle_sha256));
        write_atomic(&path, bundle)?;
        let from_cache = prepared.from_cache;
        let sha = prepared.bundle_sha256.clone();
        let mut new_slot = self.new_slot(prepared)?;
        // Step 2: hand over from the old version (flush its open window).
        let mut old_version = None;
        if let Some(i) = existing {
            let mut old = self.slots.remove(i);
            old_version = Some(old.manifest().app.version.clone());
            let mut confirms = Vec::new();
            let mut derived = Vec::new();
            if !old.window.readings.is_empty() {
                let mut batch = Batch::default();
                self.close_window(&mut old, &mut batch, &mut derived, &mut confirms);
                self.db.apply(&batch)?;
            }
            let token = self.token(confirms);
            if !derived.is_empty() || token.is_some() {
                self.outbox.push_back(Derived {
                    readings: derived,
                    token,
                });
            }
            // Key-value state and anything pending carry over by name. The
            // old version's open window was just flushed (or, if that failed
            // under `hold`, closed for a retry): the new version starts with
            // an empty window, not the rows it loaded before the flush.
            new_slot.inst.kv = std::mem::take(&mut old.inst.kv);
            new_slot.next_win = old.next_win;
            new_slot.window = OpenWindow::default();
            new_slot.closed_retry = old.closed_retry;
            new_slot.closed_inflight = old.closed_inflight;
            new_slot.st.held = old.st.held;
            let old_sha = old.inst.prepared.bundle_sha256.clone();
            if old_sha != sha {
                let _ =
                    std::fs::remove_file(self.bundles_dir.join(format!("{name}.{old_sha}.gwapp")));
            }
        }
        self.db.register(&Registered {
            name: name.clone(),
            version: version.clone(),
            bundle_sha256: sha,
            deployed_at_us: now_us(),
        })?;
        self.slots.push(new_slot);
        self.sort();
        self.update_activity();
        match old_version {
            Some(from) => {
                info!(app = %name, %from, to = %version, from_cache, "app upgraded");
                self.emit(&name, &version, AppEventKind::Upgraded { from, from_cache });
            }
            None => {
                info!(app = %name, %version, from_cache, "app deployed");
                self.emit(&name, &version, AppEventKind::Deployed { from_cache });
            }
        }
        Ok(())
    }

    fn new_slot(&mut self, prepared: Prepared) -> Result<Slot, EdgeError> {
        let name = prepared.manifest.app.name.clone();
        let kv = self.db.load_kv(&name)?;
        let held = self.db.held_count(&name)?;
        let m = &prepared.manifest;
        let st = AppStatus {
            name: name.clone(),
            version: m.app.version.clone(),
            bundle_sha256: prepared.bundle_sha256.clone(),
            mode: match m.delivery.mode {
                DeliveryMode::Stream => "stream".into(),
                DeliveryMode::Window => "window".into(),
            },
            on_failure: match m.on_failure {
                FailurePolicy::Pass => "pass".into(),
                FailurePolicy::Hold => "hold".into(),
            },
            compiled_from_cache: prepared.from_cache,
            held,
            ..AppStatus::default()
        };
        // Restore the open window and any closed-but-unconfirmed ones.
        let window_readings = self.db.window(&name, 0)?;
        let closed = self.db.closed_windows(&name)?;
        let next_win = self.db.max_window(&name)? + 1;
        let mut window = OpenWindow::default();
        for r in window_readings {
            push_window(&mut window, r, prepared.manifest.delivery.window_seconds);
        }
        if prepared.manifest.delivery.window_seconds > 0 && !window.readings.is_empty() {
            // A time window interrupted by a restart: its period is unknown
            // now (it was aligned to the wall clock at arrival), so it closes
            // at the next tick with what it holds rather than mixing with
            // the new period's readings.
            let times = window.readings.iter().map(|r| r.time.as_micros());
            window.start_us = times.clone().min().unwrap_or(0);
            window.end_us = now_us();
        }
        Ok(Slot {
            inst: AppInstance::new(prepared, kv, self.cfg.log_lines_per_call),
            health: Health::default(),
            st,
            window,
            next_win,
            closed_retry: closed.into(),
            closed_inflight: Vec::new(),
            held_inflight: false,
        })
    }

    fn sort(&mut self) {
        self.slots
            .sort_by(|a, b| (a.manifest().order, a.name()).cmp(&(b.manifest().order, b.name())));
    }

    /// Removes an app: flushes its window, releases its held readings
    /// unchanged, forgets its state.
    pub fn remove(&mut self, name: &str) -> Result<(), EdgeError> {
        let i = self
            .slots
            .iter()
            .position(|s| s.name() == name)
            .ok_or_else(|| EdgeError::NotDeployed(name.into()))?;
        let mut old = self.slots.remove(i);
        self.update_activity();
        let version = old.manifest().app.version.clone();
        let mut derived = Vec::new();
        let mut batch = Batch::default();
        if !old.window.readings.is_empty() {
            // The window's rows are forgotten with the app below, so the
            // close needs no confirmation.
            self.close_window(&mut old, &mut batch, &mut derived, &mut Vec::new());
        }
        self.db.apply(&batch)?;
        // Held readings and unconfirmed windows: released as they are.
        let mut released = Vec::new();
        let mut after = 0;
        loop {
            let chunk = self.db.held(name, after, 10_000)?;
            if chunk.is_empty() {
                break;
            }
            after = chunk.last().map(|(id, _)| *id).unwrap_or(after);
            released.extend(chunk.into_iter().map(|(_, r)| r));
        }
        for w in self.db.closed_windows(name)? {
            if !old.manifest().delivery.keep_originals {
                released.extend(self.db.window(name, w)?);
            }
        }
        // Forget the app now; released readings are in memory until the
        // writer commits them (a crash here loses at most those).
        self.db.unregister(name)?;
        let sha = old.inst.prepared.bundle_sha256.clone();
        let _ = std::fs::remove_file(self.bundles_dir.join(format!("{name}.{sha}.gwapp")));
        derived.extend(released);
        if !derived.is_empty() {
            for chunk in derived.chunks(1000) {
                self.outbox.push_back(Derived {
                    readings: chunk.to_vec(),
                    token: None,
                });
            }
        }
        info!(app = %name, %version, "app removed");
        self.emit(name, &version, AppEventKind::Removed);
        Ok(())
    }

    // ----------------------------------------------------------------
    // Processing
    // ----------------------------------------------------------------

    /// Never loses a reading: if `apps.db` cannot be written, readings that
    /// were being moved into windows or held are handed back as derived
    /// (at-least-once: they may be processed again later).
    pub fn process(&mut self, groups: Vec<Vec<Reading>>) -> Processed {
        let n = groups.len();
        let mut work = Work {
            groups: groups
                .into_iter()
                .map(|g| g.into_iter().map(Some).collect())
                .collect(),
        };
        work.groups.push(Vec::new());
        let mut batch = Batch::default();
        let mut confirms = Vec::new();
        for i in 0..self.slots.len() {
            self.run_slot(i, &mut work, &mut batch, &mut confirms, false);
        }
        self.run_anomaly(&mut work);
        // Durable before the buffer commit that depends on it.
        if let Err(e) = self.db.apply(&batch) {
            warn!(error = %e, "apps.db write failed; readings held or windowed in this group pass on");
            for op in batch.ops {
                match op {
                    Op::HeldAdd { reading, .. }
                    | Op::WindowAdd {
                        reading,
                        moved: true,
                        ..
                    } => work.derived().push(Some(reading)),
                    _ => {}
                }
            }
        }
        let mut groups: Vec<Vec<Reading>> = work
            .groups
            .into_iter()
            .map(|g| g.into_iter().flatten().collect())
            .collect();
        let derived = groups.pop().unwrap_or_default();
        debug_assert_eq!(groups.len(), n);
        Processed {
            groups,
            derived,
            token: self.token(confirms),
        }
    }

    fn run_anomaly(&mut self, work: &mut Work) {
        if self.anomaly.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for g in &work.groups {
            for r in g.iter().flatten() {
                for a in &mut self.anomaly {
                    match a.observe(r) {
                        Ok(rs) => out.extend(rs),
                        Err(e) => warn!(error = %e, "anomaly detector failed"),
                    }
                }
            }
        }
        work.derived().extend(out.into_iter().map(Some));
    }

    /// Runs app `i` over the work. In `replay` mode a failure leaves the
    /// readings where they came from (the caller keeps them) and returns
    /// false.
    fn run_slot(
        &mut self,
        i: usize,
        work: &mut Work,
        batch: &mut Batch,
        confirms: &mut Vec<Confirm>,
        replay: bool,
    ) -> bool {
        let now = Instant::now();
        let engine = self.compiler.engine.clone();
        let tick = self.cfg.epoch_tick_ms;
        let max_window = self.cfg.max_window_readings as usize;
        let max_held = self.cfg.max_held_per_app;
        // Positions of the readings this app selects.
        let idx: Vec<(usize, usize)> = {
            let slot = &self.slots[i];
            work.groups
                .iter()
                .enumerate()
                .flat_map(|(g, rs)| {
                    rs.iter()
                        .enumerate()
                        .filter(|(_, r)| r.as_ref().is_some_and(|r| slot.matches(r)))
                        .map(move |(j, _)| (g, j))
                })
                .collect()
        };
        if idx.is_empty() {
            return true;
        }
        let disabled = self.slots[i].disabled(now);
        if self.slots[i].health.disabled_until.is_some() && !disabled {
            // Backoff over: try again with a fresh instance.
            let s = &mut self.slots[i];
            s.health.disabled_until = None;
            let (n, v) = (s.name().to_owned(), s.manifest().app.version.clone());
            info!(app = %n, "re-enabling app after backoff");
            self.emit(&n, &v, AppEventKind::Enabled);
        }
        let slot = &mut self.slots[i];
        let name = slot.name().to_owned();
        let policy = slot.manifest().on_failure;
        let mode = slot.manifest().delivery.mode;
        if disabled {
            if replay {
                return false;
            }
            divert(slot, work, &idx, policy, batch, max_held, &name);
            return true;
        }
        slot.st.readings_in += idx.len() as u64;
        match mode {
            DeliveryMode::Window => {
                let d = &slot.manifest().delivery;
                let keep = d.keep_originals;
                let by_count = d.window_readings as usize;
                let secs = d.window_seconds;
                let by_time = secs > 0;
                let mut derived = Vec::new();
                for &(g, j) in &idx {
                    let due = {
                        let w = &self.slots[i].window;
                        by_time && !w.readings.is_empty() && now_us() >= w.end_us
                    };
                    if due {
                        self.close_window_at(i, batch, &mut derived, confirms);
                    }
                    let slot = &mut self.slots[i];
                    if slot.window.readings.len() >= max_window {
                        slot.st.window_overflow += 1;
                        continue;
                    }
                    let r = if keep {
                        work.groups[g][j].clone()
                    } else {
                        work.groups[g][j].take()
                    };
                    let Some(r) = r else { continue };
                    batch.ops.push(Op::WindowAdd {
                        app: name.clone(),
                        reading: r.clone(),
                        moved: !keep,
                    });
                    push_window(&mut slot.window, r, secs);
                    if by_count > 0 && slot.window.readings.len() >= by_count {
                        self.close_window_at(i, batch, &mut derived, confirms);
                    }
                }
                work.derived().extend(derived.into_iter().map(Some));
                true
            }
            DeliveryMode::Stream => {
                let result = {
                    let refs: Vec<&Reading> = idx
                        .iter()
                        .filter_map(|&(g, j)| work.groups[g][j].as_ref())
                        .collect();
                    slot.inst.call(&engine, tick, &refs, None)
                };
                slot.st.calls += 1;
                match result {
                    Ok(out) => {
                        slot.health.streak = 0;
                        slot.health.backoff_ms = 0;
                        for (k, v) in std::mem::take(&mut slot.inst.kv_dirty) {
                            batch.ops.push(Op::Kv {
                                app: name.clone(),
                                key: k,
                                value: v,
                            });
                        }
                        for (&(g, j), v) in idx.iter().zip(out.verdicts) {
                            match v {
                                Verdict::Pass => {}
                                Verdict::Drop => {
                                    slot.st.dropped += 1;
                                    work.groups[g][j] = None;
                                }
                                Verdict::Replace(r) => {
                                    slot.st.replaced += 1;
                                    work.groups[g][j] = Some(*r);
                                }
                            }
                        }
                        slot.st.emitted += (out.emitted.len() - out.alerts) as u64;
                        slot.st.alerts += out.alerts as u64;
                        work.derived().extend(out.emitted.into_iter().map(Some));
                        true
                    }
                    Err(fault) => {
                        self.failed(i, &fault, now);
                        if replay {
                            return false;
                        }
                        let slot = &mut self.slots[i];
                        divert(slot, work, &idx, policy, batch, max_held, &name);
                        true
                    }
                }
            }
        }
    }

    fn close_window_at(
        &mut self,
        i: usize,
        batch: &mut Batch,
        derived: &mut Vec<Reading>,
        confirms: &mut Vec<Confirm>,
    ) {
        // Temporarily take the slot out to satisfy the borrow checker.
        let mut slot = self.slots.remove(i);
        self.close_window(&mut slot, batch, derived, confirms);
        self.slots.insert(i, slot);
    }

    /// Closes the slot's open window: persists the close, calls the app,
    /// and on failure applies the policy. The slot may be outside
    /// `self.slots` (upgrade/remove).
    fn close_window(
        &mut self,
        slot: &mut Slot,
        batch: &mut Batch,
        derived: &mut Vec<Reading>,
        confirms: &mut Vec<Confirm>,
    ) {
        let name = slot.name().to_owned();
        let win = slot.next_win;
        slot.next_win += 1;
        batch.ops.push(Op::WindowClose {
            app: name.clone(),
            win,
        });
        let w = std::mem::take(&mut slot.window);
        let window = wit::Window {
            start_us: w.start_us,
            end_us: w.end_us,
        };
        let ok = self.call_window(slot, &w.readings, window, derived);
        if ok {
            confirms.push(Confirm::DeleteWindow { app: name, win });
            slot.closed_inflight.push(win);
        } else {
            match slot.manifest().on_failure {
                FailurePolicy::Pass => {
                    if !slot.manifest().delivery.keep_originals {
                        slot.st.passed_while_failing += w.readings.len() as u64;
                        derived.extend(w.readings);
                    }
                    confirms.push(Confirm::DeleteWindow { app: name, win });
                }
                FailurePolicy::Hold => slot.closed_retry.push_back(win),
            }
        }
    }

    /// Calls a window app; returns whether it succeeded (output appended).
    fn call_window(
        &mut self,
        slot: &mut Slot,
        readings: &[Reading],
        window: wit::Window,
        derived: &mut Vec<Reading>,
    ) -> bool {
        let now = Instant::now();
        if slot.disabled(now) {
            return false;
        }
        let refs: Vec<&Reading> = readings.iter().collect();
        slot.st.calls += 1;
        match slot.inst.call(
            &self.compiler.engine,
            self.cfg.epoch_tick_ms,
            &refs,
            Some(window),
        ) {
            Ok(out) => {
                slot.health.streak = 0;
                slot.health.backoff_ms = 0;
                // Window kv writes are persisted right away (their own
                // small transaction): they belong to this close.
                let name = slot.name().to_owned();
                let mut b = Batch::default();
                for (k, v) in std::mem::take(&mut slot.inst.kv_dirty) {
                    b.ops.push(Op::Kv {
                        app: name.clone(),
                        key: k,
                        value: v,
                    });
                }
                if let Err(e) = self.db.apply(&b) {
                    warn!(app = %name, error = %e, "could not persist key-value changes");
                }
                slot.st.emitted += (out.emitted.len() - out.alerts) as u64;
                slot.st.alerts += out.alerts as u64;
                derived.extend(out.emitted);
                true
            }
            Err(fault) => {
                self.slot_failed(slot, &fault, now);
                false
            }
        }
    }

    fn failed(&mut self, i: usize, fault: &Fault, now: Instant) {
        let mut slot = self.slots.remove(i);
        self.slot_failed(&mut slot, fault, now);
        self.slots.insert(i, slot);
    }

    fn slot_failed(&mut self, slot: &mut Slot, fault: &Fault, now: Instant) {
        let name = slot.name().to_owned();
        let version = slot.manifest().app.version.clone();
        slot.st.failures += 1;
        slot.health.streak += 1;
        slot.health.last_error = Some(fault.to_string());
        if !matches!(
            fault,
            Fault::App(_) | Fault::OutputTooLarge { .. } | Fault::InvalidOutput(_)
        ) {
            slot.inst.reset();
        }
        warn!(app = %name, %version, fault = %fault, "edge app call failed");
        self.emit(
            &name,
            &version,
            AppEventKind::Failed {
                fault: fault.kind().into(),
                reason: fault.to_string(),
            },
        );
        if slot.health.streak >= self.cfg.failures.max_consecutive.max(1) {
            let f = &self.cfg.failures;
            let backoff = if slot.health.backoff_ms == 0 {
                f.backoff_initial_ms
            } else {
                (slot.health.backoff_ms * 2).min(f.backoff_max_ms)
            };
            slot.health.backoff_ms = backoff;
            slot.health.streak = 0;
            slot.health.disabled_until = Some(now + Duration::from_millis(backoff));
            slot.inst.reset();
            warn!(app = %name, %version, backoff_ms = backoff, "edge app disabled after repeated failures");
            self.emit(
                &name,
                &version,
                AppEventKind::Disabled {
                    for_ms: backoff,
                    reason: fault.to_string(),
                },
            );
        }
    }

    // ----------------------------------------------------------------
    // Time-driven work
    // ----------------------------------------------------------------

    /// Closes due time windows, retries closed windows, replays held
    /// readings. Output goes to the outbox.
    pub fn tick(&mut self) -> Result<(), EdgeError> {
        let now_wall = now_us();
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.outbox.len() >= OUTBOX_SOFT_LIMIT {
                break;
            }
            let s = &self.slots[i];
            let due = s.manifest().delivery.mode == DeliveryMode::Window
                && s.manifest().delivery.window_seconds > 0
                && !s.window.readings.is_empty()
                && now_wall >= s.window.end_us;
            if due {
                let mut batch = Batch::default();
                let mut derived = Vec::new();
                let mut confirms = Vec::new();
                self.close_window_at(i, &mut batch, &mut derived, &mut confirms);
                self.db.apply(&batch)?;
                self.push_derived(derived, confirms);
            }
            // Retry windows left closed by a failure or a crash.
            let retry = {
                let s = &self.slots[i];
                !s.disabled(now) && !s.closed_retry.is_empty()
            };
            if retry {
                let mut slot = self.slots.remove(i);
                if let Some(win) = slot.closed_retry.front().copied() {
                    let readings = self.db.window(slot.name(), win)?;
                    let window = window_bounds(&readings);
                    let mut derived = Vec::new();
                    if self.call_window(&mut slot, &readings, window, &mut derived) {
                        slot.closed_retry.pop_front();
                        slot.closed_inflight.push(win);
                        let app = slot.name().to_owned();
                        self.slots.insert(i, slot);
                        self.push_derived(derived, vec![Confirm::DeleteWindow { app, win }]);
                    } else {
                        self.slots.insert(i, slot);
                    }
                } else {
                    self.slots.insert(i, slot);
                }
            }
            // Replay held readings once the app works again.
            let replay = {
                let s = &self.slots[i];
                s.st.held > 0 && !s.held_inflight && !s.disabled(now)
            };
            if replay && self.outbox.len() < OUTBOX_SOFT_LIMIT {
                self.replay_held(i)?;
            }
        }
        Ok(())
    }

    fn push_derived(&mut self, readings: Vec<Reading>, confirms: Vec<Confirm>) {
        let token = self.token(confirms);
        if readings.is_empty() && token.is_none() {
            return;
        }
        self.outbox.push_back(Derived { readings, token });
    }

    fn replay_held(&mut self, i: usize) -> Result<(), EdgeError> {
        let name = self.slots[i].name().to_owned();
        let chunk = self.db.held(&name, 0, REPLAY_CHUNK)?;
        if chunk.is_empty() {
            self.slots[i].st.held = 0;
            return Ok(());
        }
        let last = chunk.last().map(|(id, _)| *id).unwrap_or(0);
        let mut work = Work {
            groups: vec![
                chunk.into_iter().map(|(_, r)| Some(r)).collect(),
                Vec::new(),
            ],
        };
        let mut batch = Batch::default();
        let mut confirms = Vec::new();
        if !self.run_slot(i, &mut work, &mut batch, &mut confirms, true) {
            return Ok(()); // still failing: the rows stay held
        }
        for k in i + 1..self.slots.len() {
            self.run_slot(k, &mut work, &mut batch, &mut confirms, false);
        }
        self.run_anomaly(&mut work);
        self.db.apply(&batch)?;
        let readings: Vec<Reading> = work.groups.into_iter().flatten().flatten().collect();
        confirms.push(Confirm::DeleteHeldThrough {
            app: name.clone(),
            id: last,
        });
        self.slots[i].held_inflight = true;
        info!(app = %name, replayed = readings.len(), "replaying held readings");
        self.push_derived(readings, confirms);
        Ok(())
    }

    /// The writer committed the output carrying `token`.
    pub fn committed(&mut self, token: u64) -> Result<(), EdgeError> {
        let Some(confirms) = self.pending.remove(&token) else {
            return Ok(());
        };
        for c in confirms {
            match c {
                Confirm::DeleteWindow { app, win } => {
                    self.db.delete_window(&app, win)?;
                    if let Some(s) = self.slots.iter_mut().find(|s| s.name() == app) {
                        s.closed_inflight.retain(|w| *w != win);
                    }
                }
                Confirm::DeleteHeldThrough { app, id } => {
                    self.db.delete_held_through(&app, id)?;
                    let left = self.db.held_count(&app)?;
                    if let Some(s) = self.slots.iter_mut().find(|s| s.name() == app) {
                        s.held_inflight = false;
                        s.st.held = left;
                    }
                }
            }
        }
        Ok(())
    }

    /// The writer could not commit the output carrying `token`: what it
    /// depended on stays and is retried.
    pub fn abandoned(&mut self, token: u64) {
        let Some(confirms) = self.pending.remove(&token) else {
            return;
        };
        for c in confirms {
            match c {
                Confirm::DeleteWindow { app, win } => {
                    if let Some(s) = self.slots.iter_mut().find(|s| s.name() == app) {
                        s.closed_inflight.retain(|w| *w != win);
                        s.closed_retry.push_back(win);
                    }
                }
                Confirm::DeleteHeldThrough { app, .. } => {
                    if let Some(s) = self.slots.iter_mut().find(|s| s.name() == app) {
                        s.held_inflight = false;
                    }
                }
            }
        }
    }
}

/// Readings of a failing or disabled app: pass (untouched) or hold.
fn divert(
    slot: &mut Slot,
    work: &mut Work,
    idx: &[(usize, usize)],
    policy: FailurePolicy,
    batch: &mut Batch,
    max_held: u64,
    name: &str,
) {
    match policy {
        FailurePolicy::Pass => slot.st.passed_while_failing += idx.len() as u64,
        FailurePolicy::Hold => {
            for &(g, j) in idx {
                if slot.st.held >= max_held {
                    slot.st.passed_while_failing += 1;
                    continue;
                }
                if let Some(r) = work.groups[g][j].take() {
                    slot.st.held += 1;
                    batch.ops.push(Op::HeldAdd {
                        app: name.to_owned(),
                        reading: r,
                    });
                }
            }
        }
    }
}

fn push_window(w: &mut OpenWindow, r: Reading, window_seconds: u32) {
    let secs = window_seconds as i64;
    if w.readings.is_empty() {
        if secs > 0 {
            let period = secs * 1_000_000;
            let at = now_us();
            w.start_us = at - at.rem_euclid(period);
            w.end_us = w.start_us + period;
        } else {
            w.start_us = r.time.as_micros();
            w.end_us = r.time.as_micros();
        }
    }
    if secs == 0 {
        w.end_us = w.end_us.max(r.time.as_micros());
        w.start_us = w.start_us.min(r.time.as_micros());
    }
    w.readings.push(r);
}

fn window_bounds(readings: &[Reading]) -> wit::Window {
    let min = readings
        .iter()
        .map(|r| r.time)
        .min()
        .unwrap_or(Timestamp(0));
    let max = readings
        .iter()
        .map(|r| r.time)
        .max()
        .unwrap_or(Timestamp(0));
    wit::Window {
        start_us: min.as_micros(),
        end_us: max.as_micros(),
    }
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), EdgeError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EdgeError::io(dir, e))?;
    }
    gatewayd_artifact::write_atomic(path, bytes).map_err(|e| EdgeError::io(path, e))
}
