//! Helpers for cloud-bridge's integration tests: configs, publishing real
//! MQTT batches, reading the HTTP API.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use cloud_bridge::config::{parse_mqtt_url, Config, StorageKind};
use gatewayd_model::wire::{encode_reading, BatchWriter};
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Value};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value as Json;

/// Hang guard for waits (a test that needs it has failed anyway).
pub const PATIENCE: Duration = Duration::from_secs(90);

pub const BASE_US: i64 = 1_732_476_000_000_000;

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// SQLite in `dir`, external broker at `mqtt_url`, HTTP on a free port.
pub fn sqlite_config(dir: &Path, mqtt_url: &str, client_id: &str) -> Config {
    let mut c = Config::default();
    c.broker.embedded = false;
    c.mqtt.url = Some(mqtt_url.to_owned());
    c.mqtt.client_id = Some(client_id.to_owned());
    c.storage.kind = StorageKind::Sqlite;
    c.storage.sqlite_path = dir.join("cloud-bridge.sqlite3");
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c
}

pub fn telemetry_topic(gw: &str) -> String {
    format!("gatewayd/v1/{gw}/telemetry")
}

pub fn status_topic(gw: &str) -> String {
    format!("gatewayd/v1/{gw}/status")
}

/// A reading of `device` at `BASE_US + seq * 1000` with a temperature.
pub fn simple_reading(device: &str, seq: u64) -> Reading {
    let dev: DeviceId = device.parse().unwrap();
    Reading::new(
        dev,
        Timestamp(BASE_US + seq as i64 * 1000),
        vec![Measurement::float(
            "temperature",
            Some("Cel"),
            20.0 + seq as f64 / 10.0,
        )],
    )
}

/// A batch payload for `gw` with one reading per seq.
pub fn batch(gw: &str, device: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut w = BatchWriter::new(gw);
    for seq in seqs {
        w.push(seq, &encode_reading(&simple_reading(device, seq)));
    }
    w.finish()
}

/// A reading with every kind of value and some metadata.
pub fn rich_reading(device: &str) -> Reading {
    let mut r = Reading::new(
        device.parse().unwrap(),
        Timestamp(BASE_US + 123_456),
        vec![
            Measurement::float("temperature", Some("Cel"), 21.5),
            Measurement::float("humidity", Some("%RH"), 48.25),
            Measurement {
                name: "door".into(),
                unit: None,
                value: Some(Value::Bool(true)),
                sum: None,
            },
            Measurement {
                name: "firmware".into(),
                unit: None,
                value: Some(Value::String("1.2.3".into())),
                sum: None,
            },
            Measurement {
                name: "raw".into(),
                unit: None,
                value: Some(Value::Data(vec![0xfb, 0xff, 0x00])),
                sum: None,
            },
            Measurement {
                name: "energy".into(),
                unit: Some("J".into()),
                value: None,
                sum: Some(1500.0),
            },
        ],
    );
    r.meta.rssi = Some(-71.0);
    r.meta.source = Some("coap".into());
    r.meta.extra.insert("fw".into(), "1.2.3".into());
    r
}

/// Publishes every (topic, payload, retain) at QoS 1 with a clean session
/// and returns once the broker acknowledged all of them.
pub async fn publish(
    url: &str,
    client_id: &str,
    msgs: Vec<(String, Vec<u8>, bool)>,
) -> anyhow::Result<()> {
    let ep = parse_mqtt_url(url).map_err(anyhow::Error::msg)?;
    let mut opts = MqttOptions::new(client_id, ep.host, ep.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let n = msgs.len();
    let publisher = tokio::spawn(async move {
        for (topic, payload, retain) in msgs {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await?;
        }
        Ok::<_, rumqttc::ClientError>(client)
    });
    let drive = async {
        let mut acked = 0;
        while acked < n {
            match eventloop.poll().await.context("publisher connection")? {
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                Event::Incoming(Packet::ConnAck(a)) if a.session_present => {
                    bail!("unexpected session")
                }
                _ => {}
            }
        }
        let client = publisher.await??;
        client.disconnect().await?;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(PATIENCE, drive)
        .await
        .context("publishing did not finish")?
}

pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Json) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .json::<Json>()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: body is not JSON: {e}"));
    (status, body)
}

pub async fn counters(addr: std::net::SocketAddr) -> Json {
    get(addr, "/healthz").await.1["counters"].clone()
}

pub fn counter(c: &Json, name: &str) -> u64 {
    c[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {c}"))
}

/// Polls `check` until it returns `Some`, failing after [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the bridge at `addr` is connected and subscribed.
pub async fn wait_healthy(addr: std::net::SocketAddr) {
    wait_for("healthz 200", || async move {
        (get(addr, "/healthz").await.0 == 200).then_some(())
    })
    .await;
}

/// Waits until `counter` reaches at least `n`; returns all counters.
pub async fn wait_counter(addr: std::net::SocketAddr, name: &str, n: u64) -> Json {
    let name = name.to_owned();
    wait_for(&format!("{name} >= {n}"), || {
        let name = name.clone();
        async move {
            let c = counters(addr).await;
            (counter(&c, &name) >= n).then_some(c)
        }
    })
    .await
}

/// All readings of `device` (up to 10000).
pub async fn readings(addr: std::net::SocketAddr, device: &str) -> Vec<Json> {
    let (status, body) = get(
        addr,
        &format!("/api/v1/devices/{device}/readings?limit=10000"),
    )
    .await;
    match status {
        200 => body["readings"].as_array().cloned().unwrap_or_default(),
        404 => Vec::new(),
        other => panic!("readings of {device}: HTTP {other}: {body}"),
    }
}

/// The seqs of `readings`, sorted.
pub fn seqs(readings: &[Json]) -> Vec<u64> {
    let mut s: Vec<u64> = readings
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    s.sort_unstable();
    s
}
