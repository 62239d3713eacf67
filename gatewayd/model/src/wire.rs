//! The gateway → cloud wire format (version 1), documented in
//! `docs/protocol.md`.
//!
//! A batch is one MQTT PUBLISH payload:
//!
//! ```json
//! {"v":1,"gw":"gw-01","r":[
//!   {"q":42,"d":"coap:sensor-7","t":1732460000123456,
//!    "m":{"rssi":-70.0},
//!    "e":[{"n":"temperature","u":"Cel","v":21.5}]}
//! ]}
//! ```
//!
//! `q` is the gateway's monotonic sequence number (the cloud deduplicates on
//! `(gw, q)`), `t` is microseconds since the UNIX epoch, `e` holds SenML-style
//! measurement records (`n`, `u`, one of `v`/`vb`/`vs`/`vd`, optional `s`).
//!
//! The buffer stores each reading already encoded ([`encode_reading`]: the
//! object without `q`), and [`BatchWriter`] splices the sequence number in,
//! so forwarding never re-serializes a reading.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{DeviceId, Measurement, Metadata, Reading, Timestamp, Value};

pub const WIRE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("invalid batch JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported wire version {0} (expected {WIRE_VERSION})")]
    Version(u32),
    #[error("reading {seq}: {reason}")]
    Reading { seq: u64, reason: String },
    #[error("invalid reading: {0}")]
    Invalid(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct WireMeasurement {
    n: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    u: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    v: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    vb: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    vs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    vd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    s: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireReading {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    q: Option<u64>,
    d: DeviceId,
    t: i64,
    #[serde(skip_serializing_if = "is_default_meta", default)]
    m: Metadata,
    e: Vec<WireMeasurement>,
}

fn is_default_meta(m: &Metadata) -> bool {
    *m == Metadata::default()
}

#[derive(Debug, Deserialize)]
struct WireBatch {
    v: u32,
    gw: String,
    r: Vec<WireReading>,
}

/// Checks what the wire format cannot carry: at least one measurement,
/// finite numbers, non-empty names.
pub fn validate(reading: &Reading) -> Result<(), WireError> {
    if reading.measurements.is_empty() {
        return Err(WireError::Invalid(format!(
            "reading from {} has no measurements",
            reading.device
        )));
    }
    for m in &reading.measurements {
        if m.name.is_empty() {
            return Err(WireError::Invalid(format!(
                "reading from {} has a measurement without a name",
                reading.device
            )));
        }
        let nonfinite = matches!(m.value, Some(Value::Float(v)) if !v.is_finite())
            || matches!(m.sum, Some(s) if !s.is_finite());
        if nonfinite {
            return Err(WireError::Invalid(format!(
                "measurement {:?} of {} is not a finite number",
                m.name, reading.device
            )));
        }
        if m.value.is_none() && m.sum.is_none() {
            return Err(WireError::Invalid(format!(
                "measurement {:?} of {} has neither value nor sum",
                m.name, reading.device
            )));
        }
    }
    Ok(())
}

fn to_wire(reading: &Reading, q: Option<u64>) -> WireReading {
    WireReading {
        q,
        d: reading.device.clone(),
        t: reading.time.0,
        m: reading.meta.clone(),
        e: reading
            .measurements
            .iter()
            .map(|m| {
                let mut w = WireMeasurement {
                    n: m.name.clone(),
                    u: m.unit.clone(),
                    v: None,
                    vb: None,
                    vs: None,
                    vd: None,
                    s: m.sum,
                };
                match &m.value {
                    Some(Value::Float(v)) => w.v = Some(*v),
                    Some(Value::Bool(b)) => w.vb = Some(*b),
                    Some(Value::String(s)) => w.vs = Some(s.clone()),
                    Some(Value::Data(d)) => {
                        w.vd = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d))
                    }
                    None => {}
                }
                w
            })
            .collect(),
    }
}

fn from_wire(w: WireReading) -> Result<(Option<u64>, Reading), String> {
    let mut measurements = Vec::with_capacity(w.e.len());
    for m in w.e {
        let kinds = [
            m.v.is_some(),
            m.vb.is_some(),
            m.vs.is_some(),
            m.vd.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if kinds > 1 {
            return Err(format!("measurement {:?} has more than one value", m.n));
        }
        let value = if let Some(v) = m.v {
            Some(Value::Float(v))
        } else if let Some(b) = m.vb {
            Some(Value::Bool(b))
        } else if let Some(s) = m.vs {
            Some(Value::String(s))
        } else if let Some(d) = m.vd {
            Some(Value::Data(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(d.trim_end_matches('='))
                    .map_err(|e| format!("measurement {:?}: vd is not base64url: {e}", m.n))?,
            ))
        } else {
            None
        };
        measurements.push(Measurement {
            name: m.n,
            unit: m.u,
            value,
            sum: m.s,
        });
    }
    let reading = Reading {
        device: w.d,
        time: Timestamp(w.t),
        measurements,
        meta: w.m,
    };
    validate(&reading).map_err(|e| e.to_string())?;
    Ok((w.q, reading))
}

/// Encodes one reading as a JSON object without a sequence number. This is
/// what the buffer stores.
pub fn encode_reading(reading: &Reading) -> Vec<u8> {
    serde_json::to_vec(&to_wire(reading, None)).expect("serializing a reading cannot fail")
}

/// Decodes what [`encode_reading`] produced.
pub fn decode_reading(bytes: &[u8]) -> Result<Reading, WireError> {
    let w: WireReading = serde_json::from_slice(bytes)?;
    from_wire(w).map(|(_, r)| r).map_err(WireError::Invalid)
}

/// Builds a batch payload from stored (already encoded) readings.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: usize,
}

impl BatchWriter {
    pub fn new(gateway_id: &str) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(b"{\"v\":1,\"gw\":");
        serde_json::to_writer(&mut buf, gateway_id).expect("writing to a Vec cannot fail");
        buf.extend_from_slice(b",\"r\":[");
        BatchWriter { buf, count: 0 }
    }

    /// Bytes the batch would have if finished now.
    pub fn len_bytes(&self) -> usize {
        self.buf.len() + 2
    }

    /// Upper bound of the bytes pushing `encoded` adds: `,{"q":` + up to
    /// 20 digits + `,` + the object without its `{`.
    pub fn cost(encoded: &[u8]) -> usize {
        encoded.len() + 27
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Appends a stored reading. `encoded` must be the output of
    /// [`encode_reading`] (a JSON object).
    pub fn push(&mut self, seq: u64, encoded: &[u8]) {
        debug_assert!(encoded.first() == Some(&b'{'));
        if self.count > 0 {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(b"{\"q\":");
        self.buf.extend_from_slice(seq.to_string().as_bytes());
        if encoded.len() > 2 {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(&encoded[1..]);
        self.count += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"]}");
        self.buf
    }
}

/// A decoded batch: the gateway and its sequenced readings.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub gateway: String,
    pub readings: Vec<(u64, Reading)>,
}

/// Decodes and validates a batch payload.
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, WireError> {
    let b: WireBatch = serde_json::from_slice(bytes)?;
    if b.v != WIRE_VERSION {
        return Err(WireError::Version(b.v));
    }
    let mut readings = Vec::with_capacity(b.r.len());
    for w in b.r {
        let Some(seq) = w.q else {
            return Err(WireError::Invalid(
                "a reading has no sequence number".into(),
            ));
        };
        let (_, r) = from_wire(w).map_err(|reason| WireError::Reading { seq, reason })?;
        readings.push((seq, r));
    }
    Ok(Batch {
        gateway: b.gw,
        readings,
    })
}
