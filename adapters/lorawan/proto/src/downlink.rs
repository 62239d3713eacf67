//! Class A data downlinks: frame building, MAC answers, the per-device
//! queue.
//!
//! * [`build_data_downlink`] builds one PHYPayload (unconfirmed or
//!   confirmed data down) with the `lorawan` crate: FCtrl (ACK, FPending),
//!   MAC answers in FOpts (or as an FPort 0 payload when they do not fit
//!   and there is no application payload), an optional application
//!   payload encrypted with the AppSKey, FCntDown from the session, MIC
//!   with the NwkSKey. The session's FCntDown is advanced.
//! * [`link_check_margin`]: LinkCheckAns margin = uplink SNR − the
//!   demodulation floor of its spreading factor, floored at 0.
//! * [`gps_time_from_unix`] / [`device_time_ans`]: DeviceTimeAns from the
//!   reception's UNIX time.
//! * [`DownlinkQueue`]: bounded; a confirmed item stays until the device
//!   ACKs it or it was sent `max_attempts` times without ACK.

use std::collections::VecDeque;
use std::time::Duration;

use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::maccommands::SerializableMacCommand;
use lorawan::parser::FCtrl;

use crate::mac::MacDown;
use crate::region::MaxPayload;
use crate::session::Session;

/// GPS epoch (1980-01-06T00:00:00Z) in UNIX seconds.
pub const GPS_EPOCH_UNIX_SECS: u64 = 315_964_800;

/// GPS − UTC in seconds: 18 since 2017-01-01 (IERS Bulletin C; no leap
/// second has been announced since). UNIX time counts UTC seconds, GPS
/// time does not stop for leap seconds. Update this constant if IERS
/// announces another leap second.
pub const GPS_UTC_LEAP_SECONDS: u64 = 18;

/// FOpts holds at most 15 bytes.
const MAX_FOPTS: usize = 15;

/// Demodulation floor (required SNR, dB) per spreading factor, SF7..SF12:
/// −7.5, −10, −12.5, −15, −17.5, −20 (Semtech SX1276 datasheet table 13,
/// the values ChirpStack uses for LinkCheckAns).
pub const fn required_snr_db(sf: u8) -> Option<f32> {
    match sf {
        7 => Some(-7.5),
        8 => Some(-10.0),
        9 => Some(-12.5),
        10 => Some(-15.0),
        11 => Some(-17.5),
        12 => Some(-20.0),
        _ => None,
    }
}

/// LinkCheckAns margin in dB: `floor(snr − required_snr(sf))`, clamped to
/// 0..=254 (255 is reserved). `None` for a spreading factor outside 7..=12.
/// A NaN SNR gives 0.
pub fn link_check_margin(snr_db: f32, sf: u8) -> Option<u8> {
    let floor = required_snr_db(sf)?;
    let m = (snr_db - floor).floor();
    Some(if m.is_nan() || m <= 0.0 {
        0
    } else if m >= 254.0 {
        254
    } else {
        m as u8
    })
}

/// GPS time of a UNIX time: `(whole seconds mod 2³², fraction in 1/256 s)`.
/// The fraction is truncated (never rounds up into the next second).
/// `None` before the GPS epoch.
pub fn gps_time_from_unix(unix: Duration) -> Option<(u32, u8)> {
    let secs = unix.as_secs().checked_sub(GPS_EPOCH_UNIX_SECS)? + GPS_UTC_LEAP_SECONDS;
    let frac = (u64::from(unix.subsec_nanos()) * 256 / 1_000_000_000) as u8;
    Some((secs as u32, frac))
}

/// The DeviceTimeAns for an uplink received at `unix` (the end of the
/// uplink transmission, as the gateway reports it).
pub fn device_time_ans(unix: Duration) -> Option<MacDown> {
    let (gps_seconds, fraction) = gps_time_from_unix(unix)?;
    Some(MacDown::DeviceTimeAns {
        gps_seconds,
        fraction,
    })
}

/// One downlink frame to build.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataDown<'a> {
    /// ConfirmedDataDown (the device must ACK in its next uplink).
    pub confirmed: bool,
    /// FCtrl.ACK: acknowledges the confirmed uplink being answered.
    pub ack: bool,
    /// FCtrl.FPending: more downlinks are queued.
    pub f_pending: bool,
    /// MAC answers.
    pub mac: &'a [MacDown],
    /// Application payload and its FPort (1..=223).
    pub app: Option<(u8, &'a [u8])>,
}

/// Why a downlink could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownlinkError {
    /// FPort 0 or 224..=255 for an application payload.
    #[error("FPort {0} is not an application port (1..=223)")]
    InvalidFport(u8),
    /// More than 15 bytes of MAC commands alongside an application payload.
    #[error("MAC commands ({0} bytes) do not fit in FOpts with an application payload")]
    MacTooLong(usize),
    /// The MACPayload exceeds the data rate's maximum M.
    #[error("MACPayload of {size} bytes exceeds the data rate's maximum {max}")]
    TooLarge {
        /// The MACPayload size.
        size: usize,
        /// M for the data rate.
        max: usize,
    },
    /// The session's FCntDown is exhausted (`u32::MAX` used).
    #[error("downlink frame counter exhausted; the device must rejoin")]
    FcntExhausted,
    /// The frame builder refused the frame.
    #[error("frame builder refused the frame")]
    Build,
}

/// MACPayload size of a downlink: FHDR (7 + FOpts) + FPort + FRMPayload.
pub fn mac_payload_len(frame: &DataDown<'_>) -> usize {
    let mac_len: usize = frame.mac.iter().map(MacDown::len).sum();
    match frame.app {
        Some((_, p)) => 7 + mac_len + 1 + p.len(),
        None if mac_len > MAX_FOPTS => 7 + 1 + mac_len,
        None => 7 + mac_len,
    }
}

/// Builds a class A data downlink with the session's keys and FCntDown,
/// then advances the session's FCntDown. `max` is the payload limit of the
/// data rate it will be sent at. The session is unchanged on error.
pub fn build_data_downlink(
    session: &mut Session,
    frame: &DataDown<'_>,
    max: MaxPayload,
) -> Result<Vec<u8>, DownlinkError> {
    if let Some((fport, _)) = frame.app {
        if fport == 0 || fport >= 224 {
            return Err(DownlinkError::InvalidFport(fport));
        }
    }
    let mac_len: usize = frame.mac.iter().map(MacDown::len).sum();
    if frame.app.is_some() && mac_len > MAX_FOPTS {
        return Err(DownlinkError::MacTooLong(mac_len));
    }
    let size = mac_payload_len(frame);
    // 250 also keeps the frame inside the crate's 256-byte buffer.
    let limit = usize::from(max.m).min(250);
    if size > limit {
        return Err(DownlinkError::TooLarge { size, max: limit });
    }
    let fcnt = session.fcnt_down;
    let next = fcnt.checked_add(1).ok_or(DownlinkError::FcntExhausted)?;

    let built: Vec<_> = frame.mac.iter().map(MacDown::build).collect();
    let cmds: Vec<&dyn SerializableMacCommand> = built.iter().map(|b| b.as_dyn()).collect();
    let mut fctrl = 0u8;
    if frame.ack {
        fctrl |= 0x20;
    }
    if frame.f_pending {
        fctrl |= 0x10;
    }
    let mut creator = DataPayloadCreator::new();
    creator
        .set_confirmed(frame.confirmed)
        .set_uplink(false)
        .set_dev_addr(&session.dev_addr.to_le_bytes())
        .set_fctrl(&FCtrl::new(fctrl, false))
        .set_fcnt(fcnt);
    let payload: &[u8] = match frame.app {
        Some((fport, p)) => {
            creator.set_f_port(fport);
            p
        }
        None => {
            if mac_len > MAX_FOPTS {
                creator.set_f_port(0);
            }
            &[]
        }
    };
    let phy = creator
        .build(
            payload,
            &cmds,
            &NewSKey::from(session.nwk_s_key),
            &AppSKey::from(session.app_s_key),
        )
        .map_err(|_| DownlinkError::Build)?
        .to_vec();
    session.fcnt_down = next;
    Ok(phy)
}

/// An application downlink waiting for the device's next uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDownlink {
    /// The caller's identifier (e.g. a database row id), carried back in
    /// every [`QueueEvent`] so the caller can forget the item.
    pub id: u64,
    /// FPort, 1..=223.
    pub fport: u8,
    /// Application payload (plain; encrypted when sent).
    pub payload: Vec<u8>,
    /// Send as ConfirmedDataDown and keep until ACKed.
    pub confirmed: bool,
}

/// The queue is at capacity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("downlink queue full ({capacity} items)")]
pub struct QueueFull {
    /// The capacity.
    pub capacity: usize,
}

/// What happened to a queued downlink: each item ends with exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEvent {
    /// An unconfirmed item was sent: it left the queue.
    Sent {
        /// The item.
        item: QueuedDownlink,
        /// FCntDown it was sent with.
        fcnt_down: u32,
    },
    /// The device acknowledged it (ACK bit in an uplink after it was sent).
    Acked {
        /// The item.
        item: QueuedDownlink,
        /// FCntDown of the transmission that was acknowledged.
        fcnt_down: u32,
    },
    /// Sent `attempts` times without an ACK: dropped.
    Dropped {
        /// The item.
        item: QueuedDownlink,
        /// How many times it was sent.
        attempts: u8,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    item: QueuedDownlink,
    attempts: u8,
    fcnt_down: u32,
}

/// A bounded per-device downlink queue (class A: one item per uplink).
///
/// Unconfirmed items leave the queue when sent. A confirmed item, once
/// sent, is *pending*: the next uplink either carries the ACK bit
/// ([`QueueEvent::Acked`]) or not, in which case the item is sent again
/// (with a new FCntDown) on that uplink's downlink, until it was sent
/// `max_attempts` times ([`QueueEvent::Dropped`]). Nothing else is sent to
/// the device while an item is pending (LoRaWAN allows one outstanding
/// confirmed downlink).
#[derive(Debug, Clone)]
pub struct DownlinkQueue {
    items: VecDeque<QueuedDownlink>,
    pending: Option<Pending>,
    capacity: usize,
    max_attempts: u8,
}

impl DownlinkQueue {
    /// Default capacity.
    pub const DEFAULT_CAPACITY: usize = 16;
    /// Default transmissions of a confirmed item before it is dropped.
    pub const DEFAULT_MAX_ATTEMPTS: u8 = 3;

    /// A queue holding at most `capacity` items (pending one included),
    /// sending a confirmed item at most `max_attempts` times (at least 1).
    pub fn new(capacity: usize, max_attempts: u8) -> DownlinkQueue {
        DownlinkQueue {
            items: VecDeque::new(),
            pending: None,
            capacity,
            max_attempts: max_attempts.max(1),
        }
    }

    /// Items held, the pending one included.
    pub fn len(&self) -> usize {
        self.items.len() + usize::from(self.pending.is_some())
    }

    /// Nothing queued or pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends an item; refused when full.
    pub fn push(&mut self, item: QueuedDownlink) -> Result<(), QueueFull> {
        if self.len() >= self.capacity {
            return Err(QueueFull {
                capacity: self.capacity,
            });
        }
        self.items.push_back(item);
        Ok(())
    }

    /// Feeds an accepted uplink's ACK bit. Resolves the pending confirmed
    /// item: ACK → `Acked`; no ACK after the last attempt → `Dropped`;
    /// otherwise it stays pending (to be sent again). An ACK with nothing
    /// pending is ignored.
    pub fn on_uplink(&mut self, ack_bit: bool) -> Option<QueueEvent> {
        let p = self.pending.as_ref()?;
        if ack_bit {
            let p = self.pending.take()?;
            return Some(QueueEvent::Acked {
                item: p.item,
                fcnt_down: p.fcnt_down,
            });
        }
        if p.attempts >= self.max_attempts {
            let p = self.pending.take()?;
            return Some(QueueEvent::Dropped {
                item: p.item,
                attempts: p.attempts,
            });
        }
        None
    }

    /// The item to send next: the pending confirmed one, else the oldest.
    pub fn peek(&self) -> Option<&QueuedDownlink> {
        match &self.pending {
            Some(p) => Some(&p.item),
            None => self.items.front(),
        }
    }

    /// Records that [`DownlinkQueue::peek`]'s item was sent with
    /// `fcnt_down`: an unconfirmed item leaves the queue
    /// ([`QueueEvent::Sent`]), a confirmed one becomes (or stays) pending
    /// with one more attempt.
    pub fn mark_sent(&mut self, fcnt_down: u32) -> Option<QueueEvent> {
        if let Some(p) = &mut self.pending {
            p.attempts = p.attempts.saturating_add(1);
            p.fcnt_down = fcnt_down;
            return None;
        }
        let item = self.items.pop_front()?;
        if item.confirmed {
            self.pending = Some(Pending {
                item,
                attempts: 1,
                fcnt_down,
            });
            None
        } else {
            Some(QueueEvent::Sent { item, fcnt_down })
        }
    }

    /// Keeps only the items (pending one included) whose id `keep` accepts;
    /// returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> usize {
        let before = self.len();
        self.items.retain(|i| keep(i.id));
        if self.pending.as_ref().is_some_and(|p| !keep(p.item.id)) {
            self.pending = None;
        }
        before - self.len()
    }

    /// Whether an item with this id is queued or pending.
    pub fn contains(&self, id: u64) -> bool {
        self.pending.as_ref().is_some_and(|p| p.item.id == id)
            || self.items.iter().any(|i| i.id == id)
    }

    /// More items after the one [`DownlinkQueue::peek`] returns (FPending).
    pub fn more_after_next(&self) -> bool {
        self.len() > 1
    }
}

impl Default for DownlinkQueue {
    fn default() -> DownlinkQueue {
        DownlinkQueue::new(Self::DEFAULT_CAPACITY, Self::DEFAULT_MAX_ATTEMPTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_check_margin_is_snr_above_the_sf_floor() {
        assert_eq!(link_check_margin(5.0, 7), Some(12)); // 5 - (-7.5) = 12.5 -> 12
        assert_eq!(link_check_margin(-10.0, 12), Some(10));
        assert_eq!(link_check_margin(-12.5, 9), Some(0));
        assert_eq!(link_check_margin(-25.0, 12), Some(0), "below the floor");
        assert_eq!(link_check_margin(300.0, 7), Some(254), "255 is reserved");
        assert_eq!(link_check_margin(f32::NAN, 7), Some(0));
        assert_eq!(link_check_margin(0.0, 6), None);
        assert_eq!(link_check_margin(0.0, 8), Some(10));
        assert_eq!(link_check_margin(0.0, 10), Some(15));
        assert_eq!(link_check_margin(0.0, 11), Some(17));
    }

    #[test]
    fn gps_time_counts_from_1980_with_18_leap_seconds() {
        // The GPS epoch itself: 18 s, because UNIX time here is UTC now.
        assert_eq!(
            gps_time_from_unix(Duration::from_secs(315_964_800)),
            Some((18, 0))
        );
        // 2020-09-13T12:26:40Z (UNIX 1_600_000_000) = GPS 1_284_035_218.
        assert_eq!(
            gps_time_from_unix(Duration::from_secs(1_600_000_000)),
            Some((1_284_035_218, 0))
        );
        // Fractions are 1/256 s, truncated.
        assert_eq!(
            gps_time_from_unix(Duration::new(1_600_000_000, 500_000_000)),
            Some((1_284_035_218, 128))
        );
        assert_eq!(
            gps_time_from_unix(Duration::new(1_600_000_000, 999_999_999)),
            Some((1_284_035_218, 255))
        );
        assert_eq!(
            gps_time_from_unix(Duration::new(1_600_000_000, 3_906_249))
                .unwrap()
                .1,
            0
        );
        assert_eq!(
            gps_time_from_unix(Duration::new(1_600_000_000, 3_906_250))
                .unwrap()
                .1,
            1
        );
        assert_eq!(gps_time_from_unix(Duration::from_secs(1)), None);
    }

    fn item(fport: u8, confirmed: bool) -> QueuedDownlink {
        QueuedDownlink {
            id: u64::from(fport),
            fport,
            payload: vec![fport],
            confirmed,
        }
    }

    #[test]
    fn queue_is_bounded() {
        let mut q = DownlinkQueue::new(2, 3);
        q.push(item(1, false)).unwrap();
        q.push(item(2, false)).unwrap();
        assert_eq!(q.push(item(3, false)), Err(QueueFull { capacity: 2 }));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn unconfirmed_items_leave_when_sent_in_order() {
        let mut q = DownlinkQueue::default();
        q.push(item(1, false)).unwrap();
        q.push(item(2, false)).unwrap();
        assert!(q.more_after_next());
        assert_eq!(q.peek().unwrap().fport, 1);
        assert_eq!(
            q.mark_sent(10),
            Some(QueueEvent::Sent {
                item: item(1, false),
                fcnt_down: 10
            })
        );
        assert_eq!(q.peek().unwrap().fport, 2);
        assert!(!q.more_after_next());
        assert!(q.mark_sent(11).is_some());
        assert!(q.is_empty());
        assert_eq!(q.on_uplink(true), None, "stray ACK ignored");
    }

    #[test]
    fn confirmed_item_stays_until_acked() {
        let mut q = DownlinkQueue::default();
        q.push(item(5, true)).unwrap();
        q.push(item(6, false)).unwrap();
        assert_eq!(q.mark_sent(7), None, "pending, not gone");
        assert!(q.contains(5) && q.contains(6) && !q.contains(7));
        let mut other = q.clone();
        assert_eq!(other.retain(|id| id != 5), 1, "the pending one can go");
        assert_eq!(other.peek().unwrap().fport, 6);
        assert_eq!(q.len(), 2);
        assert_eq!(q.on_uplink(false), None, "first miss: resend");
        assert_eq!(q.peek().unwrap().fport, 5, "pending item goes first");
        assert_eq!(q.mark_sent(8), None);
        assert_eq!(
            q.on_uplink(true),
            Some(QueueEvent::Acked {
                item: item(5, true),
                fcnt_down: 8
            })
        );
        assert_eq!(q.peek().unwrap().fport, 6);
    }

    #[test]
    fn confirmed_item_is_dropped_after_max_attempts() {
        let mut q = DownlinkQueue::new(4, 2);
        q.push(item(5, true)).unwrap();
        assert_eq!(q.mark_sent(1), None);
        assert_eq!(q.on_uplink(false), None);
        assert_eq!(q.mark_sent(2), None);
        assert_eq!(
            q.on_uplink(false),
            Some(QueueEvent::Dropped {
                item: item(5, true),
                attempts: 2
            })
        );
        assert!(q.is_empty());
    }
}
