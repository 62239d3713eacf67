use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DeviceId;

/// Microseconds since the UNIX epoch (UTC).
///
/// Integer so that readings round-trip exactly through storage and the wire;
/// SenML's floating-point seconds are converted at the SenML boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_secs_f64(secs: f64) -> Self {
        Timestamp((secs * 1_000_000.0).round() as i64)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms.saturating_mul(1000))
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }
}

/// A measured value: SenML `v`, `vb`, `vs` or `vd`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Bool(bool),
    String(String),
    Data(Vec<u8>),
}

/// One named quantity within a reading, e.g. `temperature` in `Cel`.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// SenML name relative to the device (e.g. `temperature`, `3303/0/5700`).
    pub name: String,
    /// SenML unit symbol (RFC 8428 §12.1 registry), e.g. `Cel`, `%RH`, `Pa`.
    pub unit: Option<String>,
    /// The value; `None` only when `sum` carries the information.
    pub value: Option<Value>,
    /// SenML `s`: integrated sum of the value over time.
    pub sum: Option<f64>,
}

impl Measurement {
    pub fn float(name: impl Into<String>, unit: Option<&str>, v: f64) -> Self {
        Measurement {
            name: name.into(),
            unit: unit.map(str::to_owned),
            value: Some(Value::Float(v)),
            sum: None,
        }
    }
}

/// Transport metadata: how the reading reached the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Received signal strength, dBm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<f64>,
    /// Signal-to-noise ratio, dB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snr: Option<f64>,
    /// Battery level, percent (0–100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
    /// EUI of the radio gateway/forwarder that heard the device (LoRaWAN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_eui: Option<String>,
    /// Name of the adapter instance that produced the reading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Anything else a transport wants to keep (firmware version, frame
    /// counter, forwarder list, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// One observation of one device at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: DeviceId,
    pub time: Timestamp,
    pub measurements: Vec<Measurement>,
    pub meta: Metadata,
}

impl Reading {
    pub fn new(device: DeviceId, time: Timestamp, measurements: Vec<Measurement>) -> Self {
        Reading {
            device,
            time,
            measurements,
            meta: Metadata::default(),
        }
    }
}
