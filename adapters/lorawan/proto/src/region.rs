//! Regional parameters for EU868 and US915 (LoRa modulation only).
//!
//! Sources: LoRaWAN Regional Parameters RP002-1.0.3 (§4 "EU863-870",
//! §5 "US902-928"), the same values as RP001/1.0.3rA for the LoRa data
//! rates used here; cross-checked against ChirpStack's `lrwn` region
//! tables (`lrwn/src/region/{eu868,us915}.rs`).
//!
//! * Data rates: EU868 DR0..DR5 = SF12..SF7 at 125 kHz, DR6 = SF7/250 kHz
//!   (DR7 is FSK, DR8..DR11 LR-FHSS: not LoRa, `None` here). US915 uplink
//!   DR0..DR3 = SF10..SF7/125 kHz, DR4 = SF8/500 kHz (DR5, DR6 LR-FHSS);
//!   downlink DR8..DR13 = SF12..SF7/500 kHz.
//! * RX1: EU868 same frequency, DR = max(DR_up − RX1DROffset, 0), offset
//!   0..=5. US915 downlink channel = 923.3 MHz + (uplink channel mod 8) ×
//!   600 kHz; DR from the RX1 table (upstream DR0..DR4 → DR10..DR13 for
//!   offset 0, clamped to DR8..DR13), offset 0..=3.
//! * RX2 defaults: EU868 869.525 MHz DR0 (SF12BW125); US915 923.3 MHz DR8
//!   (SF12BW500).
//! * Delays (both regions, RP002 "default settings"): RECEIVE_DELAY1 1 s,
//!   RECEIVE_DELAY2 2 s, JOIN_ACCEPT_DELAY1 5 s, JOIN_ACCEPT_DELAY2 6 s.
//! * Maximum payload sizes: the RP002-1.0.3 tables "not repeater
//!   compatible" (M = MACPayload, N = FRMPayload when FOpts is empty).
//! * Downlink TX power: EU868 14 dBm (the default MaxEIRP 16 dBm less the
//!   2 dBi antenna gain allowance; the 869.4–869.65 MHz sub-band of RX2
//!   permits 27 dBm ERP under ETSI EN 300 220, but 14 dBm is used
//!   everywhere to stay within any gateway's conducted limit). US915
//!   20 dBm (ChirpStack's default for US915; FCC part 15.247 allows up to
//!   30 dBm conducted, gateways typically 20–27).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A supported region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Region {
    /// EU863-870.
    Eu868,
    /// US902-928.
    Us915,
}

/// Which table a data rate is looked up in (US915 uses different data
/// rate numbers for the same modulation up and down, e.g. SF8BW500 is DR4
/// up and DR12 down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// End device to network.
    Uplink,
    /// Network to end device.
    Downlink,
}

/// A LoRa modulation: spreading factor and bandwidth. `Display` and
/// `FromStr` use the packet forwarder's `datr` form, `SF7BW125`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataRate {
    /// Spreading factor, 5..=12.
    pub sf: u8,
    /// Bandwidth in kHz: 125, 250 or 500.
    pub bw_khz: u16,
}

impl fmt::Display for DataRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SF{}BW{}", self.sf, self.bw_khz)
    }
}

/// A `datr` string that is not `SF<n>BW<n>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a LoRa data rate of the form SF7BW125")]
pub struct ParseDataRateError;

impl FromStr for DataRate {
    type Err = ParseDataRateError;

    fn from_str(s: &str) -> Result<DataRate, ParseDataRateError> {
        let rest = s.strip_prefix("SF").ok_or(ParseDataRateError)?;
        let (sf, bw) = rest.split_once("BW").ok_or(ParseDataRateError)?;
        let sf: u8 = sf.parse().map_err(|_| ParseDataRateError)?;
        let bw_khz: u16 = bw.parse().map_err(|_| ParseDataRateError)?;
        if !(5..=12).contains(&sf) || !matches!(bw_khz, 125 | 250 | 500) {
            return Err(ParseDataRateError);
        }
        Ok(DataRate { sf, bw_khz })
    }
}

/// Maximum payload sizes for a data rate, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPayload {
    /// M: the whole MACPayload (FHDR + FPort + FRMPayload).
    pub m: u8,
    /// N: the FRMPayload when FOpts is empty (M − 8).
    pub n: u8,
}

const fn mp(m: u8) -> Option<MaxPayload> {
    Some(MaxPayload { m, n: m - 8 })
}

const MHZ: u32 = 1_000_000;
const KHZ: u32 = 1_000;

impl Region {
    /// RECEIVE_DELAY1: uplink end to RX1 opening (1 s).
    pub const fn rx1_delay(self) -> Duration {
        Duration::from_secs(1)
    }

    /// RECEIVE_DELAY2 = RECEIVE_DELAY1 + 1 s.
    pub const fn rx2_delay(self) -> Duration {
        Duration::from_secs(2)
    }

    /// JOIN_ACCEPT_DELAY1 (5 s).
    pub const fn join_accept_delay1(self) -> Duration {
        Duration::from_secs(5)
    }

    /// JOIN_ACCEPT_DELAY2 (6 s).
    pub const fn join_accept_delay2(self) -> Duration {
        Duration::from_secs(6)
    }

    /// The largest RX1DROffset the region defines (EU868 5, US915 3).
    pub const fn max_rx1_dr_offset(self) -> u8 {
        match self {
            Region::Eu868 => 5,
            Region::Us915 => 3,
        }
    }

    /// Default RX2 parameters: `(frequency Hz, DR)`.
    pub const fn rx2(self) -> (u32, u8) {
        match self {
            Region::Eu868 => (869_525_000, 0),
            Region::Us915 => (923_300_000, 8),
        }
    }

    /// The LoRa modulation of a data rate, `(sf, bw_khz)`; `None` for
    /// undefined, FSK or LR-FHSS data rates.
    pub const fn dr_to_sf_bw(self, dr: u8) -> Option<(u8, u16)> {
        match self {
            Region::Eu868 => match dr {
                0..=5 => Some((12 - dr, 125)),
                6 => Some((7, 250)),
                _ => None,
            },
            Region::Us915 => match dr {
                0..=3 => Some((10 - dr, 125)),
                4 => Some((8, 500)),
                8..=13 => Some((20 - dr, 500)),
                _ => None,
            },
        }
    }

    /// [`Region::dr_to_sf_bw`] as a [`DataRate`].
    pub const fn data_rate(self, dr: u8) -> Option<DataRate> {
        match self.dr_to_sf_bw(dr) {
            Some((sf, bw_khz)) => Some(DataRate { sf, bw_khz }),
            None => None,
        }
    }

    /// The data rate number of a LoRa modulation in the uplink or downlink
    /// table. EU868 uses one table for both directions.
    pub const fn sf_bw_to_dr(self, sf: u8, bw_khz: u16, dir: Direction) -> Option<u8> {
        match (self, dir, bw_khz) {
            (Region::Eu868, _, 125) if sf >= 7 && sf <= 12 => Some(12 - sf),
            (Region::Eu868, _, 250) if sf == 7 => Some(6),
            (Region::Us915, Direction::Uplink, 125) if sf >= 7 && sf <= 10 => Some(10 - sf),
            (Region::Us915, Direction::Uplink, 500) if sf == 8 => Some(4),
            (Region::Us915, Direction::Downlink, 500) if sf >= 7 && sf <= 12 => Some(20 - sf),
            _ => None,
        }
    }

    /// Maximum payload sizes of a data rate (RP002-1.0.3, not repeater
    /// compatible); `None` for data rates not handled here.
    pub const fn max_payload(self, dr: u8) -> Option<MaxPayload> {
        match self {
            Region::Eu868 => match dr {
                0..=2 => mp(59),
                3 => mp(123),
                4..=7 => mp(250),
                _ => None,
            },
            Region::Us915 => match dr {
                0 => mp(19),
                1 => mp(61),
                2 => mp(133),
                3 | 4 => mp(250),
                8 => mp(61),
                9 => mp(137),
                10..=13 => mp(250),
                _ => None,
            },
        }
    }

    /// The largest FRMPayload (N) of any downlink data rate: what a queued
    /// downlink may never exceed.
    pub const fn max_downlink_payload(self) -> usize {
        242
    }

    /// Downlink TX power in dBm (see the module documentation).
    pub const fn downlink_tx_power_dbm(self, _freq_hz: u32) -> i8 {
        match self {
            Region::Eu868 => 14,
            Region::Us915 => 20,
        }
    }

    /// US915 uplink channel number of a frequency: 0..=63 for the 125 kHz
    /// channels (902.3 MHz + 200 kHz × n), 64..=71 for the 500 kHz channels
    /// (903.0 MHz + 1.6 MHz × n). `None` for EU868 or any other frequency.
    /// The two grids never coincide, so the frequency alone decides.
    pub const fn uplink_channel(self, freq_hz: u32) -> Option<u8> {
        if !matches!(self, Region::Us915) {
            return None;
        }
        if freq_hz >= 902_300_000 && (freq_hz - 902_300_000).is_multiple_of(200 * KHZ) {
            let n = (freq_hz - 902_300_000) / (200 * KHZ);
            if n < 64 {
                return Some(n as u8);
            }
        }
        if freq_hz >= 903 * MHZ && (freq_hz - 903 * MHZ).is_multiple_of(1_600 * KHZ) {
            let n = (freq_hz - 903 * MHZ) / (1_600 * KHZ);
            if n < 8 {
                return Some(64 + n as u8);
            }
        }
        None
    }

    /// RX1 parameters for an uplink: `(frequency Hz, DR)`. `None` when the
    /// uplink frequency is not a channel of the region (US915) or outside
    /// the band (EU868: 863–870 MHz), the uplink DR is not a LoRa uplink
    /// data rate, or the offset is above [`Region::max_rx1_dr_offset`].
    pub const fn rx1(
        self,
        uplink_freq_hz: u32,
        uplink_dr: u8,
        rx1_dr_offset: u8,
    ) -> Option<(u32, u8)> {
        if rx1_dr_offset > self.max_rx1_dr_offset() {
            return None;
        }
        match self {
            Region::Eu868 => {
                if uplink_freq_hz < 863 * MHZ || uplink_freq_hz > 870 * MHZ || uplink_dr > 6 {
                    return None;
                }
                Some((uplink_freq_hz, uplink_dr.saturating_sub(rx1_dr_offset)))
            }
            Region::Us915 => {
                if uplink_dr > 4 {
                    return None;
                }
                let ch = match self.uplink_channel(uplink_freq_hz) {
                    Some(ch) => ch,
                    None => return None,
                };
                let freq = 923_300_000 + (ch as u32 % 8) * 600 * KHZ;
                // RP002 US915 RX1 table: DR0..DR3 -> DR10..DR13, DR4 -> DR13
                // at offset 0; each offset step one lower, never below DR8.
                let base = 10 + uplink_dr as i16 - rx1_dr_offset as i16;
                let dr = if base > 13 {
                    13
                } else if base < 8 {
                    8
                } else {
                    base as u8
                };
                Some((freq, dr))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu868_rx1_keeps_frequency_and_lowers_dr_by_offset_floored_at_dr0() {
        let r = Region::Eu868;
        assert_eq!(r.rx1(868_100_000, 5, 0), Some((868_100_000, 5)));
        assert_eq!(r.rx1(868_100_000, 5, 2), Some((868_100_000, 3)));
        assert_eq!(r.rx1(868_500_000, 1, 3), Some((868_500_000, 0)));
        assert_eq!(r.rx1(867_100_000, 6, 5), Some((867_100_000, 1)));
        assert_eq!(r.rx1(868_100_000, 5, 6), None, "offset 6 is not defined");
        assert_eq!(r.rx1(902_300_000, 5, 0), None, "outside the band");
        assert_eq!(r.rx1(868_100_000, 7, 0), None, "FSK");
    }

    #[test]
    fn us915_rx1_maps_125khz_channels_modulo_8_to_500khz_downlink_channels() {
        let r = Region::Us915;
        // channel 0 (902.3) -> 923.3; channel 8 (903.9, sub-band 2 start) -> 923.3
        assert_eq!(r.rx1(902_300_000, 0, 0), Some((923_300_000, 10)));
        assert_eq!(r.rx1(903_900_000, 0, 0), Some((923_300_000, 10)));
        // channel 15 (905.3) -> 923.3 + 7*0.6 = 927.5
        assert_eq!(r.rx1(905_300_000, 3, 0), Some((927_500_000, 13)));
        // channel 63 (914.9) -> 63 % 8 = 7 -> 927.5
        assert_eq!(r.rx1(914_900_000, 2, 0), Some((927_500_000, 12)));
        // 500 kHz channels: 64 (903.0) -> 923.3, 65 (904.6) -> 923.9, 71 (914.2) -> 927.5
        assert_eq!(r.rx1(903_000_000, 4, 0), Some((923_300_000, 13)));
        assert_eq!(r.rx1(904_600_000, 4, 0), Some((923_900_000, 13)));
        assert_eq!(r.rx1(914_200_000, 4, 0), Some((927_500_000, 13)));
        assert_eq!(r.uplink_channel(904_600_000), Some(65));
        assert_eq!(r.uplink_channel(903_100_000), Some(4));
        assert_eq!(r.uplink_channel(903_150_000), None);
        assert_eq!(r.rx1(903_150_000, 0, 0), None, "not a channel");
        assert_eq!(r.rx1(915_000_000, 0, 0), None, "past channel 63");
    }

    #[test]
    fn us915_rx1_dr_table_matches_rp002() {
        // RP002-1.0.3 Table "US902-928 downlink RX1 data rate mapping".
        let table: [[u8; 4]; 5] = [
            [10, 9, 8, 8],
            [11, 10, 9, 8],
            [12, 11, 10, 9],
            [13, 12, 11, 10],
            [13, 13, 12, 11],
        ];
        for (dr, row) in table.iter().enumerate() {
            for (offset, want) in row.iter().enumerate() {
                let (_, got) = Region::Us915
                    .rx1(902_300_000, dr as u8, offset as u8)
                    .unwrap();
                assert_eq!(got, *want, "DR{dr} offset {offset}");
            }
        }
        assert_eq!(Region::Us915.rx1(902_300_000, 0, 4), None);
        assert_eq!(Region::Us915.rx1(902_300_000, 5, 0), None, "LR-FHSS");
    }

    #[test]
    fn data_rate_tables_round_trip_both_directions() {
        for region in [Region::Eu868, Region::Us915] {
            for dr in 0..16u8 {
                if let Some((sf, bw)) = region.dr_to_sf_bw(dr) {
                    let dir = if region == Region::Us915 && dr >= 8 {
                        Direction::Downlink
                    } else {
                        Direction::Uplink
                    };
                    assert_eq!(
                        region.sf_bw_to_dr(sf, bw, dir),
                        Some(dr),
                        "{region:?} DR{dr}"
                    );
                    assert!(region.max_payload(dr).is_some());
                }
            }
        }
        assert_eq!(Region::Eu868.dr_to_sf_bw(0), Some((12, 125)));
        assert_eq!(Region::Eu868.dr_to_sf_bw(6), Some((7, 250)));
        assert_eq!(Region::Us915.dr_to_sf_bw(4), Some((8, 500)));
        assert_eq!(Region::Us915.dr_to_sf_bw(8), Some((12, 500)));
        assert_eq!(Region::Us915.dr_to_sf_bw(7), None);
        assert_eq!(
            Region::Us915.sf_bw_to_dr(8, 500, Direction::Uplink),
            Some(4)
        );
        assert_eq!(
            Region::Us915.sf_bw_to_dr(8, 500, Direction::Downlink),
            Some(12)
        );
        assert_eq!(Region::Us915.sf_bw_to_dr(12, 125, Direction::Uplink), None);
        assert_eq!(Region::Eu868.sf_bw_to_dr(7, 500, Direction::Uplink), None);
    }

    #[test]
    fn max_payload_and_defaults_match_rp002() {
        assert_eq!(
            Region::Eu868.max_payload(0),
            Some(MaxPayload { m: 59, n: 51 })
        );
        assert_eq!(
            Region::Eu868.max_payload(3),
            Some(MaxPayload { m: 123, n: 115 })
        );
        assert_eq!(
            Region::Eu868.max_payload(5),
            Some(MaxPayload { m: 250, n: 242 })
        );
        assert_eq!(
            Region::Us915.max_payload(0),
            Some(MaxPayload { m: 19, n: 11 })
        );
        assert_eq!(
            Region::Us915.max_payload(8),
            Some(MaxPayload { m: 61, n: 53 })
        );
        assert_eq!(
            Region::Us915.max_payload(9),
            Some(MaxPayload { m: 137, n: 129 })
        );
        assert_eq!(
            Region::Us915.max_payload(13),
            Some(MaxPayload { m: 250, n: 242 })
        );
        assert_eq!(Region::Eu868.rx2(), (869_525_000, 0));
        assert_eq!(Region::Us915.rx2(), (923_300_000, 8));
        assert_eq!(
            Region::Eu868.rx2_delay(),
            Region::Eu868.rx1_delay() + Duration::from_secs(1)
        );
        assert_eq!(Region::Us915.join_accept_delay2(), Duration::from_secs(6));
        assert_eq!(Region::Eu868.downlink_tx_power_dbm(869_525_000), 14);
        assert_eq!(Region::Us915.downlink_tx_power_dbm(923_300_000), 20);
    }

    #[test]
    fn datr_strings_parse_and_print() {
        let d: DataRate = "SF7BW125".parse().unwrap();
        assert_eq!(d, DataRate { sf: 7, bw_khz: 125 });
        assert_eq!(d.to_string(), "SF7BW125");
        for bad in [
            "",
            "SF7",
            "SF13BW125",
            "SF7BW126",
            "sf7bw125",
            "SF7BW125x",
            "FSK",
        ] {
            assert!(bad.parse::<DataRate>().is_err(), "{bad}");
        }
    }
}
