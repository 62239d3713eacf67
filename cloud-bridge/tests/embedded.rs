//! The embedded rumqttd broker: nothing else needed on the machine.

mod common;

use common::*;
use gatewayd_tests::ports::free_tcp_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_end_to_end() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut config = cloud_bridge::Config::default();
    config.broker.embedded = true;
    config.broker.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.mqtt.client_id = Some("cb-embedded".into());
    config.storage.sqlite_path = dir.path().join("db.sqlite3");
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let bridge = cloud_bridge::start(config).await.unwrap();
    let addr = bridge.http_addr;
    wait_healthy(addr).await;

    let url = format!("mqtt://127.0.0.1:{port}");
    publish(
        &url,
        "test-gw-embedded",
        vec![
            (
                status_topic("gw-e"),
                br#"{"state":"online","version":"0.1.0","ts":1732476000}"#.to_vec(),
                true,
            ),
            (
                telemetry_topic("gw-e"),
                batch("gw-e", "coap:e", 1..=3),
                false,
            ),
            (
                telemetry_topic("gw-e"),
                batch("gw-e", "coap:e", 3..=5),
                false,
            ),
        ],
    )
    .await
    .unwrap();
    let c = wait_counter(addr, "batches_stored", 2).await;
    assert_eq!(counter(&c, "readings_stored"), 5, "{c}");
    assert_eq!(counter(&c, "duplicates_skipped"), 1, "{c}");
    let rs = readings(addr, "coap:e").await;
    assert_eq!(seqs(&rs), vec![1, 2, 3, 4, 5]);
    assert_eq!(rs[0]["measurements"][0]["unit"], "Cel");
    assert_eq!(rs[0]["measurements"][0]["value"], 20.1);
    wait_for("gateway online", || async {
        let (_, body) = get(addr, "/api/v1/gateways").await;
        (body["gateways"][0]["status"] == "online").then_some(())
    })
    .await;
    bridge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cloud_bridge::Config::default();
    config.mqtt.client_id = Some("cb-bad".into());
    config.storage.sqlite_path = dir.path().join("db.sqlite3");
    config.storage.kind = cloud_bridge::config::StorageKind::Postgres;
    let e = cloud_bridge::start(config.clone()).await.err().unwrap();
    assert!(
        format!("{e:#}").contains("storage.postgres_url: required"),
        "{e:#}"
    );

    // The embedded broker's port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.storage.kind = cloud_bridge::config::StorageKind::Sqlite;
    config.broker.listen = taken.local_addr().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let e = cloud_bridge::start(config).await.err().unwrap();
    assert!(format!("{e:#}").contains("broker.listen"), "{e:#}");
}
