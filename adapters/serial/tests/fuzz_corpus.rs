//! Runs the `session` fuzz target's function over its checked-in seed
//! corpus (`fuzz/corpus/session`) and over every prefix of each seed, so
//! `cargo test` exercises the fuzzed path on stable.
//!
//! The structured seed (`hello-readings-commands`) is written again with
//! `UPDATE_FUZZ_CORPUS=1 cargo test -p gatewayd-adapter-serial --test fuzz_corpus`.

use std::path::{Path, PathBuf};

use gatewayd_adapter_serial::session::{encode, fuzz_session};
use gatewayd_sensor_proto::msg::{self, Body, Envelope, Unit};
use gatewayd_sensor_proto::{Bounded, Str};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session")
}

/// Bytes a device sends, cut into the fuzz input's 64-byte chunks: each
/// chunk starts with its operation byte (`ops` in turn), then 63 bytes.
fn chunked(stream: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in stream.chunks(63).enumerate() {
        out.push(ops[i % ops.len()]);
        out.extend_from_slice(part);
    }
    out
}

fn structured_seed() -> Vec<u8> {
    let hello = Body::Hello {
        device_id: Str::new("fuzz-0001").unwrap(),
        firmware: Str::new("0.1.0").unwrap(),
        protocol: 1,
    };
    let r = |name: &str, unit, v| msg::Reading {
        sensor: Str::new(name).unwrap(),
        unit,
        value: msg::Value::F32(v),
        time_ms: Some(1000),
    };
    let readings = Body::Readings(
        Bounded::try_from_iter([
            r("temperature", Unit::Celsius, 21.5),
            r("humidity", Unit::RelativeHumidity, f32::NAN),
        ])
        .unwrap(),
    );
    let ack = Body::Ack {
        seq: 0,
        result: msg::AckResult::Ok,
    };
    let mut stream = Vec::new();
    for (seq, body) in [(1, hello), (2, readings), (3, ack)] {
        stream.extend(encode(&Envelope::new(seq, body)).unwrap());
    }
    // 3: feed only; 1: also submit a command; 0: also let time pass.
    chunked(&stream, &[3, 1, 0, 3])
}

#[test]
fn the_structured_seed_yields_a_reading() {
    let path = corpus_dir().join("hello-readings-commands");
    let seed = structured_seed();
    if std::env::var_os("UPDATE_FUZZ_CORPUS").is_some() {
        std::fs::write(&path, &seed).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), seed, "regenerate the seed");
    // The NaN humidity is left out; temperature makes the reading.
    assert_eq!(fuzz_session(&seed), Ok(1));
}

#[test]
fn every_seed_and_its_prefixes_pass_the_checks() {
    let mut n = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("seed corpus exists") {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        for end in 0..=data.len() {
            fuzz_session(&data[..end]).unwrap();
        }
        n += 1;
    }
    assert!(n >= 1, "no seeds in {}", corpus_dir().display());
}

#[test]
fn random_inputs_pass_the_checks() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [0usize, 1, 63, 64, 65, 500, 4096] {
        for _ in 0..20 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fuzz_session(&data).unwrap();
        }
    }
}
