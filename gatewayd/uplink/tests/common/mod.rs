//! Helpers for the uplink's tests against a real mosquitto.

#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use gatewayd_uplink::{OutgoingBatch, Uplink, UplinkConfig, UplinkEvent, UplinkStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait, so a broken test fails instead of
/// hanging. Not a performance threshold: every wait ends on a condition.
pub const GUARD: Duration = Duration::from_secs(60);

pub const GW: &str = "gw-test";

/// A wire-format batch with readings `first..=last`.
pub fn batch(id: u64, first: u64, last: u64) -> OutgoingBatch {
    let mut w = gatewayd_model::wire::BatchWriter::new(GW);
    for seq in first..=last {
        let reading = format!(
            r#"{{"d":"coap:sensor-{id}","t":{},"e":[{{"n":"temperature","u":"Cel","v":21.5}}]}}"#,
            1_732_460_000_000_000u64 + seq
        );
        w.push(seq, reading.as_bytes());
    }
    OutgoingBatch {
        id,
        first_seq: first,
        last_seq: last,
        payload: w.finish(),
    }
}

pub fn config(broker: String) -> UplinkConfig {
    UplinkConfig {
        broker,
        reconnect_min_ms: 20,
        reconnect_max_ms: 200,
        ..UplinkConfig::default()
    }
}

/// A running uplink and the daemon's ends of its channels.
pub struct Running {
    pub batches: mpsc::Sender<OutgoingBatch>,
    pub events: mpsc::Receiver<UplinkEvent>,
    pub status: watch::Receiver<UplinkStatus>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), gatewayd_uplink::UplinkError>>,
}

pub fn start(config: UplinkConfig) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let window = usize::from(config.max_inflight);
    let uplink = Uplink::new(config, GW).expect("valid uplink config");
    let (batch_tx, batch_rx) = mpsc::channel(window);
    let (event_tx, event_rx) = mpsc::channel(64);
    let (status_tx, status_rx) = watch::channel(UplinkStatus::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(uplink.run(batch_rx, event_tx, status_tx, shutdown.clone()));
    Running {
        batches: batch_tx,
        events: event_rx,
        status: status_rx,
        shutdown,
        task,
    }
}

impl Running {
    pub async fn next_event(&mut self) -> UplinkEvent {
        tokio::time::timeout(GUARD, self.events.recv())
            .await
            .expect("no uplink event (test guard)")
            .expect("uplink stopped")
    }

    /// Waits for `Connected` and returns its protocol.
    pub async fn connected(&mut self) -> &'static str {
        loop {
            if let UplinkEvent::Connected { protocol, .. } = self.next_event().await {
                return protocol;
            }
        }
    }

    pub async fn wait_status(
        &mut self,
        what: &str,
        f: impl Fn(&UplinkStatus) -> bool,
    ) -> UplinkStatus {
        let r = tokio::time::timeout(GUARD, self.status.wait_for(|s| f(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match r {
            Ok(Ok(s)) => s,
            _ => panic!("uplink status never {what}: {:?}", *self.status.borrow()),
        }
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, &mut self.task)
            .await
            .expect("uplink did not stop (test guard)")
            .expect("uplink task panicked")
            .expect("uplink returned an error");
    }
}

/// A subscriber (rumqttc, MQTT 3.1.1) forwarding every publish it receives.
pub struct Subscriber {
    pub messages: mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to `filter` with QoS 1. With `persistent`, a fixed client id
/// and `clean_session = false`, so the subscription survives a broker
/// restart. Returns once the SUBACK arrived.
pub async fn subscribe(port: u16, filter: &str, client_id: &str, persistent: bool) -> Subscriber {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(!persistent);
    opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 16);
    client
        .subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");
    let (tx, rx) = mpsc::unbounded_channel();
    let (subacked_tx, subacked_rx) = tokio::sync::oneshot::channel();
    let mut subacked_tx = Some(subacked_tx);
    let task = tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec(), p.retain));
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(t) = subacked_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    tokio::time::timeout(GUARD, subacked_rx)
        .await
        .expect("no SUBACK (test guard)")
        .expect("subscriber task ended");
    Subscriber { messages: rx, task }
}

impl Subscriber {
    pub async fn next(&mut self) -> (String, Vec<u8>, bool) {
        tokio::time::timeout(GUARD, self.messages.recv())
            .await
            .expect("no message for the subscriber (test guard)")
            .expect("subscriber ended")
    }
}

/// Sends a signal to a process (`STOP`, `CONT`).
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// The status message's `state`.
pub fn status_state(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("status is JSON");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["ts"].as_u64().is_some_and(|t| t > 1_700_000_000), "{v}");
    v["state"].as_str().expect("state is a string").to_owned()
}
