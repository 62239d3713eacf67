//! The LoRaWAN source: a Semtech UDP endpoint driving the sans-IO network
//! server of `gatewayd-lorawan-proto`.
//!
//! # What it owns
//!
//! * the UDP socket (one task, one `select!` loop: datagram, the server's
//!   next deadline, housekeeping, reload and persistence completions,
//!   shutdown);
//! * the [`NetworkServer`] and the in-memory [`CachedStore`] it reads;
//! * the [`Forwarders`] table (where downlinks go, liveness, counters);
//! * the downlinks waiting for their TX_ACK (by token, bounded), for the
//!   RX2 fallback;
//! * the session writer: `SessionChanged` is applied to the store at once
//!   and queued (coalesced per device, so bounded by the device count) for
//!   one `spawn_blocking` SQLite write at a time (group commit);
//! * the effects waiting for that write (see *Durability* below);
//! * the application downlink queue in memory (the server's), loaded from
//!   the `downlinks` table ([`crate::downlinks`]).
//!
//! # A datagram, step by step
//!
//! 1. Read it (at most [`MAX_DATAGRAM_LEN`] bytes) and decode it; a
//!    malformed one is counted and dropped (rate-limited log).
//! 2. PUSH_DATA: the forwarder is looked up or added (the table is bounded:
//!    a new forwarder beyond `max_forwarders` is dropped unless an offline
//!    one can go), and PUSH_ACK goes back to the sender at once.
//! 3. Its `stat` is kept; each `rxpk` is counted; one with a CRC that is
//!    not OK, an FSK one, or one that did not decode is counted and
//!    dropped; the others become `Event::Uplink` (monotonic `now_ms`, the
//!    forwarder EUI, `tmst`, frequency, data rate, RSSI, SNR, host time).
//! 4. PULL_DATA: the sender address becomes the forwarder's downlink
//!    address, it is alive for `forwarder_timeout_secs`, PULL_ACK goes back.
//! 5. TX_ACK: matched by token to the pending downlink; on an error the
//!    RX2 fallback (if any) is sent instead.
//! 6. The server's actions: `Reading` → a `gatewayd_model::Reading`
//!    submitted with `try_submit` (a full queue drops and counts it);
//!    `Downlink` → PULL_RESP to the forwarder's pull address (refused and
//!    logged if the forwarder is offline); `SessionChanged` → store, then
//!    disk; `Rejected` → counted by reason, logged once per unknown
//!    DevAddr/DevEUI.
//!
//! # Durability: nothing leaves before its session is on disk
//!
//! A reading or a downlink depends on the session change the same event
//! made (the uplink's FCntUp, the downlink's FCntDown, the join's DevNonce
//! and keys). So the effects of an event that changed a session are
//! *held* until the write holding that change has committed
//! (`synchronous = FULL`): then the readings are submitted and the
//! downlinks sent. A crash can therefore lose the effects of the last few
//! milliseconds (the device retransmits, or sends its next uplink), but
//! never lets a replayed frame in or reuse a frame counter. Writes are
//! batched: every event handled while one write runs goes into the next,
//! so throughput does not pay one fsync per uplink. At most
//! [`MAX_HELD`] effects wait; beyond that the socket is not read until the
//! write completes (the kernel's UDP buffer absorbs the burst). A write
//! that fails is logged, retried with the next batch, and its effects go
//! out anyway (data first; [`FCNT_DOWN_RESTART_MARGIN`] covers downlink
//! counters).
//!
//! When the dedup window of an uplink closes (the server's next deadline),
//! `Event::Tick` runs steps 6 for it. Every second, housekeeping checks the
//! registry (its generation, and `PRAGMA data_version` for changes made by
//! other processes or connections such as D-Bus) and reloads the devices in
//! `spawn_blocking` when it changed, and updates health:
//! `Degraded("no forwarder connected")` once the forwarder timeout has
//! passed with no forwarder alive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatewayd_core::{
    ConfigError, LogRateLimit, SinkError, Source, SourceContext, SourceError, SourceState,
};
use gatewayd_lorawan_proto as proto;
use gatewayd_model::{DeviceId, Measurement, Metadata, Reading, Timestamp, Transport, Value};
use gatewayd_semtech_udp::{
    mhz_from_hz, CrcStatus, DataRate, Datagram, Eui, Packet, ProtocolVersion, Token, TxAckStatus,
    TxPk, MAX_DATAGRAM_LEN,
};
use proto::{Action, Decoded, Event, NetworkServer, Reject, RxInfo, Session, TxSlot};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{self, LoraConfig, Validated};
use crate::downlinks::QueuedRow;
use crate::forwarders::Forwarders;
use crate::registry::LoraRegistry;
use crate::store::{CachedStore, SessionDb};

/// Added to every stored FCntDown at start. Downlinks leave only after
/// their FCntDown is on disk, unless that write failed (then they go out
/// anyway): this margin keeps a counter from being reused after such a
/// failure and a restart.
pub const FCNT_DOWN_RESTART_MARGIN: u32 = 16;
/// Readings per ingest submission, at most.
const MAX_SUBMISSION: usize = 512;
/// How long the loop waits for room in the ingest queue before dropping.
const SUBMIT_WAIT: Duration = Duration::from_millis(200);
/// Effects (readings, downlinks) waiting for their session write, at most;
/// beyond this the socket is not read until the write completes.
pub const MAX_HELD: usize = 8192;
/// Downlinks waiting for their TX_ACK, at most.
const MAX_PENDING_TX: usize = 1024;
/// How long a downlink waits for its TX_ACK before it is forgotten.
const PENDING_TX_TTL: Duration = Duration::from_secs(30);
/// Unknown DevAddrs / DevEUIs logged once each, at most this many.
const MAX_LOGGED_UNKNOWN: usize = 1024;
/// Housekeeping period.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Least time between two log lines of the same rate-limited kind.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters of a LoRaWAN source, readable while it runs.
#[derive(Debug, Default)]
pub struct LoraStats {
    pub datagrams: AtomicU64,
    pub malformed: AtomicU64,
    pub unexpected_packets: AtomicU64,
    pub forwarders_refused: AtomicU64,
    pub push_data: AtomicU64,
    pub pull_data: AtomicU64,
    pub tx_ack_ok: AtomicU64,
    pub tx_ack_err: AtomicU64,
    pub tx_ack_unmatched: AtomicU64,
    pub rxpk: AtomicU64,
    pub rxpk_bad_crc: AtomicU64,
    pub rxpk_invalid: AtomicU64,
    pub rxpk_not_lora: AtomicU64,
    pub readings: AtomicU64,
    pub readings_dropped: AtomicU64,
    pub downlinks_sent: AtomicU64,
    pub downlinks_failed: AtomicU64,
    pub fallbacks_sent: AtomicU64,
    pub joins: AtomicU64,
    /// Application downlinks loaded from the queue table.
    pub app_downlinks_queued: AtomicU64,
    /// Unconfirmed application downlinks sent (they left the queue).
    pub app_downlinks_sent: AtomicU64,
    /// Confirmed application downlinks acknowledged by the device.
    pub app_downlinks_acked: AtomicU64,
    /// Confirmed application downlinks dropped after their last attempt.
    pub app_downlinks_dropped: AtomicU64,
    /// Queued downlinks the server refused (too large for the region).
    pub app_downlinks_refused: AtomicU64,
    pub sessions_saved: AtomicU64,
    pub session_save_errors: AtomicU64,
    pub reloads: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// Lists the counters of [`LoraStats`] once, for [`LoraStats::counters`].
macro_rules! counters {
    ($self:ident: $($name:ident),* $(,)?) => {
        BTreeMap::from([$((stringify!($name), $self.$name.load(Ordering::Relaxed))),*])
    };
}

impl LoraStats {
    /// Every counter by name (the rejections are in
    /// [`rejected_all`](Self::rejected_all)).
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        counters!(self: datagrams, malformed, unexpected_packets, forwarders_refused, push_data,
            pull_data, tx_ack_ok, tx_ack_err, tx_ack_unmatched, rxpk, rxpk_bad_crc, rxpk_invalid,
            rxpk_not_lora, readings, readings_dropped, downlinks_sent, downlinks_failed,
            fallbacks_sent, joins, app_downlinks_queued, app_downlinks_sent, app_downlinks_acked,
            app_downlinks_dropped, app_downlinks_refused, sessions_saved, session_save_errors,
            reloads)
    }

    /// Uplinks rejected for this reason (see [`reject_reason`]).
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected_all().get(reason).copied().unwrap_or(0)
    }

    /// Every rejection reason with its count.
    pub fn rejected_all(&self) -> BTreeMap<&'static str, u64> {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reject(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The counter name of a rejection: `decode`, `dedup_full`,
/// `unknown_dev_eui`, `not_otaa`, `unknown_dev_addr`, `join_mic`,
/// `dev_nonce_reused`, `join`, `mic`, `replay`, `repeated`, `uplink`,
/// `reserved_fport`, `downlink`.
pub fn reject_reason(r: &Reject) -> &'static str {
    use proto::{JoinError, UplinkError};
    match r {
        Reject::Decode(_) => "decode",
        Reject::DedupFull => "dedup_full",
        Reject::UnknownDevEui => "unknown_dev_eui",
        Reject::NotOtaa => "not_otaa",
        Reject::UnknownDevAddr => "unknown_dev_addr",
        Reject::Join(JoinError::Mic) => "join_mic",
        Reject::Join(JoinError::DevNonceReused { .. }) => "dev_nonce_reused",
        Reject::Join(_) => "join",
        Reject::Uplink(UplinkError::Mic) => "mic",
        Reject::Uplink(UplinkError::Replay { .. }) => "replay",
        Reject::Uplink(UplinkError::Repeated { .. }) => "repeated",
        Reject::Uplink(_) => "uplink",
        Reject::ReservedFport(_) => "reserved_fport",
        Reject::Downlink(_) | Reject::NoDownlinkWindow => "downlink",
    }
}

/// A LoRaWAN network-server source (`kind = "lorawan"`).
#[derive(Debug)]
pub struct LoraSource {
    config: Validated,
    stats: Arc<LoraStats>,
}

/// A LoRaWAN source with its socket bound and its database open.
pub struct BoundLoraSource {
    socket: UdpSocket,
    local_addr: SocketAddr,
    config: Validated,
    stats: Arc<LoraStats>,
    registry: LoraRegistry,
    db: Arc<SessionDb>,
    store: CachedStore,
    data_version: i64,
    downlinks: Vec<QueuedRow>,
}

impl std::fmt::Debug for BoundLoraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundLoraSource")
            .field("local_addr", &self.local_addr)
            .field("devices", &self.store.len())
            .finish_non_exhaustive()
    }
}

fn other(e: impl std::fmt::Display) -> SourceError {
    SourceError::Other(e.to_string())
}

/// Opens the registry and the session table, writes the config's devices,
/// loads everything. Blocking.
type State = (LoraRegistry, SessionDb, CachedStore, i64, Vec<QueuedRow>);

fn open_state(config: &Validated) -> Result<State, SourceError> {
    let path = config
        .db_path
        .as_deref()
        .ok_or_else(|| other("state_dir is not set (the daemon sets gateway.data_dir)"))?;
    let registry = LoraRegistry::open(path).map_err(other)?;
    let db = SessionDb::open(path).map_err(other)?;
    for req in &config.devices {
        // The error names the device and field, never a key value.
        registry.add(req.clone()).map_err(|e| {
            other(format!(
                "adding configured LoRaWAN device {}: {e}",
                req.spec.dev_eui
            ))
        })?;
    }
    let version = db.data_version().map_err(other)?;
    let specs = registry.all().map_err(other)?;
    let mut sessions = db.load().map_err(other)?;
    // After a crash the last FCntDown used may not have been saved: never
    // reuse one (devices accept any increase up to MAX_FCNT_GAP).
    for s in sessions.values_mut() {
        s.fcnt_down = s.fcnt_down.saturating_add(FCNT_DOWN_RESTART_MARGIN);
    }
    let store = CachedStore::build(&specs, sessions);
    let downlinks = registry.downlinks(None, 0).map_err(other)?;
    Ok((registry, db, store, version, downlinks))
}

/// A non-blocking UDP socket with SO_RCVBUF asked for `recv_buffer`
/// bytes; returns it with the size the kernel granted (Linux reports twice
/// what it grants for bookkeeping: the half is returned).
fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<(UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, and is reported.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size().map_or(0, |n| n / 2);
    Ok((UdpSocket::from_std(socket.into())?, granted))
}

impl LoraSource {
    /// The configured UDP address.
    pub fn bind_addr(&self) -> SocketAddr {
        self.config.bind
    }

    /// The counters.
    pub fn stats(&self) -> Arc<LoraStats> {
        self.stats.clone()
    }

    /// Opens `lorawan.db` (in `spawn_blocking`) and binds the socket.
    pub async fn bind(self) -> Result<BoundLoraSource, SourceError> {
        let config = self.config;
        let (config, state) = tokio::task::spawn_blocking(move || {
            let r = open_state(&config);
            (config, r)
        })
        .await
        .map_err(other)?;
        let (registry, db, store, data_version, downlinks) = state?;
        let (socket, recv_buffer) =
            bind_udp(config.bind, config.recv_buffer_bytes).map_err(|e| {
                SourceError::Other(format!("binding LoRaWAN socket {}: {e}", config.bind))
            })?;
        let local_addr = socket.local_addr()?;
        tracing::info!(
            addr = %local_addr,
            region = ?config.server.region,
            devices = store.len(),
            recv_buffer,
            "LoRaWAN network server listening for packet forwarders"
        );
        if recv_buffer < config.recv_buffer_bytes {
            tracing::warn!(
                asked = config.recv_buffer_bytes,
                got = recv_buffer,
                "LoRaWAN socket receive buffer capped by the kernel (net.core.rmem_max): bursts of uplinks may be lost"
            );
        }
        Ok(BoundLoraSource {
            socket,
            local_addr,
            config,
            stats: self.stats,
            registry,
            db: Arc::new(db),
            store,
            data_version,
            downlinks,
        })
    }
}

impl Source for LoraSource {
    const KIND: &'static str = "lorawan";
    type Config = LoraConfig;

    fn build(key: &str, config: LoraConfig) -> Result<Self, ConfigError> {
        Ok(LoraSource {
            config: config::validate(key, config)?,
            stats: Arc::default(),
        })
    }

    /// A bind failure is returned; the daemon marks the source failed.
    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        self.bind().await?.run(ctx).await
    }
}

/// A downlink waiting for its TX_ACK.
struct PendingTx {
    gateway: Eui,
    dev_eui: proto::Eui64,
    phy: Vec<u8>,
    fallback: Option<TxSlot>,
    sent: Instant,
}

/// A reload's result: the devices with their sessions, the data version
/// read, and every queued downlink row.
type Reloaded = Option<(CachedStore, i64, Vec<QueuedRow>)>;
type Reload = JoinHandle<Result<Reloaded, SourceError>>;
/// One group commit: sessions to write and queued downlinks to delete.
#[derive(Default)]
struct Batch {
    sessions: Vec<(proto::Eui64, Session)>,
    done_downlinks: Vec<u64>,
}
type Save = JoinHandle<(Batch, Result<(), String>)>;

struct Runner {
    socket: UdpSocket,
    config: Validated,
    stats: Arc<LoraStats>,
    registry: LoraRegistry,
    generation: watch::Receiver<u64>,
    db: Arc<SessionDb>,
    store: CachedStore,
    data_version: i64,
    server: NetworkServer,
    forwarders: Forwarders,
    pending_tx: HashMap<u16, PendingTx>,
    next_token: u16,
    logged_unknown: HashSet<String>,
    dirty: HashMap<proto::Eui64, Session>,
    /// Queued downlinks that left the queue, to delete with the next write.
    done_downlinks: Vec<u64>,
    /// Effects waiting for the next write to start.
    held: Vec<Action>,
    /// Effects waiting for the running write.
    saving: Vec<Action>,
    /// Highest downlink row id loaded (ids only grow).
    last_downlink_id: u64,
    save: Option<Save>,
    reload: Option<Reload>,
    start: Instant,
    ctx: SourceContext,
    health: SourceState,
    log_malformed: LogRateLimit,
    log_dropped: LogRateLimit,
    log_downlink: LogRateLimit,
    log_save: LogRateLimit,
}

async fn join_opt<T>(h: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match h.as_mut() {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

impl BoundLoraSource {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> Arc<LoraStats> {
        self.stats.clone()
    }

    /// Runs until `ctx.shutdown`, then writes the sessions not yet saved.
    pub async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let server = NetworkServer::new(self.config.server.clone()).map_err(other)?;
        let forwarders = Forwarders::new(self.config.forwarder_timeout, self.config.max_forwarders);
        let generation = self.registry.generation();
        let mut r = Runner {
            socket: self.socket,
            stats: self.stats,
            registry: self.registry,
            generation,
            db: self.db,
            store: self.store,
            data_version: self.data_version,
            server,
            forwarders,
            pending_tx: HashMap::new(),
            next_token: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u16)
                .unwrap_or(1),
            logged_unknown: HashSet::new(),
            dirty: HashMap::new(),
            done_downlinks: Vec::new(),
            held: Vec::new(),
            saving: Vec::new(),
            last_downlink_id: 0,
            save: None,
            reload: None,
            start: Instant::now(),
            config: self.config,
            ctx,
            health: SourceState::Running,
            log_malformed: LogRateLimit::new(LOG_EVERY),
            log_dropped: LogRateLimit::new(LOG_EVERY),
            log_downlink: LogRateLimit::new(LOG_EVERY),
            log_save: LogRateLimit::new(LOG_EVERY),
        };
        r.load_downlinks(self.downlinks);
        r.ctx.health.set(SourceState::Running);
        let result = r.run().await;
        r.flush().await;
        r.ctx.health.set(SourceState::Stopped);
        result
    }
}

impl Runner {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(&mut self) -> Result<(), SourceError> {
        let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .server
                .next_deadline_ms()
                .map(|ms| tokio::time::Instant::from_std(self.start + Duration::from_millis(ms)));
            tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => return Ok(()),
                r = join_opt(&mut self.save), if self.save.is_some() => {
                    self.save = None;
                    self.saved(r).await;
                }
                r = join_opt(&mut self.reload), if self.reload.is_some() => {
                    self.reload = None;
                    self.reloaded(r);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() => {
                    let now_ms = self.now_ms();
                    self.handle(Event::Tick { now_ms }).await;
                }
                // Before the socket: a datagram flood must not starve it.
                _ = housekeeping.tick() => self.housekeeping(),
                r = self.socket.recv_from(&mut buf), if self.held.len() < MAX_HELD => match r {
                    Ok((n, from)) => self.datagram(&buf[..n], from).await,
                    Err(e) => {
                        // ICMP errors (e.g. port unreachable after a send)
                        // surface here on some systems: not fatal.
                        tracing::debug!(error = %e, "LoRaWAN socket receive error");
                    }
                },
            }
            self.start_save();
        }
    }

    // ----- datagrams -----

    async fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        inc(&self.stats.datagrams);
        let now = Instant::now();
        let d = match Datagram::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                inc(&self.stats.malformed);
                if let Some(suppressed) = self.log_malformed.allow(now) {
                    tracing::info!(%from, error = %e, suppressed, "malformed Semtech UDP datagram dropped");
                }
                return;
            }
        };
        let version = d.version;
        let ack = d.ack();
        match d.packet {
            Packet::PushData { gateway, body, .. } => {
                let Some(f) = self.forwarders.entry(gateway, version, now) else {
                    inc(&self.stats.forwarders_refused);
                    return;
                };
                f.push_addr = Some(from);
                f.last_push = Some(now);
                f.counters.push_data += 1;
                inc(&self.stats.push_data);
                self.send_ack(ack, from).await;
                if let Some(Ok(stat)) = body.stat {
                    if let Some(f) = self.forwarders.get_mut(gateway) {
                        f.counters.stat += 1;
                        f.last_stat = Some(stat);
                    }
                }
                for rx in body.rxpk {
                    self.rxpk(gateway, rx).await;
                }
            }
            Packet::PullData { gateway, .. } => {
                let Some(f) = self.forwarders.entry(gateway, version, now) else {
                    inc(&self.stats.forwarders_refused);
                    return;
                };
                if f.pull_addr != Some(from) {
                    tracing::info!(gateway = %gateway, addr = %from, "LoRaWAN packet forwarder connected");
                }
                f.pull_addr = Some(from);
                f.last_pull = Some(now);
                f.counters.pull_data += 1;
                inc(&self.stats.pull_data);
                self.send_ack(ack, from).await;
                self.update_health(now);
            }
            Packet::TxAck {
                token,
                gateway,
                body,
            } => {
                self.tx_ack(token, gateway, body.and_then(|b| b.error))
                    .await
            }
            Packet::PushAck { .. } | Packet::PullAck { .. } | Packet::PullResp { .. } => {
                inc(&self.stats.unexpected_packets);
            }
        }
    }

    async fn send_ack(&self, ack: Option<Datagram>, to: SocketAddr) {
        if let Some(ack) = ack {
            if let Err(e) = self.socket.send_to(&ack.to_bytes(), to).await {
                tracing::debug!(%to, error = %e, "sending a Semtech UDP acknowledgement failed");
            }
        }
    }

    async fn rxpk(
        &mut self,
        gateway: Eui,
        rx: Result<gatewayd_semtech_udp::RxPk, gatewayd_semtech_udp::RxPkError>,
    ) {
        inc(&self.stats.rxpk);
        let counters = self.forwarders.get_mut(gateway).map(|f| &mut f.counters);
        let Ok(rx) = rx else {
            inc(&self.stats.rxpk_invalid);
            return;
        };
        if let Some(c) = counters {
            c.rxpk += 1;
            if rx.stat != CrcStatus::CrcOk {
                c.rxpk_bad_crc += 1;
            }
        }
        if rx.stat != CrcStatus::CrcOk {
            inc(&self.stats.rxpk_bad_crc);
            return;
        }
        let DataRate::Lora { sf, bw_khz } = rx.datr else {
            inc(&self.stats.rxpk_not_lora);
            return;
        };
        let info = RxInfo {
            gateway: proto::Eui64(gateway.0),
            tmst: rx.tmst,
            freq_hz: rx.freq_hz(),
            data_rate: proto::DataRate {
                sf,
                bw_khz: bw_khz as u16,
            },
            rssi: rx.rssi_dbm().unwrap_or(i16::MIN),
            snr: rx.snr_db().unwrap_or(0.0) as f32,
            // The host clock; the gateway's GPS `time` is not parsed.
            time: SystemTime::now().duration_since(UNIX_EPOCH).ok(),
        };
        let now_ms = self.now_ms();
        self.handle(Event::Uplink {
            now_ms,
            rx: info,
            phy: rx.data,
        })
        .await;
    }

    async fn tx_ack(&mut self, token: Token, gateway: Eui, error: Option<TxAckStatus>) {
        let ok = matches!(error, None | Some(TxAckStatus::None));
        if let Some(f) = self.forwarders.get_mut(gateway) {
            if ok {
                f.counters.tx_ack_ok += 1;
            } else {
                f.counters.tx_ack_err += 1;
            }
        }
        let pending = match self.pending_tx.remove(&token.0) {
            Some(p) if p.gateway == gateway => p,
            Some(p) => {
                self.pending_tx.insert(token.0, p);
                inc(&self.stats.tx_ack_unmatched);
                return;
            }
            None => {
                inc(&self.stats.tx_ack_unmatched);
                return;
            }
        };
        if ok {
            inc(&self.stats.tx_ack_ok);
            return;
        }
        inc(&self.stats.tx_ack_err);
        match pending.fallback {
            Some(slot) => {
                tracing::debug!(gateway = %gateway, dev_eui = %pending.dev_eui, status = ?error, "RX1 downlink refused; sending RX2");
                if self
                    .send_downlink(gateway, pending.dev_eui, pending.phy, slot, None)
                    .await
                {
                    inc(&self.stats.fallbacks_sent);
                }
            }
            None => {
                inc(&self.stats.downlinks_failed);
                tracing::info!(gateway = %gateway, dev_eui = %pending.dev_eui, status = ?error, "downlink refused by the forwarder");
            }
        }
    }

    // ----- the server -----

    /// Runs the server on an event. Readings and downlinks of an event
    /// that changed a session are held for the write (module docs).
    async fn handle(&mut self, event: Event) {
        let actions = self.server.handle(&self.store, event);
        let mut changed = false;
        let mut effects = Vec::new();
        for a in actions {
            match a {
                Action::SessionChanged { dev_eui, session } => {
                    if self.store.apply_session(dev_eui, session.clone()) {
                        self.dirty.insert(dev_eui, session);
                        changed = true;
                    }
                }
                Action::Reading(_) | Action::Downlink(_) => effects.push(a),
                other => self.action(other).await,
            }
        }
        if changed || !self.held.is_empty() {
            self.held.extend(effects);
        } else {
            self.release(effects).await;
        }
    }

    /// Carries out effects: downlinks go out one by one; readings are
    /// submitted together, in chunks of at most [`MAX_SUBMISSION`], so a
    /// released group commit is a few ingest messages, not thousands.
    async fn release(&mut self, effects: Vec<Action>) {
        let mut out = Vec::new();
        for a in effects {
            match a {
                Action::Reading(r) => {
                    if let Some(reading) = self.reading(r) {
                        out.push(reading);
                    }
                }
                other => self.action(other).await,
            }
        }
        while !out.is_empty() {
            let rest = out.split_off(out.len().min(MAX_SUBMISSION));
            let chunk = std::mem::replace(&mut out, rest);
            self.submit(chunk).await;
        }
    }

    /// Submits readings, waiting at most [`SUBMIT_WAIT`] for room in the
    /// ingest queue (meanwhile the socket is not read: the kernel buffers
    /// datagrams); what still does not fit is dropped and counted.
    async fn submit(&mut self, readings: Vec<Reading>) {
        let n = readings.len() as u64;
        let why = match tokio::time::timeout(SUBMIT_WAIT, self.ctx.sink.submit(readings)).await {
            Ok(Ok(_ticket)) => {
                self.stats.readings.fetch_add(n, Ordering::Relaxed);
                return;
            }
            Ok(Err(SinkError::Full)) | Err(_) => "ingest queue full",
            Ok(Err(_)) => "ingest closed",
        };
        self.stats.readings_dropped.fetch_add(n, Ordering::Relaxed);
        if let Some(suppressed) = self.log_dropped.allow(Instant::now()) {
            tracing::warn!(readings = n, suppressed, "LoRaWAN readings dropped: {why}");
        }
    }

    async fn action(&mut self, a: Action) {
        match a {
            Action::SessionChanged { dev_eui, session } => {
                if self.store.apply_session(dev_eui, session.clone()) {
                    self.dirty.insert(dev_eui, session);
                }
            }
            Action::Reading(r) => {
                if let Some(reading) = self.reading(r) {
                    self.submit(vec![reading]).await;
                }
            }
            Action::Downlink(d) => {
                let gw = Eui(d.gateway.0);
                self.send_downlink(gw, d.dev_eui, d.phy, d.slot, d.fallback)
                    .await;
            }
            Action::Joined { dev_eui, dev_addr } => {
                inc(&self.stats.joins);
                tracing::info!(%dev_eui, %dev_addr, "LoRaWAN device joined");
            }
            Action::MacCommands {
                dev_eui,
                commands,
                stop,
            } => {
                tracing::debug!(%dev_eui, ?commands, ?stop, "LoRaWAN MAC commands");
            }
            Action::Queue { dev_eui, event } => self.queue_event(dev_eui, event),
            Action::Rejected {
                reason,
                dev_eui,
                dev_addr,
            } => {
                let name = reject_reason(&reason);
                self.stats.reject(name);
                let unknown = match &reason {
                    Reject::UnknownDevAddr => dev_addr.map(|a| format!("addr:{a}")),
                    Reject::UnknownDevEui | Reject::NotOtaa => dev_eui.map(|e| format!("eui:{e}")),
                    _ => None,
                };
                match unknown {
                    Some(k) => {
                        if self.logged_unknown.len() < MAX_LOGGED_UNKNOWN
                            && self.logged_unknown.insert(k)
                        {
                            tracing::info!(?dev_eui, ?dev_addr, reason = %reason, "LoRaWAN uplink from an unregistered device ignored (logged once)");
                        }
                    }
                    None => {
                        tracing::debug!(?dev_eui, ?dev_addr, reason = %reason, "LoRaWAN uplink rejected");
                    }
                }
            }
        }
    }

    /// The gatewayd reading of a LoRaWAN one (`None`, logged, if it
    /// cannot be converted).
    fn reading(&mut self, r: proto::Reading) -> Option<Reading> {
        match to_reading(&r) {
            Ok(reading) => Some(reading),
            Err(e) => {
                tracing::warn!(dev_eui = %r.dev_eui, error = %e, "LoRaWAN reading not convertible");
                None
            }
        }
    }

    /// Sends a PULL_RESP; `true` if it left.
    async fn send_downlink(
        &mut self,
        gateway: Eui,
        dev_eui: proto::Eui64,
        phy: Vec<u8>,
        slot: TxSlot,
        fallback: Option<TxSlot>,
    ) -> bool {
        let now = Instant::now();
        let (addr, version) = match self.forwarders.route(gateway, now) {
            Ok(r) => r,
            Err(e) => {
                inc(&self.stats.downlinks_failed);
                if let Some(suppressed) = self.log_downlink.allow(now) {
                    tracing::warn!(%dev_eui, error = %e, suppressed, "LoRaWAN downlink not sent");
                }
                return false;
            }
        };
        let datr = DataRate::Lora {
            sf: slot.data_rate.sf,
            bw_khz: u32::from(slot.data_rate.bw_khz),
        };
        let txpk = TxPk::lorawan_class_a(
            slot.tmst,
            mhz_from_hz(slot.freq_hz),
            datr,
            slot.power_dbm,
            phy.clone(),
        );
        self.next_token = self.next_token.wrapping_add(1);
        let token = Token(self.next_token);
        let bytes = Datagram {
            version,
            packet: Packet::PullResp {
                token,
                body: txpk.into(),
            },
        }
        .to_bytes();
        if let Err(e) = self.socket.send_to(&bytes, addr).await {
            inc(&self.stats.downlinks_failed);
            tracing::warn!(%dev_eui, %gateway, error = %e, "LoRaWAN downlink send failed");
            return false;
        }
        inc(&self.stats.downlinks_sent);
        if let Some(f) = self.forwarders.get_mut(gateway) {
            f.counters.downlinks_sent += 1;
        }
        // Version 1 forwarders send no TX_ACK.
        if version == ProtocolVersion::V2 {
            if self.pending_tx.len() >= MAX_PENDING_TX {
                self.pending_tx
                    .retain(|_, p| now.saturating_duration_since(p.sent) < PENDING_TX_TTL);
            }
            if self.pending_tx.len() < MAX_PENDING_TX {
                self.pending_tx.insert(
                    token.0,
                    PendingTx {
                        gateway,
                        dev_eui,
                        phy,
                        fallback,
                        sent: now,
                    },
                );
            }
        }
        true
    }

    // ----- persistence and reload -----

    /// Starts the next group commit if none runs: every dirty session and
    /// finished downlink; the held effects wait for it.
    fn start_save(&mut self) {
        if self.save.is_some() {
            return;
        }
        if self.dirty.is_empty() && self.done_downlinks.is_empty() {
            // Effects are held only together with a dirty session (see
            // `handle`), so none can be left waiting here.
            debug_assert!(self.held.is_empty());
            return;
        }
        let batch = Batch {
            sessions: self.dirty.drain().collect(),
            done_downlinks: std::mem::take(&mut self.done_downlinks),
        };
        self.saving = std::mem::take(&mut self.held);
        let db = self.db.clone();
        self.save = Some(tokio::task::spawn_blocking(move || {
            let r = db
                .save(&batch.sessions, &batch.done_downlinks)
                .map_err(|e| e.to_string());
            (batch, r)
        }));
    }

    /// A write completed: release its effects. A failed one is retried
    /// with the next batch (newer sessions win), and its effects go out
    /// anyway.
    async fn saved(&mut self, r: Result<(Batch, Result<(), String>), tokio::task::JoinError>) {
        match r {
            Ok((batch, Ok(()))) => {
                self.stats
                    .sessions_saved
                    .fetch_add(batch.sessions.len() as u64, Ordering::Relaxed);
            }
            Ok((batch, Err(e))) => {
                inc(&self.stats.session_save_errors);
                if let Some(suppressed) = self.log_save.allow(Instant::now()) {
                    tracing::error!(error = %e, suppressed, "saving LoRaWAN sessions failed; retrying with the next write");
                }
                for (eui, session) in batch.sessions {
                    self.dirty.entry(eui).or_insert(session);
                }
                self.done_downlinks.extend(batch.done_downlinks);
            }
            Err(e) => {
                inc(&self.stats.session_save_errors);
                tracing::error!(error = %e, "LoRaWAN session writer failed");
            }
        }
        let saving = std::mem::take(&mut self.saving);
        self.release(saving).await;
    }

    /// Waits for the running write, writes what is left, and releases
    /// every held effect.
    async fn flush(&mut self) {
        for _ in 0..2 {
            if let Some(h) = self.save.take() {
                let r = h.await;
                self.saved(r).await;
            }
            self.start_save();
        }
        if let Some(h) = self.save.take() {
            let r = h.await;
            self.saved(r).await;
        }
        let held = std::mem::take(&mut self.held);
        self.release(held).await;
    }

    // ----- the application downlink queue -----

    /// Puts queued rows the server has not seen (id above the last loaded)
    /// into its queues; a row the server refuses is logged and deleted.
    fn load_downlinks(&mut self, rows: Vec<QueuedRow>) {
        for row in rows {
            if row.id <= self.last_downlink_id {
                continue;
            }
            self.last_downlink_id = row.id;
            let Ok(dev_eui) = row.dev_eui.parse::<proto::Eui64>() else {
                continue;
            };
            let item = proto::QueuedDownlink {
                id: row.id,
                fport: row.fport,
                payload: row.payload,
                confirmed: row.confirmed,
            };
            match self.server.enqueue(dev_eui, item) {
                Ok(()) => inc(&self.stats.app_downlinks_queued),
                Err(e) => {
                    inc(&self.stats.app_downlinks_refused);
                    tracing::warn!(%dev_eui, id = row.id, error = %e, "queued LoRaWAN downlink refused; deleted");
                    self.done_downlinks.push(row.id);
                }
            }
        }
    }

    /// A queued downlink left the queue: count, log, delete its row with
    /// the next write.
    fn queue_event(&mut self, dev_eui: proto::Eui64, event: proto::QueueEvent) {
        use proto::QueueEvent;
        match &event {
            QueueEvent::Sent { item, fcnt_down } => {
                inc(&self.stats.app_downlinks_sent);
                tracing::debug!(%dev_eui, id = item.id, fcnt_down, "LoRaWAN downlink sent");
            }
            QueueEvent::Acked { item, fcnt_down } => {
                inc(&self.stats.app_downlinks_acked);
                tracing::info!(%dev_eui, id = item.id, fcnt_down, "confirmed LoRaWAN downlink acknowledged");
            }
            QueueEvent::Dropped { item, attempts } => {
                inc(&self.stats.app_downlinks_dropped);
                tracing::warn!(%dev_eui, id = item.id, attempts, "confirmed LoRaWAN downlink not acknowledged; dropped");
            }
        }
        let id = match event {
            QueueEvent::Sent { item, .. }
            | QueueEvent::Acked { item, .. }
            | QueueEvent::Dropped { item, .. } => item.id,
        };
        self.done_downlinks.push(id);
    }

    /// What `gatewayctl source status` / `lora stats` / `lora forwarders`
    /// show (D-Bus `SourceStatus`): the counters, rejections by reason, and
    /// every forwarder with its liveness, addresses, counters and last
    /// `stat`. Documented in the adapter's README.
    fn status(&self, now: Instant) -> serde_json::Value {
        let ago = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs());
        let mut forwarders: Vec<_> = self
            .forwarders
            .iter()
            .map(|f| {
                serde_json::json!({
                    "eui": f.eui.to_string(),
                    "alive": self.forwarders.is_alive(f.eui, now),
                    "protocol": match f.version {
                        ProtocolVersion::V1 => 1,
                        ProtocolVersion::V2 => 2,
                    },
                    "push_addr": f.push_addr.map(|a| a.to_string()),
                    "pull_addr": f.pull_addr.map(|a| a.to_string()),
                    "last_push_secs_ago": ago(f.last_push),
                    "last_pull_secs_ago": ago(f.last_pull),
                    "counters": f.counters,
                    "last_stat": f.last_stat,
                })
            })
            .collect();
        forwarders.sort_by(|a, b| a["eui"].as_str().cmp(&b["eui"].as_str()));
        serde_json::json!({
            "kind": LoraSource::KIND,
            "bind": self.socket.local_addr().ok().map(|a| a.to_string()),
            "region": format!("{:?}", self.config.server.region),
            "devices": self.store.len(),
            "forwarders_alive": self.forwarders.alive_count(now),
            "counters": self.stats.counters(),
            "rejected": self.stats.rejected_all(),
            "forwarders": forwarders,
        })
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.update_health(now);
        self.ctx.status.publish(self.status(now));
        self.pending_tx
            .retain(|_, p| now.saturating_duration_since(p.sent) < PENDING_TX_TTL);
        if self.reload.is_some() {
            return;
        }
        let generation_changed = self.generation.has_changed().unwrap_or(false);
        if generation_changed {
            self.generation.mark_unchanged();
        }
        let db = self.db.clone();
        let registry = self.registry.clone();
        let known = self.data_version;
        self.reload = Some(tokio::task::spawn_blocking(move || {
            let version = db.data_version().map_err(other)?;
            if !generation_changed && version == known {
                return Ok(None);
            }
            let specs = registry.all().map_err(other)?;
            let sessions = db.load().map_err(other)?;
            let downlinks = registry.downlinks(None, 0).map_err(other)?;
            Ok(Some((
                CachedStore::build(&specs, sessions),
                version,
                downlinks,
            )))
        }));
    }

    fn reloaded(&mut self, r: Result<Result<Reloaded, SourceError>, tokio::task::JoinError>) {
        match r {
            Ok(Ok(None)) => {}
            Ok(Ok(Some((fresh, version, downlinks)))) => {
                self.data_version = version;
                let devices = self.store.len();
                self.store.merge_reload(fresh);
                inc(&self.stats.reloads);
                // Rows deleted by someone else (a cleared queue, a removed
                // device) leave the server's queues; new rows join them.
                let present: HashSet<u64> = downlinks.iter().map(|r| r.id).collect();
                let last = self.last_downlink_id;
                let gone = self
                    .server
                    .retain_queued(|_, id| id > last || present.contains(&id));
                if gone > 0 {
                    tracing::info!(gone, "queued LoRaWAN downlinks cleared");
                }
                self.load_downlinks(downlinks);
                if devices != self.store.len() {
                    tracing::info!(devices = self.store.len(), "LoRaWAN devices reloaded");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reloading LoRaWAN devices failed"),
            Err(e) => tracing::warn!(error = %e, "LoRaWAN reload task failed"),
        }
    }

    fn update_health(&mut self, now: Instant) {
        let state = if self.forwarders.alive_count(now) == 0
            && now.saturating_duration_since(self.start) >= self.config.forwarder_timeout
        {
            SourceState::Degraded("no forwarder connected".into())
        } else {
            SourceState::Running
        };
        if state != self.health {
            self.health = state.clone();
            self.ctx.health.set(state);
        }
    }
}

/// The reading of an application payload.
pub fn to_reading(r: &proto::Reading) -> Result<Reading, gatewayd_model::IdError> {
    let device = DeviceId::new(Transport::Lora, &r.dev_eui.to_string())?;
    let time_ms =
        r.rx.time
            .or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
    let raw = || Measurement {
        name: "payload".into(),
        unit: None,
        value: Some(Value::Data(r.payload.clone())),
        sum: None,
    };
    let mut extra = BTreeMap::new();
    let measurements = match &r.decoded {
        Decoded::Cayenne(m) if !m.is_empty() => m
            .iter()
            .map(|m| Measurement::float(m.name.clone(), m.unit, m.value))
            .collect(),
        Decoded::Error(e) => {
            extra.insert("decode_error".into(), e.to_string());
            vec![raw()]
        }
        _ => vec![raw()],
    };
    extra.insert("fcnt".into(), r.fcnt.to_string());
    extra.insert("fport".into(), r.fport.to_string());
    extra.insert("dr".into(), r.rx.data_rate.to_string());
    extra.insert("freq_hz".into(), r.rx.freq_hz.to_string());
    extra.insert("dev_addr".into(), r.dev_addr.to_string());
    extra.insert("profile".into(), r.profile.clone());
    if r.confirmed {
        extra.insert("confirmed".into(), "true".into());
    }
    extra.insert(
        "forwarders".into(),
        r.gateways
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut reading = Reading::new(device, Timestamp::from_millis(time_ms), measurements);
    reading.meta = Metadata {
        rssi: (r.rx.rssi != i16::MIN).then_some(f64::from(r.rx.rssi)),
        snr: Some(f64::from(r.rx.snr)),
        gateway_eui: Some(r.rx.gateway.to_string()),
        extra,
        ..reading.meta
    };
    Ok(reading)
}
