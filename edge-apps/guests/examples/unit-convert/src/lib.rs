//! Stream delivery: converts every measurement whose unit is `from` to
//! `to` and replaces the reading (verdict `replace`); readings with nothing
//! to convert pass unchanged.
//!
//! Units (SenML spellings where SenML registers one):
//! * temperature: `Cel`, `K` (SenML) and Fahrenheit, which SenML does not
//!   register: spelled `degF`; `°F` and the UCUM `[degF]` are accepted as
//!   the same unit. The converted measurement carries `to` as configured.
//! * pressure: `Pa` (SenML), `hPa`, `kPa`.
//!
//! Anything else (e.g. `%RH`) passes through. `sum` is scaled for pure
//! scale conversions (Pa↔hPa↔kPa) and dropped for offset conversions
//! (temperatures), where an integrated sum has no converted equivalent.
#![no_std]

extern crate alloc;

use alloc::{format, string::String, vec::Vec};
use gatewayd_edge_sdk::{export_app, App, Config, Output, Reading, Verdict, Window};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dimension {
    Temperature,
    Pressure,
}

/// `si = value * scale + offset` (kelvin, pascal).
#[derive(Clone, Copy, Debug)]
struct Unit {
    dim: Dimension,
    scale: f64,
    offset: f64,
}

const F_SCALE: f64 = 5.0 / 9.0;

fn unit(name: &str) -> Option<Unit> {
    let (dim, scale, offset) = match name {
        "K" => (Dimension::Temperature, 1.0, 0.0),
        "Cel" => (Dimension::Temperature, 1.0, 273.15),
        "degF" | "°F" | "[degF]" => (Dimension::Temperature, F_SCALE, 459.67 * F_SCALE),
        "Pa" => (Dimension::Pressure, 1.0, 0.0),
        "hPa" => (Dimension::Pressure, 100.0, 0.0),
        "kPa" => (Dimension::Pressure, 1000.0, 0.0),
        _ => return None,
    };
    Some(Unit { dim, scale, offset })
}

fn canonical(u: &str) -> &str {
    match u {
        "°F" | "[degF]" => "degF",
        other => other,
    }
}

/// Whether two unit names mean the same unit (Fahrenheit has aliases).
fn same_unit(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

struct UnitConvert {
    from: String,
    to: String,
    from_unit: Unit,
    to_unit: Unit,
    decimals: Option<u32>,
    measurements: Option<Vec<String>>,
}

/// Rounds half away from zero (no `f64::round` in `core`).
fn round(v: f64, decimals: u32) -> f64 {
    let p = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9][decimals as usize];
    let y = v * p;
    // Beyond 2^52 every f64 is already an integer (and NaN stays NaN).
    if y.is_nan() || y.abs() >= 4_503_599_627_370_496.0 {
        return v;
    }
    let r = if y >= 0.0 {
        (y + 0.5) as i64
    } else {
        (y - 0.5) as i64
    };
    r as f64 / p
}

impl UnitConvert {
    fn convert(&self, v: f64) -> f64 {
        let si = v * self.from_unit.scale + self.from_unit.offset;
        let out = (si - self.to_unit.offset) / self.to_unit.scale;
        self.decimals.map_or(out, |d| round(out, d))
    }

    fn convert_sum(&self, s: f64) -> Option<f64> {
        (self.from_unit.offset == 0.0 && self.to_unit.offset == 0.0).then(|| {
            let out = s * self.from_unit.scale / self.to_unit.scale;
            self.decimals.map_or(out, |d| round(out, d))
        })
    }

    /// The converted reading, or `None` if nothing in it is in `from`.
    fn convert_reading(&self, r: &Reading) -> Option<Reading> {
        let mut out = r.clone();
        let mut changed = false;
        for m in &mut out.measurements {
            if let Some(names) = &self.measurements {
                if !names.contains(&m.name) {
                    continue;
                }
            }
            if !m.unit().is_some_and(|u| same_unit(u, &self.from)) {
                continue;
            }
            let Some(v) = m.as_f64() else { continue };
            m.value = Some(gatewayd_edge_sdk::Value::Float(self.convert(v)));
            m.sum = m.sum.and_then(|s| self.convert_sum(s));
            m.unit = Some(self.to.clone());
            changed = true;
        }
        changed.then_some(out)
    }
}

impl App for UnitConvert {
    fn init(config: &Config) -> Result<Self, String> {
        let from = config.require_str("from")?;
        let to = config.require_str("to")?;
        let known = "Cel, K, degF (°F, [degF]), Pa, hPa, kPa";
        let from_unit = unit(from)
            .ok_or_else(|| format!("unsupported `from` unit {from:?} (known: {known})"))?;
        let to_unit =
            unit(to).ok_or_else(|| format!("unsupported `to` unit {to:?} (known: {known})"))?;
        if from_unit.dim != to_unit.dim {
            return Err(format!("cannot convert {from} to {to}"));
        }
        let decimals = match config.u64("decimals")? {
            Some(d) if d > 9 => return Err("`decimals` must be 0..=9".into()),
            d => d.map(|d| d as u32),
        };
        Ok(UnitConvert {
            from: from.into(),
            to: to.into(),
            from_unit,
            to_unit,
            decimals,
            measurements: config.str_list("measurements")?,
        })
    }

    fn process(
        &mut self,
        readings: Vec<Reading>,
        _window: Option<Window>,
    ) -> Result<Output, String> {
        let mut out = Output::pass_all();
        for (i, r) in readings.iter().enumerate() {
            if let Some(converted) = self.convert_reading(r) {
                out.set_verdict(i, Verdict::Replace(converted));
            }
        }
        Ok(out)
    }
}

export_app!(UnitConvert);
