//! SenML (RFC 8428) packs in JSON (`application/senml+json`, CoAP
//! content-format 110) and CBOR (`application/senml+cbor`, 112).
//!
//! Decoding is in three named steps, each with its own errors:
//! 1. [`decode_json`] / [`decode_cbor`]: bytes → raw [`Record`]s, checking
//!    types, limits and mandatory-to-understand (`…_`) fields;
//! 2. [`resolve`]: base fields applied (§4.6), names validated, relative
//!    times turned absolute against the caller's "now";
//! 3. [`to_readings`]: resolved records grouped by (device, time) into
//!    [`Reading`]s, the device taken from the base name.
//!
//! Not supported (rejected or ignored, documented in `docs/protocol.md`):
//! indefinite-length CBOR containers (rejected), `ut` (ignored).

use std::collections::HashMap;

use base64::Engine as _;
use minicbor::data::Type;

use crate::id::is_name_char;
use crate::{DeviceId, Measurement, Reading, Timestamp, Transport, Value};

/// The SenML version this implementation understands (`bver`).
pub const SENML_VERSION: i64 = 10;
/// CoAP content-format for `application/senml+json`.
pub const CONTENT_FORMAT_JSON: u16 = 110;
/// CoAP content-format for `application/senml+cbor`.
pub const CONTENT_FORMAT_CBOR: u16 = 112;
/// SenML times below 2^28 are relative to "now" (RFC 8428 §4.5.3).
pub const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;

/// Bounds applied while decoding untrusted packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_records: usize,
    pub max_name_len: usize,
    pub max_string_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_records: 1024,
            max_name_len: 255,
            max_string_len: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SenmlError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not valid CBOR: {0}")]
    Cbor(String),
    #[error("a SenML pack must be an array of records")]
    NotAnArray,
    #[error("the SenML pack is empty")]
    Empty,
    #[error("the SenML pack has more than {max} records")]
    TooManyRecords { max: usize },
    #[error("record {index}: {reason}")]
    Record { index: usize, reason: String },
    #[error("record {index}: unsupported SenML version {version} (this gateway supports up to {SENML_VERSION})")]
    UnsupportedVersion { index: usize, version: i64 },
    #[error("record {index}: field {field:?} must be understood but is not supported")]
    MandatoryField { index: usize, field: String },
    #[error("trailing bytes after the SenML pack")]
    TrailingBytes,
}

fn rec_err(index: usize, reason: impl Into<String>) -> SenmlError {
    SenmlError::Record {
        index,
        reason: reason.into(),
    }
}

/// One record as it appears on the wire, before base-field resolution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub bn: Option<String>,
    pub bt: Option<f64>,
    pub bu: Option<String>,
    pub bv: Option<f64>,
    pub bs: Option<f64>,
    pub bver: Option<i64>,
    pub n: Option<String>,
    pub u: Option<String>,
    pub v: Option<f64>,
    pub vs: Option<String>,
    pub vb: Option<bool>,
    pub vd: Option<Vec<u8>>,
    pub s: Option<f64>,
    pub t: Option<f64>,
    pub ut: Option<f64>,
}

impl Record {
    fn has_value(&self) -> bool {
        self.v.is_some()
            || self.vs.is_some()
            || self.vb.is_some()
            || self.vd.is_some()
            || self.s.is_some()
    }
}

/// A record after §4.6 resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The base name in effect for this record, if any.
    pub base_name: Option<String>,
    /// The record's own name (`n`), possibly empty.
    pub name: String,
    pub unit: Option<String>,
    pub value: Option<Value>,
    pub sum: Option<f64>,
    pub time: Timestamp,
}

impl Resolved {
    /// The full SenML name: base name + name.
    pub fn full_name(&self) -> String {
        format!("{}{}", self.base_name.as_deref().unwrap_or(""), self.name)
    }
}

// ---------------------------------------------------------------- JSON ---

/// Step 1 (JSON): parses a SenML JSON pack into raw records.
pub fn decode_json(bytes: &[u8], limits: &Limits) -> Result<Vec<Record>, SenmlError> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SenmlError::Json(e.to_string()))?;
    let serde_json::Value::Array(items) = doc else {
        return Err(SenmlError::NotAnArray);
    };
    if items.is_empty() {
        return Err(SenmlError::Empty);
    }
    if items.len() > limits.max_records {
        return Err(SenmlError::TooManyRecords {
            max: limits.max_records,
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| json_record(i, item, limits))
        .collect()
}

fn json_record(
    index: usize,
    item: &serde_json::Value,
    limits: &Limits,
) -> Result<Record, SenmlError> {
    use serde_json::Value as J;
    let J::Object(map) = item else {
        return Err(rec_err(index, "a record must be a JSON object"));
    };
    let mut r = Record::default();
    for (key, val) in map {
        let num = |v: &J| -> Result<f64, SenmlError> {
            let f = v
                .as_f64()
                .ok_or_else(|| rec_err(index, format!("field {key:?} must be a number")))?;
            finite(index, key, f)
        };
        let text = |v: &J, max: usize| -> Result<String, SenmlError> {
            let s = v
                .as_str()
                .ok_or_else(|| rec_err(index, format!("field {key:?} must be a string")))?;
            bounded(index, key, s, max)
        };
        match key.as_str() {
            "bn" => r.bn = Some(text(val, limits.max_name_len)?),
            "bt" => r.bt = Some(num(val)?),
            "bu" => r.bu = Some(text(val, limits.max_name_len)?),
            "bv" => r.bv = Some(num(val)?),
            "bs" => r.bs = Some(num(val)?),
            "bver" => {
                r.bver = Some(
                    val.as_i64()
                        .ok_or_else(|| rec_err(index, "field \"bver\" must be an integer"))?,
                )
            }
            "n" => r.n = Some(text(val, limits.max_name_len)?),
            "u" => r.u = Some(text(val, limits.max_name_len)?),
            "v" => r.v = Some(num(val)?),
            "vs" => r.vs = Some(text(val, limits.max_string_len)?),
            "vb" => {
                r.vb = Some(
                    val.as_bool()
                        .ok_or_else(|| rec_err(index, "field \"vb\" must be a boolean"))?,
                )
            }
            "vd" => {
                let s = text(val, limits.max_string_len * 4 / 3 + 4)?;
                let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s.trim_end_matches('='))
                    .map_err(|e| rec_err(index, format!("field \"vd\" is not base64url: {e}")))?;
                r.vd = Some(data);
            }
            "s" => r.s = Some(num(val)?),
            "t" => r.t = Some(num(val)?),
            "ut" => r.ut = Some(num(val)?),
            other if other.ends_with('_') => {
                return Err(SenmlError::MandatoryField {
                    index,
                    field: other.to_owned(),
                })
            }
            _ => {} // unknown extension fields are ignored (RFC 8428 §4.4)
        }
    }
    Ok(r)
}

fn finite(index: usize, key: &str, f: f64) -> Result<f64, SenmlError> {
    if f.is_finite() {
        Ok(f)
    } else {
        Err(rec_err(
            index,
            format!("field {key:?} must be a finite number"),
        ))
    }
}

fn bounded(index: usize, key: &str, s: &str, max: usize) -> Result<String, SenmlError> {
    if s.len() > max {
        Err(rec_err(
            index,
            format!("field {key:?} is longer than {max} bytes"),
        ))
    } else {
        Ok(s.to_owned())
    }
}

// ---------------------------------------------------------------- CBOR ---

mod label {
    pub const BVER: i64 = -1;
    pub const BN: i64 = -2;
    pub const BT: i64 = -3;
    pub const BU: i64 = -4;
    pub const BV: i64 = -5;
    pub const BS: i64 = -6;
    pub const N: i64 = 0;
    pub const U: i64 = 1;
    pub const V: i64 = 2;
    pub const VS: i64 = 3;
    pub const VB: i64 = 4;
    pub const S: i64 = 5;
    pub const T: i64 = 6;
    pub const UT: i64 = 7;
    pub const VD: i64 = 8;
}

/// Step 1 (CBOR): parses a SenML CBOR pack (RFC 8428 §6) into raw records.
pub fn decode_cbor(bytes: &[u8], limits: &Limits) -> Result<Vec<Record>, SenmlError> {
    let mut d = minicbor::Decoder::new(bytes);
    let cbor = |e: minicbor::decode::Error| SenmlError::Cbor(e.to_string());
    match d.datatype().map_err(cbor)? {
        Type::Array => {}
        Type::ArrayIndef => {
            return Err(SenmlError::Cbor(
                "indefinite-length arrays are not supported".into(),
            ))
        }
        _ => return Err(SenmlError::NotAnArray),
    }
    let len = d.array().map_err(cbor)?.unwrap_or(0);
    if len == 0 {
        return Err(SenmlError::Empty);
    }
    if len > limits.max_records as u64 {
        return Err(SenmlError::TooManyRecords {
            max: limits.max_records,
        });
    }
    let mut out = Vec::with_capacity(len as usize);
    for index in 0..len as usize {
        out.push(cbor_record(index, &mut d, limits)?);
    }
    if d.position() != bytes.len() {
        return Err(SenmlError::TrailingBytes);
    }
    Ok(out)
}

enum Key<'b> {
    Label(i64),
    Text(&'b str),
}

fn cbor_record(
    index: usize,
    d: &mut minicbor::Decoder<'_>,
    limits: &Limits,
) -> Result<Record, SenmlError> {
    let at = |e: minicbor::decode::Error| rec_err(index, format!("invalid CBOR: {e}"));
    let entries = match d.datatype().map_err(at)? {
        Type::Map => d.map().map_err(at)?.unwrap_or(0),
        Type::MapIndef => return Err(rec_err(index, "indefinite-length maps are not supported")),
        _ => return Err(rec_err(index, "a record must be a CBOR map")),
    };
    let mut r = Record::default();
    for _ in 0..entries {
        let key = match d.datatype().map_err(at)? {
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64
            | Type::Int => Key::Label(
                i64::try_from(d.int().map_err(at)?)
                    .map_err(|_| rec_err(index, "map key out of range"))?,
            ),
            Type::String => Key::Text(d.str().map_err(at)?),
            other => {
                return Err(rec_err(
                    index,
                    format!("unexpected map key of type {other}"),
                ))
            }
        };
        let label = match key {
            Key::Label(l) => l,
            Key::Text(t) => match t {
                "bver" => label::BVER,
                "bn" => label::BN,
                "bt" => label::BT,
                "bu" => label::BU,
                "bv" => label::BV,
                "bs" => label::BS,
                "n" => label::N,
                "u" => label::U,
                "v" => label::V,
                "vs" => label::VS,
                "vb" => label::VB,
                "s" => label::S,
                "t" => label::T,
                "ut" => label::UT,
                "vd" => label::VD,
                other if other.ends_with('_') => {
                    return Err(SenmlError::MandatoryField {
                        index,
                        field: other.to_owned(),
                    })
                }
                _ => {
                    d.skip().map_err(at)?;
                    continue;
                }
            },
        };
        let field = label_name(label);
        match label {
            label::BN => r.bn = Some(cbor_text(index, d, field, limits.max_name_len)?),
            label::BU => r.bu = Some(cbor_text(index, d, field, limits.max_name_len)?),
            label::N => r.n = Some(cbor_text(index, d, field, limits.max_name_len)?),
            label::U => r.u = Some(cbor_text(index, d, field, limits.max_name_len)?),
            label::VS => r.vs = Some(cbor_text(index, d, field, limits.max_string_len)?),
            label::BT => r.bt = Some(cbor_num(index, d, field)?),
            label::BV => r.bv = Some(cbor_num(index, d, field)?),
            label::BS => r.bs = Some(cbor_num(index, d, field)?),
            label::V => r.v = Some(cbor_num(index, d, field)?),
            label::S => r.s = Some(cbor_num(index, d, field)?),
            label::T => r.t = Some(cbor_num(index, d, field)?),
            label::UT => r.ut = Some(cbor_num(index, d, field)?),
            label::BVER => {
                let v = cbor_num(index, d, field)?;
                if v.fract() != 0.0 {
                    return Err(rec_err(index, "field \"bver\" must be an integer"));
                }
                r.bver = Some(v as i64);
            }
            label::VB => match d.datatype().map_err(at)? {
                Type::Bool => r.vb = Some(d.bool().map_err(at)?),
                _ => return Err(rec_err(index, "field \"vb\" must be a boolean")),
            },
            label::VD => match d.datatype().map_err(at)? {
                Type::Bytes => {
                    let b = d.bytes().map_err(at)?;
                    if b.len() > limits.max_string_len {
                        return Err(rec_err(
                            index,
                            format!(
                                "field \"vd\" is longer than {} bytes",
                                limits.max_string_len
                            ),
                        ));
                    }
                    r.vd = Some(b.to_vec());
                }
                _ => return Err(rec_err(index, "field \"vd\" must be a byte string")),
            },
            _ => d.skip().map_err(at)?, // unknown labels are ignored
        }
    }
    Ok(r)
}

fn label_name(label: i64) -> &'static str {
    match label {
        label::BVER => "bver",
        label::BN => "bn",
        label::BT => "bt",
        label::BU => "bu",
        label::BV => "bv",
        label::BS => "bs",
        label::N => "n",
        label::U => "u",
        label::V => "v",
        label::VS => "vs",
        label::VB => "vb",
        label::S => "s",
        label::T => "t",
        label::UT => "ut",
        label::VD => "vd",
        _ => "?",
    }
}

fn cbor_text(
    index: usize,
    d: &mut minicbor::Decoder<'_>,
    field: &str,
    max: usize,
) -> Result<String, SenmlError> {
    match d.datatype() {
        Ok(Type::String) => {
            let s = d
                .str()
                .map_err(|e| rec_err(index, format!("invalid CBOR: {e}")))?;
            bounded(index, field, s, max)
        }
        _ => Err(rec_err(
            index,
            format!("field {field:?} must be a text string"),
        )),
    }
}

fn cbor_num(index: usize, d: &mut minicbor::Decoder<'_>, field: &str) -> Result<f64, SenmlError> {
    let at = |e: minicbor::decode::Error| rec_err(index, format!("invalid CBOR: {e}"));
    let f = match d.datatype().map_err(at)? {
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => i128::from(d.int().map_err(at)?) as f64,
        Type::F16 => f64::from(d.f16().map_err(at)?),
        Type::F32 => f64::from(d.f32().map_err(at)?),
        Type::F64 => d.f64().map_err(at)?,
        _ => return Err(rec_err(index, format!("field {field:?} must be a number"))),
    };
    finite(index, field, f)
}

// ----------------------------------------------------------- resolution ---

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric()) && chars.all(is_name_char)
}

/// Step 2: applies base fields (RFC 8428 §4.6), validates names and makes
/// times absolute. `now` is the receive time; relative times (< 2^28 s) are
/// added to it.
pub fn resolve(records: &[Record], now: Timestamp) -> Result<Vec<Resolved>, SenmlError> {
    let mut bn: Option<String> = None;
    let mut bt = 0.0_f64;
    let mut bu: Option<String> = None;
    let mut bv: Option<f64> = None;
    let mut bs: Option<f64> = None;
    let mut out = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        if let Some(version) = r.bver {
            if !(1..=SENML_VERSION).contains(&version) {
                return Err(SenmlError::UnsupportedVersion { index, version });
            }
        }
        if let Some(b) = &r.bn {
            bn = if b.is_empty() { None } else { Some(b.clone()) };
        }
        if let Some(t) = r.bt {
            bt = t;
        }
        if let Some(u) = &r.bu {
            bu = if u.is_empty() { None } else { Some(u.clone()) };
        }
        if r.bv.is_some() {
            bv = r.bv;
        }
        if r.bs.is_some() {
            bs = r.bs;
        }
        let name = r.n.clone().unwrap_or_default();
        if !r.has_value() {
            if r.n.is_some() {
                return Err(rec_err(
                    index,
                    "record has a name but no value (v, vs, vb, vd or s)",
                ));
            }
            // A record that only sets base fields.
            continue;
        }
        let full = format!("{}{}", bn.as_deref().unwrap_or(""), name);
        if full.is_empty() {
            return Err(rec_err(index, "record has no name (neither bn nor n)"));
        }
        if !valid_name(&full) {
            return Err(rec_err(
                index,
                format!(
                    "name {full:?} is not a valid SenML name (must start with A-Z a-z 0-9, then only A-Z a-z 0-9 - : . / _)"
                ),
            ));
        }
        let value_kinds = [
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if value_kinds > 1 {
            return Err(rec_err(index, "record has more than one of v, vs, vb, vd"));
        }
        let value = if let Some(v) = r.v {
            Some(Value::Float(v + bv.unwrap_or(0.0)))
        } else if let Some(s) = &r.vs {
            Some(Value::String(s.clone()))
        } else if let Some(b) = r.vb {
            Some(Value::Bool(b))
        } else {
            // `None` when the record carries only a sum.
            r.vd.as_ref().map(|d| Value::Data(d.clone()))
        };
        let sum = r.s.map(|s| s + bs.unwrap_or(0.0));
        let t = bt + r.t.unwrap_or(0.0);
        let time = if t.abs() < RELATIVE_TIME_LIMIT {
            Timestamp(now.0.saturating_add((t * 1_000_000.0).round() as i64))
        } else {
            Timestamp::from_secs_f64(t)
        };
        let unit = r.u.clone().filter(|u| !u.is_empty()).or_else(|| bu.clone());
        out.push(Resolved {
            base_name: bn.clone(),
            name,
            unit,
            value,
            sum,
            time,
        });
    }
    if out.is_empty() {
        return Err(SenmlError::Empty);
    }
    Ok(out)
}

// -------------------------------------------------------------- grouping ---

/// How step 3 turns SenML names into device ids.
#[derive(Debug, Clone)]
pub enum DeviceNaming<'a> {
    /// The base name (trailing `/` or `:` removed) is the native id within
    /// `transport`; records without a base name belong to `default`.
    /// Used by adapters: a CoAP sensor posting `bn: "sensor-7/"` becomes
    /// `coap:sensor-7`.
    Namespaced {
        transport: Transport,
        default: &'a DeviceId,
    },
    /// The base name is a full device id (`coap:sensor-7/`), as written by
    /// [`encode_json`] / [`encode_cbor`].
    FullIds,
}

/// Name given to a measurement whose record has only a base name.
pub const DEFAULT_MEASUREMENT_NAME: &str = "value";

/// Step 3: groups resolved records by (device, time), keeping first-seen
/// order, into readings.
pub fn to_readings(
    resolved: Vec<Resolved>,
    naming: &DeviceNaming<'_>,
) -> Result<Vec<Reading>, SenmlError> {
    let mut index: HashMap<(DeviceId, Timestamp), usize> = HashMap::new();
    let mut out: Vec<Reading> = Vec::new();
    for (i, r) in resolved.into_iter().enumerate() {
        let native = r
            .base_name
            .as_deref()
            .map(|b| b.trim_end_matches(['/', ':']))
            .filter(|b| !b.is_empty());
        let device = match (naming, native) {
            (DeviceNaming::Namespaced { transport, .. }, Some(n)) => {
                DeviceId::new(*transport, n).map_err(|e| rec_err(i, e.to_string()))?
            }
            (DeviceNaming::Namespaced { default, .. }, None) => (*default).clone(),
            (DeviceNaming::FullIds, Some(n)) => n
                .parse()
                .map_err(|e: crate::IdError| rec_err(i, e.to_string()))?,
            (DeviceNaming::FullIds, None) => {
                return Err(rec_err(i, "record has no base name naming its device"))
            }
        };
        let name = if r.name.is_empty() {
            DEFAULT_MEASUREMENT_NAME.to_owned()
        } else {
            r.name
        };
        let m = Measurement {
            name,
            unit: r.unit,
            value: r.value,
            sum: r.sum,
        };
        let key = (device, r.time);
        match index.get(&key) {
            Some(&at) => out[at].measurements.push(m),
            None => {
                index.insert(key.clone(), out.len());
                out.push(Reading::new(key.0, key.1, vec![m]));
            }
        }
    }
    Ok(out)
}

/// Steps 1–3 for a JSON pack.
pub fn readings_from_json(
    bytes: &[u8],
    limits: &Limits,
    now: Timestamp,
    naming: &DeviceNaming<'_>,
) -> Result<Vec<Reading>, SenmlError> {
    to_readings(resolve(&decode_json(bytes, limits)?, now)?, naming)
}

/// Steps 1–3 for a CBOR pack.
pub fn readings_from_cbor(
    bytes: &[u8],
    limits: &Limits,
    now: Timestamp,
    naming: &DeviceNaming<'_>,
) -> Result<Vec<Reading>, SenmlError> {
    to_readings(resolve(&decode_cbor(bytes, limits)?, now)?, naming)
}

// -------------------------------------------------------------- encoding ---

/// Readings as raw records: per reading, the first record carries
/// `bn = "<device id>/"` and `bt`; each measurement is one record.
pub fn records_from_readings(readings: &[Reading]) -> Vec<Record> {
    let mut out = Vec::new();
    for r in readings {
        for (i, m) in r.measurements.iter().enumerate() {
            let mut rec = Record {
                n: Some(m.name.clone()),
                u: m.unit.clone(),
                s: m.sum,
                ..Record::default()
            };
            if i == 0 {
                rec.bn = Some(format!("{}/", r.device));
                rec.bt = Some(r.time.as_secs_f64());
            }
            match &m.value {
                Some(Value::Float(v)) => rec.v = Some(*v),
                Some(Value::Bool(b)) => rec.vb = Some(*b),
                Some(Value::String(s)) => rec.vs = Some(s.clone()),
                Some(Value::Data(d)) => rec.vd = Some(d.clone()),
                None => {}
            }
            out.push(rec);
        }
    }
    out
}

/// Encodes readings as a SenML JSON pack (decodable with
/// [`DeviceNaming::FullIds`]).
pub fn encode_json(readings: &[Reading]) -> Vec<u8> {
    let records = records_from_readings(readings);
    let mut items = Vec::with_capacity(records.len());
    for r in &records {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            m.insert(k.to_owned(), v);
        };
        if let Some(x) = &r.bn {
            put("bn", x.clone().into());
        }
        if let Some(x) = r.bt {
            put("bt", x.into());
        }
        if let Some(x) = &r.n {
            put("n", x.clone().into());
        }
        if let Some(x) = &r.u {
            put("u", x.clone().into());
        }
        if let Some(x) = r.v {
            put("v", x.into());
        }
        if let Some(x) = &r.vs {
            put("vs", x.clone().into());
        }
        if let Some(x) = r.vb {
            put("vb", x.into());
        }
        if let Some(x) = &r.vd {
            put(
                "vd",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(x)
                    .into(),
            );
        }
        if let Some(x) = r.s {
            put("s", x.into());
        }
        items.push(serde_json::Value::Object(m));
    }
    serde_json::to_vec(&items).expect("serializing JSON values cannot fail")
}

/// Encodes readings as a SenML CBOR pack with integer labels.
pub fn encode_cbor(readings: &[Reading]) -> Vec<u8> {
    let records = records_from_readings(readings);
    let mut e = minicbor::Encoder::new(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = encode_cbor_records(&mut e, &records);
    e.into_writer()
}

fn encode_cbor_records(
    e: &mut minicbor::Encoder<Vec<u8>>,
    records: &[Record],
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    e.array(records.len() as u64)?;
    for r in records {
        let n = [
            r.bn.is_some(),
            r.bt.is_some(),
            r.n.is_some(),
            r.u.is_some(),
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
            r.s.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        e.map(n as u64)?;
        if let Some(x) = &r.bn {
            e.i64(label::BN)?.str(x)?;
        }
        if let Some(x) = r.bt {
            e.i64(label::BT)?.f64(x)?;
        }
        if let Some(x) = &r.n {
            e.i64(label::N)?.str(x)?;
        }
        if let Some(x) = &r.u {
            e.i64(label::U)?.str(x)?;
        }
        if let Some(x) = r.v {
            e.i64(label::V)?.f64(x)?;
        }
        if let Some(x) = &r.vs {
            e.i64(label::VS)?.str(x)?;
        }
        if let Some(x) = r.vb {
            e.i64(label::VB)?.bool(x)?;
        }
        if let Some(x) = &r.vd {
            e.i64(label::VD)?.bytes(x)?;
        }
        if let Some(x) = r.s {
            e.i64(label::S)?.f64(x)?;
        }
    }
    Ok(())
}
