//! The MQTT uplink: publishes the daemon's telemetry batches to the broker
//! with QoS 1 and reports each batch as delivered only when the broker's
//! PUBACK for it arrives.
//!
//! # Topics
//!
//! | topic                              | QoS | retain | payload |
//! |------------------------------------|-----|--------|---------|
//! | `{prefix}/{gateway}/telemetry`     | 1   | no     | one batch in the wire format of `gatewayd_model::wire` (`{"v":1,"gw":..,"r":[..]}`) |
//! | `{prefix}/{gateway}/status`        | 1   | yes    | `{"state":"online","version":"<crate version>","ts":<unix secs>}` |
//!
//! `prefix` is `uplink.topic_prefix` (default `gatewayd/v1`). The status
//! topic is published `online` (retained) after every CONNACK, `offline`
//! (retained) on graceful shutdown, and the Last Will is the same `offline`
//! message (QoS 1, retained), so the broker publishes it when the gateway
//! vanishes without a DISCONNECT (keep alive expiry, crash, network loss).
//! `ts` is when the message was built (for the will: when the connection was
//! opened).
//!
//! # Delivery
//!
//! A batch counts as delivered only when the PUBACK carrying *its* packet id
//! arrives; rumqttc's `publish` returns as soon as the request is queued, so
//! the uplink matches packet ids itself. Delivery is at least once: after a
//! reconnect every unacknowledged batch is published again (the cloud
//! deduplicates on `(gw, q)`). With MQTT 5 a PUBACK with an error reason code
//! (e.g. `NotAuthorized`, `QuotaExceeded`) is not a delivery: the error is
//! logged, the connection is re-established with backoff and the batch is
//! sent again.
//!
//! Batches whose PUBLISH packet would exceed `uplink.max_packet_bytes` (or an
//! MQTT 5 broker's smaller Maximum Packet Size) are refused: logged as an
//! error, recorded in `UplinkStatus::last_error`, never published and never
//! reported as acked. The daemon keeps them buffered.
//!
//! # Session
//!
//! The session is persistent: MQTT 3.1.1 `CleanSession = 0`, MQTT 5
//! `Clean Start = 0` with Session Expiry Interval `uplink.session_expiry_secs`
//! (default one day). The client id is `uplink.client_id`, default the
//! gateway id; it must be unique per gateway.
//!
//! # Packet ids, and what happens on reconnect
//!
//! rumqttc (0.25) assigns a packet id when its event loop *processes* a
//! publish request (`MqttState::outgoing_publish`, only if the id is still
//! 0), and reports it as `Event::Outgoing(Outgoing::Publish(pkid))` once
//! written. Requests are processed strictly in order: its `pending` queue
//! (re-sends) first, then the request channel; on a packet id collision it
//! parks that one publish (`Outgoing::AwaitAck`) and takes nothing else from
//! the channel until it is sent, so the order still holds. The uplink
//! therefore keeps a FIFO of submitted publishes and gives each
//! `Outgoing::Publish(pkid)` to the oldest one; a PUBACK is matched only
//! against publishes already written with that id, so an ack is never
//! attributed twice or to the wrong batch (see [`tracker`], which is sans-IO
//! and property-tested).
//!
//! Left to itself, rumqttc moves unacknowledged publishes into `pending` on
//! a connection error and re-sends them after reconnecting, but it drops them
//! (and requests it drained from its channel) when the broker answers
//! `session_present = 0`, and it does not re-send in publish order. The
//! uplink does not rely on that: on any connection error it applies the
//! events rumqttc had buffered (e.g. PUBACKs read in the same batch as the
//! failure), **drops the event loop and builds a fresh one** for the next
//! attempt. Its own tracker then decides what to send after the CONNACK:
//!
//! 1. the retained `online` status;
//! 2. with `session_present = 1`, the batches that had been written, in
//!    their original order, with their original packet ids and DUP set
//!    (MQTT-4.4.0-1), pushed into the new event loop's `pending` queue so
//!    they go out before anything else;
//! 3. every other unacknowledged batch, in order, with fresh packet ids;
//! 4. only then new batches from the daemon.
//!
//! The event loop future is never cancelled mid-flight (a persistent,
//! owned `poll` future is selected by reference), so a request rumqttc has
//! taken is never half-written.
//!
//! # Flow control and bounds
//!
//! At most `uplink.max_inflight` batches are tracked at once (for MQTT 5 also
//! at most the broker's Receive Maximum); the uplink takes a new batch from
//! its channel only when below that, and only while connected. Acked events
//! wait in a queue bounded by the same window. Reconnects back off
//! exponentially with full jitter between `reconnect_min_ms` and
//! `reconnect_max_ms`, reset after a CONNACK (except after a connection
//! ended because the broker refused a publish). Shutdown publishes the
//! `offline` status, waits up to `shutdown_grace_ms` for outstanding PUBACKs,
//! sends DISCONNECT and returns.
//!
//! # Protocol version
//!
//! `protocol = "auto"` tries MQTT 5 and falls back to 3.1.1 (immediately,
//! without backoff) when the broker refuses the version (CONNACK reason
//! `UnsupportedProtocolVersion`, a CONNACK that does not parse as MQTT 5, or
//! the connection closed before any CONNACK); after a successful 3.1.1
//! connection it stays on 3.1.1 for the life of the process. `"5"` and
//! `"3.1.1"` force a version.
//!
//! # TLS
//!
//! `mqtts://` uses rustls with the ring provider, trusting only the CA in
//! `uplink.tls.ca`; `uplink.tls.cert` + `uplink.tls.key` (PEM; PKCS#8, SEC1
//! or RSA key) enable mutual TLS. Failures are logged with their cause: the
//! broker's certificate not signed by our CA, the broker rejecting or
//! requiring our client certificate, connection refused, not authorized.

pub mod backoff;
pub mod config;
mod conn;
pub mod tracker;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::SeedableRng;
use std::sync::Arc;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use config::{client_tls_config, BrokerUrl, ConfigError, Protocol, TlsConfig, UplinkConfig};

use backoff::Backoff;
use conn::{Client, ConnFailure, Loop, NetEvent, Settings, Version};
use tracker::{AckOutcome, InflightTracker, Kind};

/// A batch for the uplink to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingBatch {
    /// The daemon's id for the batch, echoed in [`UplinkEvent::Acked`].
    pub id: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The PUBLISH payload (a wire-format batch).
    pub payload: Vec<u8>,
}

/// What the uplink reports to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkEvent {
    /// The broker acknowledged this batch (its PUBACK arrived).
    Acked {
        id: u64,
        first_seq: u64,
        last_seq: u64,
    },
    /// CONNACK received.
    Connected {
        broker: String,
        /// `"5"` or `"3.1.1"`.
        protocol: &'static str,
    },
    /// The connection was lost; unacknowledged batches will be re-sent after
    /// reconnecting.
    Disconnected { reason: String },
}

/// The uplink's state for health reporting.
#[derive(Clone, Debug, Default)]
pub struct UplinkStatus {
    pub connected: bool,
    pub broker: String,
    /// `"5"` or `"3.1.1"` while connected.
    pub protocol: Option<&'static str>,
    pub last_puback: Option<SystemTime>,
    /// Batches taken and not yet acknowledged.
    pub in_flight: usize,
    /// The most recent error (connection failure, refused publish), kept
    /// after recovery.
    pub last_error: Option<String>,
    /// Successful connections (CONNACKs) so far.
    pub connects: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid gateway id {0:?}: must be one non-empty MQTT topic level (no '/', '+', '#')")]
    GatewayId(String),
}

/// The MQTT uplink. Build with [`Uplink::new`], then drive with
/// [`Uplink::run`].
pub struct Uplink {
    config: UplinkConfig,
    settings: Settings,
    telemetry_topic: String,
    retry_now: Arc<Notify>,
}

/// Asks a running uplink that is waiting out its reconnect backoff to try
/// now (D-Bus `FlushBuffer`). Does nothing while connected.
#[derive(Debug, Clone)]
pub struct RetryNow(Arc<Notify>);

impl RetryNow {
    pub fn retry(&self) {
        // Wakes only a waiting uplink: no permit is stored, so a request
        // made while connected does not skip a later backoff.
        self.0.notify_waiters();
    }
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("broker", &self.settings.url.to_string())
            .field("client_id", &self.settings.client_id)
            .field("telemetry_topic", &self.telemetry_topic)
            .finish()
    }
}

/// How long to wait, after DISCONNECT was requested, for rumqttc to write it.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

type PollFuture = Pin<Box<dyn Future<Output = (Loop, Result<NetEvent, ConnFailure>)> + Send>>;

fn drive(mut lp: Loop, delay: Duration) -> PollFuture {
    Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let r = lp.poll().await;
        (lp, r)
    })
}

impl Uplink {
    /// Validates the configuration, loads the TLS material and prepares the
    /// connection settings. Nothing connects until [`run`](Self::run).
    pub fn new(config: UplinkConfig, gateway_id: &str) -> Result<Uplink, UplinkError> {
        if gateway_id.is_empty()
            || gateway_id.len() > 256
            || gateway_id.contains(['/', '+', '#', '\0'])
        {
            return Err(UplinkError::GatewayId(gateway_id.to_owned()));
        }
        config.validate("uplink")?;
        let url = BrokerUrl::parse(&config.broker).map_err(|message| ConfigError {
            key: "uplink.broker".into(),
            message,
        })?;
        let tls = if url.tls {
            Some(
                config::build_tls(&config.tls, &url.host).map_err(|e| ConfigError {
                    key: format!("uplink.{}", e.key),
                    message: e.message,
                })?,
            )
        } else {
            None
        };
        let prefix = &config.topic_prefix;
        let settings = Settings {
            url,
            client_id: config
                .client_id
                .clone()
                .unwrap_or_else(|| gateway_id.to_owned()),
            keep_alive: Duration::from_secs(config.keep_alive_secs),
            credentials: config
                .username
                .clone()
                .map(|u| (u, config.password.clone().unwrap_or_default())),
            tls,
            status_topic: format!("{prefix}/{gateway_id}/status"),
            // Batches plus the online and offline status publishes.
            rumqttc_inflight: config.max_inflight.saturating_add(2),
            channel_cap: usize::from(config.max_inflight) + 4,
            max_packet_bytes: config.max_packet_bytes,
            session_expiry_secs: config.session_expiry_secs,
        };
        Ok(Uplink {
            telemetry_topic: format!("{prefix}/{gateway_id}/telemetry"),
            config,
            settings,
            retry_now: Arc::new(Notify::new()),
        })
    }

    /// A handle to cut a reconnect backoff short.
    pub fn retry_handle(&self) -> RetryNow {
        RetryNow(self.retry_now.clone())
    }

    /// `{prefix}/{gateway}/telemetry`.
    pub fn telemetry_topic(&self) -> String {
        self.telemetry_topic.clone()
    }

    /// `{prefix}/{gateway}/status`.
    pub fn status_topic(&self) -> String {
        self.settings.status_topic.clone()
    }

    /// Runs until `shutdown`: takes batches from `batches` (only while
    /// connected and fewer than the window await PUBACK), publishes each
    /// QoS 1 to the telemetry topic and emits [`UplinkEvent::Acked`] when its
    /// PUBACK arrives. After a reconnect, unacknowledged batches are re-sent
    /// first. On shutdown: publishes the retained `offline` status, waits up
    /// to `shutdown_grace_ms` for outstanding PUBACKs, disconnects and
    /// returns. Batches never acknowledged are not reported.
    pub async fn run(
        self,
        batches: mpsc::Receiver<OutgoingBatch>,
        events: mpsc::Sender<UplinkEvent>,
        status: watch::Sender<UplinkStatus>,
        shutdown: CancellationToken,
    ) -> Result<(), UplinkError> {
        let broker = self.settings.url.to_string();
        status.send_modify(|s| {
            *s = UplinkStatus {
                broker: broker.clone(),
                ..UplinkStatus::default()
            }
        });
        let mut r = Runner {
            backoff: Backoff::new(self.config.reconnect_min_ms, self.config.reconnect_max_ms),
            rng: rand::rngs::StdRng::from_entropy(),
            tracker: InflightTracker::new(usize::from(self.config.max_inflight)),
            outbox: VecDeque::new(),
            version: match self.config.protocol {
                Protocol::Auto | Protocol::V5 => Version::V5,
                Protocol::V311 => Version::V311,
            },
            v311_confirmed: false,
            connected: false,
            refused_publish: false,
            packet_limit: self.config.max_packet_bytes,
            client: None,
            status,
            broker,
            retry_at: None,
            uplink: self,
        };
        r.run(batches, events, shutdown).await;
        Ok(())
    }
}

struct Runner {
    uplink: Uplink,
    backoff: Backoff,
    rng: rand::rngs::StdRng,
    tracker: InflightTracker,
    /// Events for the daemon, bounded by the window (see `can_take`).
    outbox: VecDeque<UplinkEvent>,
    version: Version,
    /// `auto` fell back to 3.1.1 and that worked: stay there.
    v311_confirmed: bool,
    connected: bool,
    /// The last connection ended because the broker refused a publish: do
    /// not reset the backoff on the next CONNACK.
    refused_publish: bool,
    /// Largest PUBLISH packet for the current connection.
    packet_limit: usize,
    /// The request handle of the current event loop.
    client: Option<Client>,
    status: watch::Sender<UplinkStatus>,
    broker: String,
    /// While waiting out a reconnect delay: when it ends.
    retry_at: Option<Instant>,
}

enum Phase {
    Running,
    /// Shutdown requested: waiting for PUBACKs until the deadline.
    Draining(Instant),
    /// DISCONNECT requested: waiting for it to be written.
    Disconnecting(Instant),
}

impl Runner {
    async fn run(
        &mut self,
        mut batches: mpsc::Receiver<OutgoingBatch>,
        events: mpsc::Sender<UplinkEvent>,
        shutdown: CancellationToken,
    ) {
        let (client, lp) = conn::open(self.version, &self.uplink.settings);
        self.client = Some(client);
        let mut fut = drive(lp, Duration::ZERO);
        let retry_now = self.uplink.retry_now.clone();
        let mut phase = Phase::Running;
        let mut batches_open = true;
        let mut events_open = true;
        info!(broker = %self.broker, client_id = %self.uplink.settings.client_id, "uplink starting");

        loop {
            let can_take = self.connected
                && matches!(phase, Phase::Running)
                && batches_open
                && self.tracker.can_admit()
                && self.outbox.len() < self.tracker.window();
            let deadline = match phase {
                Phase::Running => None,
                Phase::Draining(d) | Phase::Disconnecting(d) => Some(d),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if matches!(phase, Phase::Running) => {
                    if !self.connected {
                        info!("uplink stopping (not connected)");
                        break;
                    }
                    info!(in_flight = self.tracker.batches(), "uplink stopping: publishing offline status");
                    self.tracker.admit(Kind::Status, Bytes::from(conn::status_payload("offline")));
                    if let Err(e) = self.pump() {
                        warn!(error = %e, "could not publish the offline status");
                    }
                    let grace = Duration::from_millis(self.uplink.config.shutdown_grace_ms);
                    phase = Phase::Draining(Instant::now() + grace);
                }
                permit = events.reserve(), if events_open && !self.outbox.is_empty() => match permit {
                    Ok(p) => p.send(self.outbox.pop_front().expect("outbox is not empty")),
                    Err(_) => {
                        debug!("event receiver gone; no more events are reported");
                        events_open = false;
                        self.outbox.clear();
                    }
                },
                _ = retry_now.notified(), if !self.connected && matches!(phase, Phase::Running) => {
                    if self.retry_at.take().is_some_and(|t| t > Instant::now()) {
                        // Still sleeping: nothing was sent on this attempt,
                        // so its future can be replaced.
                        info!("reconnect requested: not waiting for the backoff");
                        let (client, lp) = conn::open(self.version, &self.uplink.settings);
                        self.client = Some(client);
                        fut = drive(lp, Duration::ZERO);
                    }
                }
                (lp, res) = &mut fut => {
                    self.retry_at = None;
                    match res {
                        Ok(ev) => {
                            let mut lp = lp;
                            let disconnect_sent = ev == NetEvent::DisconnectSent;
                            match self.on_event(ev, &mut lp) {
                                Ok(()) => {}
                                Err(reason) => {
                                    drop(lp);
                                    if !matches!(phase, Phase::Running) {
                                        break;
                                    }
                                    fut = self.reconnect(reason, false);
                                    continue;
                                }
                            }
                            if disconnect_sent && matches!(phase, Phase::Disconnecting(_)) {
                                info!("uplink disconnected cleanly");
                                break;
                            }
                            if let Phase::Draining(_) = phase {
                                if self.tracker.is_empty() {
                                    phase = self.request_disconnect();
                                }
                            }
                            fut = drive(lp, Duration::ZERO);
                        }
                        Err(failure) => {
                            let mut lp = lp;
                            for ev in lp.take_buffered() {
                                // Only acknowledgements matter now; a
                                // tracker inconsistency is moot as the
                                // connection is being rebuilt anyway.
                                let _ = self.on_event(ev, &mut lp);
                            }
                            drop(lp);
                            if !matches!(phase, Phase::Running) {
                                warn!(error = %failure.message, "connection lost during shutdown");
                                break;
                            }
                            let protocol_rejected = failure.protocol_rejected;
                            fut = self.reconnect(failure.message, protocol_rejected);
                        }
                    }
                }
                b = batches.recv(), if can_take => match b {
                    None => {
                        debug!("batch sender closed; no new batches");
                        batches_open = false;
                    }
                    Some(b) => {
                        self.admit(b);
                        if let Err(reason) = self.pump() {
                            fut = self.reconnect(reason, false);
                        }
                    }
                },
                _ = sleep_until_opt(deadline) => match phase {
                    Phase::Draining(_) => {
                        warn!(unacked = self.tracker.batches(), "shutdown grace period over; disconnecting");
                        phase = self.request_disconnect();
                    }
                    _ => {
                        warn!("DISCONNECT not written in time; closing the connection");
                        break;
                    }
                },
            }
            self.publish_status();
        }

        self.connected = false;
        self.client = None;
        drop(fut);
        self.status.send_modify(|s| {
            s.connected = false;
            s.protocol = None;
            s.in_flight = self.tracker.batches();
        });
        // Hand over the acks we still hold; bounded.
        if events_open {
            let flush = async {
                while let Some(ev) = self.outbox.pop_front() {
                    if events.send(ev).await.is_err() {
                        break;
                    }
                }
            };
            if tokio::time::timeout(DISCONNECT_WAIT, flush).await.is_err() {
                warn!(
                    dropped = self.outbox.len(),
                    "event receiver not draining; unreported acks will be re-sent after restart"
                );
            }
        }
    }

    fn request_disconnect(&mut self) -> Phase {
        if let Some(c) = &self.client {
            if let Err(e) = c.disconnect() {
                warn!(error = %e, "could not request DISCONNECT");
            }
        }
        Phase::Disconnecting(Instant::now() + DISCONNECT_WAIT)
    }

    fn publish_status(&self) {
        let in_flight = self.tracker.batches();
        self.status.send_if_modified(|s| {
            if s.in_flight != in_flight {
                s.in_flight = in_flight;
                true
            } else {
                false
            }
        });
    }

    /// Takes a batch from the daemon, refusing one that cannot fit in a
    /// packet.
    fn admit(&mut self, b: OutgoingBatch) {
        let size =
            conn::publish_packet_size(self.version, &self.uplink.telemetry_topic, b.payload.len());
        if size > self.packet_limit {
            self.refuse_oversize(b.id, b.first_seq, b.last_seq, size);
            return;
        }
        self.tracker.admit(
            Kind::Batch {
                id: b.id,
                first_seq: b.first_seq,
                last_seq: b.last_seq,
            },
            Bytes::from(b.payload),
        );
    }

    fn refuse_oversize(&mut self, id: u64, first_seq: u64, last_seq: u64, size: usize) {
        let msg = format!(
            "batch {id} (readings {first_seq}..={last_seq}) refused: its PUBLISH packet would be {size} bytes, over the {} byte limit (uplink.max_packet_bytes or the broker's maximum packet size); it stays buffered",
            self.packet_limit
        );
        error!("{msg}");
        self.status.send_modify(|s| s.last_error = Some(msg));
    }

    /// Hands every queued publish to rumqttc, in order.
    fn pump(&mut self) -> Result<(), String> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        if !self.connected {
            return Ok(());
        }
        while let Some(s) = self.tracker.next_submission() {
            let (topic, retain) = match s.kind {
                Kind::Batch { .. } => (&self.uplink.telemetry_topic, false),
                Kind::Status => (&self.uplink.settings.status_topic, true),
            };
            client
                .publish(topic, retain, s.payload)
                .map_err(|e| format!("internal: rumqttc refused a publish request: {e}"))?;
        }
        Ok(())
    }

    /// Applies one rumqttc event. An `Err` means the connection must be
    /// rebuilt, with that reason.
    fn on_event(&mut self, ev: NetEvent, lp: &mut Loop) -> Result<(), String> {
        match ev {
            NetEvent::ConnAck {
                session_present,
                max_packet,
                receive_max,
            } => self.on_connack(session_present, max_packet, receive_max, lp),
            NetEvent::Written(pkid) => self
                .tracker
                .on_written(pkid)
                .map_err(|e| format!("internal: {e}")),
            NetEvent::PubAck {
                pkid,
                refused: None,
            } => {
                match self.tracker.on_puback(pkid) {
                    AckOutcome::Batch {
                        id,
                        first_seq,
                        last_seq,
                    } => {
                        debug!(id, pkid, first_seq, last_seq, "batch acknowledged");
                        self.outbox.push_back(UplinkEvent::Acked {
                            id,
                            first_seq,
                            last_seq,
                        });
                        let now = SystemTime::now();
                        self.status.send_modify(|s| s.last_puback = Some(now));
                    }
                    AckOutcome::Status => debug!(pkid, "status acknowledged"),
                    AckOutcome::Unknown => {
                        warn!(
                            pkid,
                            "PUBACK for a packet id with no publish awaiting it; ignored"
                        )
                    }
                }
                Ok(())
            }
            NetEvent::PubAck {
                pkid,
                refused: Some(reason),
            } => match self.tracker.written_kind(pkid) {
                Some(Kind::Status) => {
                    self.tracker.on_puback(pkid);
                    let msg = format!(
                        "the broker refused the status publish on {}: {reason}",
                        self.uplink.settings.status_topic
                    );
                    error!("{msg}");
                    self.status.send_modify(|s| s.last_error = Some(msg));
                    Ok(())
                }
                Some(Kind::Batch { id, .. }) => {
                    self.refused_publish = true;
                    Err(format!(
                        "the broker refused batch {id} on {}: {reason}; reconnecting to retry",
                        self.uplink.telemetry_topic
                    ))
                }
                None => {
                    warn!(pkid, %reason, "refusing PUBACK for an unknown packet id; ignored");
                    Ok(())
                }
            },
            NetEvent::DisconnectSent | NetEvent::Other => Ok(()),
        }
    }

    fn on_connack(
        &mut self,
        session_present: bool,
        max_packet: Option<u32>,
        receive_max: Option<u16>,
        lp: &mut Loop,
    ) -> Result<(), String> {
        if self.connected {
            return Err("internal: a second CONNACK on one connection".into());
        }
        self.connected = true;
        if !std::mem::take(&mut self.refused_publish) {
            self.backoff.reset();
        }
        if self.version == Version::V311 && self.uplink.config.protocol == Protocol::Auto {
            self.v311_confirmed = true;
        }
        let config = &self.uplink.config;
        self.packet_limit = match max_packet {
            Some(m) => config.max_packet_bytes.min(m as usize),
            None => config.max_packet_bytes,
        };
        let window = match receive_max {
            Some(r) => config.max_inflight.min(r.max(1)),
            None => config.max_inflight,
        };
        self.tracker.set_window(usize::from(window));

        // Batches admitted under a larger limit that no longer fit.
        let (version, limit) = (self.version, self.packet_limit);
        let topic = self.uplink.telemetry_topic.clone();
        let oversize = self.tracker.drop_queued_where(|payload| {
            conn::publish_packet_size(version, &topic, payload.len()) > limit
        });
        for (kind, len) in oversize {
            if let Kind::Batch {
                id,
                first_seq,
                last_seq,
            } = kind
            {
                let size = conn::publish_packet_size(version, &topic, len);
                self.refuse_oversize(id, first_seq, last_seq, size);
            }
        }

        let resent = self.tracker.resume(session_present);
        for s in &resent {
            let pkid = s.pkid.expect("resume returns preset packet ids");
            lp.push_resend(&self.uplink.telemetry_topic, pkid, s.payload.clone());
        }
        let requeued = self.tracker.batches() - resent.len();
        self.tracker
            .admit(Kind::Status, Bytes::from(conn::status_payload("online")));
        let protocol = self.version.label();
        info!(
            broker = %self.broker,
            protocol,
            session_present,
            resent_same_id = resent.len(),
            resent_new_id = requeued,
            window,
            max_packet = self.packet_limit,
            "uplink connected"
        );
        self.status.send_modify(|s| {
            s.connected = true;
            s.protocol = Some(protocol);
            s.connects += 1;
        });
        self.outbox.push_back(UplinkEvent::Connected {
            broker: self.broker.clone(),
            protocol,
        });
        self.pump()
    }

    /// The connection is gone (or being dropped): re-queue everything and
    /// schedule the next attempt.
    fn reconnect(&mut self, reason: String, protocol_rejected: bool) -> PollFuture {
        let was_connected = std::mem::take(&mut self.connected);
        self.client = None;
        let requeued = self.tracker.on_connection_lost();
        if was_connected {
            warn!(broker = %self.broker, %reason, requeued, "uplink disconnected");
            self.outbox.push_back(UplinkEvent::Disconnected {
                reason: reason.clone(),
            });
        } else {
            warn!(broker = %self.broker, protocol = self.version.label(), %reason, "uplink connection failed");
        }
        self.status.send_modify(|s| {
            s.connected = false;
            s.protocol = None;
            s.last_error = Some(reason);
            s.in_flight = self.tracker.batches();
        });
        // Bound the outbox even if the daemon is not reading: keep acks,
        // coalesce connection events.
        self.coalesce_outbox();

        let auto = self.uplink.config.protocol == Protocol::Auto;
        let delay = if auto && self.version == Version::V5 && !was_connected && protocol_rejected {
            info!("the broker did not accept MQTT 5; trying MQTT 3.1.1");
            self.version = Version::V311;
            Duration::ZERO
        } else {
            if auto && self.version == Version::V311 && !self.v311_confirmed {
                self.version = Version::V5;
            }
            let d = self.backoff.next_delay(&mut self.rng);
            info!(delay_ms = d.as_millis() as u64, "reconnecting");
            self.retry_at = Some(Instant::now() + d);
            d
        };
        let (client, lp) = conn::open(self.version, &self.uplink.settings);
        self.client = Some(client);
        drive(lp, delay)
    }

    fn coalesce_outbox(&mut self) {
        let limit = self.tracker.window() + 2;
        if self.outbox.len() <= limit {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.outbox.len());
        let mut last_conn = None;
        for ev in self.outbox.drain(..) {
            match ev {
                UplinkEvent::Acked { .. } => kept.push_back(ev),
                other => last_conn = Some(other),
            }
        }
        kept.extend(last_conn);
        self.outbox = kept;
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
