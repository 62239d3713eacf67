//! The serial source on real pseudo-terminals: a simulated sensor (the
//! test's `common::Device`, speaking `gatewayd-sensor-proto` like the
//! firmware) holds the master side; the source opens the slave through a
//! symlink, as it would `/dev/serial/by-id/…`. The test plays the buffer
//! writer on the other end of a real `ReadingSink`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Answer, Device};
use gatewayd_adapter_serial::{PortConfig, SerialConfig, SerialSource, SerialStats};
use gatewayd_core::{
    command_channel, ingest_channel, CancellationToken, CommandError, CommandSender, HealthHandle,
    Ingest, ReadingSink, Source, SourceContext, SourceError, SourceState,
};
use gatewayd_model::Reading;
use gatewayd_sensor_proto::msg::{Body, Command, ErrorCode};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Guards against hangs only; no test asserts on elapsed time.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .expect("test hang guard expired")
}

struct Harness {
    ingest: mpsc::Receiver<Ingest>,
    shutdown: CancellationToken,
    stats: SerialStats,
    health: watch::Receiver<SourceState>,
    commands: CommandSender,
    task: JoinHandle<Result<(), SourceError>>,
    _dir: tempfile::TempDir,
    link: PathBuf,
}

fn config(link: &Path) -> SerialConfig {
    SerialConfig {
        ports: vec![PortConfig {
            path: link.to_string_lossy().into_owned(),
            name: Some("bench-0".into()),
            ..PortConfig::default()
        }],
        reopen_min_ms: 50,
        reopen_max_ms: 200,
        command_timeout_ms: 300,
        command_retries: 2,
        hello_timeout_ms: 200,
        ..SerialConfig::default()
    }
}

/// Starts a source on `<tmp>/ttySENSOR`, which `device` (if any) is plugged
/// into first.
async fn start(device: Option<&Device>, edit: impl FnOnce(&mut SerialConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttySENSOR");
    if let Some(d) = device {
        d.plug_into(&link);
    }
    let mut cfg = config(&link);
    edit(&mut cfg);
    let source = SerialSource::build("sources.wired", cfg).expect("valid config");
    let stats = source.stats();
    let (tx, rx) = ingest_channel(64);
    let (health, health_rx) = HealthHandle::new();
    let (commands, inbox) = command_channel(8);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        name: "wired".into(),
        sink: ReadingSink::new(tx, "wired"),
        shutdown: shutdown.clone(),
        health,
        status: gatewayd_core::StatusHandle::new().0,
        commands: inbox,
    };
    let task = tokio::spawn(source.run(ctx));
    Harness {
        ingest: rx,
        shutdown,
        stats,
        health: health_rx,
        commands,
        task,
        _dir: dir,
        link,
    }
}

impl Harness {
    /// The next reading submitted (readings arrive one per message).
    async fn next(&mut self) -> Reading {
        let mut ingest = within(self.ingest.recv()).await.expect("sink open");
        assert_eq!(ingest.readings.len(), 1, "{:?}", ingest.readings);
        ingest.readings.remove(0)
    }

    /// The next sensor reading (skipping diagnostics).
    async fn next_sample(&mut self) -> Reading {
        loop {
            let r = self.next().await;
            if !is_diagnostics(&r) {
                return r;
            }
        }
    }

    async fn wait_health(&mut self, pred: impl Fn(&SourceState) -> bool) -> SourceState {
        within(self.health.wait_for(|s| pred(s)))
            .await
            .expect("health channel open")
            .clone()
    }

    async fn wait_stats(&self, what: &str, pred: impl Fn(&SerialStats) -> bool) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        while !pred(&self.stats) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not reached; ports: {:?}",
                self.stats.ports()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn command(&self, request: serde_json::Value) -> Result<serde_json::Value, CommandError> {
        within(self.commands.call(request, Duration::from_secs(10))).await
    }

    async fn stop(self) -> Result<(), SourceError> {
        self.shutdown.cancel();
        within(self.task).await.expect("source task panicked")
    }
}

fn is_diagnostics(r: &Reading) -> bool {
    r.meta.extra.get("kind").map(String::as_str) == Some("diagnostics")
}

fn value(r: &Reading, name: &str) -> Option<f64> {
    r.measurements
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| match m.value {
            Some(gatewayd_model::Value::Float(f)) => Some(f),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_and_diagnostics_from_a_pty_sensor_reach_the_sink() {
    let dev = Device::new("pty-0001");
    let mut h = start(Some(&dev), |_| {}).await;
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.boot();
    let diag = h.next().await;
    assert!(is_diagnostics(&diag), "{diag:?}");
    assert_eq!(diag.device.to_string(), "serial:pty-0001");
    assert_eq!(diag.meta.extra["firmware"], "0.3.1");
    assert_eq!(diag.meta.extra["reset_reason"], "power_on");
    assert_eq!(diag.meta.extra["port"], "bench-0");
    assert_eq!(value(&diag, "battery"), Some(3.0));
    assert_eq!(value(&diag, "sample_interval"), Some(0.1));

    dev.sample();
    let r = h.next().await;
    assert_eq!(r.device.to_string(), "serial:pty-0001");
    assert_eq!(value(&r, "temperature"), Some(21.5));
    assert_eq!(value(&r, "humidity"), Some(40.0));
    let t = r
        .measurements
        .iter()
        .find(|m| m.name == "temperature")
        .unwrap();
    assert_eq!(t.unit.as_deref(), Some("Cel"));
    // Diagnostics travel with every reading as metadata.
    assert_eq!(r.meta.extra["firmware"], "0.3.1");
    assert_eq!(r.meta.extra["reset_reason"], "power_on");
    assert_eq!(r.meta.extra["battery_mv"], "3000");
    assert_eq!(r.meta.extra["port"], "bench-0");
    assert!(r.meta.extra.contains_key("device_time_ms"));

    // The per-sensor firmware version and last-seen are in the status.
    let port = h.stats.port("bench-0").unwrap();
    let d = port.device.expect("device known");
    assert_eq!(d.id.as_deref(), Some("serial:pty-0001"));
    assert_eq!(d.firmware.as_deref(), Some("0.3.1"));
    assert!(d.last_seen_ms.is_some());
    assert!(d.identified);
    assert_eq!(port.counters.readings_submitted, 2);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_corrupt_frames_are_counted_and_the_stream_resyncs() {
    let dev = Device::new("pty-0002");
    let mut h = start(Some(&dev), |_| {}).await;
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.boot();
    assert!(is_diagnostics(&h.next().await));

    // Line noise without a delimiter, then a frame cut in half (the rest
    // never comes: the next delimiter ends it), then one whose CRC is
    // wrong, then a frame too long for any message, then a good one.
    dev.send_raw(&[0x13, 0x37, 0xFF, 0x42, 0x99]);
    let good = common::frame(&gatewayd_sensor_proto::msg::Envelope::new(
        90,
        Body::Error {
            code: ErrorCode::Busy,
            detail: gatewayd_sensor_proto::Str::new("x").unwrap(),
        },
    ));
    dev.send_raw(&[0x00]);
    dev.send_raw(&good[..good.len() / 2]);
    dev.send_raw(&[0x00]);
    let mut corrupt = good.clone();
    corrupt[2] ^= 0x55;
    dev.send_raw(&corrupt);
    dev.send_raw(&vec![0x01; 2000]);
    dev.send_raw(&[0x00]);
    dev.sample();
    let r = h.next_sample().await;
    assert_eq!(value(&r, "temperature"), Some(21.5));

    let c = h.stats.port("bench-0").unwrap().counters;
    let bad = c.crc_errors + c.cobs_errors + c.too_short + c.too_long;
    assert!(bad >= 3, "{c:?}");
    assert!(c.too_long >= 1, "{c:?}");
    assert!(c.crc_errors + c.cobs_errors >= 2, "{c:?}");
    // The source kept running all along.
    assert_eq!(*h.health.borrow(), SourceState::Running);

    // Random bytes for a while: nothing panics, a good frame still gets
    // through afterwards.
    let mut x: u32 = 0x1234_5678;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    dev.send_raw(&noise);
    dev.send_raw(&[0x00]);
    dev.sample();
    let r = h.next_sample().await;
    assert_eq!(value(&r, "humidity"), Some(40.0));
    assert!(h.stats.port("bench-0").unwrap().counters.bytes_rx > 20_000);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_before_the_hello_are_held_until_the_probe_identifies_the_device() {
    // A gateway attaching to a running sensor: no Hello was seen, so the
    // source asks for it (RequestDiagnostics) and holds the readings.
    let dev = Device::new("pty-0003");
    let mut h = start(Some(&dev), |_| {}).await;
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.sample();
    let r = h.next_sample().await;
    assert_eq!(r.device.to_string(), "serial:pty-0003");
    assert!(dev
        .received()
        .iter()
        .any(|e| matches!(e.body, Body::Command(Command::RequestDiagnostics))));
    let c = h.stats.port("bench-0").unwrap().counters;
    assert!(c.hello_probes >= 1, "{c:?}");
    assert_eq!(c.dropped_unidentified, 0, "{c:?}");
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_sample_interval_is_acked_and_changes_the_cadence_on_the_wire() {
    let dev = Device::new("pty-0004");
    let mut h = start(Some(&dev), |_| {}).await;
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.boot();
    assert!(is_diagnostics(&h.next().await));

    // By device id and by port name.
    let ack = h
        .command(json!({"command": "set_sample_interval", "device": "pty-0004", "ms": 750}))
        .await
        .unwrap();
    assert_eq!(ack["result"], "ok", "{ack}");
    assert_eq!(ack["device"], "serial:pty-0004", "{ack}");
    assert_eq!(ack["port"], "bench-0", "{ack}");
    assert_eq!(dev.state.lock().unwrap().interval_ms, 750);
    let ack = h
        .command(json!({"command": "identify", "device": "bench-0", "seconds": 2}))
        .await
        .unwrap();
    assert_eq!(ack["result"], "ok", "{ack}");
    let sent: Vec<Command> = dev
        .received()
        .into_iter()
        .filter_map(|e| match e.body {
            Body::Command(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(
        sent.contains(&Command::SetSampleInterval { ms: 750 }),
        "{sent:?}"
    );
    assert!(sent.contains(&Command::Identify { seconds: 2 }), "{sent:?}");

    // Bad arguments never reach the wire; unknown devices are named.
    let before = dev.received().len();
    let e = h
        .command(json!({"command": "set_sample_interval", "device": "pty-0004", "ms": 10}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CommandError::InvalidArgument(ref m) if m.starts_with("ms:")),
        "{e:?}"
    );
    let e = h
        .command(json!({"command": "reboot", "device": "nobody"}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CommandError::NotFound(ref m) if m.contains("nobody")),
        "{e:?}"
    );
    assert_eq!(dev.received().len(), before);

    // `list` shows the port and its device.
    let list = h.command(json!({"command": "list"})).await.unwrap();
    assert_eq!(list[0]["name"], "bench-0", "{list}");
    assert_eq!(list[0]["device"]["id"], "serial:pty-0004", "{list}");
    assert_eq!(list[0]["state"], "open", "{list}");
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_names_the_code_and_an_unanswered_one_is_resent_then_times_out() {
    let dev = Device::new("pty-0005");
    let mut h = start(Some(&dev), |_| {}).await;
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.boot();
    assert!(is_diagnostics(&h.next().await));

    dev.set_answer(Answer::Refuse(ErrorCode::Busy));
    let e = h
        .command(json!({"command": "reboot", "device": "pty-0005"}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CommandError::Refused(ref m) if m.contains("Busy")),
        "{e:?}"
    );

    dev.set_answer(Answer::Ignore);
    let before = dev.received().len();
    let e = h
        .command(json!({"command": "request_diagnostics", "device": "pty-0005"}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CommandError::Timeout(ref m) if m.contains("3 attempts")),
        "{e:?}"
    );
    // Sent once and resent twice (command_retries = 2), same seq each time.
    let copies: Vec<u16> = dev.received()[before..].iter().map(|e| e.seq).collect();
    assert_eq!(copies.len(), 3, "{copies:?}");
    assert!(copies.iter().all(|s| *s == copies[0]), "{copies:?}");
    let c = h.stats.port("bench-0").unwrap().counters;
    assert_eq!(
        (c.commands_refused, c.commands_timed_out, c.commands_resent),
        (1, 1, 2)
    );
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_sensor_degrades_the_source_and_a_replugged_one_is_picked_up() {
    let dev = Device::new("pty-0006");
    let mut h = start(Some(&dev), |_| {}).await;
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.boot();
    assert!(is_diagnostics(&h.next().await));

    // Unplug: the master closes; the link now points nowhere.
    dev.unplug();
    let state = h
        .wait_health(|s| matches!(s, SourceState::Degraded(_)))
        .await;
    assert!(format!("{state:?}").contains("bench-0"), "{state:?}");
    // Reopen attempts keep failing while nothing is there.
    h.wait_stats("closed with an error", |s| {
        s.port("bench-0").is_some_and(|p| {
            p.last_error.is_some() && p.state != gatewayd_adapter_serial::LinkState::Open
        })
    })
    .await;

    // Another sensor on the same path (a replug): opened again, identified,
    // its readings flow under its own id.
    let dev2 = Device::new("pty-0007");
    dev2.plug_into(&h.link);
    h.wait_health(|s| *s == SourceState::Running).await;
    dev2.boot();
    dev2.sample();
    let r = h.next_sample().await;
    assert_eq!(r.device.to_string(), "serial:pty-0007");
    let p = h.stats.port("bench-0").unwrap();
    assert!(p.reopens >= 1, "{p:?}");
    assert_eq!(p.device.unwrap().id.as_deref(), Some("serial:pty-0007"));
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_port_is_retried_with_backoff_until_it_appears() {
    // Nothing plugged in at start: the source runs, degraded, and retries.
    let mut h = start(None, |_| {}).await;
    let state = h
        .wait_health(|s| matches!(s, SourceState::Degraded(_)))
        .await;
    assert!(format!("{state:?}").contains("bench-0"), "{state:?}");
    // Commands for a port that is not open fail at once, with the reason.
    let e = h
        .command(json!({"command": "reboot", "device": "bench-0"}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CommandError::Failed(ref m) if m.contains("closed")),
        "{e:?}"
    );
    let dev = Device::new("pty-0008");
    dev.plug_into(&h.link);
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.boot();
    dev.sample();
    assert_eq!(h.next_sample().await.device.to_string(), "serial:pty-0008");
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_commands_in_flight() {
    let dev = Device::new("pty-0009");
    let mut h = start(Some(&dev), |c| {
        c.command_timeout_ms = 60_000;
    })
    .await;
    h.wait_health(|s| *s == SourceState::Running).await;
    dev.boot();
    assert!(is_diagnostics(&h.next().await));
    dev.set_answer(Answer::Ignore);
    let commands = h.commands.clone();
    let call = tokio::spawn(async move {
        commands
            .call(
                json!({"command": "reboot", "device": "pty-0009"}),
                HANG_GUARD,
            )
            .await
    });
    h.wait_stats("the reboot in flight", |s| {
        s.port("bench-0")
            .is_some_and(|p| p.counters.commands_sent >= 1)
    })
    .await;
    h.shutdown.cancel();
    let result = within(call).await.unwrap();
    assert_eq!(result, Err(CommandError::Closed));
    within(h.task).await.unwrap().unwrap();
}
