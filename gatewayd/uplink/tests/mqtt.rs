//! The uplink against a real mosquitto.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use gatewayd_tests::certs::{foreign_client, Pki};
use gatewayd_tests::mosquitto::{Mosquitto, MosquittoOptions};
use gatewayd_uplink::{Protocol, TlsConfig, UplinkEvent};

fn telemetry_filter() -> String {
    format!("gatewayd/v1/{GW}/telemetry")
}

fn status_filter() -> String {
    format!("gatewayd/v1/{GW}/status")
}

async fn acked_exactly_once(protocol: Protocol, expect_label: &str) {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let mut sub = subscribe(broker.port, &telemetry_filter(), "sub-acked", false).await;
    let mut cfg = config(broker.url());
    cfg.protocol = protocol;
    cfg.max_inflight = 4;
    let mut up = start(cfg);
    assert_eq!(up.connected().await, expect_label);

    // Freeze the broker: it cannot PUBACK, so nothing may be reported.
    let pid = broker.pid().unwrap();
    signal(pid, "STOP");
    let sent: Vec<_> = (1..=4u64)
        .map(|id| batch(id, id * 10, id * 10 + 2))
        .collect();
    for b in &sent {
        up.batches.send(b.clone()).await.unwrap();
    }
    up.wait_status("holding 4 batches", |s| s.in_flight == 4)
        .await;
    assert!(
        up.events.try_recv().is_err(),
        "a batch was reported before any PUBACK could exist"
    );
    signal(pid, "CONT");

    // More than the window, to exercise packet id reuse.
    let more: Vec<_> = (5..=40u64)
        .map(|id| batch(id, id * 10, id * 10 + 2))
        .collect();
    let feeder = {
        let tx = up.batches.clone();
        let more = more.clone();
        tokio::spawn(async move {
            for b in more {
                tx.send(b).await.unwrap();
            }
        })
    };
    let mut acks: HashMap<u64, usize> = HashMap::new();
    while acks.len() < 40 {
        if let UplinkEvent::Acked {
            id,
            first_seq,
            last_seq,
        } = up.next_event().await
        {
            assert_eq!((first_seq, last_seq), (id * 10, id * 10 + 2));
            *acks.entry(id).or_default() += 1;
        }
    }
    feeder.await.unwrap();
    let status = up.wait_status("idle", |s| s.in_flight == 0).await;
    assert!(status.last_puback.is_some());
    up.stop().await;
    while let Ok(ev) = up.events.try_recv() {
        if let UplinkEvent::Acked { id, .. } = ev {
            *acks.entry(id).or_default() += 1;
        }
    }
    assert!(
        acks.values().all(|n| *n == 1),
        "each batch acked exactly once: {acks:?}"
    );

    let mut seen = Vec::new();
    while seen.len() < 40 {
        let (topic, payload, retain) = sub.next().await;
        assert_eq!(topic, telemetry_filter());
        assert!(!retain);
        seen.push(payload);
    }
    let expected: Vec<_> = sent
        .iter()
        .chain(&more)
        .map(|b| b.payload.clone())
        .collect();
    assert_eq!(seen, expected, "every payload delivered, in order");
    for p in &seen {
        let b = gatewayd_model::wire::decode_batch(p).expect("valid wire batch");
        assert_eq!(b.gateway, GW);
    }
}

#[tokio::test]
async fn batches_are_acked_only_on_puback() {
    acked_exactly_once(Protocol::V311, "3.1.1").await;
}

#[tokio::test]
async fn batches_are_acked_only_on_puback_over_mqtt5() {
    acked_exactly_once(Protocol::V5, "5").await;
}

#[tokio::test]
async fn protocol_auto_uses_v5_on_mosquitto() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let mut up = start(config(broker.url()));
    assert_eq!(up.connected().await, "5");
    let s = up.wait_status("connected", |s| s.connected).await;
    assert_eq!(s.protocol, Some("5"));
    assert_eq!(s.connects, 1);
    up.stop().await;
}

#[tokio::test]
async fn broker_restart_resends_unacked_first() {
    for protocol in [Protocol::V311, Protocol::V5] {
        broker_restart(protocol).await;
    }
}

async fn broker_restart(protocol: Protocol) {
    let mut broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    // A persistent subscriber, so its subscription survives the restart.
    let subscribed_at = SystemTime::now();
    let mut sub = subscribe(broker.port, &telemetry_filter(), "sub-restart", true).await;
    // Wait until mosquitto has saved that subscription (autosave every 1 s).
    let db = broker.dir.join("data").join("mosquitto.db");
    tokio::time::timeout(GUARD, async {
        loop {
            if std::fs::metadata(&db)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > subscribed_at)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("mosquitto never saved its persistence file");
    let mut cfg = config(broker.url());
    cfg.protocol = protocol;
    cfg.max_inflight = 8;
    let mut up = start(cfg);
    up.connected().await;

    // Batches 1-5 go on the wire but the frozen broker never reads them.
    signal(broker.pid().unwrap(), "STOP");
    for id in 1..=5u64 {
        up.batches.send(batch(id, id, id)).await.unwrap();
    }
    up.wait_status("holding 5 batches", |s| s.in_flight == 5)
        .await;
    broker.kill();
    loop {
        match up.next_event().await {
            UplinkEvent::Disconnected { .. } => break,
            UplinkEvent::Acked { id, .. } => panic!("batch {id} acked by a dead broker"),
            UplinkEvent::Connected { .. } => {}
        }
    }
    // New batches while the broker is down.
    for id in 6..=10u64 {
        up.batches.send(batch(id, id, id)).await.unwrap();
    }
    broker.restart().unwrap();

    let mut acked = Vec::new();
    while acked.len() < 10 {
        if let UplinkEvent::Acked { id, .. } = up.next_event().await {
            assert!(!acked.contains(&id), "batch {id} acked twice");
            acked.push(id);
        }
    }
    assert_eq!(acked, (1..=10).collect::<Vec<_>>(), "re-sent batches first");
    let s = up.wait_status("reconnected", |s| s.connects >= 2).await;
    assert!(s.last_error.is_some());
    up.stop().await;

    let mut order = Vec::new();
    while order.len() < 10 {
        let (_, payload, _) = sub.next().await;
        let b = gatewayd_model::wire::decode_batch(&payload).unwrap();
        let seq = b.readings[0].0;
        if !order.contains(&seq) {
            order.push(seq);
        }
    }
    assert_eq!(
        order,
        (1..=10).collect::<Vec<_>>(),
        "none lost, re-sent first"
    );
}

#[tokio::test]
async fn status_is_retained_online_and_offline_on_shutdown() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let mut up = start(config(broker.url()));
    up.connected().await;
    up.wait_status("connected", |s| s.connected).await;
    // A late subscriber gets the retained status.
    let mut sub = subscribe(broker.port, &status_filter(), "sub-status-1", false).await;
    let (topic, payload, retain) = sub.next().await;
    assert_eq!(topic, status_filter());
    assert!(retain);
    assert_eq!(status_state(&payload), "online");
    up.stop().await;
    let (_, payload, _) = sub.next().await;
    assert_eq!(status_state(&payload), "offline");
    let mut late = subscribe(broker.port, &status_filter(), "sub-status-2", false).await;
    let (_, payload, retain) = late.next().await;
    assert!(retain);
    assert_eq!(status_state(&payload), "offline");
}

#[tokio::test]
async fn status_is_retained_online_and_offline_on_will() {
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let mut up = start(config(broker.url()));
    up.connected().await;
    let mut sub = subscribe(broker.port, &status_filter(), "sub-will", false).await;
    let (_, payload, retain) = sub.next().await;
    assert!(retain);
    assert_eq!(status_state(&payload), "online");
    // Vanish without DISCONNECT: the broker publishes the Last Will.
    up.task.abort();
    let _ = up.task.await;
    let (_, payload, _) = sub.next().await;
    assert_eq!(status_state(&payload), "offline");
    let mut late = subscribe(broker.port, &status_filter(), "sub-will-2", false).await;
    let (_, payload, retain) = late.next().await;
    assert!(retain, "the will is retained");
    assert_eq!(status_state(&payload), "offline");
}

fn mtls_broker() -> (Mosquitto, Arc<Pki>) {
    let pki = Arc::new(Pki::new().unwrap());
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(pki.clone()),
        require_certificate: true,
        plain_listener: false,
        ..MosquittoOptions::default()
    })
    .unwrap();
    (broker, pki)
}

#[tokio::test]
async fn mutual_tls_connects_with_valid_client_cert() {
    let (broker, pki) = mtls_broker();
    let client = pki.client(GW).unwrap();
    let mut cfg = config(broker.tls_url().unwrap());
    cfg.tls = TlsConfig {
        ca: Some(pki.ca_cert.clone()),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
        server_name: None,
    };
    let mut up = start(cfg);
    up.connected().await;
    up.batches.send(batch(1, 1, 3)).await.unwrap();
    loop {
        if let UplinkEvent::Acked { id, .. } = up.next_event().await {
            assert_eq!(id, 1);
            break;
        }
    }
    up.stop().await;
}

async fn refused_with(cfg: gatewayd_uplink::UplinkConfig, expect: &str) {
    let mut up = start(cfg);
    let s = up
        .wait_status("failing with an error", |s| s.last_error.is_some())
        .await;
    assert!(!s.connected);
    assert_eq!(s.connects, 0);
    let err = s.last_error.unwrap();
    assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    up.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_foreign_or_missing_cert() {
    let (broker, pki) = mtls_broker();
    let foreign = foreign_client(GW).unwrap();
    let mut cfg = config(broker.tls_url().unwrap());
    cfg.tls = TlsConfig {
        ca: Some(pki.ca_cert.clone()),
        cert: Some(foreign.cert.clone()),
        key: Some(foreign.key.clone()),
        server_name: None,
    };
    refused_with(cfg.clone(), "rejected our client certificate").await;

    cfg.tls.cert = None;
    cfg.tls.key = None;
    refused_with(cfg, "requires a client certificate").await;
}

#[tokio::test]
async fn tls_refuses_broker_signed_by_another_ca() {
    let (broker, _pki) = mtls_broker();
    let other = Pki::new().unwrap();
    let client = other.client(GW).unwrap();
    let mut cfg = config(broker.tls_url().unwrap());
    cfg.tls = TlsConfig {
        ca: Some(other.ca_cert.clone()),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
        server_name: None,
    };
    refused_with(cfg, "not signed by the CA in uplink.tls.ca").await;
}

#[tokio::test]
async fn connection_refused_is_reported() {
    let port = gatewayd_tests::ports::free_tcp_port();
    refused_with(
        config(format!("mqtt://127.0.0.1:{port}")),
        "connection refused",
    )
    .await;
}
