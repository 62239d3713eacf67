//! Deduplication of one uplink heard by several forwarders.
//!
//! The key is the PHYPayload itself (the exact bytes, no hash: no
//! collisions to reason about). The first copy opens a window of
//! [`DedupConfig::window_ms`]; later copies within it add their reception.
//! [`Deduplicator::poll`] returns every window whose time is up, with all
//! receptions and the index of the best one (highest SNR, then highest
//! RSSI, then earliest) for the downlink path.
//!
//! Bounds: at most [`DedupConfig::max_open`] open windows (a new payload
//! beyond that is refused, [`PushOutcome::Full`]) and at most
//! [`DedupConfig::max_receptions`] receptions per window (one per gateway:
//! a second copy from the same gateway replaces the first if better).
//! Copies arriving after their window closed, within
//! [`DedupConfig::late_ms`], are recognised and dropped
//! ([`PushOutcome::Late`]) instead of being processed as a new uplink.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::region::DataRate;
use crate::types::Eui64;

/// Radio metadata of one reception, as the packet forwarder reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RxInfo {
    /// The forwarder (gateway) EUI.
    pub gateway: Eui64,
    /// Concentrator counter at the end of the reception, µs, wrapping.
    pub tmst: u32,
    /// Centre frequency in Hz.
    pub freq_hz: u32,
    /// LoRa modulation (`datr`).
    pub data_rate: DataRate,
    /// RSSI in dBm.
    pub rssi: i16,
    /// SNR in dB.
    pub snr: f32,
    /// UNIX time of the reception (GPS-synchronised if the gateway has it,
    /// else the host's clock as filled in by the caller).
    pub time: Option<Duration>,
}

/// Deduplication settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long a window stays open after the first copy (ms).
    pub window_ms: u64,
    /// Most windows open at once.
    pub max_open: usize,
    /// Most receptions kept per window.
    pub max_receptions: usize,
    /// How long a closed window's payload is remembered to drop late
    /// copies (ms); 0 disables.
    pub late_ms: u64,
}

impl Default for DedupConfig {
    fn default() -> DedupConfig {
        DedupConfig {
            window_ms: 200,
            max_open: 256,
            max_receptions: 16,
            late_ms: 2_000,
        }
    }
}

/// What [`Deduplicator::push`] did with a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// First copy: a window opened.
    Opened,
    /// Added to an open window.
    Added,
    /// Same gateway again within the window: kept the better of the two.
    SameGateway,
    /// The window already holds `max_receptions`: ignored.
    WindowFull,
    /// `max_open` windows are open: the payload is refused.
    Full,
    /// Its window already closed: dropped.
    Late,
}

/// A closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct Deduplicated {
    /// The PHYPayload.
    pub phy: Vec<u8>,
    /// Every reception, in arrival order (one per gateway).
    pub receptions: Vec<RxInfo>,
    /// Index of the best reception in `receptions`.
    pub best: usize,
    /// `now_ms` of the first copy.
    pub first_seen_ms: u64,
}

impl Deduplicated {
    /// The best reception (highest SNR, then RSSI).
    pub fn best(&self) -> &RxInfo {
        &self.receptions[self.best]
    }
}

struct Window {
    receptions: Vec<RxInfo>,
    first_seen_ms: u64,
}

/// `a` is a better downlink path than `b`.
fn better(a: &RxInfo, b: &RxInfo) -> bool {
    let (sa, sb) = (finite(a.snr), finite(b.snr));
    sa > sb || (sa == sb && a.rssi > b.rssi)
}

fn finite(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// The sans-IO deduplicator. Feed copies with [`Deduplicator::push`],
/// collect closed windows with [`Deduplicator::poll`]; `now_ms` must not
/// go backwards (a smaller value is treated as the largest seen so far).
pub struct Deduplicator {
    config: DedupConfig,
    open: HashMap<Box<[u8]>, Window>,
    /// Open windows by deadline (deadlines are monotonic: fixed window).
    order: VecDeque<(u64, Box<[u8]>)>,
    /// Recently closed payloads and when to forget them.
    closed: HashMap<Box<[u8]>, u64>,
    closed_order: VecDeque<(u64, Box<[u8]>)>,
    now_ms: u64,
}

impl Deduplicator {
    /// A deduplicator with these settings.
    pub fn new(config: DedupConfig) -> Deduplicator {
        Deduplicator {
            config,
            open: HashMap::new(),
            order: VecDeque::new(),
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
            now_ms: 0,
        }
    }

    /// Open windows.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// When the earliest open window closes (`now_ms` value), if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.order.front().map(|(d, _)| *d)
    }

    fn advance(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        while let Some((expiry, _)) = self.closed_order.front() {
            if *expiry > self.now_ms {
                break;
            }
            if let Some((expiry, key)) = self.closed_order.pop_front() {
                if self.closed.get(&key) == Some(&expiry) {
                    self.closed.remove(&key);
                }
            }
        }
        self.now_ms
    }

    /// Adds one received copy.
    pub fn push(&mut self, now_ms: u64, phy: &[u8], rx: RxInfo) -> PushOutcome {
        let now = self.advance(now_ms);
        if let Some(w) = self.open.get_mut(phy) {
            if let Some(existing) = w.receptions.iter_mut().find(|r| r.gateway == rx.gateway) {
                if better(&rx, existing) {
                    *existing = rx;
                }
                return PushOutcome::SameGateway;
            }
            if w.receptions.len() >= self.config.max_receptions {
                return PushOutcome::WindowFull;
            }
            w.receptions.push(rx);
            return PushOutcome::Added;
        }
        if self.closed.contains_key(phy) {
            return PushOutcome::Late;
        }
        if self.open.len() >= self.config.max_open || self.config.max_receptions == 0 {
            return PushOutcome::Full;
        }
        let key: Box<[u8]> = phy.into();
        self.order
            .push_back((now.saturating_add(self.config.window_ms), key.clone()));
        self.open.insert(
            key,
            Window {
                receptions: vec![rx],
                first_seen_ms: now,
            },
        );
        PushOutcome::Opened
    }

    /// Closes and returns every window whose deadline is at or before
    /// `now_ms`, oldest first.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Deduplicated> {
        let now = self.advance(now_ms);
        let mut out = Vec::new();
        while let Some((deadline, _)) = self.order.front() {
            if *deadline > now {
                break;
            }
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            let Some(w) = self.open.remove(&key) else {
                continue;
            };
            let mut best = 0;
            for (i, r) in w.receptions.iter().enumerate() {
                if better(r, &w.receptions[best]) {
                    best = i;
                }
            }
            if self.config.late_ms > 0 && self.closed.len() < self.config.max_open.max(1) * 4 {
                let expiry = now.saturating_add(self.config.late_ms);
                self.closed.insert(key.clone(), expiry);
                self.closed_order.push_back((expiry, key.clone()));
            }
            out.push(Deduplicated {
                phy: key.into_vec(),
                receptions: w.receptions,
                best,
                first_seen_ms: w.first_seen_ms,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(gw: u64, rssi: i16, snr: f32) -> RxInfo {
        RxInfo {
            gateway: Eui64::from(gw),
            tmst: 1000 + gw as u32,
            freq_hz: 868_100_000,
            data_rate: DataRate { sf: 7, bw_khz: 125 },
            rssi,
            snr,
            time: None,
        }
    }

    #[test]
    fn three_forwarders_give_one_result_with_the_best_reception() {
        let mut d = Deduplicator::new(DedupConfig::default());
        assert_eq!(
            d.push(1000, b"frame", rx(1, -110, 2.0)),
            PushOutcome::Opened
        );
        assert_eq!(d.push(1050, b"frame", rx(2, -90, 7.5)), PushOutcome::Added);
        assert_eq!(d.push(1100, b"frame", rx(3, -80, 7.5)), PushOutcome::Added);
        assert!(d.poll(1199).is_empty(), "window still open");
        assert_eq!(d.next_deadline(), Some(1200));
        let out = d.poll(1200);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].receptions.len(), 3);
        // equal SNR: higher RSSI wins
        assert_eq!(out[0].best().gateway, Eui64::from(3));
        assert_eq!(out[0].first_seen_ms, 1000);
        assert_eq!(d.open_windows(), 0);
    }

    #[test]
    fn different_payloads_get_different_windows_closing_in_order() {
        let mut d = Deduplicator::new(DedupConfig::default());
        d.push(0, b"a", rx(1, -100, 1.0));
        d.push(100, b"b", rx(1, -100, 1.0));
        let out = d.poll(250);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].phy, b"a");
        let out = d.poll(300);
        assert_eq!(out[0].phy, b"b");
    }

    #[test]
    fn late_copies_are_dropped_then_forgotten() {
        let mut d = Deduplicator::new(DedupConfig::default());
        d.push(0, b"a", rx(1, -100, 1.0));
        assert_eq!(d.poll(200).len(), 1);
        assert_eq!(d.push(500, b"a", rx(2, -100, 1.0)), PushOutcome::Late);
        assert_eq!(d.push(2_300, b"a", rx(2, -100, 1.0)), PushOutcome::Opened);
    }

    #[test]
    fn same_gateway_twice_keeps_the_better_copy() {
        let mut d = Deduplicator::new(DedupConfig::default());
        d.push(0, b"a", rx(1, -100, 1.0));
        assert_eq!(d.push(10, b"a", rx(1, -90, 3.0)), PushOutcome::SameGateway);
        assert_eq!(
            d.push(20, b"a", rx(1, -120, -3.0)),
            PushOutcome::SameGateway
        );
        let out = d.poll(1000);
        assert_eq!(out[0].receptions.len(), 1);
        assert_eq!(out[0].best().rssi, -90);
    }

    #[test]
    fn open_windows_and_receptions_are_bounded() {
        let cfg = DedupConfig {
            max_open: 2,
            max_receptions: 2,
            ..DedupConfig::default()
        };
        let mut d = Deduplicator::new(cfg);
        assert_eq!(d.push(0, b"a", rx(1, -100, 1.0)), PushOutcome::Opened);
        assert_eq!(d.push(0, b"b", rx(1, -100, 1.0)), PushOutcome::Opened);
        assert_eq!(d.push(0, b"c", rx(1, -100, 1.0)), PushOutcome::Full);
        assert_eq!(d.push(0, b"a", rx(2, -100, 1.0)), PushOutcome::Added);
        assert_eq!(d.push(0, b"a", rx(3, -50, 9.0)), PushOutcome::WindowFull);
        assert_eq!(d.open_windows(), 2);
        let out = d.poll(200);
        assert_eq!(out.len(), 2);
        assert_eq!(d.push(201, b"c", rx(1, -100, 1.0)), PushOutcome::Opened);
    }

    #[test]
    fn nan_snr_never_wins() {
        let mut d = Deduplicator::new(DedupConfig::default());
        d.push(0, b"a", rx(1, -120, -5.0));
        d.push(0, b"a", rx(2, -10, f32::NAN));
        assert_eq!(d.poll(200)[0].best().gateway, Eui64::from(1));
    }

    #[test]
    fn time_going_backwards_does_not_reopen_or_panic() {
        let mut d = Deduplicator::new(DedupConfig::default());
        d.push(10_000, b"a", rx(1, -100, 1.0));
        d.push(5, b"b", rx(1, -100, 1.0));
        assert!(d.poll(0).is_empty());
        assert_eq!(d.poll(10_200).len(), 2);
    }
}
