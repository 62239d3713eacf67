//! Behaviour of the device registry, one test per promise.

use std::path::Path;
use std::time::Duration;

use gatewayd_devices::{
    DeviceEvent, DeviceRegistry, DevicesConfig, DevicesError, APPLICATION_ID, SCHEMA_VERSION,
};
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio_util::sync::CancellationToken;

const T0: u64 = 1_700_000_000_000;

fn cfg() -> DevicesConfig {
    DevicesConfig {
        lost_after_secs: 60,
        max_devices: 100,
        persist_interval_secs: 30,
    }
}

fn reading(id: &str) -> Reading {
    let device: DeviceId = id.parse().unwrap();
    Reading::new(
        device,
        Timestamp(0),
        vec![Measurement::float("temperature", Some("Cel"), 21.5)],
    )
}

fn from(id: &str, source: &str) -> Reading {
    let mut r = reading(id);
    r.meta.source = Some(source.into());
    r
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

fn open(path: &Path) -> DeviceRegistry {
    DeviceRegistry::open(path, cfg()).unwrap()
}

#[test]
fn first_reading_emits_first_seen_once() {
    let reg = DeviceRegistry::in_memory(cfg());
    let mut rx = reg.events();
    // Two readings of the same new device in one group: one event.
    reg.observe(
        &[from("coap:boiler-1", "coap"), reading("coap:boiler-1")],
        T0,
    );
    assert_eq!(
        drain(&mut rx),
        vec![DeviceEvent::FirstSeen {
            id: "coap:boiler-1".into(),
            transport: "coap".into(),
            source: "coap".into(),
        }]
    );
    let d = reg.get("coap:boiler-1").unwrap();
    assert_eq!(d.readings, 2);
    assert_eq!((d.first_seen_ms, d.last_seen_ms), (T0, T0));
    assert_eq!(d.source.as_deref(), Some("coap"));
    assert_eq!(d.state(), "active");

    // Unknown source: "".
    reg.observe(&[reading("lora:70B3D57ED0000001")], T0 + 1);
    assert_eq!(
        drain(&mut rx),
        vec![DeviceEvent::FirstSeen {
            id: "lora:70B3D57ED0000001".into(),
            transport: "lora".into(),
            source: String::new(),
        }]
    );
}

#[test]
fn second_reading_of_same_device_emits_nothing() {
    let reg = DeviceRegistry::in_memory(cfg());
    reg.observe(&[reading("ble:aa")], T0);
    let mut rx = reg.events();
    reg.observe(&[reading("ble:aa")], T0 + 1000);
    assert_eq!(drain(&mut rx), vec![]);
    let d = reg.get("ble:aa").unwrap();
    assert_eq!(
        (d.first_seen_ms, d.last_seen_ms, d.readings),
        (T0, T0 + 1000, 2)
    );
    assert_eq!(reg.len(), 1);
    assert!(!reg.is_empty());
}

#[test]
fn reopen_after_persist_keeps_first_seen_and_emits_no_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    let reg = open(&path);
    let mut r = from("coap:boiler-1", "coap-main");
    r.meta.rssi = Some(-71.5);
    r.meta.snr = Some(7.25);
    r.meta.battery = Some(88.0);
    r.meta.extra.insert("firmware".into(), "1.2.3".into());
    reg.observe(&[r], T0);
    reg.observe(&[reading("coap:boiler-1")], T0 + 500);
    let before = reg.list();
    assert_eq!(reg.persist().unwrap(), 1);
    drop(reg);

    let reg = open(&path);
    let mut rx = reg.events();
    assert_eq!(reg.list(), before);
    let d = &before[0];
    assert_eq!(
        (d.first_seen_ms, d.last_seen_ms, d.readings),
        (T0, T0 + 500, 2)
    );
    assert_eq!(d.firmware.as_deref(), Some("1.2.3"));
    reg.observe(&[reading("coap:boiler-1")], T0 + 1000);
    assert_eq!(drain(&mut rx), vec![]);
    let d = reg.get("coap:boiler-1").unwrap();
    assert_eq!((d.first_seen_ms, d.readings), (T0, 3));
}

#[test]
fn lost_after_silence_emits_lost_once() {
    let reg = DeviceRegistry::in_memory(cfg());
    reg.observe(&[reading("ble:aa")], T0);
    reg.observe(&[reading("ble:bb")], T0 + 30_000);
    let mut rx = reg.events();
    reg.check_lost(T0 + 59_999);
    assert_eq!(drain(&mut rx), vec![]);
    reg.check_lost(T0 + 60_000);
    assert_eq!(
        drain(&mut rx),
        vec![DeviceEvent::Lost {
            id: "ble:aa".into(),
            last_seen_ms: T0
        }]
    );
    assert!(reg.get("ble:aa").unwrap().lost);
    assert_eq!(reg.get("ble:aa").unwrap().state(), "lost");
    assert!(!reg.get("ble:bb").unwrap().lost);
    // Once: later checks do not repeat it.
    reg.check_lost(T0 + 61_000);
    reg.check_lost(T0 + 70_000);
    assert_eq!(drain(&mut rx), vec![]);
    reg.check_lost(T0 + 90_000);
    assert_eq!(
        drain(&mut rx),
        vec![DeviceEvent::Lost {
            id: "ble:bb".into(),
            last_seen_ms: T0 + 30_000
        }]
    );
}

#[test]
fn returned_after_lost_emits_returned_and_state_active() {
    let reg = DeviceRegistry::in_memory(cfg());
    reg.observe(&[reading("serial:tty0")], T0);
    reg.check_lost(T0 + 60_000);
    let mut rx = reg.events();
    reg.observe(
        &[reading("serial:tty0"), reading("serial:tty0")],
        T0 + 100_000,
    );
    assert_eq!(
        drain(&mut rx),
        vec![DeviceEvent::Returned {
            id: "serial:tty0".into(),
            lost_for_ms: 100_000
        }]
    );
    let d = reg.get("serial:tty0").unwrap();
    assert!(!d.lost);
    assert_eq!(d.state(), "active");
    assert_eq!((d.last_seen_ms, d.readings), (T0 + 100_000, 3));
    // Active again: it can be lost again, once.
    reg.check_lost(T0 + 160_000);
    assert_eq!(drain(&mut rx).len(), 1);
}

#[test]
fn lost_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    let reg = open(&path);
    reg.observe(&[reading("thread:t1")], T0);
    reg.observe(&[reading("matter:m1")], T0 + 50_000);
    reg.check_lost(T0 + 60_000);
    assert!(reg.get("thread:t1").unwrap().lost);
    reg.persist().unwrap();
    drop(reg);

    let reg = open(&path);
    let mut rx = reg.events();
    assert!(reg.get("thread:t1").unwrap().lost);
    assert!(!reg.get("matter:m1").unwrap().lost);
    // Not announced as lost again; the other is lost by its persisted last_seen.
    reg.check_lost(T0 + 110_000);
    assert_eq!(
        drain(&mut rx),
        vec![DeviceEvent::Lost {
            id: "matter:m1".into(),
            last_seen_ms: T0 + 50_000
        }]
    );
    reg.observe(&[reading("thread:t1")], T0 + 120_000);
    assert_eq!(
        drain(&mut rx),
        vec![DeviceEvent::Returned {
            id: "thread:t1".into(),
            lost_for_ms: 120_000
        }]
    );
}

#[test]
fn battery_from_meta_and_from_el_measurement_last_value_kept() {
    let reg = DeviceRegistry::in_memory(cfg());
    let id = "lora:70B3D57ED0000001";

    let mut r = reading(id);
    r.meta.battery = Some(90.0);
    r.meta.rssi = Some(-100.0);
    r.meta.snr = Some(-3.5);
    reg.observe(&[r], T0);
    let d = reg.get(id).unwrap();
    assert_eq!(
        (d.battery, d.rssi, d.snr),
        (Some(90.0), Some(-100.0), Some(-3.5))
    );

    // A reading without any of them keeps the last values.
    reg.observe(&[reading(id)], T0 + 1);
    let d = reg.get(id).unwrap();
    assert_eq!(
        (d.battery, d.rssi, d.snr),
        (Some(90.0), Some(-100.0), Some(-3.5))
    );

    // From a `battery` measurement in %EL; other units do not count.
    let mut r = reading(id);
    r.measurements
        .push(Measurement::float("battery", Some("V"), 3.1));
    reg.observe(&[r.clone()], T0 + 2);
    assert_eq!(reg.get(id).unwrap().battery, Some(90.0));
    r.measurements
        .push(Measurement::float("battery", Some("%EL"), 71.0));
    reg.observe(&[r.clone()], T0 + 3);
    assert_eq!(reg.get(id).unwrap().battery, Some(71.0));

    // Metadata wins over the measurement.
    r.meta.battery = Some(65.0);
    reg.observe(&[r], T0 + 4);
    assert_eq!(reg.get(id).unwrap().battery, Some(65.0));

    // Non-finite values are ignored.
    let mut r = reading(id);
    r.meta.rssi = Some(f64::NAN);
    r.meta.battery = Some(f64::INFINITY);
    reg.observe(&[r], T0 + 5);
    let d = reg.get(id).unwrap();
    assert_eq!((d.battery, d.rssi), (Some(65.0), Some(-100.0)));
}

#[test]
fn firmware_from_extra() {
    let reg = DeviceRegistry::in_memory(cfg());
    let mut r = from("coap:boiler-1", "coap");
    r.meta.extra.insert("firmware".into(), "2.0.1".into());
    r.meta.extra.insert("fcnt".into(), "7".into());
    reg.observe(&[r.clone()], T0);
    assert_eq!(
        reg.get("coap:boiler-1").unwrap().firmware.as_deref(),
        Some("2.0.1")
    );
    reg.observe(&[reading("coap:boiler-1")], T0 + 1);
    assert_eq!(
        reg.get("coap:boiler-1").unwrap().firmware.as_deref(),
        Some("2.0.1")
    );
    r.meta.extra.insert("firmware".into(), "2.1.0".into());
    r.meta.source = Some("coap-b".into());
    reg.observe(&[r], T0 + 2);
    let d = reg.get("coap:boiler-1").unwrap();
    assert_eq!(d.firmware.as_deref(), Some("2.1.0"));
    // A reading without a source keeps the last one.
    assert_eq!(d.source.as_deref(), Some("coap-b"));
}

#[test]
fn eviction_keeps_at_most_max_devices_and_evicts_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    let small = DevicesConfig {
        max_devices: 3,
        ..cfg()
    };
    let reg = DeviceRegistry::open(&path, small.clone()).unwrap();
    reg.observe(&[reading("ble:a")], T0);
    reg.observe(&[reading("ble:b")], T0 + 10);
    reg.observe(&[reading("ble:c")], T0 + 20);
    reg.observe(&[reading("ble:a")], T0 + 30); // a is now the newest
    reg.persist().unwrap();
    let mut rx = reg.events();
    reg.observe(&[reading("ble:d")], T0 + 40);
    assert_eq!(reg.len(), 3);
    assert_eq!(reg.evicted(), 1);
    let ids: Vec<String> = reg.list().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["ble:a", "ble:c", "ble:d"]);
    assert_eq!(drain(&mut rx).len(), 1); // FirstSeen(d), nothing for b

    // A lost device is the oldest, so it goes first.
    reg.check_lost(T0 + 60_030);
    reg.observe(&[reading("ble:c"), reading("ble:d")], T0 + 60_040);
    reg.observe(&[reading("ble:e")], T0 + 60_050);
    let ids: Vec<String> = reg.list().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["ble:c", "ble:d", "ble:e"]);
    assert_eq!(reg.evicted(), 2);

    // The evicted rows are deleted from the file.
    reg.persist().unwrap();
    drop(reg);
    let reg = DeviceRegistry::open(&path, small).unwrap();
    let ids: Vec<String> = reg.list().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["ble:c", "ble:d", "ble:e"]);
    drop(reg);

    // Reopening with a smaller bound forgets the oldest.
    let reg = DeviceRegistry::open(
        &path,
        DevicesConfig {
            max_devices: 2,
            ..cfg()
        },
    )
    .unwrap();
    let ids: Vec<String> = reg.list().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["ble:d", "ble:e"]);
    assert_eq!(reg.evicted(), 1);
    assert_eq!(reg.persist().unwrap(), 1); // the delete
}

#[test]
fn evicted_device_that_returns_is_new_again() {
    let reg = DeviceRegistry::in_memory(DevicesConfig {
        max_devices: 1,
        ..cfg()
    });
    reg.observe(&[reading("app:x")], T0);
    reg.observe(&[reading("app:y")], T0 + 1);
    let mut rx = reg.events();
    reg.observe(&[reading("app:x")], T0 + 2);
    assert!(matches!(&drain(&mut rx)[..], [DeviceEvent::FirstSeen { id, .. }] if id == "app:x"));
    let d = reg.get("app:x").unwrap();
    assert_eq!((d.first_seen_ms, d.readings), (T0 + 2, 1));
    assert_eq!(reg.evicted(), 2);
}

#[test]
fn persist_writes_only_dirty_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    let reg = open(&path);
    assert_eq!(reg.persist().unwrap(), 0);
    reg.observe(
        &[reading("coap:a"), reading("coap:b"), reading("coap:c")],
        T0,
    );
    assert_eq!(reg.persist().unwrap(), 3);
    assert_eq!(reg.persist().unwrap(), 0);
    reg.observe(&[reading("coap:b")], T0 + 1);
    assert_eq!(reg.persist().unwrap(), 1);
    assert_eq!(reg.persist().unwrap(), 0);
    // Being marked lost is a change too.
    reg.check_lost(T0 + 60_000);
    assert_eq!(reg.persist().unwrap(), 2);
    assert_eq!(reg.persist().unwrap(), 0);
    reg.check_lost(T0 + 60_001);
    assert_eq!(reg.persist().unwrap(), 1);
    assert_eq!(reg.persist().unwrap(), 0);
    drop(reg);
    // Loading does not make anything dirty.
    let reg = open(&path);
    assert_eq!(reg.len(), 3);
    assert_eq!(reg.persist().unwrap(), 0);
}

#[test]
fn in_memory_persist_is_a_noop() {
    let reg = DeviceRegistry::in_memory(DevicesConfig {
        max_devices: 0, // clamped to 1
        ..cfg()
    });
    assert!(!reg.is_persistent());
    assert_eq!(reg.config().max_devices, 1);
    reg.observe(&[reading("coap:a"), reading("coap:b")], T0);
    assert_eq!(reg.len(), 1);
    assert_eq!(reg.persist().unwrap(), 0);
}

#[test]
fn corrupt_file_gives_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    std::fs::write(&path, "this is not an SQLite database\n".repeat(200)).unwrap();
    let err = DeviceRegistry::open(&path, cfg()).unwrap_err();
    assert!(matches!(err, DevicesError::Open { .. }), "{err:?}");
    assert_eq!(err.path(), path);
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    // A damaged SQLite file: valid header, garbage pages.
    let path = dir.path().join("damaged.db");
    drop(open(&path));
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[100..] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = DeviceRegistry::open(&path, cfg()).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn another_sqlite_file_or_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE readings(seq INTEGER PRIMARY KEY);")
            .unwrap();
    }
    let err = DeviceRegistry::open(&path, cfg()).unwrap_err();
    assert!(matches!(err, DevicesError::NotARegistry { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));

    let path = dir.path().join("newer.db");
    drop(open(&path));
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let v: i32 = c
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(v, APPLICATION_ID);
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = DeviceRegistry::open(&path, cfg()).unwrap_err();
    assert!(
        matches!(err, DevicesError::UnsupportedSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
}

#[test]
fn invalid_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    let err = DeviceRegistry::open(
        &path,
        DevicesConfig {
            persist_interval_secs: 0,
            ..cfg()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("devices.persist_interval_secs"),
        "{err}"
    );
}

#[test]
fn second_opener_is_told_the_file_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    let _first = open(&path);
    let err = DeviceRegistry::open(&path, cfg()).unwrap_err();
    assert!(matches!(err, DevicesError::Locked { .. }), "{err:?}");
}

#[tokio::test]
async fn run_persists_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.db");
    let reg = DeviceRegistry::open(
        &path,
        DevicesConfig {
            persist_interval_secs: 3600,
            ..cfg()
        },
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(reg.clone().run(stop.clone()));
    reg.observe(&[from("coap:boiler-1", "coap")], T0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returns once stopped")
        .unwrap();
    drop(reg);
    let reg = open(&path);
    assert_eq!(reg.get("coap:boiler-1").unwrap().first_seen_ms, T0);
}

#[tokio::test]
async fn run_marks_silent_devices_lost() {
    let reg = DeviceRegistry::in_memory(DevicesConfig {
        lost_after_secs: 1,
        ..cfg()
    });
    let mut rx = reg.events();
    reg.observe(&[reading("ble:aa")], gatewayd_devices::now_ms() - 5_000);
    rx.recv().await.unwrap(); // FirstSeen
    let stop = CancellationToken::new();
    let task = tokio::spawn(reg.clone().run(stop.clone()));
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("checked within ~1 s")
        .unwrap();
    assert!(
        matches!(ev, DeviceEvent::Lost { ref id, .. } if id == "ble:aa"),
        "{ev:?}"
    );
    stop.cancel();
    task.await.unwrap();
}
