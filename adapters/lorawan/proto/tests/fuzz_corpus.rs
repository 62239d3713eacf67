//! Runs the `phypayload` fuzz corpus (`fuzz/corpus/phypayload/`) through
//! the same harness as the fuzz target, so every input the fuzzer kept
//! (seeds and anything added after a fuzzing session) stays a regression
//! test under plain `cargo test`.
//!
//! The seed files are generated here: `UPDATE_SEEDS=1 cargo test -p
//! gatewayd-lorawan-proto --test fuzz_corpus` rewrites them; a normal run
//! checks they are current.

mod common;
#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

use common::{join_request, rx, uplink, RawMac, Up};
use gatewayd_lorawan_proto::{Action, Event};
use lorawan::keys::AppKey;
use lorawan::parser::{DecryptedJoinAcceptPayload, DevNonce};

const CAYENNE: [u8; 8] = [0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xFF];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/phypayload")
}

fn abp(fcnt: u32) -> Up<'static> {
    Up {
        dev_addr: harness::ABP_ADDR,
        nwk: harness::ABP_NWK,
        app: harness::ABP_APP,
        fcnt,
        payload: &CAYENNE,
        ..Up::default()
    }
}

/// The OTAA device joins through the harness's own server; returns the
/// JoinRequest and an uplink with the session keys it derives.
fn otaa_join_and_uplinks() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let jr = join_request(harness::JOIN_EUI, harness::OTAA_EUI, 1, harness::APP_KEY);
    let (mut ns, store) = harness::setup();
    let mut actions = ns.handle(
        &store,
        Event::Uplink {
            now_ms: 1_000,
            rx: rx(0, 0, -100, 0.0),
            phy: jr.clone(),
        },
    );
    actions.extend(ns.handle(&store, Event::Tick { now_ms: 2_000 }));
    let accept = actions
        .iter()
        .find_map(|a| match a {
            Action::Downlink(d) => Some(d.phy.clone()),
            _ => None,
        })
        .expect("join accepted");
    let key = AppKey::from(harness::APP_KEY);
    let ja = DecryptedJoinAcceptPayload::new(accept, &key).unwrap();
    let nonce = DevNonce::from(1u16.to_le_bytes());
    let dev_addr = u32::from_le_bytes(ja.dev_addr().as_ref().try_into().unwrap());
    let nwk: [u8; 16] = ja.derive_newskey(&nonce, &key).as_ref().try_into().unwrap();
    let app: [u8; 16] = ja.derive_appskey(&nonce, &key).as_ref().try_into().unwrap();
    let up = |fcnt, confirmed| {
        uplink(&Up {
            dev_addr,
            nwk,
            app,
            fcnt,
            confirmed,
            mac: vec![RawMac(0x02, vec![])],
            payload: b"otaa",
            ..Up::default()
        })
    };
    (jr, up(0, false), up(1, true))
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let e = harness::encode;
    let f0 = uplink(&abp(0));
    let (jr, o0, o1) = otaa_join_and_uplinks();
    let confirmed_mac = uplink(&Up {
        confirmed: true,
        mac: vec![RawMac(0x02, vec![]), RawMac(0x0D, vec![])],
        ..abp(0)
    });
    let acked = uplink(&Up {
        fctrl: 0x20,
        ..abp(1)
    });
    let fport0 = uplink(&Up {
        fport: Some(0),
        payload: b"",
        mac: vec![RawMac(0x02, vec![]), RawMac(0x06, vec![0xFE, 0x3F])],
        ..abp(0)
    });
    let mut three_gateways = Vec::new();
    for ctl in [0x00, 0x01, 0x06] {
        three_gateways.push(ctl);
        three_gateways.push(f0.len() as u8);
        three_gateways.extend_from_slice(&f0);
    }
    // Queue a confirmed downlink (ctl bit 3), miss the ACK, then ACK.
    let mut queue = Vec::new();
    for (ctl, f) in [
        (0x0C, uplink(&abp(0))),
        (0x04, uplink(&abp(1))),
        (
            0x04,
            uplink(&Up {
                fctrl: 0x20,
                ..abp(2)
            }),
        ),
    ] {
        queue.push(ctl);
        queue.push(f.len() as u8);
        queue.extend_from_slice(&f);
    }
    let lora_packet = common::unhex("40F17DBE4900020001954378762B11FF0D");
    vec![
        ("seed-abp-cayenne", e(&[&f0])),
        (
            "seed-abp-confirmed-mac-then-ack",
            e(&[&confirmed_mac, &acked]),
        ),
        ("seed-abp-fport0-mac", e(&[&fport0])),
        ("seed-abp-three-gateways", three_gateways),
        ("seed-abp-queue-retry-ack", queue),
        (
            "seed-abp-replay",
            e(&[
                &uplink(&abp(3)),
                &uplink(&abp(2)),
                &uplink(&Up {
                    payload: b"other",
                    ..abp(3)
                }),
            ]),
        ),
        ("seed-otaa-join-uplinks", e(&[&jr, &o0, &o1, &jr])),
        ("seed-unknown-device", e(&[&lora_packet])),
        ("seed-raw-frame", f0),
    ]
}

#[test]
fn seed_corpus_is_current() {
    let dir = corpus_dir();
    let update = std::env::var_os("UPDATE_SEEDS").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SEEDS=1)", path.display()));
            assert_eq!(on_disk, bytes, "{name} is stale (run with UPDATE_SEEDS=1)");
        }
    }
}

#[test]
fn seeds_reach_readings_joins_and_downlinks() {
    let s = harness::run(&seeds()[0].1);
    assert_eq!((s.readings, s.downlinks), (1, 0));
    let s = harness::run(&seeds()[1].1);
    assert_eq!(
        (s.readings, s.downlinks),
        (2, 1),
        "ACK + LinkCheckAns + DeviceTimeAns"
    );
    let s = harness::run(&seeds()[3].1);
    assert_eq!(s.readings, 1, "three gateways, one reading");
    let s = harness::run(&seeds()[4].1);
    assert_eq!(
        (s.readings, s.downlinks),
        (3, 2),
        "sent, resent, then acked"
    );
    let s = harness::run(&seeds()[5].1);
    assert_eq!(
        (s.readings, s.rejected),
        (1, 2),
        "replay and repeat rejected"
    );
    let s = harness::run(&seeds()[6].1);
    assert_eq!(
        (s.joins, s.readings, s.rejected),
        (1, 2, 1),
        "join, 2 uplinks, nonce reuse"
    );
    assert_eq!(
        s.downlinks, 3,
        "JoinAccept, LinkCheckAns, ACK + LinkCheckAns"
    );
}

#[test]
fn every_corpus_input_runs_without_panicking() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            harness::run(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    // (With UPDATE_SEEDS the seeds may be written while this runs.)
    if std::env::var_os("UPDATE_SEEDS").is_none() {
        assert!(n >= seeds().len(), "corpus has {n} files");
    }
    eprintln!("ran {n} corpus inputs");
}
