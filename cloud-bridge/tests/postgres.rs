//! The same flows against a real PostgreSQL.

mod common;

use common::*;
use gatewayd_model::wire::{encode_reading, BatchWriter};
use gatewayd_tests::mosquitto::{Mosquitto, MosquittoOptions};
use gatewayd_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_works_like_sqlite() {
    init_logging();
    let (broker, pg) = tokio::task::spawn_blocking(|| {
        (
            Mosquitto::start(MosquittoOptions::default()).expect("mosquitto starts"),
            Postgres::start().expect("postgres starts"),
        )
    })
    .await
    .unwrap();
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &url, "cb-postgres");
    config.storage.kind = cloud_bridge::config::StorageKind::Postgres;
    config.storage.postgres_url = Some(pg.url.clone());

    let bridge = cloud_bridge::start(config.clone()).await.unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;
    let (_, health) = get(addr, "/healthz").await;
    assert_eq!(health["store_kind"], "postgres");

    let mut w = BatchWriter::new("gw-pg");
    w.push(1, &encode_reading(&rich_reading("coap:pg-0")));
    w.push(2, &encode_reading(&simple_reading("coap:pg-0", 2)));
    let first = w.finish();
    publish(
        &url,
        "test-gw-pg",
        vec![
            (
                status_topic("gw-pg"),
                br#"{"state":"online","version":"0.1.0","ts":1732476000}"#.to_vec(),
                true,
            ),
            (telemetry_topic("gw-pg"), first.clone(), false),
            (telemetry_topic("gw-pg"), first, false),
            (
                telemetry_topic("gw-pg"),
                batch("gw-pg", "coap:pg-0", 2..=4),
                false,
            ),
            (telemetry_topic("gw-pg"), b"{\"v\":1}".to_vec(), false),
        ],
    )
    .await
    .unwrap();
    let c = wait_counter(addr, "batches_stored", 3).await;
    let c = if counter(&c, "rejected") < 1 {
        wait_counter(addr, "rejected", 1).await
    } else {
        c
    };
    assert_eq!(counter(&c, "readings_stored"), 4, "{c}");
    assert_eq!(counter(&c, "duplicates_skipped"), 3, "{c}");
    assert_eq!(counter(&c, "rejected"), 1, "{c}");

    let (code, body) = get(addr, "/api/v1/devices/coap:pg-0/readings").await;
    assert_eq!(code, 200, "{body}");
    let rs = body["readings"].as_array().unwrap();
    assert_eq!(seqs(rs), vec![1, 2, 3, 4]);
    // Ascending by time: the rich reading (seq 1) is the newest.
    let order: Vec<u64> = rs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(order, vec![2, 3, 4, 1]);
    let r = &rs[3];
    assert_eq!(r["gateway"], "gw-pg");
    assert_eq!(r["time"], "2024-11-24T19:20:00.123456Z");
    assert_eq!(
        r["measurements"],
        serde_json::json!([
            {"name": "temperature", "unit": "Cel", "value": 21.5},
            {"name": "humidity", "unit": "%RH", "value": 48.25},
            {"name": "door", "value": true},
            {"name": "firmware", "value": "1.2.3"},
            {"name": "raw", "value": {"data": "-_8A"}},
            {"name": "energy", "unit": "J", "sum": 1500.0},
        ])
    );
    assert_eq!(
        r["meta"],
        serde_json::json!({"rssi": -71.0, "source": "coap", "extra": {"fw": "1.2.3"}})
    );
    let (_, body) = get(
        addr,
        &format!(
            "/api/v1/devices/coap:pg-0/readings?since={}&limit=2",
            BASE_US + 2000
        ),
    )
    .await;
    assert_eq!(seqs(body["readings"].as_array().unwrap()), vec![2, 3]);
    assert_eq!(body["more"], true);

    let (_, body) = get(addr, "/api/v1/devices").await;
    assert_eq!(body["devices"][0]["id"], "coap:pg-0");
    assert_eq!(body["devices"][0]["last_reading_us"], BASE_US + 123_456);
    let gw = wait_for("gateway online", || async {
        let (_, body) = get(addr, "/api/v1/gateways").await;
        (body["gateways"][0]["status"] == "online").then(|| body["gateways"][0].clone())
    })
    .await;
    assert_eq!(gw["id"], "gw-pg");
    let (_, body) = get(addr, "/api/v1/rejected").await;
    assert_eq!(body["rejected"].as_array().unwrap().len(), 1);
    assert_eq!(get(addr, "/api/v1/devices/coap:none/readings").await.0, 404);
    bridge.stop().await.unwrap();

    // Starting again migrates nothing twice and keeps the data.
    let bridge = cloud_bridge::start(config).await.unwrap();
    assert_eq!(readings(bridge.http_addr, "coap:pg-0").await.len(), 4);
    let migrations = pg
        .psql("SELECT count(*) FROM schema_migrations")
        .expect("psql");
    assert_eq!(migrations.trim(), "1", "{migrations}");
    bridge.stop().await.unwrap();
}
