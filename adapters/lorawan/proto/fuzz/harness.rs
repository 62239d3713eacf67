//! The `phypayload` fuzz harness, shared by the cargo-fuzz target
//! (`fuzz_targets/phypayload.rs`) and `tests/fuzz_corpus.rs`, which runs
//! the corpus under `cargo test`.
//!
//! Input: a sequence of records `ctl | len | len bytes of PHYPayload`
//! (a record cut short takes the rest of the input). `ctl` bits 0-1 pick
//! one of four gateways, bit 2 closes the dedup window after the record,
//! bit 3 queues a confirmed downlink first, bits 4-5 pick the uplink
//! spreading factor. The network server has one ABP and one OTAA device;
//! seeds are valid frames for them, so mutations reach past the MIC when
//! the fuzzer splices whole records.
//!
//! Beyond "no panic", the harness checks invariants on the actions:
//! readings only for FPort 1..=223 with strictly increasing FCnt per
//! device, downlinks of a sane size for a known device, FCntDown never
//! going backwards.

// Each includer uses a different part (the fuzz target only `run`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use gatewayd_lorawan_proto::{
    Action, Activation, AesKey, DataRate, DevAddr, DeviceRecord, Eui64, Event, MemoryStore,
    NetworkServer, QueuedDownlink, Region, RxInfo, ServerConfig,
};

pub const ABP_EUI: Eui64 = Eui64([0xA1, 0, 0, 0, 0, 0, 0, 1]);
pub const ABP_ADDR: u32 = 0x2601_1BDA;
pub const ABP_NWK: [u8; 16] = [0x11; 16];
pub const ABP_APP: [u8; 16] = [0x22; 16];
pub const OTAA_EUI: Eui64 = Eui64([0x00, 0x04, 0xA3, 0x0B, 0x00, 0x1C, 0x05, 0x30]);
pub const JOIN_EUI: Eui64 = Eui64([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 0x00]);
pub const APP_KEY: [u8; 16] = [0x5A; 16];

/// A fresh server and store with the two devices.
pub fn setup() -> (NetworkServer, MemoryStore) {
    let mut store = MemoryStore::new();
    store.insert(DeviceRecord {
        dev_eui: ABP_EUI,
        profile: "cayenne".into(),
        activation: Activation::Abp {
            dev_addr: DevAddr(ABP_ADDR),
            nwk_s_key: AesKey(ABP_NWK),
            app_s_key: AesKey(ABP_APP),
        },
        session: None,
    });
    store.insert(DeviceRecord {
        dev_eui: OTAA_EUI,
        profile: "raw".into(),
        activation: Activation::Otaa {
            join_eui: JOIN_EUI,
            app_key: AesKey(APP_KEY),
        },
        session: None,
    });
    let ns = NetworkServer::new(ServerConfig::new(Region::Eu868)).expect("valid config");
    (ns, store)
}

/// Encodes frames as harness input (ctl 0x04: one gateway, window closed
/// after each frame).
pub fn encode(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.push(0x04);
        out.push(f.len() as u8);
        out.extend_from_slice(f);
    }
    out
}

/// What one run produced (the corpus test checks that seeds go deep).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub readings: usize,
    pub downlinks: usize,
    pub joins: usize,
    pub rejected: usize,
}

fn check(
    actions: &[Action],
    last_fcnt: &mut HashMap<Eui64, u32>,
    fcnt_down: &mut HashMap<Eui64, u32>,
    summary: &mut Summary,
) {
    for a in actions {
        match a {
            Action::Joined { dev_eui, .. } => {
                // A new session restarts the counters.
                last_fcnt.remove(dev_eui);
                fcnt_down.remove(dev_eui);
                summary.joins += 1;
            }
            Action::Rejected { .. } => summary.rejected += 1,
            Action::Reading(r) => {
                summary.readings += 1;
                assert!((1..=223).contains(&r.fport), "reading on FPort {}", r.fport);
                if let Some(prev) = last_fcnt.insert(r.dev_eui, r.fcnt) {
                    assert!(r.fcnt > prev, "FCnt went from {prev} to {}", r.fcnt);
                }
            }
            Action::Downlink(d) => {
                summary.downlinks += 1;
                assert!(
                    d.phy.len() >= 12 && d.phy.len() <= 255,
                    "downlink of {} bytes",
                    d.phy.len()
                );
                assert!(d.dev_eui == ABP_EUI || d.dev_eui == OTAA_EUI);
            }
            Action::SessionChanged { dev_eui, session } => {
                // Never backwards within a session (`Joined`, which follows
                // a join's SessionChanged, clears the entry).
                if let Some(prev) = fcnt_down.get(dev_eui) {
                    if session.fcnt_up.is_some() {
                        assert!(session.fcnt_down >= *prev, "FCntDown went back");
                    }
                }
                fcnt_down.insert(*dev_eui, session.fcnt_down);
            }
            _ => {}
        }
    }
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) -> Summary {
    let mut summary = Summary::default();
    let (mut ns, mut store) = setup();
    let mut now_ms = 1_000u64;
    let mut last_fcnt = HashMap::new();
    let mut fcnt_down = HashMap::new();
    let mut rest = data;
    let mut n = 0u32;
    while !rest.is_empty() && n < 64 {
        n += 1;
        let ctl = rest[0];
        let (frame, next) = match rest.get(1) {
            Some(&len) => {
                let body = &rest[2..];
                let len = usize::from(len).min(body.len());
                (&body[..len], &body[len..])
            }
            None => (&rest[..0], &rest[1..]),
        };
        rest = next;
        if ctl & 0x08 != 0 {
            let _ = ns.enqueue(
                ABP_EUI,
                QueuedDownlink {
                    id: 1,
                    fport: 1 + (ctl & 0x7F),
                    payload: frame.iter().take(8).copied().collect(),
                    confirmed: true,
                },
            );
        }
        let sf = 7 + ((ctl >> 4) & 0x03) * 2; // 7, 9, 11, 13 (13: not a LoRa DR)
        let rx = RxInfo {
            gateway: Eui64::from(u64::from(ctl & 0x03)),
            tmst: (now_ms as u32).wrapping_mul(1_000),
            freq_hz: 868_100_000,
            data_rate: DataRate { sf, bw_khz: 125 },
            rssi: -100 + i16::from(ctl & 0x03),
            snr: f32::from(ctl & 0x0F) - 7.0,
            time: Some(Duration::from_millis(1_600_000_000_000 + now_ms)),
        };
        let actions = ns.handle(
            &store,
            Event::Uplink {
                now_ms,
                rx,
                phy: frame.to_vec(),
            },
        );
        store.apply(&actions);
        check(&actions, &mut last_fcnt, &mut fcnt_down, &mut summary);
        now_ms += 10;
        if ctl & 0x04 != 0 {
            now_ms += 1_000;
            let actions = ns.handle(&store, Event::Tick { now_ms });
            store.apply(&actions);
            check(&actions, &mut last_fcnt, &mut fcnt_down, &mut summary);
        }
    }
    now_ms += 10_000;
    let actions = ns.handle(&store, Event::Tick { now_ms });
    store.apply(&actions);
    check(&actions, &mut last_fcnt, &mut fcnt_down, &mut summary);
    summary
}
