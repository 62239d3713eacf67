//! # gatewayd-edge: the edge-app runtime
//!
//! Runs signed WebAssembly components ("edge apps", the `gatewayd:edge`
//! WIT world in `edge-apps/wit/`) and declarative ONNX anomaly detectors
//! between gatewayd's sources and its buffer:
//!
//! ```text
//! sources → ingest queue → writer ─ process(groups) ─▶ [edge-apps thread] ─▶ buffer
//!                            ▲                           apps in (order, name)
//!                            └──── derived output ◀───── windows by time, replays
//! ```
//!
//! * [`engine`]: the wasmtime engine, epoch ticker, compiled cache;
//! * [`app`]: one app's sandbox (fuel, epoch deadline, memory limiter) and
//!   the host functions (log, clock, key-value, inference);
//! * [`stage`]: the state machine over all apps (selectors, verdicts,
//!   windows, failure policy, crash-loop backoff, hot swap) — its
//!   invariants are at the top of that module;
//! * [`db`]: `apps.db` (registry, key-value, windows, held readings);
//! * [`runtime`]: the thread that owns the stage and its async handle;
//! * [`deploy`]: the deployment directory (desired apps as files; a file is
//!   re-read only when its size or modification time changes).

pub mod app;
pub mod config;
pub mod convert;
pub mod db;
pub mod deploy;
pub mod engine;
pub mod error;
pub mod runtime;
pub mod stage;

/// Host bindings generated from `edge-apps/wit`.
pub mod bindings {
    wasmtime::component::bindgen!({ world: "edge-app", path: "../wit" });
}

pub use app::{EffectiveLimits, Fault};
pub use config::{AnomalySection, EdgeConfig, FailureConfig, LimitsConfig};
pub use deploy::{DeployDir, Deployed};
pub use error::EdgeError;
pub use runtime::{trust_store, EdgeHandle, EdgePaths, EdgeRuntime};
pub use stage::{AppEvent, AppEventKind, AppStatus, Derived, Processed};
