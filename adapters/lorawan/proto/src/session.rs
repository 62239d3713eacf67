//! Device sessions and frame-counter reconstruction.
//!
//! # FCnt reconstruction
//!
//! Frames carry only the low 16 bits of the 32-bit uplink counter. Given
//! the last accepted 32-bit value, [`fcnt32`] picks the smallest 32-bit
//! value above it whose low 16 bits match, and accepts it only if it is at
//! most [`MAX_FCNT_GAP`] ahead (LoRaWAN 1.0.3 §4.3.1.5 and §5: MAX_FCNT_GAP
//! = 16384; frames further ahead "shall be discarded"). The same 16 bits as
//! the last accepted value are a *repeat* (see below); anything behind is a
//! *replay*.
//!
//! Before the first uplink of a session (`fcnt_up == None`) the 16-bit
//! value is taken as the whole counter: OTAA devices restart at 0 after a
//! join. An ABP device already past 65535 when first heard fails its MIC
//! (known limitation; reset the device's counters or store its session
//! with `fcnt_up` set).
//!
//! # Repeats and retransmissions (decision)
//!
//! LoRaWAN 1.0.x devices send the same frame again with the *same* FCnt:
//! confirmed uplinks when no ACK came, unconfirmed ones when NbTrans > 1.
//! The uplink path ([`crate::process_data_uplink`]) therefore treats an
//! FCnt equal to the last accepted one like this:
//!
//! * MIC valid, **confirmed**, and the MIC equal to that of the last
//!   accepted frame (so the same content: same keys, same FCnt, same
//!   bytes) → accepted as a *retransmission*: the network answers with an
//!   ACK again (the first one was evidently lost), but no new reading is
//!   produced and the counter does not move;
//! * MIC valid otherwise (unconfirmed repetition, or different content
//!   under the same FCnt) → `UplinkError::Repeated`, dropped without
//!   reading or downlink;
//! * MIC invalid → `UplinkError::Mic`.
//!
//! Replaying the last confirmed frame therefore gets at most one ACK
//! downlink per copy, never a duplicate reading.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::region::Region;
use crate::types::DevAddr;

/// LoRaWAN 1.0.x MAX_FCNT_GAP: the largest accepted jump of the uplink
/// counter (up to 16383 frames lost in between).
pub const MAX_FCNT_GAP: u32 = 16_384;

/// Why a received 16-bit FCnt cannot be the next uplink counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FcntError {
    /// The same counter as the last accepted frame (retransmission or
    /// replay; see the module documentation).
    #[error("frame counter {fcnt} repeated")]
    Repeated {
        /// The last accepted (and repeated) 32-bit counter.
        fcnt: u32,
    },
    /// Behind the last accepted counter: a replay.
    #[error("frame counter {received} (16 bits) is behind the last accepted {last}")]
    Replay {
        /// Last accepted 32-bit counter.
        last: u32,
        /// The received 16 bits.
        received: u16,
        /// The 32-bit value the frame would have had (for MIC checks).
        candidate: u32,
    },
    /// Further ahead than [`MAX_FCNT_GAP`].
    #[error("frame counter {received} (16 bits) is more than MAX_FCNT_GAP ahead of {last}")]
    Gap {
        /// Last accepted 32-bit counter.
        last: u32,
        /// The received 16 bits.
        received: u16,
        /// The 32-bit value the frame would have had (for MIC checks).
        candidate: u32,
    },
    /// The last accepted counter is `u32::MAX`: the session must rejoin.
    #[error("frame counter exhausted; the device must rejoin")]
    Exhausted,
}

/// Reconstructs the 32-bit uplink counter from its 16 transmitted bits.
///
/// `last` is the last accepted counter (`None` before the session's first
/// uplink). Returns the smallest value `> last` whose low 16 bits are
/// `fcnt16`, if it is at most [`MAX_FCNT_GAP`] above `last`.
///
/// ```
/// use gatewayd_lorawan_proto::{fcnt32, FcntError};
/// assert_eq!(fcnt32(None, 7), Ok(7));
/// assert_eq!(fcnt32(Some(65_535), 0), Ok(65_536));
/// assert!(matches!(fcnt32(Some(10), 10), Err(FcntError::Repeated { fcnt: 10 })));
/// ```
pub fn fcnt32(last: Option<u32>, fcnt16: u16) -> Result<u32, FcntError> {
    let Some(last) = last else {
        return Ok(u32::from(fcnt16));
    };
    let diff = fcnt16.wrapping_sub(last as u16);
    if diff == 0 {
        return Err(FcntError::Repeated { fcnt: last });
    }
    let ahead = u64::from(last) + u64::from(diff);
    if diff >= 0x8000 {
        // Behind: the same high bits (or the previous 64 Ki block).
        let back = u64::from(0x1_0000 - u32::from(diff));
        let candidate = (u64::from(last) - back.min(u64::from(last))) as u32;
        return Err(FcntError::Replay {
            last,
            received: fcnt16,
            candidate,
        });
    }
    if ahead > u64::from(u32::MAX) {
        return Err(FcntError::Exhausted);
    }
    if u32::from(diff) > MAX_FCNT_GAP {
        return Err(FcntError::Gap {
            last,
            received: fcnt16,
            candidate: ahead as u32,
        });
    }
    Ok(ahead as u32)
}

/// A LoRaWAN 1.0.x device session: address, session keys, counters and
/// the downlink settings the device was given. Persisted by the caller
/// after every `Action::SessionChanged`.
///
/// `Debug` redacts both keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Device address (most significant byte first as a number).
    pub dev_addr: u32,
    /// Network session key (MIC; FPort 0 encryption).
    pub nwk_s_key: [u8; 16],
    /// Application session key (FPort 1..=255 encryption).
    pub app_s_key: [u8; 16],
    /// Last accepted 32-bit uplink counter; `None` before the first uplink.
    pub fcnt_up: Option<u32>,
    /// The next downlink counter to use (NFCntDown in 1.0.x terms).
    pub fcnt_down: u32,
    /// RX1 data rate offset the device uses (JoinAccept DLSettings).
    pub rx1_dr_offset: u8,
    /// RX2 data rate the device uses (JoinAccept DLSettings).
    pub rx2_dr: u8,
    /// RX1 delay in seconds, 1..=15 (JoinAccept RxDelay; 0 means 1).
    pub rx1_delay_s: u8,
    /// The JoinNonce (AppNonce) of the join that made this session; 0 for
    /// ABP. The next join uses this + 1.
    pub join_nonce: u32,
    /// Every DevNonce this device has used in an accepted JoinRequest
    /// (carried from session to session; 1.0.x forbids any reuse).
    pub used_dev_nonces: BTreeSet<u16>,
    /// MIC of the last accepted uplink: tells an identical retransmission
    /// from a different frame with the same FCnt.
    pub last_uplink_mic: Option<[u8; 4]>,
}

impl Session {
    /// An ABP session with the region's default RX parameters, before any
    /// uplink.
    pub fn abp(
        dev_addr: DevAddr,
        nwk_s_key: [u8; 16],
        app_s_key: [u8; 16],
        region: Region,
    ) -> Session {
        Session {
            dev_addr: dev_addr.0,
            nwk_s_key,
            app_s_key,
            fcnt_up: None,
            fcnt_down: 0,
            rx1_dr_offset: 0,
            rx2_dr: region.rx2().1,
            rx1_delay_s: 1,
            join_nonce: 0,
            used_dev_nonces: BTreeSet::new(),
            last_uplink_mic: None,
        }
    }

    /// The RX1 delay in microseconds (RxDelay 0 counts as 1 s).
    pub fn rx1_delay_us(&self) -> u32 {
        u32::from(self.rx1_delay_s.clamp(1, 15)) * 1_000_000
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("dev_addr", &DevAddr(self.dev_addr))
            .field("nwk_s_key", &"<redacted>")
            .field("app_s_key", &"<redacted>")
            .field("fcnt_up", &self.fcnt_up)
            .field("fcnt_down", &self.fcnt_down)
            .field("rx1_dr_offset", &self.rx1_dr_offset)
            .field("rx2_dr", &self.rx2_dr)
            .field("rx1_delay_s", &self.rx1_delay_s)
            .field("join_nonce", &self.join_nonce)
            .field("used_dev_nonces", &self.used_dev_nonces.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_uplink_takes_the_16_bits_as_the_counter() {
        assert_eq!(fcnt32(None, 0), Ok(0));
        assert_eq!(fcnt32(None, 65_535), Ok(65_535));
    }

    #[test]
    fn fcnt_advances_within_the_same_64k_block() {
        assert_eq!(fcnt32(Some(0), 1), Ok(1));
        assert_eq!(fcnt32(Some(100), 150), Ok(150));
        assert_eq!(fcnt32(Some(0x0003_0010), 0x0011), Ok(0x0003_0011));
    }

    #[test]
    fn fcnt_wraps_from_65535_into_the_next_block() {
        assert_eq!(fcnt32(Some(65_535), 0), Ok(65_536));
        assert_eq!(fcnt32(Some(65_530), 3), Ok(65_539));
        assert_eq!(fcnt32(Some(0x0001_FFFF), 0x0000), Ok(0x0002_0000));
    }

    #[test]
    fn gap_of_exactly_max_fcnt_gap_is_accepted_one_more_is_rejected() {
        assert_eq!(fcnt32(Some(0), 16_384), Ok(16_384));
        assert!(matches!(
            fcnt32(Some(0), 16_385),
            Err(FcntError::Gap {
                last: 0,
                received: 16_385,
                candidate: 16_385
            })
        ));
        // across the wrap
        assert_eq!(
            fcnt32(Some(65_000), (65_000u32 + 16_384 - 65_536) as u16),
            Ok(65_000 + 16_384)
        );
        assert!(matches!(
            fcnt32(Some(65_000), 16_000),
            Err(FcntError::Gap { .. })
        ));
    }

    #[test]
    fn repeated_and_older_counters_are_rejected() {
        assert_eq!(fcnt32(Some(5), 5), Err(FcntError::Repeated { fcnt: 5 }));
        assert_eq!(
            fcnt32(Some(5), 4),
            Err(FcntError::Replay {
                last: 5,
                received: 4,
                candidate: 4
            })
        );
        assert_eq!(
            fcnt32(Some(65_537), 65_535),
            Err(FcntError::Replay {
                last: 65_537,
                received: 65_535,
                candidate: 65_535
            })
        );
        // far behind within the half-space: still a replay, never wrapped ahead
        assert!(matches!(
            fcnt32(Some(40_000), 30_000),
            Err(FcntError::Replay {
                candidate: 30_000,
                ..
            })
        ));
        // 16 bits cannot tell "far behind" from "far ahead": the half-space
        // ahead is a gap, the half-space behind a replay.
        assert!(matches!(
            fcnt32(Some(40_000), 1),
            Err(FcntError::Gap {
                candidate: 65_537,
                ..
            })
        ));
        // behind at the very start of the counter space does not underflow
        assert!(matches!(
            fcnt32(Some(1), 65_535),
            Err(FcntError::Replay { candidate: 0, .. })
        ));
    }

    #[test]
    fn counter_cannot_wrap_past_u32_max() {
        assert_eq!(fcnt32(Some(u32::MAX - 1), 0xFFFF), Ok(u32::MAX));
        assert_eq!(fcnt32(Some(u32::MAX), 0), Err(FcntError::Exhausted));
        assert_eq!(fcnt32(Some(u32::MAX), 5), Err(FcntError::Exhausted));
    }

    #[test]
    fn reconstruction_is_the_smallest_matching_value_above_last() {
        // exhaustive over a sample of `last` values near block edges
        for last in [
            0u32,
            1,
            0x7FFF,
            0xFFFE,
            0xFFFF,
            0x1_0000,
            0x1_C000,
            0xABCD_FFF0,
        ] {
            for f in 0..=u16::MAX {
                if let Ok(v) = fcnt32(Some(last), f) {
                    assert!(v > last && v - last <= MAX_FCNT_GAP);
                    assert_eq!(v as u16, f);
                    assert!(v < 0x1_0000 || v - 0x1_0000 <= last, "smallest such value");
                }
            }
        }
    }

    #[test]
    fn session_debug_redacts_keys() {
        let s = Session::abp(DevAddr(0x2601_1BDA), [0x11; 16], [0x22; 16], Region::Eu868);
        let d = format!("{s:?}");
        assert!(d.contains("26011BDA") && d.contains("<redacted>"));
        assert!(!d.contains("17") && !d.contains("34"), "{d}");
    }
}
