//! The MQTT side: one task drives the rumqttc event loop, one task stores
//! what arrives and then acknowledges it.
//!
//! Exactly-once storage = at-least-once delivery + idempotent store:
//! * persistent session (`clean_session = false`, fixed client id) and
//!   manual acks: a PUBLISH is acknowledged only after the store committed
//!   it, so a crash before the ack means the broker redelivers it;
//! * the store skips (gateway, seq) pairs it already has.
//!
//! Acks are tied to the connection a message arrived on (a generation
//! counter, bumped under a lock together with `EventLoop::clean`, which
//! drops queued acks): after a reconnect the broker redelivers instead, so
//! a packet id is never acknowledged on a connection that may have reused
//! it for another message.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TlsFiles};
use crate::ingest::{self, Route};
use crate::metrics::{Metrics, RateLimit};
use crate::store::{RejectedRecord, Store, StoreError};

/// Messages received but not yet stored, per replica.
const INGEST_QUEUE: usize = 32;
/// rumqttc request channel (acks, subscribes). Larger than the ingest
/// queue so the ingest task rarely waits on it.
const REQUEST_QUEUE: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MIN_STORE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{key}: {message}")]
    Tls { key: String, message: String },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

struct Inbound {
    publish: Publish,
    generation: u64,
    received_us: i64,
}

pub(crate) struct Consumer {
    pub poll_task: JoinHandle<()>,
    pub ingest_task: JoinHandle<()>,
}

/// Builds the rustls client configuration for `mqtts://` with the same
/// loader as the gateway's uplink; without `mqtt.tls.ca` the system's root
/// certificates are used.
pub async fn tls_config(
    files: &TlsFiles,
    host: &str,
) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    let tls = gatewayd_uplink::TlsConfig {
        ca: files.ca.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        server_name: None,
    };
    let system_roots = if tls.ca.is_none() {
        let native = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
            .await
            .map_err(|e| SetupError::Tls {
                key: "mqtt.tls.ca".into(),
                message: format!("loading system roots: {e}"),
            })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        Some(roots)
    } else {
        None
    };
    let host = host.to_owned();
    // Reads small PEM files: off the async threads.
    tokio::task::spawn_blocking(move || {
        gatewayd_uplink::client_tls_config(&tls, &host, system_roots)
    })
    .await
    .map_err(|e| SetupError::Tls {
        key: "mqtt.tls".into(),
        message: e.to_string(),
    })?
    .map_err(|e| SetupError::Tls {
        key: format!("mqtt.{}", e.key),
        message: e.message,
    })
}

/// MQTT options: persistent session, manual acks.
pub async fn mqtt_options(config: &Config) -> Result<MqttOptions, SetupError> {
    let endpoint = config.mqtt_endpoint()?;
    let client_id = config.mqtt.client_id.clone().unwrap_or_default();
    let mut opts = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
    opts.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_secs))
        .set_clean_session(false)
        .set_manual_acks(true)
        // Headroom above the rejection limit so oversized batches are
        // rejected (and acknowledged) instead of breaking the connection.
        .set_max_packet_size(
            config.mqtt.max_payload_bytes.saturating_mul(4).max(1 << 20),
            64 * 1024,
        );
    if let Some(user) = &config.mqtt.username {
        opts.set_credentials(
            user.clone(),
            config.mqtt.password.clone().unwrap_or_default(),
        );
    }
    if endpoint.tls {
        let tls = tls_config(&config.mqtt.tls, &endpoint.host).await?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    Ok(opts)
}

pub(crate) async fn start(
    config: &Config,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Consumer, SetupError> {
    let opts = mqtt_options(config).await?;
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
    let filters = vec![
        SubscribeFilter::new(config.telemetry_filter(), QoS::AtLeastOnce),
        SubscribeFilter::new(config.status_filter(), QoS::AtLeastOnce),
    ];
    tracing::info!(
        client_id = config.mqtt.client_id.as_deref().unwrap_or(""),
        telemetry = %filters[0].path,
        status = %filters[1].path,
        "starting MQTT consumer"
    );
    let generation = Arc::new(Mutex::new(0u64));
    let (tx, rx) = mpsc::channel(INGEST_QUEUE);
    let poll_task = tokio::spawn(poll_loop(
        eventloop,
        client.clone(),
        filters,
        tx,
        generation.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let ingest = Ingest {
        client,
        generation,
        store,
        metrics,
        prefix: config.mqtt.topic_prefix.clone(),
        max_payload_bytes: config.mqtt.max_payload_bytes,
        shutdown,
        reject_log: RateLimit::new(Duration::from_secs(60), 10),
        error_log: RateLimit::new(Duration::from_secs(60), 10),
    };
    let ingest_task = tokio::spawn(ingest.run(rx));
    Ok(Consumer {
        poll_task,
        ingest_task,
    })
}

async fn poll_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    tx: mpsc::Sender<Inbound>,
    generation: Arc<Mutex<u64>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut current = 0u64;
    let mut backoff = MIN_BACKOFF;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                Metrics::add(&metrics.mqtt_connects, 1);
                backoff = MIN_BACKOFF;
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                // Subscribing again on a resumed session is harmless and
                // covers a broker that lost its session state.
                if let Err(e) = client.try_subscribe_many(filters.clone()) {
                    tracing::error!(error = %e, "cannot queue the subscriptions");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if shutdown.is_cancelled() {
                    // Not acknowledged: the broker redelivers it to the
                    // session (or another group member) later.
                    continue;
                }
                let msg = Inbound {
                    publish,
                    generation: current,
                    received_us: crate::now_us(),
                };
                if tx.send(msg).await.is_err() {
                    tracing::debug!("ingest stopped; message left unacknowledged");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    tracing::error!(
                        codes = ?ack.return_codes,
                        "the broker refused a subscription (check its ACLs and shared-subscription support)"
                    );
                } else {
                    // Healthy ("connected") once the subscriptions hold.
                    metrics.mqtt_connected.store(true, Relaxed);
                    tracing::debug!(codes = ?ack.return_codes, "subscribed");
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                tracing::info!("disconnected from the MQTT broker");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_connected.store(false, Relaxed);
                {
                    let mut g = generation.lock().await;
                    *g += 1;
                    current = *g;
                    // Drops acks queued for the dead connection.
                    eventloop.clean();
                }
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    metrics.mqtt_connected.store(false, Relaxed);
}

struct Ingest {
    client: AsyncClient,
    generation: Arc<Mutex<u64>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    prefix: String,
    max_payload_bytes: usize,
    shutdown: CancellationToken,
    reject_log: RateLimit,
    error_log: RateLimit,
}

impl Ingest {
    async fn run(self, mut rx: mpsc::Receiver<Inbound>) {
        let mut closed = false;
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.shutdown.cancelled(), if !closed => {
                    // Stop accepting; drain what was already received.
                    rx.close();
                    closed = true;
                    continue;
                }
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            self.handle(msg).await;
        }
        // Queued acks go out before the DISCONNECT (one FIFO channel).
        if let Err(e) = self.client.disconnect().await {
            tracing::debug!(error = %e, "MQTT event loop already stopped");
        }
    }

    /// Runs `op` until it succeeds; gives up (returns `None`) only once
    /// shutdown has begun, leaving the message unacknowledged.
    async fn retry<T, F>(&self, what: &str, mut op: F) -> Option<T>
    where
        F: FnMut() -> crate::store::BoxFuture<'static, Result<T, StoreError>>,
    {
        let mut backoff = MIN_STORE_BACKOFF;
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    Metrics::add(&self.metrics.store_errors, 1);
                    if let Some(suppressed) = self.error_log.check() {
                        tracing::warn!(error = %e, suppressed, retry_in = ?backoff, "{what} failed");
                    }
                    if self.shutdown.is_cancelled() {
                        return None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
                }
            }
        }
    }

    async fn reject(&self, msg: &Inbound, gateway: Option<&str>, reason: &str) -> bool {
        Metrics::add(&self.metrics.rejected, 1);
        if let Some(suppressed) = self.reject_log.check() {
            tracing::warn!(topic = %msg.publish.topic, reason, suppressed, "rejected a message");
        }
        let record = RejectedRecord::new(
            msg.received_us,
            &msg.publish.topic,
            gateway,
            reason,
            &msg.publish.payload,
        );
        let store = self.store.clone();
        self.retry("recording a rejected message", || {
            let (store, record) = (store.clone(), record.clone());
            Box::pin(async move { store.record_rejected(record).await })
        })
        .await
        .is_some()
    }

    /// Stores (or rejects) one message; acks it once that is durable.
    async fn handle(&self, msg: Inbound) {
        let topic = msg.publish.topic.as_str();
        let done = match ingest::route(&self.prefix, topic) {
            Route::Telemetry { gateway } => {
                Metrics::add(&self.metrics.batches_received, 1);
                match ingest::prepare_batch(
                    gateway,
                    &msg.publish.payload,
                    msg.received_us,
                    self.max_payload_bytes,
                ) {
                    Ok(batch) => {
                        let store = self.store.clone();
                        let outcome = self
                            .retry("storing a batch", || {
                                let (store, batch) = (store.clone(), batch.clone());
                                Box::pin(async move { store.store_batch(batch).await })
                            })
                            .await;
                        match outcome {
                            Some(o) => {
                                Metrics::add(&self.metrics.batches_stored, 1);
                                Metrics::add(&self.metrics.readings_stored, o.inserted);
                                Metrics::add(&self.metrics.duplicates_skipped, o.duplicates);
                                tracing::debug!(
                                    gateway,
                                    inserted = o.inserted,
                                    duplicates = o.duplicates,
                                    "stored a batch"
                                );
                                true
                            }
                            None => false,
                        }
                    }
                    Err(reason) => self.reject(&msg, Some(gateway), &reason).await,
                }
            }
            Route::Status { gateway } => {
                match ingest::parse_status(gateway, &msg.publish.payload, msg.received_us) {
                    Ok(Some(status)) => {
                        let store = self.store.clone();
                        let ok = self
                            .retry("recording a gateway status", || {
                                let (store, status) = (store.clone(), status.clone());
                                Box::pin(async move { store.record_status(status).await })
                            })
                            .await
                            .is_some();
                        if ok {
                            Metrics::add(&self.metrics.status_updates, 1);
                            tracing::info!(gateway, state = %status.state, "gateway status");
                        }
                        ok
                    }
                    Ok(None) => true,
                    Err(reason) => self.reject(&msg, Some(gateway), &reason).await,
                }
            }
            Route::Unknown { reason } => self.reject(&msg, None, &reason).await,
        };
        if done {
            self.ack(&msg).await;
        }
    }

    async fn ack(&self, msg: &Inbound) {
        let g = self.generation.lock().await;
        if *g != msg.generation {
            tracing::debug!("reconnected since receipt; the broker redelivers instead of an ack");
            return;
        }
        if let Err(e) = self.client.ack(&msg.publish).await {
            tracing::debug!(error = %e, "cannot queue an ack (event loop stopped)");
        }
    }
}
