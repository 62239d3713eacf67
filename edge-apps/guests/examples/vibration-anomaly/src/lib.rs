//! Anomaly detection with an autoencoder: every 32 `vibration` samples of a
//! device go through the model `vibration-ae` (input `[1,32]`, output
//! `[1,32]`); the mean squared reconstruction error is emitted as
//! `anomaly_score`, and a `critical` alert `vibration-anomaly` is raised
//! when it exceeds `threshold`.
//!
//! Samples are grouped per device in arrival order; samples that do not
//! fill a block of 32 wait (in memory) for the device's next window.
#![no_std]

extern crate alloc;

use alloc::{collections::BTreeMap, format, string::String, vec::Vec};
use gatewayd_edge_sdk::{
    export_app, ml, Alert, App, Config, Measurement, Output, Reading, Severity, Tensor, Window,
};

const N: usize = 32;
/// Bounds the memory held for devices that never complete a block.
const MAX_PENDING_DEVICES: usize = 1024;

struct VibrationAnomaly {
    model: String,
    measurement: String,
    threshold: f64,
    /// Device -> samples (value, time) not yet in a full block.
    pending: BTreeMap<String, Vec<(f32, i64)>>,
}

impl VibrationAnomaly {
    fn score(&self, samples: &[(f32, i64)]) -> Result<f64, String> {
        let input = Tensor::new(
            [1, N as u32],
            samples.iter().map(|s| s.0).collect::<Vec<_>>(),
        );
        let output = ml::infer(&self.model, &input).map_err(|e| format!("{}: {e}", self.model))?;
        if output.data.len() != N {
            return Err(format!(
                "{}: expected {N} outputs, got {} (shape {:?})",
                self.model,
                output.data.len(),
                output.shape
            ));
        }
        let sse: f64 = input
            .data
            .iter()
            .zip(&output.data)
            .map(|(x, y)| {
                let d = f64::from(*y) - f64::from(*x);
                d * d
            })
            .sum();
        Ok(sse / N as f64)
    }
}

impl App for VibrationAnomaly {
    fn init(config: &Config) -> Result<Self, String> {
        let threshold = config
            .f64("threshold")?
            .ok_or("`threshold` is required (mean squared reconstruction error)")?;
        Ok(VibrationAnomaly {
            model: config.str_or("model", "vibration-ae")?.into(),
            measurement: config.str_or("measurement", "vibration")?.into(),
            threshold,
            pending: BTreeMap::new(),
        })
    }

    fn process(
        &mut self,
        readings: Vec<Reading>,
        _window: Option<Window>,
    ) -> Result<Output, String> {
        let mut out = Output::pass_all();
        for r in &readings {
            let Some(v) = r.float(&self.measurement) else {
                continue;
            };
            if !self.pending.contains_key(&r.device) && self.pending.len() >= MAX_PENDING_DEVICES {
                gatewayd_edge_sdk::warn!("too many devices; ignoring {}", r.device);
                continue;
            }
            let samples = self.pending.entry(r.device.clone()).or_default();
            samples.push((v as f32, r.time_us));
            if samples.len() < N {
                continue;
            }
            let block: Vec<(f32, i64)> = core::mem::take(samples);
            let score = self.score(&block)?;
            let time_us = block[N - 1].1;
            out.emit(Reading::new(
                r.device.clone(),
                time_us,
                alloc::vec![Measurement::float("anomaly_score", None, score)],
            ));
            if score > self.threshold {
                out.alert(Alert::new(
                    r.device.clone(),
                    time_us,
                    Severity::Critical,
                    "vibration-anomaly",
                    format!("anomaly score {score:.4} above {}", self.threshold),
                ));
            }
        }
        self.pending.retain(|_, s| !s.is_empty());
        Ok(out)
    }
}

export_app!(VibrationAnomaly);
