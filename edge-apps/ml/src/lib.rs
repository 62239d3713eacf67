//! # gatewayd-ml
//!
//! ONNX inference for gatewayd's edge apps, on [tract](https://github.com/sonos/tract):
//!
//! * [`Tensor`]: the WIT `tensor` record, validated (shape × data, size limit).
//! * [`Model`]: one ONNX model, parsed, optimised and planned once, then run
//!   from any thread (`Send + Sync`, `run(&self)`).
//! * [`ModelCache`]: loads each distinct model file once (keyed by SHA-256),
//!   bounded, evicting the least recently used model nobody holds.
//! * [`AnomalyStage`]: the declarative, no-code anomaly detector: windows of
//!   one measurement per device → model → `anomaly_score` / `anomalous`
//!   readings. Sans-IO: the caller feeds readings and forwards the output.
//!
//! Bad input (a malformed model file, a wrong shape, NaN samples) is an
//! [`MlError`], never a panic.

mod anomaly;
mod cache;
mod error;
mod model;
mod tensor;
#[cfg(test)]
mod testonnx;

pub use anomaly::{AnomalyConfig, AnomalyStage, AnomalyStats, Normalize, ScoreKind};
pub use cache::ModelCache;
pub use error::MlError;
pub use gatewayd_model::glob_match;
pub use model::Model;
pub use tensor::{Tensor, MAX_ELEMENTS, MAX_RANK};
