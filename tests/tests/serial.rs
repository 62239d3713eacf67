//! Serial sensors end to end: the real firmware image
//! (`sensor-firmware/app`, board `qemu-lm3s6965`) runs in
//! `qemu-system-arm -M lm3s6965evb` with its UART0 on a pseudo-terminal;
//! gatewayd's `serial` source opens that terminal (through a symlink the
//! test re-points when it "replugs" the sensor), and the readings and
//! diagnostics are read back from cloud-bridge's HTTP API. Commands go
//! through `gatewayctl` and D-Bus, down the serial line to the firmware.
//!
//! Needs `qemu-system-arm` and the firmware built by
//! `bash sensor-firmware/build.sh` (`make test` does both).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bus::{ctl, ctl_fails, ctl_json, ctl_ok, show};
use common::{Cloud, Gateway};
use gatewayd_tests::dbus::{config_file, DbusDaemon};
use gatewayd_tests::process::{spawn, ChildGuard};
use gatewayd_tests::require;
use serde_json::Value as J;

const DEVICE: &str = "serial:lm3s6965-0001";

/// The firmware image: `$GATEWAYD_FIRMWARE_DIR` or
/// `<target>/firmware/qemu-lm3s6965.elf`.
fn firmware_elf() -> PathBuf {
    let dir = gatewayd_tests::artifact_dir("GATEWAYD_FIRMWARE_DIR", "firmware");
    let elf = dir.join("qemu-lm3s6965.elf");
    assert!(
        elf.is_file(),
        "{} not found: run `bash sensor-firmware/build.sh` first (or point \
         GATEWAYD_FIRMWARE_DIR at the images)",
        elf.display()
    );
    elf
}

/// One emulated sensor: QEMU running the firmware, its UART on a pty.
struct Sensor {
    qemu: ChildGuard,
    pty: PathBuf,
}

impl Sensor {
    fn start() -> Sensor {
        require::command("qemu-system-arm");
        let mut cmd = Command::new(require::path("qemu-system-arm"));
        cmd.args(["-M", "lm3s6965evb", "-display", "none", "-monitor", "none"])
            .args(["-serial", "pty", "-kernel"])
            .arg(firmware_elf());
        let qemu = spawn(cmd).expect("start qemu-system-arm");
        let deadline = Instant::now() + Duration::from_secs(30);
        let pty = loop {
            let log = qemu.log();
            if let Some(at) = log.find("char device redirected to ") {
                let rest = &log[at + "char device redirected to ".len()..];
                if let Some(path) = rest.split_whitespace().next() {
                    break PathBuf::from(path);
                }
            }
            assert!(qemu.is_running(), "qemu exited: {log}");
            assert!(Instant::now() < deadline, "qemu printed no pty: {log}");
            std::thread::sleep(Duration::from_millis(50));
        };
        Sensor { qemu, pty }
    }

    /// Points `link` at this sensor's pty (replacing what was there).
    fn plug_into(&self, link: &Path) {
        let tmp = link.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.pty, &tmp).unwrap();
        std::fs::rename(&tmp, link).unwrap();
    }
}

fn extra<'a>(r: &'a J, key: &str) -> Option<&'a str> {
    r["meta"]["extra"][key].as_str()
}

fn value(r: &J, name: &str) -> Option<f64> {
    r["measurements"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["value"]
        .as_f64()
}

fn is_diagnostics(r: &J) -> bool {
    extra(r, "kind") == Some("diagnostics")
}

/// Sensor readings (not diagnostics), oldest first, with their device time.
fn samples(readings: &[J]) -> Vec<(u64, &J)> {
    let mut v: Vec<(u64, &J)> = readings
        .iter()
        .filter(|r| !is_diagnostics(r))
        .filter_map(|r| Some((extra(r, "device_time_ms")?.parse().ok()?, r)))
        .collect();
    v.sort_by_key(|(t, _)| *t);
    v
}

/// Polls the cloud until `pred` holds for the device's readings.
async fn wait_until(
    cloud: &Cloud,
    gw: &ChildGuard,
    what: &str,
    pred: impl Fn(&[J]) -> bool,
) -> Vec<J> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = cloud.readings(DEVICE).await.unwrap_or_default();
        if pred(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not after 90 s ({} readings)\n--- gatewayd log:\n{}",
            r.len(),
            common::tail(&gw.log())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_in_qemu_reaches_the_cloud_obeys_commands_reboots_and_is_replugged() {
    let cloud = Cloud::start(None, "cloud-serial");
    let broker = format!("mqtt://127.0.0.1:{}", cloud.broker_port.unwrap());
    let bus = DbusDaemon::start(&config_file("open-bus.conf")).expect("private bus");
    let b = bus.address.as_str();
    let mut gw = Gateway::new("gw-serial", &broker);
    gw.dbus = Some(bus.address.clone());
    let link = gw.dir.path().join("ttySENSOR0");
    let sensor = Sensor::start();
    sensor.plug_into(&link);
    gw.extra = format!(
        r#"
[sources.wired]
kind = "serial"
reopen_min_ms = 100
reopen_max_ms = 1000
[[sources.wired.ports]]
path = {link:?}
name = "bench-0"
"#
    );
    let child = gw.start();

    // Readings and the boot diagnostics reach the cloud, with the
    // firmware version and the port as metadata.
    let r = wait_until(&cloud, &child, "3 samples and the boot diagnostics", |r| {
        samples(r).len() >= 3 && r.iter().any(is_diagnostics)
    })
    .await;
    let (_, first) = samples(&r)[0];
    let t = value(first, "temperature").expect("temperature");
    assert!((-40.0..=85.0).contains(&t), "{first}");
    assert!(value(first, "humidity").is_some(), "{first}");
    assert_eq!(extra(first, "port"), Some("bench-0"), "{first}");
    let firmware = extra(first, "firmware")
        .expect("firmware version")
        .to_owned();
    let diag = r.iter().find(|r| is_diagnostics(r)).unwrap();
    assert_eq!(extra(diag, "reset_reason"), Some("power_on"), "{diag}");
    assert_eq!(extra(diag, "firmware"), Some(firmware.as_str()), "{diag}");
    // Default cadence: one sample per second of device time.
    let s = samples(&r);
    let gaps: Vec<u64> = s.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|g| (900..=1100).contains(g)), "{gaps:?}");

    // gatewayctl sees the sensor on its port (the source publishes its
    // status once a second).
    let ports = common::bus::eventually("the sensor in `serial sensors`", || {
        let p = ctl_json(b, &["serial", "sensors"]);
        (p[0]["device"]["id"] == DEVICE).then_some(p)
    });
    assert_eq!(ports[0]["name"], "bench-0", "{ports}");
    assert_eq!(ports[0]["device"]["id"], DEVICE, "{ports}");
    assert_eq!(ports[0]["device"]["firmware"], firmware.as_str(), "{ports}");
    let table = ctl_ok(b, &["serial", "sensors"]);
    assert!(table.contains("lm3s6965-0001"), "{table}");
    // And in the gateway's device list, with its firmware version.
    let devices = ctl_json(b, &["devices", "list"]);
    let d = devices
        .as_array()
        .and_then(|a| a.iter().find(|d| d["id"] == DEVICE))
        .unwrap_or_else(|| panic!("{DEVICE} in {devices}"));
    assert_eq!(d["transport"], "serial", "{d}");
    assert_eq!(d["firmware"], firmware.as_str(), "{d}");

    // An interval out of range is refused by gatewayd before the wire,
    // naming the problem.
    let err = ctl_fails(
        b,
        &[
            "source",
            "command",
            "wired",
            r#"{"command": "set_sample_interval", "device": "bench-0", "ms": 5}"#,
        ],
        5,
    );
    assert!(err.contains("ms"), "{err}");

    // The sample interval changes: acked, and the new cadence shows in the
    // device's own clock.
    let before = samples(&cloud.readings(DEVICE).await.unwrap())
        .last()
        .unwrap()
        .0;
    let ack = ctl_json(b, &["serial", "interval", "lm3s6965-0001", "250"]);
    assert_eq!(ack["result"], "ok", "{ack}");
    let r = wait_until(&cloud, &child, "8 samples at the new interval", |r| {
        samples(r).iter().filter(|(t, _)| *t > before).count() >= 9
    })
    .await;
    let after: Vec<u64> = samples(&r)
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t > before)
        .collect();
    // The first gap spans the change; the rest are the new interval.
    let gaps: Vec<u64> = after.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| (200..=300).contains(g)), "{gaps:?}");

    // Identify (the LED blinks: QEMU shows nothing, the ack is the proof)
    // and diagnostics on demand, which arrive in the cloud as a reading.
    let ack = ctl_json(b, &["serial", "identify", "bench-0", "--seconds", "2"]);
    assert_eq!(ack["result"], "ok", "{ack}");
    let text = ctl_ok(b, &["serial", "identify", DEVICE]);
    assert!(text.contains("lm3s6965-0001"), "{text}");
    let diags_before = r.iter().filter(|r| is_diagnostics(r)).count();
    let ack = ctl_json(
        b,
        &["serial", "diagnostics", "bench-0", "--source", "wired"],
    );
    assert_eq!(ack["result"], "ok", "{ack}");
    let r = wait_until(&cloud, &child, "diagnostics on demand", |r| {
        r.iter().filter(|r| is_diagnostics(r)).count() > diags_before
    })
    .await;
    // The source's own status: the port, its counters and the device.
    let status = common::bus::eventually("4 acks in `source status`", || {
        let s = ctl_json(b, &["source", "status", "wired"]);
        (s["ports"][0]["counters"]["commands_acked"].as_u64() >= Some(4)).then_some(s)
    });
    let port = &status["ports"][0];
    assert_eq!(port["state"], "open", "{status}");
    assert_eq!(port["device"]["id"], DEVICE, "{status}");
    assert!(
        port["counters"]["frames_ok"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );

    // Reboot: acked, then the device introduces itself again with a
    // software reset and a fresh uptime.
    let diags_before = r.iter().filter(|r| is_diagnostics(r)).count();
    let out = ctl(b, &["serial", "reboot", "bench-0"]);
    assert!(out.status.success(), "{}", show(&out));
    let r = wait_until(&cloud, &child, "diagnostics after the reboot", |r| {
        r.iter()
            .filter(|r| is_diagnostics(r))
            .any(|d| extra(d, "reset_reason") == Some("software"))
    })
    .await;
    assert!(r.iter().filter(|r| is_diagnostics(r)).count() > diags_before);
    let d = r
        .iter()
        .filter(|r| is_diagnostics(r))
        .find(|d| extra(d, "reset_reason") == Some("software"))
        .unwrap();
    let uptime = value(d, "uptime").expect("uptime");
    assert!(uptime < 5.0, "a fresh uptime: {d}");

    // Unplug: the emulator goes away; the source degrades and keeps
    // retrying. Replug another one on the same path: readings flow again.
    drop(sensor);
    common::bus::eventually("the serial source degraded", || {
        let s = ctl_json(b, &["status"]);
        let a = s["adapters"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "wired")?;
        (a["state"] == "degraded").then_some(())
    });
    let count_before = cloud.readings(DEVICE).await.unwrap().len();
    let sensor = Sensor::start();
    sensor.plug_into(&link);
    wait_until(&cloud, &child, "readings after the replug", |r| {
        r.len() >= count_before + 3
            && r.iter()
                .filter(|r| is_diagnostics(r))
                .filter(|d| extra(d, "reset_reason") == Some("power_on"))
                .count()
                >= 2
    })
    .await;
    common::bus::eventually("a reopen in `serial sensors`", || {
        let p = ctl_json(b, &["serial", "sensors"]);
        (p[0]["reopens"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    assert!(sensor.qemu.is_running());
}
