//! Raises an alert when a measurement crosses a threshold: once on the
//! edge, not on every reading. The per-device state (normal / above /
//! below) is kept in the app's key-value store, so a restart does not
//! re-alert. All readings pass unchanged.
#![no_std]

extern crate alloc;

use alloc::{collections::BTreeMap, format, string::String, vec::Vec};
use gatewayd_edge_sdk::{
    export_app, kv, warn, Alert, App, Config, Output, Reading, Severity, Window,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Normal = 0,
    Above = 1,
    Below = 2,
}

impl State {
    fn from_byte(b: u8) -> State {
        match b {
            1 => State::Above,
            2 => State::Below,
            _ => State::Normal,
        }
    }
}

struct ThresholdAlert {
    measurement: String,
    above: Option<f64>,
    below: Option<f64>,
    hysteresis: f64,
    severity: Severity,
    clear_alert: bool,
    /// Device -> state, read through from the kv store.
    states: BTreeMap<String, State>,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    match s {
        "info" => Ok(Severity::Info),
        "warning" => Ok(Severity::Warning),
        "critical" => Ok(Severity::Critical),
        other => Err(format!(
            "`severity` must be info, warning or critical, not {other:?}"
        )),
    }
}

impl ThresholdAlert {
    fn state(&mut self, device: &str) -> State {
        if let Some(s) = self.states.get(device) {
            return *s;
        }
        let s = kv::get(&key(device))
            .and_then(|v| v.first().copied())
            .map_or(State::Normal, State::from_byte);
        self.states.insert(device.into(), s);
        s
    }

    fn next(&self, current: State, v: f64) -> State {
        let above = self.above.is_some_and(|a| v > a);
        let below = self.below.is_some_and(|b| v < b);
        match (above, below, current) {
            (true, _, _) => State::Above,
            (_, true, _) => State::Below,
            // Hysteresis: stay in alarm until the value is back by the margin.
            (_, _, State::Above) if self.above.is_some_and(|a| v > a - self.hysteresis) => {
                State::Above
            }
            (_, _, State::Below) if self.below.is_some_and(|b| v < b + self.hysteresis) => {
                State::Below
            }
            _ => State::Normal,
        }
    }
}

fn key(device: &str) -> String {
    format!("state/{device}")
}

impl App for ThresholdAlert {
    fn init(config: &Config) -> Result<Self, String> {
        let above = config.f64("above")?;
        let below = config.f64("below")?;
        if above.is_none() && below.is_none() {
            return Err("set `above`, `below` or both".into());
        }
        if let (Some(a), Some(b)) = (above, below) {
            if b >= a {
                return Err(format!("`below` ({b}) must be less than `above` ({a})"));
            }
        }
        let hysteresis = config.f64_or("hysteresis", 0.0)?;
        if hysteresis.is_nan() || hysteresis < 0.0 {
            return Err("`hysteresis` must be >= 0".into());
        }
        Ok(ThresholdAlert {
            measurement: config.str_or("measurement", "temperature")?.into(),
            above,
            below,
            hysteresis,
            severity: parse_severity(config.str_or("severity", "warning")?)?,
            clear_alert: config.bool_or("clear_alert", false)?,
            states: BTreeMap::new(),
        })
    }

    fn process(
        &mut self,
        readings: Vec<Reading>,
        _window: Option<Window>,
    ) -> Result<Output, String> {
        let mut out = Output::pass_all();
        for r in &readings {
            let Some(m) = r.measurement(&self.measurement) else {
                continue;
            };
            let Some(v) = m.as_f64() else { continue };
            let current = self.state(&r.device);
            let next = self.next(current, v);
            if next == current {
                continue;
            }
            self.states.insert(r.device.clone(), next);
            if let Err(e) = kv::set(&key(&r.device), &[next as u8]) {
                warn!("cannot store the state of {}: {e}", r.device);
            }
            let unit = m.unit().map(|u| format!(" {u}")).unwrap_or_default();
            let alert = match next {
                State::Above => Some((
                    self.severity,
                    "above-threshold",
                    format!(
                        "{} {v}{unit} above {}",
                        self.measurement,
                        self.above.unwrap_or(v)
                    ),
                )),
                State::Below => Some((
                    self.severity,
                    "below-threshold",
                    format!(
                        "{} {v}{unit} below {}",
                        self.measurement,
                        self.below.unwrap_or(v)
                    ),
                )),
                State::Normal if self.clear_alert => Some((
                    Severity::Info,
                    "threshold-cleared",
                    format!("{} {v}{unit} back within limits", self.measurement),
                )),
                State::Normal => None,
            };
            if let Some((severity, code, message)) = alert {
                out.alert(Alert::new(
                    r.device.clone(),
                    r.time_us,
                    severity,
                    code,
                    message,
                ));
            }
        }
        Ok(out)
    }
}

export_app!(ThresholdAlert);
