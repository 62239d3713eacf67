//! Sample messages shared by the tests: one per body kind.
#![allow(dead_code)]

use gatewayd_sensor_proto::frame::{FrameDecoder, FrameError, MAX_FRAME, MAX_PAYLOAD};
use gatewayd_sensor_proto::msg::*;
use gatewayd_sensor_proto::{Bounded, Str};

pub fn reading() -> Reading {
    Reading {
        sensor: Str::new("temperature").unwrap(),
        unit: Unit::Celsius,
        value: Value::F32(21.5),
        time_ms: Some(1000),
    }
}

/// `(corpus file name, envelope)` for every body kind (and nested variants).
pub fn samples() -> Vec<(&'static str, Envelope)> {
    let readings = Bounded::try_from_iter([
        reading(),
        Reading {
            sensor: Str::new("humidity").unwrap(),
            unit: Unit::RelativeHumidity,
            value: Value::F32(48.25),
            time_ms: None,
        },
        Reading {
            sensor: Str::new("door").unwrap(),
            unit: Unit::Other(Str::new("/").unwrap()),
            value: Value::Bool(true),
            time_ms: Some(u32::MAX),
        },
        Reading {
            sensor: Str::new("pulses").unwrap(),
            unit: Unit::Count,
            value: Value::I32(-12345),
            time_ms: Some(0),
        },
    ])
    .unwrap();
    vec![
        (
            "valid-reading",
            Envelope::new(300, Body::Reading(reading())),
        ),
        (
            "valid-readings",
            Envelope::new(301, Body::Readings(readings)),
        ),
        (
            "valid-diagnostics",
            Envelope::new(
                302,
                Body::Diagnostics(Diagnostics {
                    firmware: Str::new("0.1.0").unwrap(),
                    uptime_s: 86_400,
                    reset_reason: ResetReason::Watchdog,
                    battery_mv: Some(3_012),
                    stack_free_min: 1_536,
                    watchdog_resets: 2,
                    sample_interval_ms: 10_000,
                    frames_rx_errors: 7,
                }),
            ),
        ),
        (
            "valid-command-set-sample-interval",
            Envelope::new(7, Body::Command(Command::SetSampleInterval { ms: 5_000 })),
        ),
        (
            "valid-command-identify",
            Envelope::new(8, Body::Command(Command::Identify { seconds: 5 })),
        ),
        (
            "valid-command-reboot",
            Envelope::new(9, Body::Command(Command::Reboot)),
        ),
        (
            "valid-command-request-diagnostics",
            Envelope::new(10, Body::Command(Command::RequestDiagnostics)),
        ),
        (
            "valid-ack-ok",
            Envelope::new(
                303,
                Body::Ack {
                    seq: 8,
                    result: AckResult::Ok,
                },
            ),
        ),
        (
            "valid-ack-err",
            Envelope::new(
                304,
                Body::Ack {
                    seq: 7,
                    result: AckResult::Err(ErrorCode::InvalidArgument),
                },
            ),
        ),
        (
            "valid-error",
            Envelope::new(
                305,
                Body::Error {
                    code: ErrorCode::Unsupported,
                    detail: Str::new("unknown message tag 9").unwrap(),
                },
            ),
        ),
        (
            "valid-hello",
            Envelope::new(
                0,
                Body::Hello {
                    device_id: Str::new("stm32-0042").unwrap(),
                    firmware: Str::new("0.1.0").unwrap(),
                    protocol: PROTOCOL_VERSION,
                },
            ),
        ),
    ]
}

/// The frame for `env`.
pub fn frame_of(env: &Envelope) -> Vec<u8> {
    let mut scratch = [0u8; MAX_PAYLOAD];
    let mut out = [0u8; MAX_FRAME];
    let n = write_frame(env, &mut scratch, &mut out).unwrap();
    out[..n].to_vec()
}

/// The frame for an arbitrary payload.
pub fn frame_of_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = [0u8; MAX_FRAME];
    let n = gatewayd_sensor_proto::frame::encode_frame(payload, &mut out).unwrap();
    out[..n].to_vec()
}

/// Everything a fresh decoder reports for `bytes`, payloads copied out.
pub fn decode_all(bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    d.feed(bytes, |r| out.push(r.map(<[u8]>::to_vec)));
    out
}
