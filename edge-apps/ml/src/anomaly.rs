use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use gatewayd_model::{DeviceId, Measurement, Metadata, Reading, Value};
use serde::{Deserialize, Serialize};

use crate::{glob_match, MlError, Model, Tensor};

/// How a model's output becomes an anomaly score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// The model is an autoencoder (output shape = input shape): the score is
    /// the mean squared error between its (normalised) input and its output.
    #[default]
    ReconstructionMse,
    /// The model outputs one value: the score itself.
    Output,
}

/// `(sample - mean) / std`, applied to every sample before inference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: f64,
    pub std: f64,
}

/// Configuration of an [`AnomalyStage`], e.g. from TOML:
///
/// ```toml
/// name = "pump-vibration"
/// device = "coap:pump-*"
/// measurement = "vibration"
/// window = 32
/// hop = 16
/// threshold = 0.0016
/// normalize = { mean = 0.0, std = 1.0 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Names the stage: derived readings carry `derived_by = "anomaly:<name>"`.
    pub name: String,
    /// Glob over device ids (`*` any run, `?` one character). Default `*`.
    #[serde(default = "any_device")]
    pub device: String,
    /// The float measurement to watch, e.g. `vibration`.
    pub measurement: String,
    /// Samples per inference: must equal the model input's element count.
    pub window: usize,
    /// Samples to advance between inferences, 1..=window. `None` (the
    /// default) is `window`: tumbling windows. Smaller values slide.
    #[serde(default)]
    pub hop: Option<usize>,
    /// A window whose score is above this is `anomalous`.
    pub threshold: f64,
    #[serde(default)]
    pub score: ScoreKind,
    #[serde(default)]
    pub normalize: Option<Normalize>,
    /// Name of the score measurement in derived readings.
    #[serde(default = "default_output_measurement")]
    pub output_measurement: String,
    /// Most devices with a partial window kept at once; beyond it the device
    /// heard from least recently loses its samples.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
}

fn any_device() -> String {
    "*".to_owned()
}

fn default_output_measurement() -> String {
    "anomaly_score".to_owned()
}

fn default_max_devices() -> usize {
    10_000
}

/// The measurement carrying the boolean verdict in derived readings.
pub const ANOMALOUS: &str = "anomalous";

impl AnomalyConfig {
    /// A config with every optional field at its default.
    pub fn new(name: &str, measurement: &str, window: usize, threshold: f64) -> AnomalyConfig {
        AnomalyConfig {
            name: name.to_owned(),
            device: any_device(),
            measurement: measurement.to_owned(),
            window,
            hop: None,
            threshold,
            score: ScoreKind::default(),
            normalize: None,
            output_measurement: default_output_measurement(),
            max_devices: default_max_devices(),
        }
    }
}

/// Counters of an [`AnomalyStage`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnomalyStats {
    /// Model runs (one per emitted reading).
    pub inferences: u64,
    /// Of those, scores above the threshold.
    pub anomalies: u64,
    /// Samples ignored because they (or their normalised value) were NaN or
    /// infinite.
    pub skipped: u64,
    /// Devices whose partial window was dropped to respect `max_devices`.
    pub evicted_devices: u64,
}

#[derive(Debug)]
struct DeviceWindow {
    samples: VecDeque<f32>,
    last_seen: u64,
}

/// The declarative anomaly detector: per device, collects `window` samples of
/// one measurement, runs the model, and emits a derived reading with the
/// score and the verdict; then advances by `hop` samples.
///
/// Sans-IO: [`AnomalyStage::observe`] is pure logic plus the model. Not
/// `Sync` by design (it is one pipeline stage's state); the model inside is
/// shared.
#[derive(Debug)]
pub struct AnomalyStage {
    cfg: AnomalyConfig,
    hop: usize,
    derived_by: String,
    model: Arc<Model>,
    devices: HashMap<DeviceId, DeviceWindow>,
    /// last_seen → device, to find the least recently heard device quickly.
    by_age: BTreeMap<u64, DeviceId>,
    clock: u64,
    stats: AnomalyStats,
}

impl AnomalyStage {
    /// Validates `cfg` on its own and against `model`: the window must be the
    /// model input's element count, and the model's output must fit `score`.
    pub fn new(cfg: AnomalyConfig, model: Arc<Model>) -> Result<AnomalyStage, MlError> {
        let bad = |reason: String| MlError::Config {
            name: cfg.name.clone(),
            reason,
        };
        if cfg.name.is_empty() {
            return Err(bad("name is empty".into()));
        }
        if cfg.device.is_empty() {
            return Err(bad("device pattern is empty (use \"*\" for all)".into()));
        }
        if cfg.measurement.is_empty() {
            return Err(bad("measurement is empty".into()));
        }
        if cfg.output_measurement.is_empty() || cfg.output_measurement == ANOMALOUS {
            return Err(bad(format!(
                "output_measurement must be non-empty and not {ANOMALOUS:?}"
            )));
        }
        let elements: usize = model.input_shape().iter().product();
        if cfg.window == 0 || cfg.window != elements {
            return Err(bad(format!(
                "window is {} samples but model {:?} takes {:?} = {elements} values",
                cfg.window,
                model.name(),
                model.input_shape()
            )));
        }
        let hop = cfg.hop.unwrap_or(cfg.window);
        if hop == 0 || hop > cfg.window {
            return Err(bad(format!(
                "hop must be between 1 and window ({}), got {hop}",
                cfg.window
            )));
        }
        if !cfg.threshold.is_finite() {
            return Err(bad(format!("threshold {} is not finite", cfg.threshold)));
        }
        if let Some(n) = cfg.normalize {
            if !n.mean.is_finite() || !n.std.is_finite() || n.std <= 0.0 {
                return Err(bad(format!(
                    "normalize needs a finite mean and a finite std > 0, got mean {} std {}",
                    n.mean, n.std
                )));
            }
        }
        if cfg.max_devices == 0 {
            return Err(bad("max_devices must be at least 1".into()));
        }
        // An unknown output shape is checked on each run instead.
        if let Some(out) = model.output_shape() {
            match cfg.score {
                ScoreKind::ReconstructionMse if out != model.input_shape() => {
                    return Err(bad(format!(
                        "score reconstruction_mse needs an output shaped like the input {:?}, \
                         model {:?} outputs {out:?}",
                        model.input_shape(),
                        model.name()
                    )));
                }
                ScoreKind::Output if out.iter().product::<usize>() != 1 => {
                    return Err(bad(format!(
                        "score output needs a single-value output, model {:?} outputs {out:?}",
                        model.name()
                    )));
                }
                _ => {}
            }
        }
        Ok(AnomalyStage {
            derived_by: format!("anomaly:{}", cfg.name),
            hop,
            cfg,
            model,
            devices: HashMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
            stats: AnomalyStats::default(),
        })
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.cfg
    }

    pub fn stats(&self) -> AnomalyStats {
        self.stats
    }

    /// Devices with a partial window held.
    pub fn tracked_devices(&self) -> usize {
        self.devices.len()
    }

    /// Feeds one reading. Returns the derived readings it completed (none or
    /// one): readings of other devices or without the float measurement are
    /// ignored. An error (inference failed, non-finite score) still consumes
    /// the window's `hop` samples, so one bad window does not repeat.
    pub fn observe(&mut self, reading: &Reading) -> Result<Vec<Reading>, MlError> {
        if !glob_match(&self.cfg.device, reading.device.as_str()) {
            return Ok(Vec::new());
        }
        // The first float measurement with the name; a reading has one per name.
        let Some(raw) = reading.measurements.iter().find_map(|m| match m.value {
            Some(Value::Float(v)) if m.name == self.cfg.measurement => Some(v),
            _ => None,
        }) else {
            return Ok(Vec::new());
        };
        let value = match self.cfg.normalize {
            Some(n) => (raw - n.mean) / n.std,
            None => raw,
        } as f32;
        if !raw.is_finite() || !value.is_finite() {
            self.stats.skipped += 1;
            return Ok(Vec::new());
        }

        self.clock += 1;
        let now = self.clock;
        let window = self.cfg.window;
        let dev = match self.devices.get_mut(&reading.device) {
            Some(dev) => {
                self.by_age.remove(&dev.last_seen);
                dev
            }
            None => {
                if self.devices.len() >= self.cfg.max_devices {
                    if let Some((_, oldest)) = self.by_age.pop_first() {
                        self.devices.remove(&oldest);
                        self.stats.evicted_devices += 1;
                    }
                }
                self.devices
                    .entry(reading.device.clone())
                    .or_insert_with(|| DeviceWindow {
                        samples: VecDeque::with_capacity(window),
                        last_seen: now,
                    })
            }
        };
        dev.last_seen = now;
        self.by_age.insert(now, reading.device.clone());
        dev.samples.push_back(value);
        if dev.samples.len() < window {
            return Ok(Vec::new());
        }

        let input: Vec<f32> = dev.samples.iter().copied().collect();
        dev.samples.drain(..self.hop);
        let score = self.score(input)?;
        let anomalous = score > self.cfg.threshold;
        self.stats.inferences += 1;
        if anomalous {
            self.stats.anomalies += 1;
        }
        let mut meta = Metadata::default();
        meta.extra
            .insert("derived_by".to_owned(), self.derived_by.clone());
        Ok(vec![Reading {
            device: reading.device.clone(),
            time: reading.time,
            measurements: vec![
                Measurement::float(self.cfg.output_measurement.clone(), None, score),
                Measurement {
                    name: ANOMALOUS.to_owned(),
                    unit: None,
                    value: Some(Value::Bool(anomalous)),
                    sum: None,
                },
            ],
            meta,
        }])
    }

    fn score(&self, input: Vec<f32>) -> Result<f64, MlError> {
        let x = Tensor::new(self.model.input_shape().to_vec(), input)?;
        let y = self.model.run(&x)?;
        let score = match self.cfg.score {
            ScoreKind::ReconstructionMse => {
                if y.shape() != x.shape() {
                    return Err(MlError::Shape {
                        expected: x.shape().to_vec(),
                        got: y.shape().to_vec(),
                    });
                }
                let sum: f64 = x
                    .data()
                    .iter()
                    .zip(y.data())
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum();
                sum / x.data().len() as f64
            }
            ScoreKind::Output => match y.data() {
                [v] => f64::from(*v),
                _ => {
                    return Err(MlError::Shape {
                        expected: vec![1],
                        got: y.shape().to_vec(),
                    })
                }
            },
        };
        if !score.is_finite() {
            return Err(MlError::NonFiniteScore {
                stage: self.cfg.name.clone(),
                score,
            });
        }
        Ok(score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testonnx::{self, vibration_ae};
    use gatewayd_model::Timestamp;

    fn ae() -> Arc<Model> {
        Arc::new(Model::load("vibration-ae", &vibration_ae::bytes()).unwrap())
    }

    /// Output score = mean of the window (an `[1, n]` → `[1, 1]` model).
    fn mean_model(n: usize) -> Arc<Model> {
        Arc::new(Model::load("mean", &testonnx::dot(&vec![1.0 / n as f32; n])).unwrap())
    }

    fn reading(device: &str, t: i64, name: &str, v: f64) -> Reading {
        Reading::new(
            device.parse().unwrap(),
            Timestamp(t),
            vec![Measurement::float(name, Some("m/s2"), v)],
        )
    }

    fn mean_cfg(n: usize) -> AnomalyConfig {
        let mut cfg = AnomalyConfig::new("m", "v", n, 0.5);
        cfg.score = ScoreKind::Output;
        cfg
    }

    /// Feeds `values` for one device; returns everything emitted.
    fn feed(stage: &mut AnomalyStage, device: &str, values: &[f64]) -> Vec<Reading> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            out.extend(
                stage
                    .observe(&reading(device, i as i64 * 1000, "v", *v))
                    .unwrap(),
            );
        }
        out
    }

    fn score(r: &Reading) -> f64 {
        match r.measurements[0].value {
            Some(Value::Float(v)) => v,
            ref other => panic!("score is {other:?}"),
        }
    }

    fn flag(r: &Reading) -> bool {
        assert_eq!(r.measurements[1].name, ANOMALOUS);
        match r.measurements[1].value {
            Some(Value::Bool(b)) => b,
            ref other => panic!("flag is {other:?}"),
        }
    }

    #[test]
    fn config_from_toml_like_json_with_defaults() {
        let cfg: AnomalyConfig = serde_json::from_str(
            r#"{"name": "pump", "measurement": "vibration", "window": 32, "threshold": 0.0016}"#,
        )
        .unwrap();
        assert_eq!(cfg, AnomalyConfig::new("pump", "vibration", 32, 0.0016));
        assert_eq!(cfg.device, "*");
        assert_eq!(cfg.output_measurement, "anomaly_score");
        assert_eq!(cfg.max_devices, 10_000);
        assert_eq!(cfg.score, ScoreKind::ReconstructionMse);

        let cfg: AnomalyConfig = serde_json::from_str(
            r#"{"name": "p", "device": "coap:pump-*", "measurement": "v", "window": 4,
                "hop": 2, "threshold": 1, "score": "output",
                "normalize": {"mean": 1, "std": 2}, "output_measurement": "s",
                "max_devices": 3}"#,
        )
        .unwrap();
        assert_eq!(cfg.hop, Some(2));
        assert_eq!(cfg.score, ScoreKind::Output);
        assert_eq!(
            cfg.normalize,
            Some(Normalize {
                mean: 1.0,
                std: 2.0
            })
        );

        let unknown = serde_json::from_str::<AnomalyConfig>(
            r#"{"name": "p", "measurement": "v", "window": 4, "threshold": 1, "windw": 3}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn new_validates_against_the_model() {
        let check = |cfg: AnomalyConfig, model: Arc<Model>, needle: &str| {
            let err = AnomalyStage::new(cfg, model).unwrap_err();
            assert!(matches!(err, MlError::Config { .. }), "{err:?}");
            assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        };
        let ok = AnomalyConfig::new("a", "v", 32, 0.0016);
        assert!(AnomalyStage::new(ok.clone(), ae()).is_ok());
        check(
            AnomalyConfig {
                window: 16,
                ..ok.clone()
            },
            ae(),
            "[1, 32]",
        );
        check(
            AnomalyConfig {
                hop: Some(0),
                ..ok.clone()
            },
            ae(),
            "hop",
        );
        check(
            AnomalyConfig {
                hop: Some(33),
                ..ok.clone()
            },
            ae(),
            "hop",
        );
        check(
            AnomalyConfig {
                threshold: f64::NAN,
                ..ok.clone()
            },
            ae(),
            "threshold",
        );
        check(
            AnomalyConfig {
                name: String::new(),
                ..ok.clone()
            },
            ae(),
            "name",
        );
        check(
            AnomalyConfig {
                measurement: String::new(),
                ..ok.clone()
            },
            ae(),
            "measurement",
        );
        check(
            AnomalyConfig {
                device: String::new(),
                ..ok.clone()
            },
            ae(),
            "device",
        );
        check(
            AnomalyConfig {
                max_devices: 0,
                ..ok.clone()
            },
            ae(),
            "max_devices",
        );
        check(
            AnomalyConfig {
                output_measurement: ANOMALOUS.into(),
                ..ok.clone()
            },
            ae(),
            "output_measurement",
        );
        let bad_norm = Some(Normalize {
            mean: 0.0,
            std: 0.0,
        });
        check(
            AnomalyConfig {
                normalize: bad_norm,
                ..ok.clone()
            },
            ae(),
            "std",
        );
        // Score kind vs output shape.
        check(
            AnomalyConfig {
                score: ScoreKind::Output,
                ..ok.clone()
            },
            ae(),
            "single-value",
        );
        check(
            AnomalyConfig::new("m", "v", 8, 1.0),
            mean_model(8),
            "shaped like the input",
        );
        assert!(AnomalyStage::new(mean_cfg(8), mean_model(8)).is_ok());
    }

    #[test]
    fn tumbling_windows() {
        let mut stage = AnomalyStage::new(mean_cfg(4), mean_model(4)).unwrap();
        let out = feed(
            &mut stage,
            "coap:a",
            &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 9.0],
        );
        assert_eq!(out.len(), 2);
        // At the time of each window's last sample.
        assert_eq!(out[0].time, Timestamp(3000));
        assert_eq!(out[1].time, Timestamp(7000));
        assert!((score(&out[0]) - 1.0).abs() < 1e-6);
        assert!(score(&out[1]).abs() < 1e-6);
        assert!(flag(&out[0]) && !flag(&out[1]));
        let r = &out[0];
        assert_eq!(r.device.as_str(), "coap:a");
        assert_eq!(r.measurements[0].name, "anomaly_score");
        assert_eq!(r.measurements[0].unit, None);
        assert_eq!(
            r.meta.extra.get("derived_by").map(String::as_str),
            Some("anomaly:m")
        );
        let stats = stage.stats();
        assert_eq!(
            (stats.inferences, stats.anomalies, stats.skipped),
            (2, 1, 0)
        );
    }

    #[test]
    fn sliding_windows() {
        let cfg = AnomalyConfig {
            hop: Some(1),
            ..mean_cfg(4)
        };
        let mut stage = AnomalyStage::new(cfg, mean_model(4)).unwrap();
        let out = feed(&mut stage, "coap:a", &[0.0, 4.0, 8.0, 12.0, 16.0, 20.0]);
        let scores: Vec<f64> = out.iter().map(score).collect();
        assert_eq!(scores.len(), 3);
        for (got, want) in scores.iter().zip([6.0, 10.0, 14.0]) {
            assert!((got - want).abs() < 1e-5, "{scores:?}");
        }

        let cfg = AnomalyConfig {
            hop: Some(2),
            ..mean_cfg(4)
        };
        let mut stage = AnomalyStage::new(cfg, mean_model(4)).unwrap();
        let out = feed(&mut stage, "coap:a", &[0.0; 10]);
        // Windows end at samples 4, 6, 8, 10.
        let times: Vec<i64> = out.iter().map(|r| r.time.0).collect();
        assert_eq!(times, vec![3000, 5000, 7000, 9000]);
    }

    #[test]
    fn devices_have_separate_windows() {
        let mut stage = AnomalyStage::new(mean_cfg(3), mean_model(3)).unwrap();
        let mut out = Vec::new();
        for i in 0..2 {
            out.extend(stage.observe(&reading("coap:a", i, "v", 1.0)).unwrap());
            out.extend(stage.observe(&reading("coap:b", i, "v", 5.0)).unwrap());
        }
        assert!(out.is_empty());
        assert_eq!(stage.tracked_devices(), 2);
        let out = stage.observe(&reading("coap:b", 9, "v", 5.0)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].device.as_str(), "coap:b");
        assert!((score(&out[0]) - 5.0).abs() < 1e-5);
        let out = stage.observe(&reading("coap:a", 9, "v", 1.0)).unwrap();
        assert_eq!(out[0].device.as_str(), "coap:a");
        assert!((score(&out[0]) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn ignores_other_devices_measurements_and_types() {
        let cfg = AnomalyConfig {
            device: "coap:pump-?".into(),
            ..mean_cfg(2)
        };
        let mut stage = AnomalyStage::new(cfg, mean_model(2)).unwrap();
        let mut out = Vec::new();
        for i in 0..4 {
            out.extend(
                stage
                    .observe(&reading("coap:pump-10", i, "v", 1.0))
                    .unwrap(),
            );
            out.extend(stage.observe(&reading("lora:pump-1", i, "v", 1.0)).unwrap());
            out.extend(
                stage
                    .observe(&reading("coap:pump-1", i, "temperature", 1.0))
                    .unwrap(),
            );
            let mut r = reading("coap:pump-1", i, "x", 0.0);
            r.measurements[0] = Measurement {
                name: "v".into(),
                unit: None,
                value: Some(Value::Bool(true)),
                sum: None,
            };
            out.extend(stage.observe(&r).unwrap());
        }
        assert!(out.is_empty());
        assert_eq!(stage.tracked_devices(), 0);
        assert_eq!(stage.stats(), AnomalyStats::default());
        // A reading with several measurements: the named float one is used.
        let mut r = reading("coap:pump-1", 1, "temperature", 99.0);
        r.measurements.push(Measurement::float("v", None, 3.0));
        stage.observe(&r).unwrap();
        let out = stage.observe(&r).unwrap();
        assert!((score(&out[0]) - 3.0).abs() < 1e-5);
    }

    #[test]
    fn non_finite_samples_are_skipped_and_counted() {
        let cfg = AnomalyConfig {
            normalize: Some(Normalize {
                mean: 0.0,
                std: 1e-300,
            }),
            ..mean_cfg(2)
        };
        let mut stage = AnomalyStage::new(cfg, mean_model(2)).unwrap();
        // NaN, infinity, and a finite value that overflows f32 once normalised.
        let out = feed(
            &mut stage,
            "coap:a",
            &[f64::NAN, f64::INFINITY, 1.0, 0.0, 0.0],
        );
        assert_eq!(stage.stats().skipped, 3);
        assert_eq!(out.len(), 1);
        assert!(score(&out[0]).abs() < 1e-6);
    }

    #[test]
    fn normalizes_before_inference() {
        let cfg = AnomalyConfig {
            normalize: Some(Normalize {
                mean: 10.0,
                std: 2.0,
            }),
            output_measurement: "score".into(),
            ..mean_cfg(2)
        };
        let mut stage = AnomalyStage::new(cfg, mean_model(2)).unwrap();
        let out = feed(&mut stage, "coap:a", &[12.0, 14.0]);
        assert_eq!(out[0].measurements[0].name, "score");
        assert!((score(&out[0]) - 1.5).abs() < 1e-6);
    }

    #[test]
    fn device_count_is_bounded() {
        let cfg = AnomalyConfig {
            max_devices: 2,
            ..mean_cfg(2)
        };
        let mut stage = AnomalyStage::new(cfg, mean_model(2)).unwrap();
        stage.observe(&reading("coap:a", 0, "v", 1.0)).unwrap();
        stage.observe(&reading("coap:b", 0, "v", 1.0)).unwrap();
        // a is heard from again: b is now the least recently heard.
        let out = stage.observe(&reading("coap:a", 1, "v", 1.0)).unwrap();
        assert_eq!(out.len(), 1);
        stage.observe(&reading("coap:a", 2, "v", 1.0)).unwrap();
        stage.observe(&reading("coap:c", 0, "v", 1.0)).unwrap();
        assert_eq!(stage.tracked_devices(), 2);
        assert_eq!(stage.stats().evicted_devices, 1);
        // a kept its sample: one more completes its window.
        assert_eq!(
            stage
                .observe(&reading("coap:a", 3, "v", 1.0))
                .unwrap()
                .len(),
            1
        );
        // b lost its sample: one more is not a full window.
        assert!(stage
            .observe(&reading("coap:b", 1, "v", 1.0))
            .unwrap()
            .is_empty());
        assert_eq!(stage.tracked_devices(), 2);
        assert_eq!(stage.stats().evicted_devices, 2);

        // Many devices: never more than the bound.
        for i in 0..100 {
            stage
                .observe(&reading(&format!("coap:d{i}"), 0, "v", 1.0))
                .unwrap();
        }
        assert_eq!(stage.tracked_devices(), 2);
        assert_eq!(stage.by_age.len(), 2);
    }

    #[test]
    fn example_model_flags_anomalous_windows() {
        let (threshold, healthy) = vibration_ae::windows("healthy.json");
        let (_, anomalous) = vibration_ae::windows("anomalous.json");
        let cfg = AnomalyConfig {
            device: "coap:pump-*".into(),
            ..AnomalyConfig::new("pump", "vibration", 32, threshold)
        };
        let mut stage = AnomalyStage::new(cfg, ae()).unwrap();
        let mut t = 0;
        for (windows, want) in [(&healthy, false), (&anomalous, true)] {
            for w in windows {
                let mut out = Vec::new();
                for &x in &w.x {
                    t += 1000;
                    out.extend(
                        stage
                            .observe(&reading("coap:pump-1", t, "vibration", x.into()))
                            .unwrap(),
                    );
                }
                assert_eq!(out.len(), 1, "{}", w.kind);
                assert_eq!(out[0].time, Timestamp(t));
                assert_eq!(flag(&out[0]), want, "{}: score {}", w.kind, score(&out[0]));
                assert!((score(&out[0]) - w.mse).abs() / w.mse < 1e-4);
            }
        }
        let stats = stage.stats();
        assert_eq!(stats.inferences as usize, healthy.len() + anomalous.len());
        assert_eq!(stats.anomalies as usize, anomalous.len());
    }
}
