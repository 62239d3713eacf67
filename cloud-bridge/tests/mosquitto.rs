//! cloud-bridge against a real mosquitto, storing in SQLite.

mod common;

use std::collections::BTreeSet;

use common::*;
use gatewayd_model::wire::{encode_reading, BatchWriter};
use gatewayd_tests::mosquitto::{Mosquitto, MosquittoOptions};

async fn mosquitto() -> Mosquitto {
    tokio::task::spawn_blocking(|| Mosquitto::start(MosquittoOptions::default()))
        .await
        .unwrap()
        .expect("mosquitto starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_batches_and_serves_them_over_http() {
    init_logging();
    let broker = mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = cloud_bridge::start(sqlite_config(dir.path(), &broker.url(), "cb-serve"))
        .await
        .unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;

    let mut w = BatchWriter::new("gw-01");
    w.push(42, &encode_reading(&rich_reading("coap:sim-0")));
    w.push(43, &encode_reading(&simple_reading("ble:tag-1", 43)));
    let status = br#"{"state":"online","version":"0.1.0","ts":1732476000}"#.to_vec();
    publish(
        &broker.url(),
        "test-gw-01",
        vec![
            (status_topic("gw-01"), status, true),
            (telemetry_topic("gw-01"), w.finish(), false),
        ],
    )
    .await
    .unwrap();
    wait_counter(addr, "readings_stored", 2).await;

    let (code, body) = get(addr, "/api/v1/devices/coap:sim-0/readings").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["device"], "coap:sim-0");
    let r = &body["readings"][0];
    assert_eq!(r["gateway"], "gw-01");
    assert_eq!(r["seq"], 42);
    assert_eq!(r["device"], "coap:sim-0");
    assert_eq!(r["time_us"], BASE_US + 123_456);
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
    assert_eq!(body["more"], false);

    let (code, body) = get(addr, "/api/v1/devices").await;
    assert_eq!(code, 200);
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    let sim = devices.iter().find(|d| d["id"] == "coap:sim-0").unwrap();
    assert_eq!(sim["gateway"], "gw-01");
    assert_eq!(sim["transport"], "coap");
    assert_eq!(sim["last_reading_us"], BASE_US + 123_456);
    let tag = devices.iter().find(|d| d["id"] == "ble:tag-1").unwrap();
    assert_eq!(tag["transport"], "ble");

    let gw = wait_for("gateway status online", || async {
        let (_, body) = get(addr, "/api/v1/gateways").await;
        let gw = body["gateways"][0].clone();
        (gw["status"] == "online").then_some(gw)
    })
    .await;
    assert_eq!(gw["id"], "gw-01");
    assert_eq!(gw["status_time"], "2024-11-24T19:20:00.000000Z");

    let (code, health) = get(addr, "/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["mqtt"], "connected");
    assert_eq!(health["store"], "ok");
    assert_eq!(health["counters"]["batches_stored"], 1);
    assert_eq!(health["counters"]["rejected"], 0);

    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_query_filters_by_time_and_limit() {
    init_logging();
    let broker = mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = cloud_bridge::start(sqlite_config(dir.path(), &broker.url(), "cb-query"))
        .await
        .unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;
    publish(
        &broker.url(),
        "test-gw",
        vec![(
            telemetry_topic("gw-q"),
            batch("gw-q", "coap:q", 1..=10),
            false,
        )],
    )
    .await
    .unwrap();
    wait_counter(addr, "readings_stored", 10).await;

    // seq n is at BASE_US + n*1000; since inclusive, until exclusive.
    let since = BASE_US + 3000;
    let until = cloud_bridge::timefmt::format_us(BASE_US + 7000);
    let (code, body) = get(
        addr,
        &format!("/api/v1/devices/coap:q/readings?since={since}&until={until}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(seqs(body["readings"].as_array().unwrap()), vec![3, 4, 5, 6]);

    let (_, body) = get(addr, "/api/v1/devices/coap:q/readings?limit=3").await;
    assert_eq!(seqs(body["readings"].as_array().unwrap()), vec![1, 2, 3]);
    assert_eq!(body["more"], true);
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_json_and_name_the_parameter() {
    init_logging();
    let broker = mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = cloud_bridge::start(sqlite_config(dir.path(), &broker.url(), "cb-http"))
        .await
        .unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;
    publish(
        &broker.url(),
        "test-gw",
        vec![(telemetry_topic("gw-h"), batch("gw-h", "coap:h", [1]), false)],
    )
    .await
    .unwrap();
    wait_counter(addr, "readings_stored", 1).await;

    for (query, param) in [
        ("since=yesterday", "since"),
        ("until=2024-02-30T00:00:00Z", "until"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=many", "limit"),
        ("since=20&until=10", "until"),
        ("colour=red", "colour"),
    ] {
        let (code, body) = get(addr, &format!("/api/v1/devices/coap:h/readings?{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert_eq!(body["parameter"], param, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with(param), "{body}");
    }
    let (code, body) = get(addr, "/api/v1/devices/coap:nobody/readings").await;
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("coap:nobody"));
    let (code, body) = get(addr, "/api/v1/devices/not-a-device-id/readings").await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["parameter"], "id");
    let (code, body) = get(addr, "/api/v1/devices?limit=-5").await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["parameter"], "limit");
    let (code, body) = get(addr, "/api/v1/nothing-here").await;
    assert_eq!(code, 404, "{body}");
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_batch_is_stored_once() {
    init_logging();
    let broker = mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = cloud_bridge::start(sqlite_config(dir.path(), &broker.url(), "cb-redeliver"))
        .await
        .unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;
    let payload = batch("gw-01", "coap:sim-0", 1..=5);
    // The same batch twice, then a regrouped redelivery overlapping both
    // old and new sequence numbers.
    publish(
        &broker.url(),
        "test-gw-01",
        vec![
            (telemetry_topic("gw-01"), payload.clone(), false),
            (telemetry_topic("gw-01"), payload, false),
            (
                telemetry_topic("gw-01"),
                batch("gw-01", "coap:sim-0", 4..=7),
                false,
            ),
        ],
    )
    .await
    .unwrap();
    let c = wait_counter(addr, "batches_stored", 3).await;
    assert_eq!(counter(&c, "readings_stored"), 7);
    assert_eq!(counter(&c, "duplicates_skipped"), 7);
    assert_eq!(
        seqs(&readings(addr, "coap:sim-0").await),
        (1..=7).collect::<Vec<_>>()
    );
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_nothing() {
    init_logging();
    const PHASE: u64 = 20; // batches per phase
    const PER_BATCH: u64 = 5;
    let broker = mosquitto().await;
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path(), &url, "cb-restart");
    let bridge = cloud_bridge::start(config.clone()).await.unwrap();
    wait_healthy(bridge.http_addr).await;

    // A gateway publishing QoS 1 batches one at a time: phase 1 while the
    // bridge runs (and is being stopped), phase 2 while it is down, phase 3
    // while it starts again.
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let (down_done_tx, down_done_rx) = tokio::sync::oneshot::channel::<()>();
    let (restarted_tx, restarted_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = {
        let url = url.clone();
        tokio::spawn(async move {
            let send = |b: u64| {
                let url = url.clone();
                async move {
                    let seqs = b * PER_BATCH + 1..=(b + 1) * PER_BATCH;
                    publish(
                        &url,
                        "test-gw-steady",
                        vec![(
                            telemetry_topic("gw-01"),
                            batch("gw-01", "coap:s", seqs),
                            false,
                        )],
                    )
                    .await
                    .unwrap();
                }
            };
            for b in 0..PHASE {
                send(b).await;
            }
            stopped_rx.await.unwrap();
            for b in PHASE..2 * PHASE {
                send(b).await;
            }
            down_done_tx.send(()).unwrap();
            restarted_rx.await.unwrap();
            for b in 2 * PHASE..3 * PHASE {
                send(b).await;
            }
        })
    };

    wait_counter(bridge.http_addr, "batches_stored", 5).await;
    bridge.stop().await.unwrap();
    stopped_tx.send(()).unwrap();
    down_done_rx.await.unwrap();
    let bridge = cloud_bridge::start(config).await.unwrap();
    restarted_tx.send(()).unwrap();
    gateway.await.unwrap();

    let total = 3 * PHASE * PER_BATCH;
    wait_for("every reading stored", || async {
        (readings(bridge.http_addr, "coap:s").await.len() as u64 >= total).then_some(())
    })
    .await;
    let stored = seqs(&readings(bridge.http_addr, "coap:s").await);
    assert_eq!(stored, (1..=total).collect::<Vec<_>>());
    // What the first run stored it also acknowledged (graceful stop), so
    // the broker redelivered nothing it had already stored.
    let c = counters(bridge.http_addr).await;
    assert_eq!(counter(&c, "duplicates_skipped"), 0, "{c}");
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_load_without_doubles() {
    init_logging();
    const BATCHES: u64 = 40;
    let broker = mosquitto().await;
    let url = broker.url();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Same shared group (the default), different client ids, separate
    // databases so each replica's share is visible.
    let a = cloud_bridge::start(sqlite_config(dir_a.path(), &url, "cb-replica-a"))
        .await
        .unwrap();
    let b = cloud_bridge::start(sqlite_config(dir_b.path(), &url, "cb-replica-b"))
        .await
        .unwrap();
    wait_healthy(a.http_addr).await;
    wait_healthy(b.http_addr).await;

    let msgs = (0..BATCHES)
        .map(|i| {
            let seqs = i * 3 + 1..=i * 3 + 3;
            (
                telemetry_topic("gw-01"),
                batch("gw-01", "coap:r", seqs),
                false,
            )
        })
        .collect();
    publish(&url, "test-gw-replicas", msgs).await.unwrap();

    let total = BATCHES * 3;
    let (ra, rb) = wait_for("all readings across replicas", || async {
        let ra = seqs(&readings(a.http_addr, "coap:r").await);
        let rb = seqs(&readings(b.http_addr, "coap:r").await);
        ((ra.len() + rb.len()) as u64 >= total).then_some((ra, rb))
    })
    .await;
    assert!(!ra.is_empty() && !rb.is_empty(), "a: {ra:?}, b: {rb:?}");
    let sa: BTreeSet<u64> = ra.iter().copied().collect();
    let sb: BTreeSet<u64> = rb.iter().copied().collect();
    assert!(sa.is_disjoint(&sb), "a batch went to both replicas");
    let all: Vec<u64> = sa.union(&sb).copied().collect();
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    let (ca, cb) = (counters(a.http_addr).await, counters(b.http_addr).await);
    assert!(counter(&ca, "batches_received") > 0 && counter(&cb, "batches_received") > 0);
    assert_eq!(
        counter(&ca, "batches_received") + counter(&cb, "batches_received"),
        BATCHES
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_rejected_and_acked() {
    init_logging();
    let broker = mosquitto().await;
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path(), &url, "cb-reject");
    let bridge = cloud_bridge::start(config.clone()).await.unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;

    publish(
        &url,
        "test-bad",
        vec![
            (telemetry_topic("gw-01"), b"not json at all".to_vec(), false),
            // gw in the payload disagrees with the topic
            (
                telemetry_topic("gw-01"),
                batch("gw-99", "coap:x", [1]),
                false,
            ),
            (
                telemetry_topic("gw-01"),
                br#"{"v":2,"gw":"gw-01","r":[]}"#.to_vec(),
                false,
            ),
            (
                status_topic("gw-01"),
                br#"{"state":"dancing"}"#.to_vec(),
                false,
            ),
            // a valid batch after the bad ones: processing goes on
            (
                telemetry_topic("gw-01"),
                batch("gw-01", "coap:ok", [7]),
                false,
            ),
        ],
    )
    .await
    .unwrap();
    let c = wait_counter(addr, "readings_stored", 1).await;
    assert_eq!(counter(&c, "rejected"), 4, "{c}");
    let (code, body) = get(addr, "/api/v1/rejected").await;
    assert_eq!(code, 200);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 4);
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("dancing"), "{reasons:?}");
    assert!(reasons[1].contains("version 2"), "{reasons:?}");
    assert!(reasons[2].contains("does not match"), "{reasons:?}");
    assert!(reasons[3].contains("JSON"), "{reasons:?}");
    assert_eq!(rejected[3]["payload_excerpt"], "not json at all");
    assert_eq!(rejected[3]["gateway"], "gw-01");
    assert!(readings(addr, "coap:x").await.is_empty());
    bridge.stop().await.unwrap();

    // Acknowledged: a restart with the same session gets none of them
    // again (only the sentinel published now).
    let bridge = cloud_bridge::start(config).await.unwrap();
    let addr = bridge.http_addr;
    publish(
        &url,
        "test-bad",
        vec![(
            telemetry_topic("gw-01"),
            batch("gw-01", "coap:ok", [8]),
            false,
        )],
    )
    .await
    .unwrap();
    let c = wait_counter(addr, "readings_stored", 1).await;
    assert_eq!(counter(&c, "rejected"), 0, "{c}");
    assert_eq!(counter(&c, "batches_received"), 1, "{c}");
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_broker_is_down() {
    init_logging();
    let mut broker = mosquitto().await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = cloud_bridge::start(sqlite_config(dir.path(), &broker.url(), "cb-health"))
        .await
        .unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;
    broker.stop();
    let body = wait_for("healthz 503", || async {
        let (code, body) = get(addr, "/healthz").await;
        (code == 503).then_some(body)
    })
    .await;
    assert_eq!(body["mqtt"], "disconnected");
    assert_eq!(body["store"], "ok");
    let _broker = tokio::task::spawn_blocking(move || {
        broker.restart().unwrap();
        broker
    })
    .await
    .unwrap();
    wait_healthy(addr).await;
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_ack_means_redelivery_and_nothing_is_lost() {
    init_logging();
    let broker = mosquitto().await;
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path(), &url, "cb-crash");
    let db_path = config.storage.sqlite_path.clone();
    let bridge = cloud_bridge::start(config.clone()).await.unwrap();
    wait_healthy(bridge.http_addr).await;

    // Another writer holds the database: batches arrive but cannot be
    // committed, so they are not acknowledged.
    let locker = rusqlite::Connection::open(&db_path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let msgs = (0..5u64)
        .map(|i| {
            let seqs = i * 4 + 1..=i * 4 + 4;
            (
                telemetry_topic("gw-c"),
                batch("gw-c", "coap:c", seqs),
                false,
            )
        })
        .collect();
    publish(&url, "test-gw-crash", msgs).await.unwrap();
    let c = wait_counter(bridge.http_addr, "batches_received", 1).await;
    assert_eq!(counter(&c, "batches_stored"), 0, "{c}");
    bridge.abort().await;
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    let bridge = cloud_bridge::start(config).await.unwrap();
    wait_for("every reading stored after the crash", || async {
        (readings(bridge.http_addr, "coap:c").await.len() >= 20).then_some(())
    })
    .await;
    assert_eq!(
        seqs(&readings(bridge.http_addr, "coap:c").await),
        (1..=20).collect::<Vec<_>>()
    );
    bridge.stop().await.unwrap();
}
