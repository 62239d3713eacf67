//! The sans-IO network server: events in, actions out.
//!
//! [`NetworkServer::handle`] takes an [`Event`] (a received PHYPayload with
//! its radio metadata, or a clock tick) and a [`DeviceStore`] to look
//! devices up in, and returns [`Action`]s: readings to publish, downlinks
//! to send, sessions to persist, rejections to log. It runs the steps
//! listed in the crate documentation (decode → dedup → identify → MIC →
//! fcnt → decrypt → MAC → reading → downlink).
//!
//! # Contract with the caller
//!
//! * Call `handle` with `Event::Tick` at least at
//!   [`NetworkServer::next_deadline_ms`] (or every ~50 ms): uplinks are
//!   processed when their dedup window closes.
//! * Apply every `Action::SessionChanged` to the store **before the next
//!   call** (within one call the server sees its own changes). Persist it
//!   durably before sending the downlinks of the same call if frame
//!   counters must survive a crash (FCntDown reuse would break the
//!   downlink MIC uniqueness).
//! * Send each `Action::Downlink` to its gateway for the given `tmst`
//!   (RX1); if the gateway refuses it (TX_ACK error such as TOO_LATE or
//!   COLLISION), the same `phy` may be sent in `fallback` (RX2).
//!
//! # Timing
//!
//! Downlink `tmst` = uplink `tmst` + RX1 delay (session RxDelay, 1 s by
//! default) in µs, wrapping at 2³²; RX2 at RX1 + 1 s. JoinAccept at + 5 s
//! (RX1) / + 6 s (RX2). RX2 becomes the primary window when RX1 is not
//! usable (the uplink frequency or data rate has no RX1 mapping, or the
//! payload does not fit RX1's data rate).
//!
//! # MAC commands
//!
//! LinkCheckReq is answered with the margin of the best reception (SNR
//! above its spreading factor's demodulation floor) and the number of
//! gateways in the dedup window; DeviceTimeReq with the GPS time of the
//! best reception's `time` (not answered when the gateway gave none and
//! the caller did not fill in the host clock). Every uplink that carried
//! MAC commands, or whose parsing stopped at an unknown one, gives an
//! `Action::MacCommands`. This server sends no MAC requests of its own
//! (no ADR, no channel plans): class A, default channels.
//!
//! # Device addresses
//!
//! Joined devices get a DevAddr in the NetID's type 0 range: NwkID (6 low
//! bits of the NetID) in bits 25..31 and a 25-bit address hashed from the
//! DevEUI and JoinNonce, retried (up to 8 times) while another device's
//! session uses it. A collision after that is still correct (the MIC tells
//! devices sharing an address apart), only slower.

use std::collections::{BTreeMap, HashMap};

use crate::cayenne::{self, CayenneError, Measurement};
use crate::dedup::{DedupConfig, Deduplicated, Deduplicator, PushOutcome, RxInfo};
use crate::downlink::{
    build_data_downlink, device_time_ans, link_check_margin, mac_payload_len, DataDown,
    DownlinkError, DownlinkQueue, QueueEvent, QueueFull, QueuedDownlink,
};
use crate::join::{handle_join_request, JoinError, JoinParams};
use crate::mac::{MacDown, MacParseStop, MacUp};
use crate::region::{DataRate, Direction, Region};
use crate::session::Session;
use crate::types::{Activation, DevAddr, Eui64};
use crate::uplink::{classify, process_data_uplink, Frame, Uplink, UplinkError};

/// The device profile whose payloads are decoded as Cayenne LPP.
pub const CAYENNE_PROFILE: &str = "cayenne";

/// One device as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// DevEUI.
    pub dev_eui: Eui64,
    /// Device profile (payload codec), e.g. `cayenne`.
    pub profile: String,
    /// Registration.
    pub activation: Activation,
    /// The current session: after a join (OTAA), or the stored state of an
    /// ABP device; `None` for an ABP device never heard (the server then
    /// starts one from the activation) or an OTAA device never joined.
    pub session: Option<Session>,
}

/// Device lookup, backed by SQLite in the I/O crate.
pub trait DeviceStore {
    /// The device with this DevEUI.
    fn by_dev_eui(&self, dev_eui: Eui64) -> Option<DeviceRecord>;
    /// Every device whose session has this DevAddr, and every ABP device
    /// registered with this DevAddr that has no session yet.
    fn sessions_by_dev_addr(&self, dev_addr: DevAddr) -> Vec<DeviceRecord>;
}

/// An in-memory [`DeviceStore`] (tests, fuzzing, small deployments).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    devices: BTreeMap<Eui64, DeviceRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Adds or replaces a device.
    pub fn insert(&mut self, record: DeviceRecord) {
        self.devices.insert(record.dev_eui, record);
    }

    /// A device.
    pub fn get(&self, dev_eui: Eui64) -> Option<&DeviceRecord> {
        self.devices.get(&dev_eui)
    }

    /// Applies the `SessionChanged` actions (others are ignored).
    pub fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            if let Action::SessionChanged { dev_eui, session } = a {
                if let Some(d) = self.devices.get_mut(dev_eui) {
                    d.session = Some(session.clone());
                }
            }
        }
    }
}

impl DeviceStore for MemoryStore {
    fn by_dev_eui(&self, dev_eui: Eui64) -> Option<DeviceRecord> {
        self.devices.get(&dev_eui).cloned()
    }

    fn sessions_by_dev_addr(&self, dev_addr: DevAddr) -> Vec<DeviceRecord> {
        self.devices
            .values()
            .filter(|d| record_dev_addr(d) == Some(dev_addr))
            .cloned()
            .collect()
    }
}

/// The DevAddr a record answers to: its session's, else its ABP address.
fn record_dev_addr(d: &DeviceRecord) -> Option<DevAddr> {
    match (&d.session, &d.activation) {
        (Some(s), _) => Some(DevAddr(s.dev_addr)),
        (None, Activation::Abp { dev_addr, .. }) => Some(*dev_addr),
        (None, Activation::Otaa { .. }) => None,
    }
}

/// Network server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The region of every gateway.
    pub region: Region,
    /// NetID (24 bits, type 0: the 3 top bits zero). Private networks use
    /// 0x000000 or 0x000001.
    pub net_id: u32,
    /// RX1DROffset given to joining devices.
    pub rx1_dr_offset: u8,
    /// RX2 data rate given to joining devices (`None`: region default).
    pub rx2_dr: Option<u8>,
    /// RxDelay (seconds, 1..=15) given to joining devices.
    pub rx1_delay_s: u8,
    /// Deduplication.
    pub dedup: DedupConfig,
    /// Downlink queue capacity per device.
    pub queue_capacity: usize,
    /// Transmissions of a confirmed downlink before it is dropped.
    pub max_confirmed_attempts: u8,
}

impl ServerConfig {
    /// Defaults for a region: NetID 0, RX1DROffset 0, default RX2, RxDelay
    /// 1 s, 200 ms dedup window, 16 queued downlinks, 3 attempts.
    pub fn new(region: Region) -> ServerConfig {
        ServerConfig {
            region,
            net_id: 0,
            rx1_dr_offset: 0,
            rx2_dr: None,
            rx1_delay_s: 1,
            dedup: DedupConfig::default(),
            queue_capacity: DownlinkQueue::DEFAULT_CAPACITY,
            max_confirmed_attempts: DownlinkQueue::DEFAULT_MAX_ATTEMPTS,
        }
    }

    fn rx2_dr(&self) -> u8 {
        self.rx2_dr.unwrap_or(self.region.rx2().1)
    }
}

/// A [`ServerConfig`] value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network server configuration: {0}")]
pub struct ConfigError(pub &'static str);

/// An input event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A PHYPayload received by a forwarder.
    Uplink {
        /// Monotonic milliseconds now.
        now_ms: u64,
        /// Radio metadata.
        rx: RxInfo,
        /// The PHYPayload.
        phy: Vec<u8>,
    },
    /// Time passed.
    Tick {
        /// Monotonic milliseconds now.
        now_ms: u64,
    },
}

/// How an application payload was decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// The device profile has no decoder here: the raw payload only.
    Raw,
    /// Cayenne LPP measurements.
    Cayenne(Vec<Measurement>),
    /// The profile is `cayenne` but the payload is not valid LPP.
    Error(CayenneError),
}

/// An application payload from a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// DevEUI.
    pub dev_eui: Eui64,
    /// DevAddr.
    pub dev_addr: DevAddr,
    /// Device profile.
    pub profile: String,
    /// 32-bit uplink counter.
    pub fcnt: u32,
    /// FPort (1..=223).
    pub fport: u8,
    /// Decrypted payload.
    pub payload: Vec<u8>,
    /// Decoded payload.
    pub decoded: Decoded,
    /// Sent as ConfirmedDataUp.
    pub confirmed: bool,
    /// The best reception.
    pub rx: RxInfo,
    /// Every forwarder (gateway) that heard it, one entry each, in the
    /// order their copies arrived.
    pub gateways: Vec<Eui64>,
}

/// Which class A receive window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxWindow {
    /// First window (RX1 delay after the uplink).
    Rx1,
    /// Second window (1 s later, fixed frequency and data rate).
    Rx2,
}

/// When and how to transmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSlot {
    /// The window.
    pub window: RxWindow,
    /// Concentrator time to transmit at (µs, wrapping).
    pub tmst: u32,
    /// Frequency in Hz.
    pub freq_hz: u32,
    /// Region data rate number.
    pub dr: u8,
    /// Its modulation (`datr`).
    pub data_rate: DataRate,
    /// TX power in dBm.
    pub power_dbm: i8,
}

/// A downlink to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    /// The device it is for.
    pub dev_eui: Eui64,
    /// The gateway to send it through (best reception).
    pub gateway: Eui64,
    /// The PHYPayload.
    pub phy: Vec<u8>,
    /// Primary window.
    pub slot: TxSlot,
    /// RX2, when the primary is RX1 and the frame also fits RX2.
    pub fallback: Option<TxSlot>,
}

/// Why an uplink was not acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Not a frame this server handles (decode step).
    #[error("decode: {0}")]
    Decode(UplinkError),
    /// Too many open dedup windows.
    #[error("dedup: too many uplinks in flight")]
    DedupFull,
    /// JoinRequest from an unregistered DevEUI.
    #[error("identify: unknown DevEUI")]
    UnknownDevEui,
    /// JoinRequest from an ABP device.
    #[error("identify: device is ABP, not OTAA")]
    NotOtaa,
    /// Data uplink for a DevAddr no session has.
    #[error("identify: unknown DevAddr")]
    UnknownDevAddr,
    /// The JoinRequest was refused.
    #[error("join: {0}")]
    Join(JoinError),
    /// The data uplink was refused (MIC, counters…).
    #[error("uplink: {0}")]
    Uplink(UplinkError),
    /// FPort 224..=255 (test protocol, RFU): no reading.
    #[error("FPort {0} is reserved")]
    ReservedFport(u8),
    /// A downlink was due but could not be built or placed.
    #[error("downlink: {0}")]
    Downlink(DownlinkError),
    /// A downlink was due but neither RX1 nor RX2 can carry it.
    #[error("downlink: no usable receive window")]
    NoDownlinkWindow,
}

/// An output of the network server.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// An application payload.
    Reading(Reading),
    /// A frame to transmit.
    Downlink(Downlink),
    /// A session to persist (join, counters).
    SessionChanged {
        /// DevEUI.
        dev_eui: Eui64,
        /// The new session.
        session: Session,
    },
    /// A device joined.
    Joined {
        /// DevEUI.
        dev_eui: Eui64,
        /// Its new DevAddr.
        dev_addr: DevAddr,
    },
    /// MAC commands a device sent (answered ones included), and whether
    /// parsing stopped early.
    MacCommands {
        /// DevEUI.
        dev_eui: Eui64,
        /// The commands.
        commands: Vec<MacUp>,
        /// Why parsing stopped early, if it did.
        stop: Option<MacParseStop>,
    },
    /// A queued downlink left the queue: sent (unconfirmed), acknowledged
    /// or dropped (confirmed).
    Queue {
        /// DevEUI.
        dev_eui: Eui64,
        /// What happened.
        event: QueueEvent,
    },
    /// An uplink was not acted on.
    Rejected {
        /// Why.
        reason: Reject,
        /// The device, when identified.
        dev_eui: Option<Eui64>,
        /// The frame's DevAddr, for data uplinks.
        dev_addr: Option<DevAddr>,
    },
}

/// Why [`NetworkServer::enqueue`] refused a downlink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// FPort outside 1..=223.
    #[error("FPort {0} is not an application port (1..=223)")]
    InvalidFport(u8),
    /// Larger than any downlink data rate of the region carries.
    #[error("payload of {size} bytes exceeds the region's maximum {max}")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The region's largest FRMPayload.
        max: usize,
    },
    /// The device's queue is full.
    #[error(transparent)]
    Full(#[from] QueueFull),
}

/// The network server state: dedup windows and downlink queues. Sessions
/// live in the [`DeviceStore`].
pub struct NetworkServer {
    config: ServerConfig,
    dedup: Deduplicator,
    queues: HashMap<Eui64, DownlinkQueue>,
}

/// What a downlink should carry.
#[derive(Clone, Copy)]
struct Wanted<'a> {
    /// MAC answers.
    answers: &'a [MacDown],
    /// ACK a confirmed uplink.
    ack: bool,
    /// The queue's next item, sent if it fits a window.
    queued: Option<&'a QueuedDownlink>,
    /// A downlink is due even without the queued item.
    due: bool,
}

/// Records changed during one `handle` call, seen by later frames of it.
type Overlay = HashMap<Eui64, DeviceRecord>;

fn fnv1a(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811C_9DC5;
    for p in parts {
        for &b in *p {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

impl NetworkServer {
    /// A server; checks the configuration.
    pub fn new(config: ServerConfig) -> Result<NetworkServer, ConfigError> {
        if config.net_id > 0xFF_FFFF || config.net_id >> 21 != 0 {
            return Err(ConfigError(
                "net_id must be a 24-bit type 0 NetID (top 3 bits zero)",
            ));
        }
        if config.rx1_dr_offset > config.region.max_rx1_dr_offset() {
            return Err(ConfigError("rx1_dr_offset too large for the region"));
        }
        let rx2 = config.rx2_dr();
        let rx2_is_downlink_lora = config.region.data_rate(rx2).is_some_and(|d| {
            config
                .region
                .sf_bw_to_dr(d.sf, d.bw_khz, Direction::Downlink)
                == Some(rx2)
        });
        if !rx2_is_downlink_lora {
            return Err(ConfigError(
                "rx2_dr is not a LoRa downlink data rate of the region",
            ));
        }
        if !(1..=15).contains(&config.rx1_delay_s) {
            return Err(ConfigError("rx1_delay_s must be 1..=15"));
        }
        if config.dedup.window_ms >= 1_000 {
            return Err(ConfigError(
                "dedup window must be shorter than the 1 s RX1 delay",
            ));
        }
        Ok(NetworkServer {
            dedup: Deduplicator::new(config.dedup),
            config,
            queues: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// When the next dedup window closes (`now_ms` value): tick then.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.dedup.next_deadline()
    }

    /// Queued downlinks for a device (pending confirmed one included).
    pub fn queue_len(&self, dev_eui: Eui64) -> usize {
        self.queues.get(&dev_eui).map_or(0, DownlinkQueue::len)
    }

    /// Whether the downlink with this id is queued (or pending) for a device.
    pub fn is_queued(&self, dev_eui: Eui64, id: u64) -> bool {
        self.queues.get(&dev_eui).is_some_and(|q| q.contains(id))
    }

    /// Keeps only the queued downlinks `keep(dev_eui, id)` accepts (e.g.
    /// those still in the caller's database); returns how many went.
    pub fn retain_queued(&mut self, mut keep: impl FnMut(Eui64, u64) -> bool) -> usize {
        let mut gone = 0;
        self.queues.retain(|eui, q| {
            gone += q.retain(|id| keep(*eui, id));
            !q.is_empty()
        });
        gone
    }

    /// Queues an application downlink for a device's next uplink.
    pub fn enqueue(&mut self, dev_eui: Eui64, item: QueuedDownlink) -> Result<(), EnqueueError> {
        if item.fport == 0 || item.fport >= 224 {
            return Err(EnqueueError::InvalidFport(item.fport));
        }
        let max = self.config.region.max_downlink_payload();
        if item.payload.len() > max {
            return Err(EnqueueError::TooLarge {
                size: item.payload.len(),
                max,
            });
        }
        let (cap, attempts) = (
            self.config.queue_capacity,
            self.config.max_confirmed_attempts,
        );
        self.queues
            .entry(dev_eui)
            .or_insert_with(|| DownlinkQueue::new(cap, attempts))
            .push(item)?;
        Ok(())
    }

    /// Handles one event. See the module documentation for the contract.
    pub fn handle<S: DeviceStore + ?Sized>(&mut self, store: &S, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let now_ms = match event {
            Event::Tick { now_ms } => now_ms,
            Event::Uplink { now_ms, rx, phy } => {
                // Step 1, decode: refuse what is not a frame we handle
                // before it takes a dedup slot.
                match classify(&phy) {
                    Err(e) => out.push(Action::Rejected {
                        reason: Reject::Decode(e),
                        dev_eui: None,
                        dev_addr: None,
                    }),
                    Ok(frame) => {
                        // Step 2, dedup.
                        if self.dedup.push(now_ms, &phy, rx) == PushOutcome::Full {
                            let (dev_eui, dev_addr) = match frame {
                                Frame::JoinRequest { dev_eui, .. } => (Some(dev_eui), None),
                                Frame::DataUp { dev_addr, .. } => (None, Some(dev_addr)),
                            };
                            out.push(Action::Rejected {
                                reason: Reject::DedupFull,
                                dev_eui,
                                dev_addr,
                            });
                        }
                    }
                }
                now_ms
            }
        };
        let mut overlay = Overlay::new();
        for window in self.dedup.poll(now_ms) {
            self.process(store, &mut overlay, &window, &mut out);
        }
        out
    }

    fn lookup_eui<S: DeviceStore + ?Sized>(
        store: &S,
        overlay: &Overlay,
        dev_eui: Eui64,
    ) -> Option<DeviceRecord> {
        overlay
            .get(&dev_eui)
            .cloned()
            .or_else(|| store.by_dev_eui(dev_eui))
    }

    fn lookup_addr<S: DeviceStore + ?Sized>(
        store: &S,
        overlay: &Overlay,
        dev_addr: DevAddr,
    ) -> Vec<DeviceRecord> {
        let mut v: Vec<DeviceRecord> = store
            .sessions_by_dev_addr(dev_addr)
            .into_iter()
            .map(|d| overlay.get(&d.dev_eui).cloned().unwrap_or(d))
            .filter(|d| record_dev_addr(d) == Some(dev_addr))
            .collect();
        for d in overlay.values() {
            if record_dev_addr(d) == Some(dev_addr) && !v.iter().any(|x| x.dev_eui == d.dev_eui) {
                v.push(d.clone());
            }
        }
        v
    }

    fn process<S: DeviceStore + ?Sized>(
        &mut self,
        store: &S,
        overlay: &mut Overlay,
        window: &Deduplicated,
        out: &mut Vec<Action>,
    ) {
        match classify(&window.phy) {
            Ok(Frame::JoinRequest { dev_eui, .. }) => {
                self.process_join(store, overlay, window, dev_eui, out)
            }
            Ok(Frame::DataUp { dev_addr, .. }) => {
                self.process_data(store, overlay, window, dev_addr, out)
            }
            // Classified before dedup; unreachable in practice.
            Err(e) => out.push(Action::Rejected {
                reason: Reject::Decode(e),
                dev_eui: None,
                dev_addr: None,
            }),
        }
    }

    fn allocate_dev_addr<S: DeviceStore + ?Sized>(
        &self,
        store: &S,
        overlay: &Overlay,
        dev_eui: Eui64,
        join_nonce: u32,
    ) -> DevAddr {
        let prefix = (self.config.net_id & 0x3F) << 25;
        let mut addr = DevAddr(prefix);
        for attempt in 0u8..8 {
            let h = fnv1a(&[&dev_eui.0, &join_nonce.to_le_bytes(), &[attempt]]);
            addr = DevAddr(prefix | (h & 0x01FF_FFFF));
            let taken = Self::lookup_addr(store, overlay, addr)
                .iter()
                .any(|d| d.dev_eui != dev_eui);
            if !taken {
                break;
            }
        }
        addr
    }

    /// Join: identify → MIC → DevNonce → keys → JoinAccept at +5 s / +6 s.
    fn process_join<S: DeviceStore + ?Sized>(
        &mut self,
        store: &S,
        overlay: &mut Overlay,
        window: &Deduplicated,
        dev_eui: Eui64,
        out: &mut Vec<Action>,
    ) {
        let reject = |reason| Action::Rejected {
            reason,
            dev_eui: Some(dev_eui),
            dev_addr: None,
        };
        let Some(mut record) = Self::lookup_eui(store, overlay, dev_eui) else {
            out.push(reject(Reject::UnknownDevEui));
            return;
        };
        let Activation::Otaa { join_eui, app_key } = &record.activation else {
            out.push(reject(Reject::NotOtaa));
            return;
        };
        let (used, last_nonce) = match &record.session {
            Some(s) => (s.used_dev_nonces.clone(), s.join_nonce),
            None => (Default::default(), 0),
        };
        let join_nonce = (last_nonce + 1) & 0xFF_FFFF;
        let params = JoinParams {
            dev_addr: self.allocate_dev_addr(store, overlay, dev_eui, join_nonce),
            join_nonce,
            net_id: self.config.net_id,
            rx1_dr_offset: self.config.rx1_dr_offset,
            rx2_dr: self.config.rx2_dr(),
            rx1_delay_s: self.config.rx1_delay_s,
        };
        let joined = match handle_join_request(&window.phy, *join_eui, &app_key.0, &used, &params) {
            Ok(j) => j,
            Err(e) => {
                out.push(reject(Reject::Join(e)));
                return;
            }
        };
        let region = self.config.region;
        let best = window.best();
        let (rx2_freq, rx2_dr) = region.rx2();
        let rx1 = self.slot_rx1(best, region.join_accept_delay1().as_micros() as u32, 0);
        let rx2 = self.slot(
            RxWindow::Rx2,
            best,
            region.join_accept_delay2().as_micros() as u32,
            rx2_freq,
            rx2_dr,
        );
        record.session = Some(joined.session.clone());
        overlay.insert(dev_eui, record);
        out.push(Action::SessionChanged {
            dev_eui,
            session: joined.session,
        });
        out.push(Action::Joined {
            dev_eui,
            dev_addr: params.dev_addr,
        });
        let (slot, fallback) = match (rx1, rx2) {
            (Some(a), b) => (a, b),
            (None, Some(b)) => (b, None),
            (None, None) => {
                out.push(reject(Reject::NoDownlinkWindow));
                return;
            }
        };
        out.push(Action::Downlink(Downlink {
            dev_eui,
            gateway: best.gateway,
            phy: joined.join_accept,
            slot,
            fallback,
        }));
    }

    fn slot(
        &self,
        window: RxWindow,
        rx: &RxInfo,
        delay_us: u32,
        freq_hz: u32,
        dr: u8,
    ) -> Option<TxSlot> {
        let region = self.config.region;
        Some(TxSlot {
            window,
            tmst: rx.tmst.wrapping_add(delay_us),
            freq_hz,
            dr,
            data_rate: region.data_rate(dr)?,
            power_dbm: region.downlink_tx_power_dbm(freq_hz),
        })
    }

    fn slot_rx1(&self, rx: &RxInfo, delay_us: u32, rx1_dr_offset: u8) -> Option<TxSlot> {
        let region = self.config.region;
        let up_dr = region.sf_bw_to_dr(rx.data_rate.sf, rx.data_rate.bw_khz, Direction::Uplink)?;
        let (freq, dr) = region.rx1(rx.freq_hz, up_dr, rx1_dr_offset)?;
        self.slot(RxWindow::Rx1, rx, delay_us, freq, dr)
    }

    /// Data: identify → MIC → fcnt → decrypt → MAC → reading → downlink.
    fn process_data<S: DeviceStore + ?Sized>(
        &mut self,
        store: &S,
        overlay: &mut Overlay,
        window: &Deduplicated,
        dev_addr: DevAddr,
        out: &mut Vec<Action>,
    ) {
        let candidates = Self::lookup_addr(store, overlay, dev_addr);
        if candidates.is_empty() {
            out.push(Action::Rejected {
                reason: Reject::UnknownDevAddr,
                dev_eui: None,
                dev_addr: Some(dev_addr),
            });
            return;
        }
        let region = self.config.region;
        let single = candidates.len() == 1;
        let mut authenticated_error: Option<(Eui64, UplinkError)> = None;
        let mut other_error: Option<(Eui64, UplinkError)> = None;
        let mut accepted = None;
        for record in candidates {
            let mut session = match (&record.session, &record.activation) {
                (Some(s), _) => s.clone(),
                (
                    None,
                    Activation::Abp {
                        dev_addr,
                        nwk_s_key,
                        app_s_key,
                    },
                ) => Session::abp(*dev_addr, nwk_s_key.0, app_s_key.0, region),
                (None, Activation::Otaa { .. }) => continue,
            };
            match process_data_uplink(&mut session, &window.phy) {
                Ok(up) => {
                    accepted = Some((record, session, up));
                    break;
                }
                Err(e @ (UplinkError::Mic | UplinkError::WrongDevAddr { .. })) => {
                    other_error.get_or_insert((record.dev_eui, e));
                }
                Err(e) => {
                    authenticated_error.get_or_insert((record.dev_eui, e));
                }
            }
        }
        let Some((record, session, up)) = accepted else {
            let (dev_eui, e) = match (authenticated_error, other_error) {
                (Some((eui, e)), _) => (Some(eui), e),
                (None, Some((eui, e))) => (single.then_some(eui), e),
                (None, None) => (None, UplinkError::Mic),
            };
            out.push(Action::Rejected {
                reason: Reject::Uplink(e),
                dev_eui,
                dev_addr: Some(dev_addr),
            });
            return;
        };
        self.accept_data(overlay, window, record, session, up, out);
    }

    fn accept_data(
        &mut self,
        overlay: &mut Overlay,
        window: &Deduplicated,
        mut record: DeviceRecord,
        mut session: Session,
        up: Uplink,
        out: &mut Vec<Action>,
    ) {
        let dev_eui = record.dev_eui;
        let dev_addr = up.dev_addr;
        let best = window.best().clone();
        let original = record.session.clone();

        // Queue: the ACK bit resolves a pending confirmed downlink (not for
        // a retransmission: its ACK bit was already counted).
        if !up.retransmission {
            if let Some(q) = self.queues.get_mut(&dev_eui) {
                if let Some(event) = q.on_uplink(up.ack_bit) {
                    out.push(Action::Queue { dev_eui, event });
                }
            }
        }

        // MAC.
        let mut answers = Vec::new();
        for cmd in &up.mac_commands {
            match cmd {
                MacUp::LinkCheckReq => {
                    let margin = link_check_margin(best.snr, best.data_rate.sf).unwrap_or(0);
                    let gw_cnt = u8::try_from(window.receptions.len()).unwrap_or(u8::MAX);
                    answers.push(MacDown::LinkCheckAns { margin, gw_cnt });
                }
                MacUp::DeviceTimeReq => {
                    if let Some(ans) = best.time.and_then(device_time_ans) {
                        answers.push(ans);
                    }
                }
                _ => {}
            }
        }
        if !up.mac_commands.is_empty() || up.mac_stop.is_some() {
            out.push(Action::MacCommands {
                dev_eui,
                commands: up.mac_commands.clone(),
                stop: up.mac_stop,
            });
        }

        // Reading.
        if !up.retransmission {
            match up.fport {
                Some(fport @ 1..=223) => {
                    let decoded = if record.profile == CAYENNE_PROFILE {
                        match cayenne::decode(&up.payload) {
                            Ok(m) => Decoded::Cayenne(m),
                            Err(e) => Decoded::Error(e),
                        }
                    } else {
                        Decoded::Raw
                    };
                    out.push(Action::Reading(Reading {
                        dev_eui,
                        dev_addr,
                        profile: record.profile.clone(),
                        fcnt: up.fcnt32,
                        fport,
                        payload: up.payload.clone(),
                        decoded,
                        confirmed: up.confirmed,
                        rx: best.clone(),
                        gateways: window.receptions.iter().map(|r| r.gateway).collect(),
                    }));
                }
                Some(fport @ 224..=255) => out.push(Action::Rejected {
                    reason: Reject::ReservedFport(fport),
                    dev_eui: Some(dev_eui),
                    dev_addr: Some(dev_addr),
                }),
                _ => {}
            }
        }

        // Downlink: due for an ACK, MAC answers or an ADRACKReq; a queued
        // item rides along if it fits, and alone only if it fits.
        let queued = self.queues.get(&dev_eui).and_then(|q| q.peek().cloned());
        let due = up.confirmed || !answers.is_empty() || up.adr_ack_req;
        if due || queued.is_some() {
            let wanted = Wanted {
                answers: &answers,
                ack: up.confirmed,
                queued: queued.as_ref(),
                due,
            };
            let built = self.build_downlink(dev_eui, &mut session, &best, &wanted);
            match built {
                Ok(Some((downlink, sent_item))) => {
                    if sent_item {
                        if let Some(event) = self
                            .queues
                            .get_mut(&dev_eui)
                            .and_then(|q| q.mark_sent(session.fcnt_down.wrapping_sub(1)))
                        {
                            out.push(Action::Queue { dev_eui, event });
                        }
                    }
                    out.push(Action::Downlink(downlink));
                }
                Ok(None) => {}
                Err(reason) => out.push(Action::Rejected {
                    reason,
                    dev_eui: Some(dev_eui),
                    dev_addr: Some(dev_addr),
                }),
            }
        }

        if original.as_ref() != Some(&session) {
            out.push(Action::SessionChanged {
                dev_eui,
                session: session.clone(),
            });
            record.session = Some(session);
            overlay.insert(dev_eui, record);
        }
    }

    /// Picks the window and builds the frame. Returns the downlink and
    /// whether the queued item went in; `None` when the item fits no
    /// window and nothing else is `due`.
    fn build_downlink(
        &self,
        dev_eui: Eui64,
        session: &mut Session,
        best: &RxInfo,
        wanted: &Wanted<'_>,
    ) -> Result<Option<(Downlink, bool)>, Reject> {
        let Wanted {
            answers,
            ack,
            queued,
            due,
        } = *wanted;
        let region = self.config.region;
        let rx1 = self.slot_rx1(best, session.rx1_delay_us(), session.rx1_dr_offset);
        let rx2_delay = session.rx1_delay_us() + 1_000_000;
        let rx2 = self.slot(
            RxWindow::Rx2,
            best,
            rx2_delay,
            region.rx2().0,
            session.rx2_dr,
        );
        let fits = |slot: &TxSlot, frame: &DataDown<'_>| {
            region
                .max_payload(slot.dr)
                .is_some_and(|mp| mac_payload_len(frame) <= usize::from(mp.m))
        };
        let choose = |frame: &DataDown<'_>| -> Option<TxSlot> {
            [rx1, rx2].into_iter().flatten().find(|s| fits(s, frame))
        };

        let more_after_item = self
            .queues
            .get(&dev_eui)
            .is_some_and(DownlinkQueue::more_after_next);

        let mut frame = DataDown {
            confirmed: false,
            ack,
            f_pending: false,
            mac: answers,
            app: None,
        };
        let mut sent_item = false;
        let mut slot = None;
        if let Some(item) = queued {
            let with_item = DataDown {
                confirmed: item.confirmed,
                app: Some((item.fport, &item.payload)),
                ..frame
            };
            if let Some(s) = choose(&with_item) {
                frame = with_item;
                slot = Some(s);
                sent_item = true;
            }
        }
        let slot = match slot {
            Some(s) => s,
            None if !due => return Ok(None),
            None => {
                // Without the item (it stays queued): tell the device more
                // is pending so it sends an uplink soon.
                frame.f_pending = queued.is_some();
                choose(&frame).ok_or(Reject::NoDownlinkWindow)?
            }
        };
        if sent_item {
            frame.f_pending = more_after_item;
        }
        let max = region
            .max_payload(slot.dr)
            .ok_or(Reject::NoDownlinkWindow)?;
        let phy = build_data_downlink(session, &frame, max).map_err(Reject::Downlink)?;
        let fallback = match (slot.window, rx2) {
            (RxWindow::Rx1, Some(r2)) if fits(&r2, &frame) => Some(r2),
            _ => None,
        };
        Ok(Some((
            Downlink {
                dev_eui,
                gateway: best.gateway,
                phy,
                slot,
                fallback,
            },
            sent_item,
        )))
    }
}
