//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use gatewayd_buffer::{BufferConfig, FullPolicy, SqliteStore, SyncMode};
use gatewayd_model::wire::encode_reading;
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Transport, Value};

/// A reading of `device` (native id) carrying `n` as its value.
pub fn reading(device: &str, n: i64) -> Reading {
    Reading::new(
        DeviceId::new(Transport::Coap, device).unwrap(),
        Timestamp(1_732_460_000_000_000 + n),
        vec![Measurement::float("temperature", Some("Cel"), n as f64)],
    )
}

/// A reading whose payload is padded with a `pad`-byte string value.
pub fn padded(device: &str, n: i64, pad: usize) -> Reading {
    let mut r = reading(device, n);
    r.measurements.push(Measurement {
        name: "pad".into(),
        unit: None,
        value: Some(Value::String("x".repeat(pad))),
        sum: None,
    });
    r
}

/// The logical cost of storing `r`.
pub fn cost(r: &Reading) -> u64 {
    gatewayd_buffer::row_cost(r.device.as_str(), encode_reading(r).len())
}

pub fn config(path: &Path, max_bytes: u64, when_full: FullPolicy) -> BufferConfig {
    BufferConfig {
        path: path.to_owned(),
        max_bytes,
        when_full,
        sync: SyncMode::Full,
    }
}

pub fn open(path: &Path, max_bytes: u64, when_full: FullPolicy) -> SqliteStore {
    SqliteStore::open(&config(path, max_bytes, when_full)).unwrap()
}
