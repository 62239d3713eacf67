//! The serial adapter's receive path without I/O: bytes from the port
//! through the frame decoder (COBS + CRC-32), the message decoder (postcard)
//! and the session (identity, metadata) to a `Reading` ready for the sink.
//!
//! `cargo bench -p gatewayd-adapter-serial --bench session`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewayd_adapter_serial::session::{encode, Output, Session, SessionConfig};
use gatewayd_model::Timestamp;
use gatewayd_sensor_proto::frame::FrameDecoder;
use gatewayd_sensor_proto::msg::{self, Body, Envelope, Unit};
use gatewayd_sensor_proto::{Bounded, Str};

fn config() -> SessionConfig {
    SessionConfig {
        port: "bench-0".into(),
        path: "/dev/ttyBENCH".into(),
        command_timeout: Duration::from_secs(2),
        command_retries: 2,
        max_pending: 8,
        hello_timeout: Duration::from_secs(3),
    }
}

/// A `Readings` message like the firmware's (temperature + humidity).
fn readings_frame(seq: u16) -> Vec<u8> {
    let r = |name: &str, unit, v| msg::Reading {
        sensor: Str::new(name).unwrap(),
        unit,
        value: msg::Value::F32(v),
        time_ms: Some(u32::from(seq) * 1000),
    };
    let batch = Bounded::try_from_iter([
        r("temperature", Unit::Celsius, 21.5),
        r("humidity", Unit::RelativeHumidity, 40.25),
    ])
    .unwrap();
    encode(&Envelope::new(seq, Body::Readings(batch))).unwrap()
}

fn hello_frame() -> Vec<u8> {
    encode(&Envelope::new(
        0,
        Body::Hello {
            device_id: Str::new("lm3s6965-0001").unwrap(),
            firmware: Str::new("0.1.0").unwrap(),
            protocol: 1,
        },
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    const N: usize = 1000;
    let stream: Vec<u8> = (0..N as u16).flat_map(readings_frame).collect();
    let mut g = c.benchmark_group("serial");
    g.throughput(Throughput::Elements(N as u64));

    // Framing only: 1000 frames through the streaming decoder.
    g.bench_function("frame_decode_1000", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new();
            let mut ok = 0usize;
            d.feed(black_box(&stream), |r| ok += usize::from(r.is_ok()));
            assert_eq!(ok, N);
        })
    });

    // Framing + postcard: the message decoder on each frame.
    g.bench_function("frame_and_message_decode_1000", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new();
            let mut ok = 0usize;
            d.feed(black_box(&stream), |r| {
                if let Ok(p) = r {
                    ok += usize::from(msg::decode_message(p).is_ok());
                }
            });
            assert_eq!(ok, N);
        })
    });

    // The whole receive path: bytes → Readings out of the session.
    let hello = hello_frame();
    g.bench_function("session_bytes_to_readings_1000", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut s = Session::new(config());
            s.opening();
            s.opened(now);
            s.handle_bytes(&hello, now, Timestamp(1_700_000_000_000_000));
            s.handle_bytes(black_box(&stream), now, Timestamp(1_700_000_000_000_000));
            let mut n = 0usize;
            while let Some(o) = s.poll_output() {
                if let Output::Submit(r) = o {
                    n += r.len();
                }
            }
            assert_eq!(n, N);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
