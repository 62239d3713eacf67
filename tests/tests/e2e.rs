//! End to end, with real peers: libcoap's `coap-client` (or our own CoAP
//! client over UDP) → gatewayd (binary) → mosquitto or cloud-bridge's
//! embedded broker → cloud-bridge (binary) → its HTTP API.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use coap_lite::{MessageClass, ResponseType};
use common::{coap_client_post, coap_post, measurement, tail, Cloud, Gateway, WAIT};
use gatewayd_tests::certs::{foreign_client, ClientCert, Pki};
use gatewayd_tests::mosquitto::{Mosquitto, MosquittoOptions};
use serde_json::Value as J;

async fn coap_client_reading_reaches_cloud(cloud: &Cloud, gw_cfg: &Gateway) {
    let gw = gw_cfg.start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("pack.json");
    std::fs::write(
        &json,
        r#"[{"bn":"greenhouse-3/","bt":1732476000,"n":"temperature","u":"Cel","v":21.5},
            {"n":"humidity","u":"%RH","v":48},{"n":"door","vb":false}]"#,
    )
    .unwrap();
    let out = coap_client_post(gw_cfg.coap_port, 110, &json);
    assert!(
        out.status.success(),
        "coap-client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&gw.log())
    );
    let readings = cloud.wait_readings("coap:greenhouse-3", 1, Some(&gw)).await;
    let r = &readings[0];
    assert_eq!(r["gateway"], J::from(gw_cfg.id.as_str()));
    assert_eq!(r["time_us"], J::from(1_732_476_000_000_000i64));
    let t = measurement(r, "temperature");
    assert_eq!(t["value"], J::from(21.5));
    assert_eq!(t["unit"], "Cel");
    let h = measurement(r, "humidity");
    assert_eq!(h["value"], J::from(48.0));
    assert_eq!(h["unit"], "%RH");
    assert_eq!(measurement(r, "door")["value"], J::from(false));

    // SenML CBOR: [{-2:"cbor-dev/", 0:"pressure", 1:"Pa", 2:101325.0}]
    let cbor = dir.path().join("pack.cbor");
    std::fs::write(&cbor, minicbor_like_encode()).unwrap();
    let out = coap_client_post(gw_cfg.coap_port, 112, &cbor);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let readings = cloud.wait_readings("coap:cbor-dev", 1, Some(&gw)).await;
    let p = measurement(&readings[0], "pressure");
    assert_eq!(p["value"], J::from(101325.0));
    assert_eq!(p["unit"], "Pa");
}

/// A hand-encoded SenML CBOR pack (independent of our encoder).
fn minicbor_like_encode() -> Vec<u8> {
    let mut v = vec![0x81, 0xa4];
    v.push(0x21); // -2
    v.push(0x69);
    v.extend_from_slice(b"cbor-dev/");
    v.push(0x00); // 0
    v.push(0x68);
    v.extend_from_slice(b"pressure");
    v.push(0x01); // 1
    v.push(0x62);
    v.extend_from_slice(b"Pa");
    v.push(0x02); // 2
    v.push(0xfb);
    v.extend_from_slice(&101325.0f64.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn coap_client_to_cloud_through_mosquitto() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-e2e-1");
    let gw = Gateway::new("gw-e2e-1", &mosq.url());
    coap_client_reading_reaches_cloud(&cloud, &gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn coap_client_to_cloud_through_embedded_broker() {
    let cloud = Cloud::start(None, "cb-e2e-2");
    let url = format!("mqtt://127.0.0.1:{}", cloud.broker_port.unwrap());
    let gw = Gateway::new("gw-e2e-2", &url);
    coap_client_reading_reaches_cloud(&cloud, &gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_coap_input_gets_documented_errors_and_gateway_keeps_serving() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-e2e-3");
    let gw_cfg = Gateway::new("gw-e2e-3", &mosq.url());
    let gw = gw_cfg.start();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, u16, &[u8], &str); 4] = [
        ("not-json", 110, b"{oops", "4.00"),
        ("wrong-type", 110, br#"[{"n":"t","v":"hot"}]"#, "4.00"),
        ("bad-cbor", 112, &[0x81, 0xa1, 0x02, 0x61, b'x'], "4.00"),
        ("wrong-format", 0, b"21.5", "4.15"),
    ];
    for (name, format, body, code) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, body).unwrap();
        let out = coap_client_post(gw_cfg.coap_port, format, &f);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(code),
            "{name}: expected {code}, coap-client said: {text}"
        );
    }
    // Oversized: our own client, so we control the datagram.
    let big = format!(
        "[{}]",
        (0..300)
            .map(|i| format!(r#"{{"n":"m{i}","v":{i}}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let resp = coap_post(gw_cfg.coap_port, big.as_bytes(), 1, Duration::from_secs(5)).unwrap();
    assert_eq!(
        resp.header.code,
        MessageClass::Response(ResponseType::RequestEntityTooLarge)
    );
    // And it still serves.
    let ok = coap_post(
        gw_cfg.coap_port,
        br#"[{"bn":"still-alive/","n":"t","u":"Cel","v":1}]"#,
        2,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        ok.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    cloud.wait_readings("coap:still-alive", 1, Some(&gw)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_readings_arrive_in_order_after_restart() {
    let mut mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    // A plain persistent subscription: mosquitto 2.0 restores it after a
    // restart, but not a `$share/` one (docs/protocol.md, "Brokers").
    let cloud = Cloud::start_with(Some(&mosq.url()), "cb-e2e-4", "shared_group = \"\"");
    let gw_cfg = Gateway::new("gw-e2e-4", &mosq.url());
    let gw = gw_cfg.start();
    // Connected: one reading goes through.
    post_counter(gw_cfg.coap_port, "outage-a", 0).unwrap();
    cloud.wait_readings("coap:outage-a", 1, Some(&gw)).await;
    mosq.stop();
    // Broker down: readings are still acknowledged (committed to disk).
    for i in 1..=50 {
        post_counter(gw_cfg.coap_port, "outage-a", i).unwrap();
        post_counter(gw_cfg.coap_port, "outage-b", i).unwrap();
    }
    mosq.restart().unwrap();
    for dev in ["coap:outage-a", "coap:outage-b"] {
        let got = cloud
            .wait_readings(dev, if dev.ends_with('a') { 51 } else { 50 }, Some(&gw))
            .await;
        let counters: Vec<i64> = got
            .iter()
            .map(|r| measurement(r, "n")["value"].as_f64().unwrap() as i64)
            .collect();
        let seqs: Vec<u64> = got.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "{dev}: readings out of sequence order");
        let mut by_seq: Vec<(u64, i64)> = seqs.into_iter().zip(counters).collect();
        by_seq.sort();
        let in_order: Vec<i64> = by_seq.iter().map(|x| x.1).collect();
        let mut expect: Vec<i64> = (1..=50).collect();
        if dev.ends_with('a') {
            expect.insert(0, 0);
        }
        assert_eq!(in_order, expect, "{dev}: per-device order or content wrong");
    }
}

/// POSTs one reading `{"n":"n","v":counter}` for `dev`, confirmable; Ok when
/// answered 2.04.
fn post_counter(port: u16, dev: &str, counter: i64) -> anyhow::Result<()> {
    let body = format!(r#"[{{"bn":"{dev}/","n":"n","u":"count","v":{counter}}}]"#);
    let id = (counter as u16)
        .wrapping_mul(7)
        .wrapping_add(dev.len() as u16);
    let r = coap_post(port, body.as_bytes(), id, Duration::from_secs(5))?;
    if r.header.code != MessageClass::Response(ResponseType::Changed) {
        bail!("{dev}#{counter}: answered {:?}", r.header.code);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_killed_repeatedly_under_load_stores_every_acked_reading_exactly_once() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-e2e-5");
    let gw_cfg = Gateway::new("gw-e2e-5", &mosq.url());
    let port = gw_cfg.coap_port;
    let mut acked: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut counter = 0i64;
    for round in 0..5 {
        let mut gw = gw_cfg.start();
        // Load from 4 sensors on threads; kill -9 while they post.
        let (tx, rx) = std::sync::mpsc::channel::<(String, i64)>();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for s in 0..4 {
            let tx = tx.clone();
            let stop = stop.clone();
            let base = counter + s as i64 * 1_000_000;
            threads.push(std::thread::spawn(move || {
                let dev = format!("crash-{s}");
                let mut i = base;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if post_counter(port, &dev, i).is_ok() {
                        let _ = tx.send((format!("coap:{dev}"), i));
                    }
                    i += 1;
                }
            }));
        }
        drop(tx);
        std::thread::sleep(Duration::from_millis(400 + 150 * round));
        gw.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        for (dev, i) in rx.iter() {
            acked.entry(dev).or_default().insert(i);
        }
        counter += 100_000;
    }
    // A last, clean run forwards what is left.
    let gw = gw_cfg.start();
    let total: usize = acked.values().map(|s| s.len()).sum();
    assert!(total > 0, "no reading was acknowledged at all");
    for (dev, want) in &acked {
        let got = cloud.wait_readings(dev, want.len(), Some(&gw)).await;
        let mut seen = BTreeMap::<i64, usize>::new();
        for r in &got {
            *seen
                .entry(measurement(r, "n")["value"].as_f64().unwrap() as i64)
                .or_default() += 1;
        }
        let doubled: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            doubled.is_empty(),
            "{dev}: stored more than once: {doubled:?}"
        );
        let missing: Vec<_> = want.iter().filter(|i| !seen.contains_key(i)).collect();
        assert!(
            missing.is_empty(),
            "{dev}: acknowledged but not stored: {missing:?}"
        );
    }
    eprintln!("{total} acknowledged readings across 5 SIGKILLs, all stored once");
}

async fn mtls_gateway(
    client: Option<ClientCert>,
    pki: &std::sync::Arc<Pki>,
) -> (Mosquitto, Cloud, Gateway) {
    let mosq = Mosquitto::start(MosquittoOptions {
        tls: Some(pki.clone()),
        require_certificate: true,
        plain_listener: true,
        ..MosquittoOptions::default()
    })
    .unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-mtls");
    let mut gw = Gateway::new("gw-mtls", &mosq.tls_url().unwrap());
    gw.tls = Some((pki.ca_cert.clone(), client));
    (mosq, cloud, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_gateway_with_valid_certificate_delivers() {
    let pki = std::sync::Arc::new(Pki::new().unwrap());
    let client = pki.client("gw-mtls").unwrap();
    let (_mosq, cloud, gw_cfg) = mtls_gateway(Some(client), &pki).await;
    let gw = gw_cfg.start();
    post_counter(gw_cfg.coap_port, "tls-dev", 7).unwrap();
    let got = cloud.wait_readings("coap:tls-dev", 1, Some(&gw)).await;
    assert_eq!(measurement(&got[0], "n")["value"], J::from(7.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_foreign_and_missing_certificates_and_says_why() {
    let pki = std::sync::Arc::new(Pki::new().unwrap());
    for (case, client) in [
        ("foreign", Some(foreign_client("gw-mtls").unwrap())),
        ("missing", None),
    ] {
        let (mosq, _cloud, gw_cfg) = mtls_gateway(client, &pki).await;
        let gw = gw_cfg.start();
        // Readings are still acknowledged (buffered) but never delivered.
        post_counter(gw_cfg.coap_port, "tls-refused", 1).unwrap();
        let start = Instant::now();
        loop {
            let log = gw.log().to_lowercase();
            if log.contains("certificate")
                && ["refused", "reject", "requires", "unknown ca", "alert"]
                    .iter()
                    .any(|w| log.contains(w))
            {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "{case}: gatewayd log does not say why the broker refused it:\n{}\n--- mosquitto:\n{}",
                tail(&gw.log()),
                mosq.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_readings_and_exits_cleanly() {
    let mosq = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let cloud = Cloud::start(Some(&mosq.url()), "cb-e2e-6");
    let gw_cfg = Gateway::new("gw-e2e-6", &mosq.url());
    let mut gw = gw_cfg.start();
    for i in 0..200 {
        post_counter(gw_cfg.coap_port, "drain", i).unwrap();
    }
    // Everything above was acknowledged; SIGTERM right away must still
    // deliver it (forwarded during the drain, or left buffered for the next
    // start — with the broker up, the drain gets it all out).
    let status = gw.terminate_within(Duration::from_secs(30)).unwrap();
    assert!(
        status.success(),
        "gatewayd exited with {status}\n{}",
        tail(&gw.log())
    );
    let log = gw.log();
    assert!(log.contains("SIGTERM received"), "{}", tail(&log));
    assert!(log.contains("gatewayd stopped"), "{}", tail(&log));
    let got = cloud.wait_readings("coap:drain", 200, None).await;
    assert_eq!(got.len(), 200);
    // The retained status says offline.
    let out = Command::new("mosquitto_sub")
        .args([
            "-p",
            &mosq.port.to_string(),
            "-t",
            "gatewayd/v1/gw-e2e-6/status",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("\"offline\""), "retained status: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_broker_restart_loses_no_backlog_published_right_after_it() {
    let mut cloud = Cloud::start(None, "cb-e2e-7");
    let url = format!("mqtt://127.0.0.1:{}", cloud.broker_port.unwrap());
    let gw_cfg = Gateway::new("gw-e2e-7", &url);
    let gw = gw_cfg.start();
    post_counter(gw_cfg.coap_port, "backlog", 0).unwrap();
    cloud.wait_readings("coap:backlog", 1, Some(&gw)).await;
    // cloud-bridge (and its in-memory broker) dies; the gateway keeps
    // acknowledging readings into its buffer and reconnects within ~100 ms
    // of the restart, before or while cloud-bridge subscribes.
    let port = gw_cfg.coap_port;
    cloud.crash_and_restart(|| {
        for i in 1..=100 {
            post_counter(port, "backlog", i).unwrap();
        }
    });
    let got = cloud.wait_readings("coap:backlog", 101, Some(&gw)).await;
    let mut n: Vec<i64> = got
        .iter()
        .map(|r| measurement(r, "n")["value"].as_f64().unwrap() as i64)
        .collect();
    n.sort();
    assert_eq!(n, (0..=100).collect::<Vec<_>>());
}
