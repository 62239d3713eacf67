//! Test support: the example guests (built by `edge-apps/build-guests.sh`),
//! signed at test time with throwaway keys, and a runtime in a temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatewayd_artifact::{pack, Algorithm, SigningKey};
use gatewayd_edge::{EdgeConfig, EdgePaths, EdgeRuntime, Processed};
use gatewayd_model::{Measurement, Reading, Timestamp, Value};

/// Where the built guest components are.
pub fn guest_dir() -> PathBuf {
    if let Ok(d) = std::env::var("GATEWAYD_GUEST_DIR") {
        return PathBuf::from(d);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| ws.join("target"));
    target.join("edge-apps/components")
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example's manifest and component.
pub fn guest(name: &str) -> (String, Vec<u8>) {
    let dir = guest_dir();
    let wasm = dir.join(format!("{name}.wasm"));
    let manifest = dir.join(format!("{name}.manifest.toml"));
    let wasm = std::fs::read(&wasm).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests first: bash edge-apps/build-guests.sh (or make guests)",
            wasm.display()
        )
    });
    let manifest = std::fs::read_to_string(&manifest).expect("manifest beside the component");
    (manifest, wasm)
}

pub fn model_bytes() -> Vec<u8> {
    std::fs::read(workspace().join("edge-apps/models/vibration-ae/model.onnx")).unwrap()
}

/// Signs example `name`, after letting `edit` change its manifest.
pub fn bundle_with(name: &str, key: &SigningKey, edit: impl FnOnce(&mut toml::Table)) -> Vec<u8> {
    let (manifest, wasm) = guest(name);
    let mut t: toml::Table = manifest.parse().unwrap();
    edit(&mut t);
    let models: Vec<(String, Vec<u8>)> = match t.get("model") {
        Some(toml::Value::Array(ms)) => ms
            .iter()
            .map(|m| {
                let n = m.get("name").and_then(|v| v.as_str()).unwrap().to_owned();
                (n, model_bytes())
            })
            .collect(),
        _ => Vec::new(),
    };
    pack(
        &toml::to_string(&t).unwrap(),
        &wasm,
        &models,
        std::slice::from_ref(key),
    )
    .unwrap()
}

pub fn bundle(name: &str, key: &SigningKey) -> Vec<u8> {
    bundle_with(name, key, |_| {})
}

pub fn set(t: &mut toml::Table, path: &[&str], v: impl Into<toml::Value>) {
    let mut cur = t;
    for p in &path[..path.len() - 1] {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
    }
    cur.insert(path[path.len() - 1].to_string(), v.into());
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub cfg: EdgeConfig,
}

impl Env {
    pub fn new() -> Env {
        Self::with(|_| {})
    }

    pub fn with(edit: impl FnOnce(&mut EdgeConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Algorithm::Ed25519).unwrap();
        let pubpath = dir.path().join("trusted.pub");
        key.public().save(&pubpath).unwrap();
        let mut cfg = EdgeConfig {
            trusted_keys: vec![pubpath],
            ..EdgeConfig::default()
        };
        cfg.failures.backoff_initial_ms = 300;
        edit(&mut cfg);
        Env { dir, key, cfg }
    }

    pub fn paths(&self) -> EdgePaths {
        EdgePaths::resolve(&self.cfg, &self.dir.path().join("state"))
    }

    pub fn start(&self) -> EdgeRuntime {
        EdgeRuntime::start(self.cfg.clone(), &self.paths()).expect("runtime starts")
    }
}

pub fn temp(device: &str, t: i64, v: f64) -> Reading {
    Reading::new(
        device.parse().unwrap(),
        Timestamp(t),
        vec![Measurement::float("temperature", Some("Cel"), v)],
    )
}

pub fn float(r: &Reading, name: &str) -> Option<f64> {
    r.measurements
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| match m.value {
            Some(Value::Float(f)) => Some(f),
            _ => None,
        })
}

pub fn text(r: &Reading, name: &str) -> Option<String> {
    r.measurements
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| match &m.value {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        })
}

pub fn is_alert(r: &Reading) -> bool {
    r.meta.extra.get("kind").map(String::as_str) == Some("alert")
}

pub fn all(p: &Processed) -> Vec<Reading> {
    p.groups.iter().flatten().cloned().collect()
}

/// Waits (bounded) for derived output from the runtime.
pub async fn next_derived(
    rt: &mut EdgeRuntime,
    within: Duration,
) -> Option<gatewayd_edge::Derived> {
    tokio::time::timeout(within, rt.derived.recv())
        .await
        .ok()
        .flatten()
}

/// Polls the status list until `f` holds (bounded).
pub async fn wait_status(
    rt: &EdgeRuntime,
    within: Duration,
    f: impl Fn(&[gatewayd_edge::AppStatus]) -> bool,
) -> Vec<gatewayd_edge::AppStatus> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s = rt.handle.list();
        if f(&s) {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("status condition not met within {within:?}: {s:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
