//! Model test: random sequences of observe / check_lost / persist / reopen
//! with non-decreasing time, compared after every step with a plain
//! `BTreeMap` model for `list()` and the multiset of events.
//!
//! The model keeps two maps: `live` (memory) and `disk` (as of the last
//! persist). Reopen without persisting models a crash: memory is replaced
//! by what was persisted.

use std::collections::{BTreeMap, BTreeSet};

use gatewayd_devices::{DeviceEvent, DeviceInfo, DeviceRegistry, DevicesConfig};
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp};
use proptest::prelude::*;
use tokio::sync::broadcast::{self, error::TryRecvError};

const IDS: [&str; 7] = [
    "coap:a",
    "ble:b",
    "lora:70B3D57ED0000001",
    "serial:tty0",
    "thread:t",
    "matter:m",
    "app:x",
];
const SOURCES: [&str; 2] = ["src-1", "src-2"];
const FIRMWARE: [&str; 3] = ["1.0", "1.1", "2.0"];

#[derive(Debug, Clone)]
struct R {
    dev: usize,
    source: Option<usize>,
    rssi: Option<i8>,
    snr: Option<i8>,
    battery_meta: Option<u8>,
    battery_el: Option<u8>,
    battery_volts: bool,
    firmware: Option<usize>,
}

#[derive(Debug, Clone)]
enum Op {
    Observe(Vec<R>),
    CheckLost,
    Persist,
    Reopen,
}

fn r_strategy() -> impl Strategy<Value = R> {
    (
        0..IDS.len(),
        proptest::option::of(0..SOURCES.len()),
        proptest::option::of(any::<i8>()),
        proptest::option::of(any::<i8>()),
        proptest::option::weighted(0.2, 0u8..=100),
        proptest::option::weighted(0.2, 0u8..=100),
        any::<bool>(),
        proptest::option::weighted(0.2, 0..FIRMWARE.len()),
    )
        .prop_map(
            |(dev, source, rssi, snr, battery_meta, battery_el, battery_volts, firmware)| R {
                dev,
                source,
                rssi,
                snr,
                battery_meta,
                battery_el,
                battery_volts,
                firmware,
            },
        )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(r_strategy(), 1..5).prop_map(Op::Observe),
        3 => Just(Op::CheckLost),
        2 => Just(Op::Persist),
        1 => Just(Op::Reopen),
    ]
}

fn to_reading(r: &R) -> Reading {
    let device: DeviceId = IDS[r.dev].parse().unwrap();
    let mut m = vec![Measurement::float("temperature", Some("Cel"), 20.0)];
    if r.battery_volts {
        m.push(Measurement::float("battery", Some("V"), 3.3));
    }
    if let Some(b) = r.battery_el {
        m.push(Measurement::float("battery", Some("%EL"), f64::from(b)));
    }
    let mut reading = Reading::new(device, Timestamp(0), m);
    reading.meta.source = r.source.map(|s| SOURCES[s].to_owned());
    reading.meta.rssi = r.rssi.map(f64::from);
    reading.meta.snr = r.snr.map(|v| f64::from(v) / 4.0);
    reading.meta.battery = r.battery_meta.map(f64::from);
    if let Some(f) = r.firmware {
        reading
            .meta
            .extra
            .insert("firmware".into(), FIRMWARE[f].into());
    }
    reading
}

/// The specification, written as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    live: BTreeMap<String, DeviceInfo>,
    disk: BTreeMap<String, DeviceInfo>,
    /// Changed since the last persist (or reopen).
    dirty: BTreeSet<String>,
    /// Evictions since the registry was (re)opened.
    evicted: u64,
    max: usize,
    lost_after_ms: u64,
}

impl Model {
    fn observe(&mut self, rs: &[R], now: u64, events: &mut Vec<DeviceEvent>) {
        for r in rs {
            let id = IDS[r.dev].to_owned();
            if !self.live.contains_key(&id) {
                if self.live.len() >= self.max {
                    let oldest = self
                        .live
                        .values()
                        .min_by(|a, b| (a.last_seen_ms, &a.id).cmp(&(b.last_seen_ms, &b.id)))
                        .unwrap()
                        .id
                        .clone();
                    self.live.remove(&oldest);
                    self.evicted += 1;
                }
                events.push(DeviceEvent::FirstSeen {
                    id: id.clone(),
                    transport: id.split(':').next().unwrap().to_owned(),
                    source: r.source.map(|s| SOURCES[s]).unwrap_or("").to_owned(),
                });
                self.live.insert(
                    id.clone(),
                    DeviceInfo {
                        id: id.clone(),
                        transport: id.split(':').next().unwrap().to_owned(),
                        source: None,
                        first_seen_ms: now,
                        last_seen_ms: now,
                        readings: 0,
                        lost: false,
                        rssi: None,
                        snr: None,
                        battery: None,
                        firmware: None,
                    },
                );
            }
            self.dirty.insert(id.clone());
            let d = self.live.get_mut(&id).unwrap();
            if d.lost {
                events.push(DeviceEvent::Returned {
                    id: id.clone(),
                    lost_for_ms: now - d.last_seen_ms,
                });
                d.lost = false;
            }
            d.last_seen_ms = now;
            d.readings += 1;
            if let Some(s) = r.source {
                d.source = Some(SOURCES[s].into());
            }
            if let Some(v) = r.rssi {
                d.rssi = Some(f64::from(v));
            }
            if let Some(v) = r.snr {
                d.snr = Some(f64::from(v) / 4.0);
            }
            if let Some(b) = r.battery_meta.or(r.battery_el) {
                d.battery = Some(f64::from(b));
            }
            if let Some(f) = r.firmware {
                d.firmware = Some(FIRMWARE[f].into());
            }
        }
    }

    fn check_lost(&mut self, now: u64, events: &mut Vec<DeviceEvent>) {
        for d in self.live.values_mut() {
            if !d.lost && now - d.last_seen_ms >= self.lost_after_ms {
                d.lost = true;
                self.dirty.insert(d.id.clone());
                events.push(DeviceEvent::Lost {
                    id: d.id.clone(),
                    last_seen_ms: d.last_seen_ms,
                });
            }
        }
    }
}

fn drain(rx: &mut broadcast::Receiver<DeviceEvent>) -> Vec<DeviceEvent> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("events: {e}"),
        }
    }
}

fn sorted(events: Vec<DeviceEvent>) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn registry_matches_model(
        max in 1usize..=5,
        lost_after_secs in 1u64..=3,
        steps in proptest::collection::vec((0u64..2500, op_strategy()), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.db");
        let cfg = DevicesConfig { lost_after_secs, max_devices: max, persist_interval_secs: 30 };
        let mut reg = DeviceRegistry::open(&path, cfg.clone()).unwrap();
        let mut rx = reg.events();
        let mut model = Model { max, lost_after_ms: lost_after_secs * 1000, ..Model::default() };
        let mut now = 1_700_000_000_000u64;

        for (dt, op) in &steps {
            now += dt;
            let mut expected = Vec::new();
            match op {
                Op::Observe(rs) => {
                    let readings: Vec<Reading> = rs.iter().map(to_reading).collect();
                    reg.observe(&readings, now);
                    model.observe(rs, now, &mut expected);
                }
                Op::CheckLost => {
                    reg.check_lost(now);
                    model.check_lost(now, &mut expected);
                }
                Op::Persist => {
                    // Rows written: changed entries still present, plus
                    // deletes of rows whose device was evicted.
                    let upserts = model.dirty.iter().filter(|id| model.live.contains_key(*id)).count();
                    let deletes = model.disk.keys().filter(|id| !model.live.contains_key(*id)).count();
                    prop_assert_eq!(reg.persist().unwrap(), upserts + deletes, "rows written");
                    prop_assert_eq!(reg.persist().unwrap(), 0, "second persist writes nothing");
                    model.disk = model.live.clone();
                    model.dirty.clear();
                }
                Op::Reopen => {
                    drop(rx);
                    drop(reg);
                    reg = DeviceRegistry::open(&path, cfg.clone()).unwrap();
                    rx = reg.events();
                    model.live = model.disk.clone();
                    model.dirty.clear();
                    model.evicted = 0;
                }
            }
            prop_assert_eq!(sorted(drain(&mut rx)), sorted(expected), "events after {:?}", op);
            let want: Vec<DeviceInfo> = model.live.values().cloned().collect();
            prop_assert_eq!(reg.list(), want, "list after {:?}", op);
            prop_assert!(reg.len() <= max);
            prop_assert_eq!(reg.evicted(), model.evicted, "evicted after {:?}", op);
        }
    }
}
