//! From MQTT messages to store records: topic routing, batch validation and
//! conversion of readings to the JSON the API serves.

use base64::Engine as _;
use gatewayd_model::wire;
use gatewayd_model::{Measurement, Value};
use serde_json::{json, Map};

use crate::store::{GatewayStatus, IngestBatch, NewReading};

/// Longest gateway id accepted from a topic, in bytes.
pub const MAX_GATEWAY_ID_LEN: usize = 128;
/// Longest accepted status payload, in bytes.
const MAX_STATUS_BYTES: usize = 4096;

/// What a topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Telemetry {
        gateway: &'a str,
    },
    Status {
        gateway: &'a str,
    },
    /// Not ours (or a malformed gateway id); `reason` explains.
    Unknown {
        reason: String,
    },
}

/// Routes `{prefix}/{gateway}/telemetry` and `{prefix}/{gateway}/status`.
pub fn route<'a>(prefix: &str, topic: &'a str) -> Route<'a> {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Route::Unknown {
            reason: format!("topic does not start with {prefix}/"),
        };
    };
    let Some((gateway, kind)) = rest.split_once('/') else {
        return Route::Unknown {
            reason: "topic has no gateway id".into(),
        };
    };
    if let Err(reason) = check_gateway_id(gateway) {
        return Route::Unknown { reason };
    }
    match kind {
        "telemetry" => Route::Telemetry { gateway },
        "status" => Route::Status { gateway },
        other => Route::Unknown {
            reason: format!("unexpected topic suffix {other:?}"),
        },
    }
}

fn check_gateway_id(gateway: &str) -> Result<(), String> {
    if gateway.is_empty() {
        return Err("empty gateway id in topic".into());
    }
    if gateway.len() > MAX_GATEWAY_ID_LEN {
        return Err(format!(
            "gateway id in topic is longer than {MAX_GATEWAY_ID_LEN} bytes"
        ));
    }
    if gateway.chars().any(char::is_control) {
        return Err("gateway id in topic contains control characters".into());
    }
    Ok(())
}

/// JSON of one measurement as stored and served:
/// `{"name","unit"?,"value"?,"sum"?}` where `value` is a number (`v`),
/// bool (`vb`), string (`vs`) or `{"data":"<base64url, unpadded>"}` (`vd`).
fn measurement_json(m: &Measurement) -> serde_json::Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(m.name));
    if let Some(u) = &m.unit {
        o.insert("unit".into(), json!(u));
    }
    match &m.value {
        Some(Value::Float(v)) => {
            o.insert("value".into(), json!(v));
        }
        Some(Value::Bool(b)) => {
            o.insert("value".into(), json!(b));
        }
        Some(Value::String(s)) => {
            o.insert("value".into(), json!(s));
        }
        Some(Value::Data(d)) => {
            o.insert(
                "value".into(),
                json!({ "data": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d) }),
            );
        }
        None => {}
    }
    if let Some(s) = m.sum {
        o.insert("sum".into(), json!(s));
    }
    serde_json::Value::Object(o)
}

/// Decodes and validates a telemetry payload for `gateway` (from the
/// topic). The error is the rejection reason.
pub fn prepare_batch(
    gateway: &str,
    payload: &[u8],
    received_us: i64,
    max_payload_bytes: usize,
) -> Result<IngestBatch, String> {
    if payload.len() > max_payload_bytes {
        return Err(format!(
            "payload of {} bytes exceeds mqtt.max_payload_bytes ({max_payload_bytes})",
            payload.len()
        ));
    }
    let batch = wire::decode_batch(payload).map_err(|e| e.to_string())?;
    if batch.gateway != gateway {
        return Err(format!(
            "payload gw {:?} does not match the topic's gateway {gateway:?}",
            batch.gateway
        ));
    }
    if batch.readings.is_empty() {
        return Err("batch has no readings".into());
    }
    let mut readings = Vec::with_capacity(batch.readings.len());
    for (seq, r) in &batch.readings {
        let seq = i64::try_from(*seq)
            .map_err(|_| format!("reading {seq}: sequence number exceeds 2^63-1"))?;
        let measurements: Vec<_> = r.measurements.iter().map(measurement_json).collect();
        let measurements =
            serde_json::to_string(&measurements).map_err(|e| format!("reading {seq}: {e}"))?;
        let meta = serde_json::to_string(&r.meta).map_err(|e| format!("reading {seq}: {e}"))?;
        readings.push(NewReading {
            seq,
            device: r.device.to_string(),
            transport: r.device.transport().prefix(),
            time_us: r.time.as_micros(),
            measurements,
            meta,
        });
    }
    Ok(IngestBatch {
        gateway: gateway.to_owned(),
        received_us,
        readings,
    })
}

#[derive(serde::Deserialize)]
struct StatusPayload {
    state: String,
    #[serde(default)]
    ts: Option<f64>,
    #[allow(dead_code)]
    #[serde(default)]
    version: Option<serde_json::Value>,
}

/// Parses a status payload. `Ok(None)` for an empty payload (a cleared
/// retained message).
pub fn parse_status(
    gateway: &str,
    payload: &[u8],
    received_us: i64,
) -> Result<Option<GatewayStatus>, String> {
    if payload.is_empty() {
        return Ok(None);
    }
    if payload.len() > MAX_STATUS_BYTES {
        return Err(format!(
            "status payload of {} bytes exceeds {MAX_STATUS_BYTES}",
            payload.len()
        ));
    }
    let s: StatusPayload =
        serde_json::from_slice(payload).map_err(|e| format!("invalid status JSON: {e}"))?;
    if s.state != "online" && s.state != "offline" {
        return Err(format!(
            "status state {:?} is neither \"online\" nor \"offline\"",
            crate::store::truncate(&s.state, 64)
        ));
    }
    let status_ts_us = match s.ts {
        None => None,
        Some(ts) if ts.is_finite() && ts.abs() < 9.0e12 => Some((ts * 1_000_000.0).round() as i64),
        Some(_) => return Err("status ts is not a plausible UNIX time in seconds".into()),
    };
    Ok(Some(GatewayStatus {
        gateway: gateway.to_owned(),
        state: s.state,
        status_ts_us,
        received_us,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewayd_model::wire::{encode_reading, BatchWriter};
    use gatewayd_model::{DeviceId, Reading, Timestamp};

    fn payload(gw: &str) -> Vec<u8> {
        let dev: DeviceId = "coap:sim-0".parse().unwrap();
        let mut r = Reading::new(
            dev,
            Timestamp(1_732_476_000_123_456),
            vec![
                Measurement::float("temperature", Some("Cel"), 21.5),
                Measurement {
                    name: "door".into(),
                    unit: None,
                    value: Some(Value::Bool(true)),
                    sum: None,
                },
                Measurement {
                    name: "blob".into(),
                    unit: None,
                    value: Some(Value::Data(vec![0xfb, 0xff])),
                    sum: None,
                },
            ],
        );
        r.meta.rssi = Some(-70.0);
        let mut w = BatchWriter::new(gw);
        w.push(42, &encode_reading(&r));
        w.finish()
    }

    #[test]
    fn routes_topics() {
        assert_eq!(
            route("gatewayd/v1", "gatewayd/v1/gw-01/telemetry"),
            Route::Telemetry { gateway: "gw-01" }
        );
        assert_eq!(
            route("gatewayd/v1", "gatewayd/v1/gw-01/status"),
            Route::Status { gateway: "gw-01" }
        );
        assert!(matches!(
            route("gatewayd/v1", "gatewayd/v1//telemetry"),
            Route::Unknown { .. }
        ));
        assert!(matches!(
            route("gatewayd/v1", "other/gw/telemetry"),
            Route::Unknown { .. }
        ));
        assert!(matches!(
            route("gatewayd/v1", "gatewayd/v1/gw/x/telemetry"),
            Route::Unknown { .. }
        ));
    }

    #[test]
    fn converts_values_to_api_json() {
        let b = prepare_batch("gw-01", &payload("gw-01"), 5, 1 << 20).unwrap();
        assert_eq!(b.readings.len(), 1);
        let r = &b.readings[0];
        assert_eq!(r.seq, 42);
        assert_eq!(r.transport, "coap");
        assert_eq!(
            r.measurements,
            r#"[{"name":"temperature","unit":"Cel","value":21.5},{"name":"door","value":true},{"name":"blob","value":{"data":"-_8"}}]"#
        );
        assert_eq!(r.meta, r#"{"rssi":-70.0}"#);
    }

    #[test]
    fn rejects_a_payload_whose_gw_disagrees_with_the_topic() {
        let e = prepare_batch("gw-02", &payload("gw-01"), 5, 1 << 20).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn rejects_oversized_and_garbage_payloads() {
        assert!(prepare_batch("gw-01", &payload("gw-01"), 5, 10)
            .unwrap_err()
            .contains("exceeds"));
        assert!(prepare_batch("gw-01", b"not json", 5, 1 << 20).is_err());
        assert!(prepare_batch("gw-01", br#"{"v":1,"gw":"gw-01","r":[]}"#, 5, 1 << 20).is_err());
        let huge_seq = br#"{"v":1,"gw":"g","r":[{"q":18446744073709551615,"d":"coap:a","t":1,"e":[{"n":"x","v":1}]}]}"#;
        assert!(prepare_batch("g", huge_seq, 5, 1 << 20)
            .unwrap_err()
            .contains("2^63"));
    }

    #[test]
    fn parses_status_payloads() {
        let s = parse_status(
            "gw",
            br#"{"state":"online","version":"0.1.0","ts":1732476000}"#,
            9,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.state, "online");
        assert_eq!(s.status_ts_us, Some(1_732_476_000_000_000));
        assert_eq!(parse_status("gw", b"", 9), Ok(None));
        assert!(parse_status("gw", br#"{"state":"sleepy"}"#, 9).is_err());
        assert!(parse_status("gw", b"{", 9).is_err());
    }
}
