//! Window delivery: for each device and each numeric measurement in the
//! window, emits one reading at the window's end with `<name>_mean`,
//! `<name>_min`, `<name>_max` (unit preserved) and `<name>_count` (no unit).
//! Non-numeric values are ignored. With `keep_originals = false` in the
//! manifest only the aggregates reach the buffer.
#![no_std]

extern crate alloc;

use alloc::{collections::BTreeMap, format, string::String, vec::Vec};
use gatewayd_edge_sdk::{export_app, App, Config, Measurement, Output, Reading, Window};

struct Downsample {
    count: bool,
}

struct Agg {
    unit: Option<String>,
    sum: f64,
    min: f64,
    max: f64,
    n: u64,
}

impl App for Downsample {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Downsample {
            count: config.bool_or("count", true)?,
        })
    }

    fn process(
        &mut self,
        readings: Vec<Reading>,
        window: Option<Window>,
    ) -> Result<Output, String> {
        // Stream delivery has no window: aggregate the batch and stamp it with
        // its last reading's time.
        let end_us = match window {
            Some(w) => w.end_us,
            None => readings.iter().map(|r| r.time_us).max().unwrap_or(0),
        };
        // Device -> measurement -> aggregate; BTreeMaps keep the output order
        // deterministic (sorted by device, then name).
        let mut by_device: BTreeMap<&str, BTreeMap<&str, Agg>> = BTreeMap::new();
        for r in &readings {
            for m in &r.measurements {
                let Some(v) = m.as_f64() else { continue };
                if v.is_nan() {
                    continue;
                }
                let aggs = by_device.entry(&r.device).or_default();
                let agg = aggs.entry(&m.name).or_insert_with(|| Agg {
                    unit: m.unit.clone(),
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    n: 0,
                });
                agg.sum += v;
                agg.min = agg.min.min(v);
                agg.max = agg.max.max(v);
                agg.n += 1;
            }
        }
        let mut out = Output::pass_all();
        for (device, aggs) in by_device {
            let mut ms = Vec::with_capacity(aggs.len() * 4);
            for (name, a) in aggs {
                let unit = a.unit.as_deref();
                ms.push(Measurement::float(
                    format!("{name}_mean"),
                    unit,
                    a.sum / a.n as f64,
                ));
                ms.push(Measurement::float(format!("{name}_min"), unit, a.min));
                ms.push(Measurement::float(format!("{name}_max"), unit, a.max));
                if self.count {
                    ms.push(Measurement::float(
                        format!("{name}_count"),
                        None,
                        a.n as f64,
                    ));
                }
            }
            out.emit(Reading::new(device, end_us, ms));
        }
        Ok(out)
    }
}

export_app!(Downsample);
