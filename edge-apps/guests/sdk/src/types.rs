//! The WIT types (re-exported) and constructors/accessors for them.

use alloc::{string::String, vec::Vec};

pub use crate::bindings::gatewayd::edge::types::{
    Alert, Level, Measurement, Metadata, Output, Reading, Severity, Tensor, Value, Verdict, Window,
};

impl Value {
    /// The number, if this is a `float`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Data(v) => Some(v),
            _ => None,
        }
    }
}

impl Measurement {
    /// A measurement with a value and no sum. `unit` is a SenML unit
    /// (`Some("Cel")`) or `None`.
    pub fn new(name: impl Into<String>, unit: Option<&str>, value: Value) -> Self {
        Measurement {
            name: name.into(),
            unit: unit.map(String::from),
            value: Some(value),
            sum: None,
        }
    }

    /// `Measurement::float("temperature", Some("Cel"), 21.5)`
    pub fn float(name: impl Into<String>, unit: Option<&str>, v: f64) -> Self {
        Self::new(name, unit, Value::Float(v))
    }

    pub fn boolean(name: impl Into<String>, v: bool) -> Self {
        Self::new(name, None, Value::Boolean(v))
    }

    pub fn text(name: impl Into<String>, v: impl Into<String>) -> Self {
        Self::new(name, None, Value::Text(v.into()))
    }

    pub fn data(name: impl Into<String>, v: impl Into<Vec<u8>>) -> Self {
        Self::new(name, None, Value::Data(v.into()))
    }

    /// The value as a number, if it is a `float`.
    pub fn as_f64(&self) -> Option<f64> {
        self.value.as_ref().and_then(Value::as_f64)
    }

    /// The unit, `None` when unset.
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }
}

// A generated type: `additional_derives` would add `Default` to every type.
#[allow(clippy::derivable_impls)]
impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            rssi: None,
            snr: None,
            battery: None,
            gateway_eui: None,
            source: None,
            extra: Vec::new(),
        }
    }
}

impl Reading {
    /// A reading with empty metadata (the host sets `meta.source` on app
    /// output).
    pub fn new(device: impl Into<String>, time_us: i64, measurements: Vec<Measurement>) -> Self {
        Reading {
            device: device.into(),
            time_us,
            measurements,
            meta: Metadata::default(),
        }
    }

    /// The first measurement called `name`.
    pub fn measurement(&self, name: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.name == name)
    }

    /// The value of the first measurement called `name`, if it is a `float`.
    pub fn float(&self, name: &str) -> Option<f64> {
        self.measurement(name).and_then(Measurement::as_f64)
    }

    /// The value of the first measurement called `name`, if it is `data`.
    pub fn data(&self, name: &str) -> Option<&[u8]> {
        self.measurement(name)
            .and_then(|m| m.value.as_ref())
            .and_then(Value::as_bytes)
    }

    /// The value of the first measurement called `name`, if it is `text`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.measurement(name)
            .and_then(|m| m.value.as_ref())
            .and_then(Value::as_str)
    }

    /// The value of `meta.extra[key]`.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.meta
            .extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Alert {
    pub fn new(
        device: impl Into<String>,
        time_us: i64,
        severity: Severity,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Alert {
            device: device.into(),
            time_us,
            severity,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl Window {
    /// Length in microseconds.
    pub fn duration_us(&self) -> i64 {
        self.end_us - self.start_us
    }
}

impl Tensor {
    /// A tensor; `data.len()` must equal the product of `shape`.
    pub fn new(shape: impl Into<Vec<u32>>, data: impl Into<Vec<f32>>) -> Self {
        Tensor {
            shape: shape.into(),
            data: data.into(),
        }
    }
}

impl Default for Output {
    fn default() -> Self {
        Output::pass_all()
    }
}

impl Output {
    /// Every input reading passes; nothing emitted, no alerts.
    pub fn pass_all() -> Self {
        Output {
            verdicts: Vec::new(),
            emit: Vec::new(),
            alerts: Vec::new(),
        }
    }

    /// Sets the verdict of input reading `index` (earlier readings without a
    /// verdict pass).
    pub fn set_verdict(&mut self, index: usize, verdict: Verdict) {
        if self.verdicts.len() <= index {
            self.verdicts.resize(index + 1, Verdict::Pass);
        }
        self.verdicts[index] = verdict;
    }

    pub fn emit(&mut self, reading: Reading) {
        self.emit.push(reading);
    }

    pub fn alert(&mut self, alert: Alert) {
        self.alerts.push(alert);
    }
}
