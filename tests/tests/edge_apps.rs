//! Edge apps end to end, with real peers: signed bundles made with
//! `gatewayd_artifact`, deployed with the real `gatewayd apps deploy`,
//! run by the real daemon between its CoAP source and its buffer, and the
//! result read back from cloud-bridge's HTTP API (through mosquitto).
//!
//! The guest components come from `bash edge-apps/build-guests.sh`
//! (`$GATEWAYD_GUEST_DIR`, else
//! `${CARGO_TARGET_DIR:-<workspace>/target}/edge-apps/components`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use coap_lite::{MessageClass, ResponseType};
use common::apps::{module, section, select, Publisher};
use common::{coap_client_post, coap_post, tail, Cloud, Gateway, WAIT};
use gatewayd_tests::mosquitto::{Mosquitto, MosquittoOptions};
use gatewayd_tests::process::{bin_path, ChildGuard};
use serde_json::Value as J;

// --------------------------------------------------------------- gateway

/// A gateway on `broker` trusting `publisher`, scanning its deployment
/// directory every 200 ms; `extra` goes into `[edge_apps]`.
fn edge_gateway(id: &str, broker: &str, publisher: &Publisher, extra: &str) -> Gateway {
    let mut gw = Gateway::new(id, broker);
    gw.extra = format!(
        "\n[edge_apps]\ntrusted_keys = [{:?}]\nscan_interval_ms = 200\n{extra}\n",
        publisher.pub_path
    );
    gw
}

/// The default deployment directory (`<data_dir>/apps/deploy`).
fn deploy_dir(gw: &Gateway) -> PathBuf {
    gw.dir.path().join("state").join("apps").join("deploy")
}

/// `gatewayd --config <gw> <args…>`, run to completion.
fn gatewayd_cli(gw: &Gateway, args: &[&str]) -> Output {
    Command::new(bin_path("gatewayd"))
        .arg("--config")
        .arg(gw.config_path())
        .args(args)
        .output()
        .expect("run gatewayd")
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `gatewayd apps deploy <bundle>`: must exit 0 and say what it placed.
fn deploy(gw: &Gateway, bundle: &Path, app: &str, version: &str, publisher: &Publisher) {
    let out = gatewayd_cli(gw, &["apps", "deploy", bundle.to_str().unwrap()]);
    assert!(out.status.success(), "apps deploy: {}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let target = deploy_dir(gw).join(format!("{app}.gwapp"));
    assert!(
        stdout.contains(&format!("{app} {version} placed in {}", target.display()))
            && stdout.contains(&format!("(signed by {})", publisher.key_id())),
        "apps deploy said: {}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(bundle).unwrap(),
        "apps deploy placed other bytes than the bundle"
    );
}

/// `gatewayd apps list --json`.
fn apps_list(gw: &Gateway) -> J {
    let out = gatewayd_cli(gw, &["apps", "list", "--json"]);
    assert!(out.status.success(), "apps list: {}", show(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("apps list: {e}\n{}", show(&out)))
}

/// (name, version) of the apps in the daemon's registry.
fn registry(gw: &Gateway) -> Vec<(String, String)> {
    let list = apps_list(gw);
    let mut apps: Vec<(String, String)> = list["deployed"]
        .as_array()
        .unwrap_or_else(|| panic!("apps list: no `deployed` array in {list}"))
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    apps.sort();
    apps
}

/// Polls `apps list --json` until the registry is exactly `want`, then
/// checks the daemon logged each deployment.
async fn wait_registry(gw_cfg: &Gateway, gw: &ChildGuard, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let start = Instant::now();
    loop {
        let got = registry(gw_cfg);
        if got == want {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "registry is {got:?}, want {want:?} after {WAIT:?}\n--- gatewayd log:\n{}",
            tail(&log(gw))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, version) in &want {
        let needle = format!("app={name} ");
        let v = format!("version={version}");
        wait_log(gw, &format!("{name} deployed"), |l| {
            (l.contains("app deployed")
                || l.contains("app upgraded")
                || l.contains("restoring app"))
                && l.contains(&needle)
                && (l.contains(&v) || l.contains(&format!("to={version}")))
        })
        .await;
    }
}

// ------------------------------------------------------------------ logs

/// The log with ANSI escapes (tracing colours fields) removed.
fn log(child: &ChildGuard) -> String {
    let raw = child.log();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until a log line satisfies `pred`; returns it (and the line
/// number). Fails with the log after [`WAIT`] or if the process exits.
async fn wait_log(child: &ChildGuard, what: &str, pred: impl Fn(&str) -> bool) -> (usize, String) {
    let start = Instant::now();
    loop {
        let text = log(child);
        if let Some(found) = text
            .lines()
            .enumerate()
            .find(|(_, l)| pred(l))
            .map(|(i, l)| (i, l.to_owned()))
        {
            return found;
        }
        if let Some(status) = child.try_wait() {
            panic!(
                "gatewayd exited ({status}) before logging {what}\n{}",
                tail(&text)
            );
        }
        assert!(
            start.elapsed() < WAIT,
            "gatewayd did not log {what} within {WAIT:?}\n{}",
            tail(&text)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----------------------------------------------------------------- CoAP

static MSG_ID: AtomicU16 = AtomicU16::new(1);

/// One confirmable SenML JSON POST; Ok once answered 2.04 (after commit).
fn post(port: u16, senml: &str) -> anyhow::Result<()> {
    let id = MSG_ID.fetch_add(1, Ordering::Relaxed);
    let r = coap_post(port, senml.as_bytes(), id, Duration::from_secs(10))?;
    if r.header.code != MessageClass::Response(ResponseType::Changed) {
        bail!(
            "{senml}: answered {:?} {}",
            r.header.code,
            String::from_utf8_lossy(&r.payload)
        );
    }
    Ok(())
}

/// POSTs with libcoap's `coap-client`, as a sensor would.
fn post_with_coap_client(port: u16, senml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pack.json");
    std::fs::write(&f, senml).unwrap();
    let out = coap_client_post(port, 110, &f);
    assert!(
        out.status.success(),
        "coap-client failed for {senml}: {}",
        show(&out)
    );
}

/// A temperature reading (Cel) of `coap:<dev>` at `t` seconds.
fn temperature(dev: &str, t: i64, celsius: f64) -> String {
    format!(r#"[{{"bn":"{dev}/","bt":{t},"n":"temperature","u":"Cel","v":{celsius}}}]"#)
}

/// Base time of the readings the tests post (2024-11-24T19:20:00Z).
const T0: i64 = 1_732_476_000;

// ----------------------------------------------------------------- cloud

fn source(r: &J) -> &str {
    r["meta"]["source"].as_str().unwrap_or("")
}

fn is_alert(r: &J) -> bool {
    r["meta"]["extra"]["kind"] == "alert"
}

fn find<'a>(r: &'a J, name: &str) -> Option<&'a J> {
    r["measurements"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

/// The value of float measurement `name` and its unit.
fn float(r: &J, name: &str) -> Option<(f64, String)> {
    let m = find(r, name)?;
    Some((
        m["value"].as_f64()?,
        m["unit"].as_str().unwrap_or("").to_owned(),
    ))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Polls `device`'s readings until `done` says so.
async fn wait_cloud(
    cloud: &Cloud,
    device: &str,
    gw: &ChildGuard,
    what: &str,
    done: impl Fn(&[J]) -> bool,
) -> Vec<J> {
    let start = Instant::now();
    loop {
        let r = cloud.readings(device).await.unwrap_or_default();
        if done(&r) {
            return r;
        }
        assert!(
            start.elapsed() < WAIT,
            "{device}: {what} not seen after {WAIT:?}; the cloud has {} readings:\n{}\n--- gatewayd log:\n{}",
            r.len(),
            r.iter().map(J::to_string).collect::<Vec<_>>().join("\n"),
            tail(&log(gw))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts a marker reading that no app touches and waits for it in the
/// cloud: the gateway forwards in commit order, so everything committed
/// before it has been delivered too.
async fn flush(cloud: &Cloud, port: u16, gw: &ChildGuard, marker: &str) {
    post(
        port,
        &format!(r#"[{{"bn":"{marker}/","n":"n","u":"count","v":1}}]"#),
    )
    .unwrap();
    cloud
        .wait_readings(&format!("coap:{marker}"), 1, Some(gw))
        .await;
}

/// Asserts `r` is `celsius` converted to kelvin by unit-convert.
fn assert_kelvin(r: &J, celsius: f64) {
    let (v, unit) = float(r, "temperature").unwrap_or_else(|| panic!("no temperature in {r}"));
    assert_eq!(unit, "K", "not converted: {r}");
    assert!(
        (v - (celsius + 273.15)).abs() < 0.006,
        "{celsius} Cel became {v} K: {r}"
    );
    assert_eq!(source(r), "app:unit-convert", "{r}");
}

// ----------------------------------------------------------------- tests

/// threshold-alert → unit-convert → downsample, as a chain.
///
/// Apps run in ascending (order, name). With the shipped manifests (no
/// `order`) that is alphabetical: downsample, threshold-alert,
/// unit-convert — downsample would swallow the Cel readings into its window
/// (`keep_originals = false`) before the others see them, and its
/// aggregates (`temperature_mean` …) match neither of the others'
/// `temperature` selectors, so nothing would be converted or alerted. The
/// test sets `order` to make the chain explicit:
///
/// 1. threshold-alert (`above = 30`) sees the readings in Cel and raises
///    one alert per crossing (its alert readings have no `temperature`, so
///    the later apps leave them alone);
/// 2. unit-convert replaces every reading by its kelvin version;
/// 3. downsample (`window_seconds = 1`, `keep_originals = true`, so the
///    converted readings go on to the cloud too) aggregates them in K.
#[tokio::test(flavor = "multi_thread")]
async fn examples_transform_readings_on_the_way_to_the_cloud() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-1");
    let publisher = Publisher::new();
    let gw_cfg = edge_gateway("gw-apps-1", &mosq.url(), &publisher, "");
    let gw = gw_cfg.start();

    let alert = publisher.bundle("threshold-alert", |m| {
        m.insert("order".into(), 1.into());
    });
    let convert = publisher.bundle("unit-convert", |m| {
        m.insert("order".into(), 2.into());
    });
    let downsample = publisher.bundle("downsample", |m| {
        m.insert("order".into(), 3.into());
        let d = section(m, "delivery");
        d.insert("window_seconds".into(), 1.into());
        d.insert("keep_originals".into(), true.into());
    });
    deploy(&gw_cfg, &alert, "threshold-alert", "1.0.0", &publisher);
    deploy(&gw_cfg, &convert, "unit-convert", "1.0.0", &publisher);
    deploy(&gw_cfg, &downsample, "downsample", "1.0.0", &publisher);
    wait_registry(
        &gw_cfg,
        &gw,
        &[
            ("downsample", "1.0.0"),
            ("threshold-alert", "1.0.0"),
            ("unit-convert", "1.0.0"),
        ],
    )
    .await;

    // One crossing of 30 Cel (at T0+2); 32 stays above, 28 clears it
    // silently (clear_alert = false).
    let temps = [20.0, 25.0, 31.0, 32.0, 28.0];
    for (i, t) in temps.iter().enumerate() {
        post_with_coap_client(
            gw_cfg.coap_port,
            &temperature("greenhouse-1", T0 + i as i64, *t),
        );
    }
    let dev = "coap:greenhouse-1";
    let aggregates = |rs: &[J]| -> Vec<J> {
        rs.iter()
            .filter(|r| source(r) == "app:downsample")
            .cloned()
            .collect()
    };
    let counted = |rs: &[J]| -> f64 {
        aggregates(rs)
            .iter()
            .filter_map(|r| float(r, "temperature_count"))
            .map(|(n, _)| n)
            .sum()
    };
    wait_cloud(&cloud, dev, &gw, "readings, alert and aggregates", |rs| {
        rs.iter()
            .filter(|r| find(r, "temperature").is_some())
            .count()
            >= temps.len()
            && rs.iter().any(is_alert)
            && counted(rs) >= temps.len() as f64
    })
    .await;
    flush(&cloud, gw_cfg.coap_port, &gw, "marker-1").await;
    let rs = cloud.readings(dev).await.unwrap();

    // Every reading arrived once, converted to K, and none in Cel.
    let plain: Vec<&J> = rs
        .iter()
        .filter(|r| find(r, "temperature").is_some())
        .collect();
    assert_eq!(plain.len(), temps.len(), "{rs:#?}");
    for (i, t) in temps.iter().enumerate() {
        let time = (T0 + i as i64) * 1_000_000;
        let r = plain
            .iter()
            .find(|r| r["time_us"] == time)
            .unwrap_or_else(|| panic!("no reading at {time}: {rs:#?}"));
        assert_kelvin(r, *t);
    }

    // Exactly one alert, for the crossing, stamped with its reading's time.
    let alerts: Vec<&J> = rs.iter().filter(|r| is_alert(r)).collect();
    assert_eq!(alerts.len(), 1, "one crossing, one alert: {alerts:#?}");
    let a = alerts[0];
    assert_eq!(source(a), "app:threshold-alert", "{a}");
    assert_eq!(a["time_us"], (T0 + 2) * 1_000_000, "{a}");
    assert_eq!(find(a, "alert").unwrap()["value"], "above-threshold", "{a}");
    assert_eq!(find(a, "severity").unwrap()["value"], "warning", "{a}");
    assert!(find(a, "message").unwrap()["value"].is_string(), "{a}");

    // The aggregates (one per wall-clock second the posts spanned) cover
    // every reading, in K.
    let aggs = aggregates(&rs);
    assert!(!aggs.is_empty());
    assert_eq!(counted(&rs), temps.len() as f64, "{aggs:#?}");
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for a in &aggs {
        let (mean, unit) = float(a, "temperature_mean").unwrap_or_else(|| panic!("{a}"));
        assert_eq!(unit, "K", "aggregated before conversion: {a}");
        let (n, _) = float(a, "temperature_count").unwrap();
        min = min.min(float(a, "temperature_min").unwrap().0);
        max = max.max(float(a, "temperature_max").unwrap().0);
        sum += mean * n;
    }
    let kelvin: Vec<f64> = temps.iter().map(|t| t + 273.15).collect();
    assert!(
        close(min, 293.15) && close(max, 305.15),
        "min {min} max {max}"
    );
    let want_mean = kelvin.iter().sum::<f64>() / kelvin.len() as f64;
    assert!(
        (sum / temps.len() as f64 - want_mean).abs() < 0.01,
        "mean {} want {want_mean}",
        sum / temps.len() as f64
    );
}

/// lora-codec decodes a raw payload (SenML `vd`); the hand-written WAT
/// sampler passes every 5th reading of its devices.
///
/// The CoAP adapter names every device `coap:<base name>` (there is no
/// option for other transports), so lora-codec's shipped selector
/// (`lora:*`) is changed to `coap:*`, and the sampler (shipped selecting
/// `*`) is narrowed to `coap:sampled-*` so it does not thin out the
/// decoder's readings.
#[tokio::test(flavor = "multi_thread")]
async fn lora_codec_and_wat_sampler_run_in_the_daemon() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-2");
    let publisher = Publisher::new();
    let gw_cfg = edge_gateway("gw-apps-2", &mosq.url(), &publisher, "");
    let gw = gw_cfg.start();

    let codec = publisher.bundle("lora-codec", |m| select(m, "coap:*", &["payload"]));
    let sampler = publisher.bundle("sample-every-n", |m| {
        select(m, "coap:sampled-*", &[]);
        section(m, "config").insert("every".into(), 5.into());
    });
    deploy(&gw_cfg, &codec, "lora-codec", "1.0.0", &publisher);
    deploy(&gw_cfg, &sampler, "sample-every-n", "1.0.0", &publisher);
    wait_registry(
        &gw_cfg,
        &gw,
        &[("lora-codec", "1.0.0"), ("sample-every-n", "1.0.0")],
    )
    .await;

    // 00 EB 37 0C E4: 23.5 Cel, 55 %RH, 3300 mV (base64url "AOs3DOQ").
    post_with_coap_client(
        gw_cfg.coap_port,
        &format!(
            r#"[{{"bn":"lora-node-1/","bt":{T0},"n":"payload","vd":"AOs3DOQ"}},{{"n":"rssi","u":"dBW","v":-100}}]"#
        ),
    );
    // Three bytes: not the codec's format.
    post_with_coap_client(
        gw_cfg.coap_port,
        &format!(r#"[{{"bn":"lora-node-2/","bt":{T0},"n":"payload","vd":"AQID"}}]"#),
    );
    for i in 0..20 {
        post(
            gw_cfg.coap_port,
            &format!(
                r#"[{{"bn":"sampled-1/","bt":{},"n":"n","u":"count","v":{i}}}]"#,
                T0 + i
            ),
        )
        .unwrap();
    }
    flush(&cloud, gw_cfg.coap_port, &gw, "marker-2").await;

    let good = cloud.wait_readings("coap:lora-node-1", 1, Some(&gw)).await;
    assert_eq!(good.len(), 1, "{good:#?}");
    let r = &good[0];
    assert_eq!(source(r), "app:lora-codec", "{r}");
    assert_eq!(r["time_us"], T0 * 1_000_000);
    assert!(find(r, "payload").is_none(), "payload not replaced: {r}");
    assert_eq!(float(r, "temperature"), Some((23.5, "Cel".into())), "{r}");
    assert_eq!(float(r, "humidity"), Some((55.0, "%RH".into())), "{r}");
    assert_eq!(float(r, "battery"), Some((3.3, "V".into())), "{r}");
    assert_eq!(float(r, "rssi"), Some((-100.0, "dBW".into())), "kept: {r}");

    // The bad payload passes unchanged, with a codec-error alert.
    let bad = cloud.wait_readings("coap:lora-node-2", 2, Some(&gw)).await;
    assert_eq!(bad.len(), 2, "{bad:#?}");
    let original = bad.iter().find(|r| !is_alert(r)).expect("original passes");
    assert_eq!(find(original, "payload").unwrap()["value"]["data"], "AQID");
    assert_ne!(source(original), "app:lora-codec", "{original}");
    let alert = bad.iter().find(|r| is_alert(r)).expect("codec-error alert");
    assert_eq!(source(alert), "app:lora-codec", "{alert}");
    assert_eq!(find(alert, "alert").unwrap()["value"], "codec-error");
    assert_eq!(find(alert, "severity").unwrap()["value"], "warning");

    // Readings 0, 5, 10, 15 of the sampled stream, and only those.
    let sampled = cloud.readings("coap:sampled-1").await.unwrap();
    let mut n: Vec<i64> = sampled
        .iter()
        .map(|r| float(r, "n").unwrap().0 as i64)
        .collect();
    n.sort();
    assert_eq!(n, vec![0, 5, 10, 15], "{sampled:#?}");
}

/// Upgrading an app while readings stream in: each reading is converted by
/// exactly one version, none is lost, none doubled.
#[tokio::test(flavor = "multi_thread")]
async fn hot_upgrade_under_load_loses_and_doubles_nothing() {
    const N: usize = 300;
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-3");
    let publisher = Publisher::new();
    let gw_cfg = edge_gateway("gw-apps-3", &mosq.url(), &publisher, "");
    let gw = gw_cfg.start();

    let v1 = publisher.bundle("unit-convert", |_| {});
    let v2 = publisher.bundle("unit-convert", |m| {
        section(m, "app").insert("version".into(), "2.0.0".into());
        section(m, "config").insert("to".into(), "degF".into());
    });
    deploy(&gw_cfg, &v1, "unit-convert", "1.0.0", &publisher);
    wait_registry(&gw_cfg, &gw, &[("unit-convert", "1.0.0")]).await;

    // Reading i: counter i, time T0 + i, a temperature exact in binary.
    let celsius = |i: usize| 15.0 + (i % 40) as f64 * 0.25;
    let acked = Arc::new(AtomicUsize::new(0));
    let upgraded = Arc::new(AtomicBool::new(false));
    let port = gw_cfg.coap_port;
    let poster = {
        let (acked, upgraded) = (acked.clone(), upgraded.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for i in 0..N {
                // Make sure some readings are posted after the swap, however
                // long compiling v2 takes (bounded).
                if i == 2 * N / 3 {
                    let start = Instant::now();
                    while !upgraded.load(Ordering::SeqCst) {
                        if start.elapsed() > WAIT {
                            bail!("no upgrade within {WAIT:?}");
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                let body = format!(
                    r#"[{{"bn":"upgrade/","bt":{},"n":"temperature","u":"Cel","v":{}}},{{"n":"n","u":"count","v":{i}}}]"#,
                    T0 + i as i64,
                    celsius(i)
                );
                post(port, &body).map_err(|e| e.context(format!("reading {i}")))?;
                acked.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
    };
    // Midway, v2 replaces v1 in the deployment directory.
    let start = Instant::now();
    while acked.load(Ordering::SeqCst) < N / 3 {
        assert!(
            start.elapsed() < WAIT,
            "posting stalled\n{}",
            tail(&log(&gw))
        );
        assert!(!poster.is_finished(), "poster ended early");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    deploy(&gw_cfg, &v2, "unit-convert", "2.0.0", &publisher);
    wait_log(&gw, "the upgrade", |l| {
        l.contains("app upgraded") && l.contains("app=unit-convert") && l.contains("to=2.0.0")
    })
    .await;
    let at_upgrade = acked.load(Ordering::SeqCst);
    upgraded.store(true, Ordering::SeqCst);
    poster.await.unwrap().unwrap();
    eprintln!("upgrade logged after {at_upgrade} of {N} readings were acknowledged");
    assert_eq!(
        registry(&gw_cfg),
        vec![("unit-convert".into(), "2.0.0".into())]
    );

    let dev = "coap:upgrade";
    cloud.wait_readings(dev, N, Some(&gw)).await;
    flush(&cloud, port, &gw, "marker-3").await;
    let rs = cloud.readings(dev).await.unwrap();
    assert_eq!(rs.len(), N, "exactly one reading per post");
    let mut by_counter: BTreeMap<usize, &str> = BTreeMap::new();
    for r in &rs {
        let i = float(r, "n").unwrap_or_else(|| panic!("no counter: {r}")).0 as usize;
        assert_eq!(r["time_us"], (T0 + i as i64) * 1_000_000, "{r}");
        assert_eq!(source(r), "app:unit-convert", "not converted: {r}");
        let (v, unit) = float(r, "temperature").unwrap();
        let c = celsius(i);
        let version = match unit.as_str() {
            "K" if (v - (c + 273.15)).abs() < 0.006 => "v1",
            "degF" if (v - (c * 1.8 + 32.0)).abs() < 0.006 => "v2",
            _ => panic!("reading {i}: {c} Cel became {v} {unit}: {r}"),
        };
        assert!(
            by_counter.insert(i, version).is_none(),
            "reading {i} stored twice"
        );
    }
    assert_eq!(by_counter.len(), N);
    let v1_count = by_counter.values().filter(|v| **v == "v1").count();
    let v2_count = N - v1_count;
    assert!(v1_count > 0 && v2_count > 0, "v1 {v1_count}, v2 {v2_count}");
    // Posts were sequential, so the versions cannot interleave: every v1
    // reading precedes every v2 reading.
    let last_v1 = by_counter
        .iter()
        .filter(|(_, v)| **v == "v1")
        .map(|(i, _)| *i)
        .max();
    let first_v2 = by_counter
        .iter()
        .filter(|(_, v)| **v == "v2")
        .map(|(i, _)| *i)
        .min();
    assert!(
        last_v1 < first_v2,
        "v1 up to {last_v1:?}, v2 from {first_v2:?}"
    );
    eprintln!("{N} readings: {v1_count} by v1 (K), {v2_count} by v2 (degF)");
}

/// A restart restores the apps before accepting readings, from the
/// compiled cache.
#[tokio::test(flavor = "multi_thread")]
async fn restart_reuses_compiled_cache_and_keeps_apps() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-4");
    let publisher = Publisher::new();
    let gw_cfg = edge_gateway("gw-apps-4", &mosq.url(), &publisher, "");
    let mut gw = gw_cfg.start();
    let bundle = publisher.bundle("unit-convert", |_| {});
    deploy(&gw_cfg, &bundle, "unit-convert", "1.0.0", &publisher);
    wait_registry(&gw_cfg, &gw, &[("unit-convert", "1.0.0")]).await;
    let (_, line) = wait_log(&gw, "the deployment", |l| {
        l.contains("app deployed") && l.contains("app=unit-convert")
    })
    .await;
    assert!(
        line.contains("from_cache=false"),
        "first deployment: {line}"
    );
    post(gw_cfg.coap_port, &temperature("restart", T0, 21.5)).unwrap();
    let before = cloud.wait_readings("coap:restart", 1, Some(&gw)).await;
    assert_kelvin(&before[0], 21.5);

    let status = gw.terminate_within(Duration::from_secs(30)).unwrap();
    assert!(
        status.success(),
        "gatewayd exited with {status}\n{}",
        tail(&log(&gw))
    );
    let gw = gw_cfg.start();
    let (_, line) = wait_log(&gw, "restoring the app", |l| {
        l.contains("restoring app") && l.contains("app=unit-convert")
    })
    .await;
    assert!(
        line.contains("from_cache=true"),
        "not from the cache: {line}"
    );
    assert!(line.contains("version=1.0.0"), "{line}");
    assert_eq!(
        registry(&gw_cfg),
        vec![("unit-convert".into(), "1.0.0".into())]
    );

    post(gw_cfg.coap_port, &temperature("restart", T0 + 1, -10.0)).unwrap();
    let after = cloud.wait_readings("coap:restart", 2, Some(&gw)).await;
    let r = after
        .iter()
        .find(|r| r["time_us"] == (T0 + 1) * 1_000_000)
        .unwrap_or_else(|| panic!("{after:#?}"));
    assert_kelvin(r, -10.0);
}

/// Replaces the one occurrence of `from` in `bytes` by `to` (same length).
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "{:?} occurs {} times in the bundle",
        String::from_utf8_lossy(from),
        at.len()
    );
    bytes[at[0]..at[0] + to.len()].copy_from_slice(to);
}

/// Puts `bytes` in the deployment directory as `name`, the way a
/// careless (or hostile) writer would, but atomically.
fn drop_into(gw: &Gateway, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = deploy_dir(gw);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    let target = dir.join(name);
    std::fs::rename(&tmp, &target).unwrap();
    target
}

/// Polls `apps list --json` until the registry holds `name` at `version`.
async fn wait_registered(gw_cfg: &Gateway, gw: &ChildGuard, name: &str, version: &str) {
    let start = Instant::now();
    let want = (name.to_owned(), version.to_owned());
    loop {
        let got = registry(gw_cfg);
        if got.contains(&want) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "registry is {got:?}, still no {want:?} after {WAIT:?}\n--- gatewayd log:\n{}",
            tail(&log(gw))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns once the daemon has completed at least one whole scan of its
/// deployment directory that started after this call: deploys a harmless
/// app (threshold-alert, selecting only `coap:barrier`) twice; the second
/// version is installed by a later scan than the first, so the scan that
/// installed the first — and everything else it did — is complete.
async fn scan_barrier(gw_cfg: &Gateway, gw: &ChildGuard, publisher: &Publisher) {
    for version in ["0.0.1", "0.0.2"] {
        let b = publisher.bundle("threshold-alert", |m| {
            section(m, "app").insert("version".into(), version.into());
            select(m, "coap:barrier", &["temperature"]);
        });
        deploy(gw_cfg, &b, "threshold-alert", version, publisher);
        wait_registered(gw_cfg, gw, "threshold-alert", version).await;
    }
}

/// Waits for the daemon's `bundle refused` line about `path`.
async fn wait_refused(gw: &ChildGuard, path: &Path) -> String {
    let file = path.display().to_string();
    let (_, line) = wait_log(gw, &format!("the refusal of {file}"), |l| {
        l.contains("bundle refused") && l.contains(&file)
    })
    .await;
    line
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_bundles_leave_running_apps_alone() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-5");
    let publisher = Publisher::new();
    let gw_cfg = edge_gateway("gw-apps-5", &mosq.url(), &publisher, "");
    let gw = gw_cfg.start();
    let good = publisher.bundle("unit-convert", |_| {});
    deploy(&gw_cfg, &good, "unit-convert", "1.0.0", &publisher);
    wait_registry(&gw_cfg, &gw, &[("unit-convert", "1.0.0")]).await;

    // 1. Signed by a key the gateway does not trust: refused by the CLI,
    //    nothing placed.
    let stranger = Publisher::new();
    let foreign = stranger.bundle("downsample", |_| {});
    let out = gatewayd_cli(&gw_cfg, &["apps", "deploy", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("untrusted") && stderr.contains(&stranger.key_id()),
        "{}",
        show(&out)
    );
    assert_eq!(
        apps_list(&gw_cfg)["files"],
        serde_json::json!(["unit-convert.gwapp"])
    );

    // 2. Copied straight into the deployment directory, past the CLI's
    //    check: a trusted bundle whose manifest was edited afterwards (its
    //    signature no longer verifies) …
    let mut forged = std::fs::read(publisher.bundle("sample-every-n", |_| {})).unwrap();
    patch(&mut forged, b"version = \"1.0.0\"", b"version = \"6.6.6\"");
    let forged_path = drop_into(&gw_cfg, "sample-every-n.gwapp", &forged);
    // … and one whose module was altered (its digest no longer matches).
    let mut altered = std::fs::read(publisher.bundle("lora-codec", |_| {})).unwrap();
    let wasm = module("lora-codec");
    let probe = &wasm[wasm.len() / 2..wasm.len() / 2 + 32];
    let at = altered
        .windows(probe.len())
        .position(|w| w == probe)
        .expect("module bytes in the bundle");
    altered[at] ^= 0x55;
    let altered_path = drop_into(&gw_cfg, "lora-codec.gwapp", &altered);

    let line = wait_refused(&gw, &forged_path).await;
    assert!(line.contains("does not verify"), "{line}");
    let line = wait_refused(&gw, &altered_path).await;
    assert!(line.contains("sha256"), "{line}");
    // Let the daemon rescan the directory (refused files still in it).
    scan_barrier(&gw_cfg, &gw, &publisher).await;

    // The running app is untouched and still converts.
    assert_eq!(
        registry(&gw_cfg),
        vec![
            ("threshold-alert".into(), "0.0.2".into()),
            ("unit-convert".into(), "1.0.0".into())
        ]
    );
    post(gw_cfg.coap_port, &temperature("refused", T0, 21.55)).unwrap();
    let rs = cloud.wait_readings("coap:refused", 1, Some(&gw)).await;
    assert_kelvin(&rs[0], 21.55);
    let l = log(&gw);
    for app in ["sample-every-n", "lora-codec", "downsample"] {
        assert!(
            !l.contains(&format!("app={app}")),
            "refused bundle of {app} was deployed:\n{}",
            tail(&l)
        );
    }
    let refusals = l.lines().filter(|l| l.contains("bundle refused")).count();
    assert_eq!(
        refusals,
        2,
        "each refused content is reported once:\n{}",
        tail(&l)
    );
}

/// A refused bundle that replaces the running app's own file (a bad
/// upgrade) must leave the running version in place: "whatever was
/// deployed under that name keeps running" (edge-apps/runtime/src/deploy.rs).
#[tokio::test(flavor = "multi_thread")]
async fn refused_replacement_of_a_running_apps_bundle_keeps_it_running() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-7");
    let publisher = Publisher::new();
    let gw_cfg = edge_gateway("gw-apps-7", &mosq.url(), &publisher, "");
    let gw = gw_cfg.start();
    let good = publisher.bundle("unit-convert", |_| {});
    deploy(&gw_cfg, &good, "unit-convert", "1.0.0", &publisher);
    wait_registry(&gw_cfg, &gw, &[("unit-convert", "1.0.0")]).await;

    // The deployed file overwritten with a modified manifest (version and
    // rounding changed, old signature kept).
    let mut forged = std::fs::read(&good).unwrap();
    patch(&mut forged, b"version = \"1.0.0\"", b"version = \"6.6.6\"");
    patch(&mut forged, b"decimals = 2", b"decimals = 0");
    let forged_path = drop_into(&gw_cfg, "unit-convert.gwapp", &forged);
    let line = wait_refused(&gw, &forged_path).await;
    assert!(line.contains("does not verify"), "{line}");
    scan_barrier(&gw_cfg, &gw, &publisher).await;

    assert_eq!(
        registry(&gw_cfg),
        vec![
            ("threshold-alert".into(), "0.0.2".into()),
            ("unit-convert".into(), "1.0.0".into())
        ],
        "\n{}",
        tail(&log(&gw))
    );
    // Still v1: rounding to 2 decimals.
    post(gw_cfg.coap_port, &temperature("replaced", T0, 21.55)).unwrap();
    let rs = cloud.wait_readings("coap:replaced", 1, Some(&gw)).await;
    assert_kelvin(&rs[0], 21.55);
    let (v, _) = float(&rs[0], "temperature").unwrap();
    assert!(close(v, 294.7), "forged manifest took effect: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crashing_app_is_disabled_and_readings_still_flow() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-6");
    let publisher = Publisher::new();
    let gw_cfg = edge_gateway(
        "gw-apps-6",
        &mosq.url(),
        &publisher,
        // Disabled long enough not to come back during the test.
        "[edge_apps.failures]\nmax_consecutive = 3\nbackoff_initial_ms = 600000\n",
    );
    let gw = gw_cfg.start();
    // hostile-trap selects `*` and panics in every call; it runs before
    // unit-convert (same order, name first), with on_failure = "pass".
    let trap = publisher.bundle("hostile-trap", |_| {});
    let convert = publisher.bundle("unit-convert", |_| {});
    deploy(&gw_cfg, &trap, "hostile-trap", "0.1.0", &publisher);
    deploy(&gw_cfg, &convert, "unit-convert", "1.0.0", &publisher);
    wait_registry(
        &gw_cfg,
        &gw,
        &[("hostile-trap", "0.1.0"), ("unit-convert", "1.0.0")],
    )
    .await;

    // One call per post: three failures disable the app; the rest of the
    // readings skip it.
    let temps = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0];
    for (i, t) in temps.iter().enumerate() {
        post(gw_cfg.coap_port, &temperature("crash", T0 + i as i64, *t)).unwrap();
    }
    cloud
        .wait_readings("coap:crash", temps.len(), Some(&gw))
        .await;
    flush(&cloud, gw_cfg.coap_port, &gw, "marker-6").await;
    let rs = cloud.readings("coap:crash").await.unwrap();
    assert_eq!(rs.len(), temps.len(), "{rs:#?}");
    for (i, t) in temps.iter().enumerate() {
        let r = rs
            .iter()
            .find(|r| r["time_us"] == (T0 + i as i64) * 1_000_000)
            .unwrap_or_else(|| panic!("{rs:#?}"));
        assert_kelvin(r, *t);
    }

    let (failed_at, failed) = wait_log(&gw, "the trap's failure", |l| {
        l.contains("edge app call failed") && l.contains("app=hostile-trap")
    })
    .await;
    let (disabled_at, disabled) = wait_log(&gw, "the trap app being disabled", |l| {
        l.contains("disabled after repeated failures") && l.contains("app=hostile-trap")
    })
    .await;
    assert!(failed_at < disabled_at, "{failed}\n{disabled}");
    let l = log(&gw);
    let failures = l
        .lines()
        .filter(|l| l.contains("edge app call failed") && l.contains("app=hostile-trap"))
        .count();
    assert_eq!(
        failures,
        3,
        "disabled after max_consecutive = 3:\n{}",
        tail(&l)
    );
    assert!(
        !l.lines()
            .any(|l| l.contains("edge app call failed") && l.contains("app=unit-convert")),
        "{}",
        tail(&l)
    );
}

/// The example autoencoder, committed beside its generator.
fn vibration_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-apps/models/vibration-ae/model.onnx")
}

/// Samples `from..to` of a 32-sample vibration window of `coap:<dev>` as
/// one SenML pack, 10 ms apart (a whole window exceeds one CoAP datagram);
/// `spiky` adds the impacts the model has never seen.
fn vibration_window(dev: &str, t0: i64, spiky: bool, from: usize, to: usize) -> String {
    let recs: Vec<String> = (from..to)
        .map(|i| {
            let x = i as f64;
            let mut v = 0.5 * (x * 0.7).sin() + 0.2 * (x * 1.9).sin();
            if spiky && i % 5 == 0 {
                v += 3.0;
            }
            let t = i as f64 * 0.01;
            if i == from {
                format!(
                    r#"{{"bn":"{dev}/","bt":{t0},"n":"vibration","u":"m/s2","v":{v:.4},"t":{t}}}"#
                )
            } else {
                format!(r#"{{"n":"vibration","u":"m/s2","v":{v:.4},"t":{t}}}"#)
            }
        })
        .collect();
    format!("[{}]", recs.join(","))
}

#[tokio::test(flavor = "multi_thread")]
async fn anomaly_app_and_declarative_detector_score_windows_in_the_cloud() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-apps-8");
    let publisher = Publisher::new();
    let model = vibration_model();
    // The same model also runs as a no-code detector from the config.
    let gw_cfg = edge_gateway(
        "gw-apps-8",
        &mosq.url(),
        &publisher,
        &format!(
            "[[edge_apps.anomaly]]\nname = \"pump\"\nmodel = {:?}\ndevice = \"coap:pump-*\"\n\
             measurement = \"vibration\"\nwindow = 32\nthreshold = 0.0016\n",
            model
        ),
    );
    let gw = gw_cfg.start();
    let bundle = publisher.bundle_with_models(
        "vibration-anomaly",
        &[("vibration-ae".into(), std::fs::read(&model).unwrap())],
        |_| {},
    );
    deploy(&gw_cfg, &bundle, "vibration-anomaly", "1.0.0", &publisher);
    wait_registry(&gw_cfg, &gw, &[("vibration-anomaly", "1.0.0")]).await;

    post(
        gw_cfg.coap_port,
        &vibration_window("pump-1", T0, true, 0, 16),
    )
    .unwrap();
    post(
        gw_cfg.coap_port,
        &vibration_window("pump-1", T0, true, 16, 32),
    )
    .unwrap();
    // 32 raw samples, the app's score and alert, the detector's score.
    let rs = wait_cloud(&cloud, "coap:pump-1", &gw, "anomaly scores", |rs| {
        rs.iter()
            .filter(|r| find(r, "anomaly_score").is_some())
            .count()
            >= 2
            && rs.iter().any(is_alert)
    })
    .await;
    assert_eq!(
        rs.iter().filter(|r| find(r, "vibration").is_some()).count(),
        32,
        "raw samples kept"
    );
    let app_score = rs
        .iter()
        .find(|r| source(r) == "app:vibration-anomaly" && find(r, "anomaly_score").is_some())
        .unwrap_or_else(|| panic!("{rs:#?}"));
    let detector = rs
        .iter()
        .find(|r| r["meta"]["extra"]["derived_by"] == "anomaly:pump")
        .unwrap_or_else(|| panic!("{rs:#?}"));
    let (a, _) = float(app_score, "anomaly_score").unwrap();
    let (d, _) = float(detector, "anomaly_score").unwrap();
    assert!(a > 0.0016 && d > 0.0016, "spiky window scored {a} / {d}");
    assert_eq!(find(detector, "anomalous").unwrap()["value"], true);
    let alert = rs.iter().find(|r| is_alert(r)).unwrap();
    assert_eq!(source(alert), "app:vibration-anomaly");
}
