//! # gatewayd-adapter-coap
//!
//! The CoAP source (`kind = "coap"`): a CoAP server (RFC 7252, UDP) that
//! accepts SenML telemetry, and a CoAP Observe client (RFC 7641) that
//! subscribes to sensor resources. Both feed the pipeline through the
//! source's [`ReadingSink`].
//!
//! ## Server: `POST /telemetry`
//!
//! A sensor POSTs a SenML pack to `coap://<gateway>:5683/telemetry` (path
//! and port configurable) with Content-Format **110**
//! (`application/senml+json`) or **112** (`application/senml+cbor`).
//! SenML rules are those of `docs/protocol.md` §1. The device is the pack's
//! base name within transport `coap` (`"bn":"sensor-7/"` → `coap:sensor-7`);
//! records without a base name belong to `coap:<peer ip>`.
//!
//! **A Confirmable request is answered only after its readings are durably
//! committed** to the buffer: the 2.04 is piggybacked on the ACK once the
//! commit ticket resolves (typically milliseconds). Until then no ACK is
//! sent; a client that retransmits meanwhile is recognised as a duplicate
//! (below) and gets the piggybacked answer when the commit completes. A
//! Non-confirmable request is processed the same way and answered with a
//! NON response (fresh message id, same token) unless it carries a
//! No-Response option (RFC 7967) suppressing that class; a suppressed answer
//! to a CON request becomes an empty ACK.
//!
//! | Situation | Code | Details |
//! |---|---|---|
//! | readings committed | **2.04 Changed** | empty payload; echoes Block1 for block-wise uploads |
//! | intermediate Block1 block received | 2.31 Continue | echoes Block1 (num, M=1, SZX) |
//! | `GET /.well-known/core` | 2.05 Content | link-format: `</telemetry>;ct="110 112";rt="senml"` |
//! | malformed SenML, empty payload, bad Block1/Size1/Content-Format option | **4.00 Bad Request** | diagnostic, e.g. `record 2: field "v" must be a number` |
//! | unrecognised critical option | 4.02 Bad Option | |
//! | path other than the telemetry path | **4.04 Not Found** | |
//! | method other than POST (GET on `/.well-known/core`) | **4.05 Method Not Allowed** | |
//! | Block1 block out of order / no upload in progress | 4.08 Request Entity Incomplete | restart at block 0 |
//! | body above `max_payload_bytes` (single datagram, reassembled, or announced by Size1) | **4.13 Request Entity Too Large** | Size1 = `max_payload_bytes` |
//! | datagram above `max_datagram_bytes` | **4.13** | Size1 = `max_payload_bytes`, Block1 = suggested block size |
//! | Content-Format missing, or not 110/112 | **4.15 Unsupported Content-Format** | diagnostic asks for 110 or 112 |
//! | buffer full, pipeline queue full or closed, `max_concurrent_requests` waiting, too many block uploads | **5.03 Service Unavailable** | Max-Age = 5 (retry after) |
//! | the buffer failed to store | **5.00 Internal Server Error** | diagnostic carries the storage error |
//! | the buffer refused the readings as invalid | 4.00 | |
//! | Proxy-Uri / Proxy-Scheme | 5.05 Proxying Not Supported | |
//! | empty CON ("ping"), CON response, CON with a message format error | RST | |
//! | not CoAP (too short, version ≠ 1, bad token length), ACK, RST, NON format errors | ignored | counted in `malformed_datagrams` |
//!
//! Error responses carry a **diagnostic payload** (RFC 7252 §5.5.2): UTF-8
//! text, at most 512 bytes, without a Content-Format option. Nothing from a
//! refused request reaches the pipeline, and the server keeps serving.
//!
//! **Missing Content-Format is not sniffed**: JSON and CBOR packs can be
//! told apart, but a sensor that omits the option is misconfigured, and
//! guessing would hide that; it gets 4.15 naming 110 and 112.
//!
//! ## Duplicate detection (RFC 7252 §4.5)
//!
//! Every request (CON and NON) is remembered by (peer address, message id)
//! for EXCHANGE_LIFETIME (247 s). A retransmission is never processed
//! again: if the original is answered, the identical response bytes are
//! resent; if its commit is still outstanding, the retransmission is dropped
//! and the piggybacked response follows on commit. Together with
//! answer-after-commit this gives exactly-once delivery from a CON sensor
//! into the buffer. The memory is bounded by `dedup_capacity` (default
//! 32 768, about 3 s of requests at 10 000/s) exchanges, oldest evicted
//! first, counted in `dedup_evicted_early`; a retransmission arriving after
//! its exchange was evicted is processed again (the cloud's `(gw, q)`
//! deduplication does not cover that case, so size `dedup_capacity` to
//! at least the request rate × 247 s).
//!
//! ## Limits and block-wise transfer
//!
//! * `max_datagram_bytes` (default 1280, the IPv6 minimum MTU) bounds a
//!   datagram; larger ones are answered 4.13 with a Block1 hint.
//! * Bodies larger than one datagram are uploaded with **Block1**
//!   (RFC 7959): blocks must arrive in order from block 0, one upload per
//!   client at a time, at most `max_block_transfers` (64) uploads in
//!   progress, idle uploads dropped after 247 s; the reassembled body is
//!   bounded by `max_payload_bytes` (default 64 KiB).
//! * SenML packs are bounded by `limits` (records, name and string lengths).
//! * At most `max_concurrent_requests` (256) requests wait for their commit
//!   at once; further requests get 5.03 rather than queueing.
//!
//! ## Observe client
//!
//! See [`observe`] for registration, notification handling,
//! re-registration and deregistration.
//!
//! ## Running
//!
//! [`CoapSource::bind`] binds the server socket (so tests and the daemon can
//! learn the port via [`BoundCoapSource::local_addr`]) and
//! [`BoundCoapSource::run`] serves until shutdown; [`Source::run`] does both.
//! On shutdown the server stops reading the socket, answers requests whose
//! commits are in flight (bounded by a 10 s drain), deregisters
//! observations, and returns. [`CoapStats`] counters are readable at any time
//! through [`CoapSource::stats`] / [`BoundCoapSource::stats`].

mod config;
pub mod observe;
pub mod protocol;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatewayd_core::{
    CommitError, Committed, ConfigError, ReadingSink, Source, SourceContext, SourceError,
    SourceState,
};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use config::{CoapConfig, CoapUri, LimitsConfig, ObserveConfig};
pub use protocol::{fuzz_datagram, Action, Pending, Refusal, ServerCore, ServerSettings};
pub use stats::{CoapStats, CoapStatsSnapshot, RejectReason};

use config::Validated;

/// How long shutdown waits for in-flight commits before giving up on them.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// Consecutive socket receive errors after which the source fails.
const MAX_CONSECUTIVE_RECV_ERRORS: u32 = 100;

pub(crate) use gatewayd_core::wall_clock;

/// A configured, not yet bound, CoAP source.
#[derive(Debug)]
pub struct CoapSource {
    config: Validated,
    stats: Arc<CoapStats>,
}

/// A CoAP source whose server socket is bound.
#[derive(Debug)]
pub struct BoundCoapSource {
    socket: UdpSocket,
    local_addr: SocketAddr,
    config: Validated,
    stats: Arc<CoapStats>,
}

impl CoapSource {
    /// The counters, shared with the running source.
    pub fn stats(&self) -> Arc<CoapStats> {
        self.stats.clone()
    }

    /// The configured bind address.
    pub fn bind_addr(&self) -> SocketAddr {
        self.config.bind
    }

    /// Binds the server socket.
    pub async fn bind(self) -> Result<BoundCoapSource, SourceError> {
        let socket = UdpSocket::bind(self.config.bind).await.map_err(|e| {
            SourceError::Other(format!("binding CoAP socket {}: {e}", self.config.bind))
        })?;
        let local_addr = socket.local_addr()?;
        Ok(BoundCoapSource {
            socket,
            local_addr,
            config: self.config,
            stats: self.stats,
        })
    }
}

impl Source for CoapSource {
    const KIND: &'static str = "coap";
    type Config = CoapConfig;

    fn build(key: &str, config: CoapConfig) -> Result<Self, ConfigError> {
        Ok(CoapSource {
            config: config::validate(key, config)?,
            stats: Arc::default(),
        })
    }

    /// A bind failure is returned; the daemon marks the source failed.
    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        self.bind().await?.run(ctx).await
    }
}

type InFlight = JoinSet<(Pending, Result<Committed, CommitError>)>;

impl BoundCoapSource {
    /// The address the server socket is bound to (learn the port after
    /// binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Arc<CoapStats> {
        self.stats.clone()
    }

    /// Serves until `ctx.shutdown` fires, then drains and returns.
    pub async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let BoundCoapSource {
            socket,
            local_addr,
            config,
            stats,
        } = self;
        info!(source = %ctx.name, addr = %local_addr, path = %config.path.join("/"), "CoAP server listening");
        ctx.health.set(SourceState::Running);

        let mut observers = JoinSet::new();
        for target in config.observe.iter().cloned() {
            observers.spawn(observe::run(
                target,
                ctx.sink.clone(),
                ctx.shutdown.clone(),
                stats.clone(),
            ));
        }

        let settings = ServerSettings {
            path: config.path.clone(),
            max_datagram_bytes: config.max_datagram_bytes,
            max_payload_bytes: config.max_payload_bytes,
            max_block_transfers: config.max_block_transfers,
            dedup_capacity: config.dedup_capacity,
            limits: config.limits,
        };
        let mut server = Server {
            socket: &socket,
            core: ServerCore::new(settings, stats.clone(), rand::random()),
            sink: &ctx.sink,
            in_flight: JoinSet::new(),
            max_in_flight: config.max_concurrent_requests,
        };
        let result = server.serve(&ctx, config.max_datagram_bytes).await;
        server.drain().await;
        join_observers(&mut observers).await;
        if result.is_ok() {
            ctx.health.set(SourceState::Stopped);
        }
        info!(source = %ctx.name, "CoAP server stopped");
        result
    }
}

async fn join_observers(observers: &mut JoinSet<()>) {
    while let Some(r) = observers.join_next().await {
        if let Err(e) = r {
            warn!(error = %e, "observe task failed");
        }
    }
}

struct Server<'a> {
    socket: &'a UdpSocket,
    core: ServerCore,
    sink: &'a ReadingSink,
    in_flight: InFlight,
    max_in_flight: usize,
}

impl Server<'_> {
    async fn serve(&mut self, ctx: &SourceContext, max_datagram: usize) -> Result<(), SourceError> {
        let mut buf = vec![0u8; max_datagram + 1];
        let mut errors = 0u32;
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return Ok(()),
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.completed(done).await;
                }
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, peer)) => {
                        errors = 0;
                        let truncated = n > max_datagram;
                        let action = self.core.handle_datagram(
                            peer,
                            &buf[..n.min(max_datagram)],
                            truncated,
                            std::time::Instant::now(),
                            wall_clock(),
                        );
                        self.act(action).await;
                    }
                    Err(e) => {
                        errors += 1;
                        warn!(error = %e, "CoAP socket receive failed");
                        if errors >= MAX_CONSECUTIVE_RECV_ERRORS {
                            return Err(SourceError::Io(e));
                        }
                    }
                }
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Ignore => {}
            Action::Reply { to, bytes } => self.send(&bytes, to).await,
            Action::Submit { readings, pending } => {
                if self.in_flight.len() >= self.max_in_flight {
                    self.refuse(pending, Refusal::Busy).await;
                    return;
                }
                match self.sink.try_submit(readings) {
                    Ok(ticket) => {
                        self.in_flight
                            .spawn(async move { (pending, ticket.committed().await) });
                    }
                    Err(e) => self.refuse(pending, Refusal::Sink(e)).await,
                }
            }
        }
    }

    async fn refuse(&mut self, pending: Pending, refusal: Refusal) {
        let peer = pending.peer();
        if let Some(bytes) = self
            .core
            .finish(pending, Err(refusal), std::time::Instant::now())
        {
            self.send(&bytes, peer).await;
        }
    }

    async fn completed(
        &mut self,
        done: Result<(Pending, Result<Committed, CommitError>), tokio::task::JoinError>,
    ) {
        let (pending, result) = match done {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "commit wait task failed");
                return;
            }
        };
        let peer = pending.peer();
        if let Err(e) = &result {
            debug!(%peer, mid = pending.message_id(), error = %e, "readings not committed");
        }
        let outcome = result.map_err(Refusal::Commit);
        if let Some(bytes) = self
            .core
            .finish(pending, outcome, std::time::Instant::now())
        {
            self.send(&bytes, peer).await;
        }
    }

    /// Answers the requests whose commits are in flight.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.join_next()).await {
                Ok(Some(done)) => self.completed(done).await,
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        pending = self.in_flight.len(),
                        "shutdown drain timed out; unanswered requests will be retransmitted by clients"
                    );
                    self.in_flight.abort_all();
                    break;
                }
            }
        }
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to).await {
            debug!(%to, error = %e, "CoAP send failed");
        }
    }
}
