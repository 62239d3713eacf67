//! MAC commands (LoRaWAN 1.0.4 §5, class B commands of 1.0.3 §14).
//!
//! Uplink commands are parsed here rather than with the `lorawan` crate's
//! iterator, which indexes past the end of a truncated command. Parsing
//! stops at the first command whose CID is unknown (its length is unknown,
//! so nothing after it can be located) or whose payload is cut short; the
//! commands before it are kept and the stop is reported.

use lorawan::maccommandcreator::{DeviceTimeAnsCreator, LinkCheckAnsCreator};
use lorawan::maccommands::SerializableMacCommand;

/// Most commands taken from one frame (FOpts holds at most 15 bytes, an
/// FPort 0 payload at most 242, and the shortest command is 1 byte).
pub const MAX_MAC_COMMANDS: usize = 64;

/// An uplink (end device → network) MAC command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacUp {
    /// 0x02: the device asks for link margin and gateway count.
    LinkCheckReq,
    /// 0x0D: the device asks for the network time (GPS epoch).
    DeviceTimeReq,
    /// 0x06: battery (0 external, 1..=254 level, 255 unknown) and the SNR
    /// margin of the last DevStatusReq (6-bit signed, dB).
    DevStatusAns {
        /// Battery level.
        battery: u8,
        /// Demodulation margin in dB, −32..=31.
        margin: i8,
    },
    /// Any other command of known length (an answer to a request this
    /// network server never sends, or a class B command): kept as bytes.
    Other {
        /// Command identifier.
        cid: u8,
        /// The payload after the CID.
        payload: Vec<u8>,
    },
}

/// Why uplink MAC command parsing stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MacParseStop {
    /// A CID that LoRaWAN 1.0.x does not define for uplinks (or a
    /// proprietary 0x80..=0xFF one): its length is unknown.
    #[error("unknown MAC command 0x{cid:02X} at byte {offset}")]
    Unknown {
        /// The CID.
        cid: u8,
        /// Its offset in the MAC command bytes.
        offset: usize,
    },
    /// A known CID with fewer payload bytes left than it needs.
    #[error("MAC command 0x{cid:02X} at byte {offset} is truncated")]
    Truncated {
        /// The CID.
        cid: u8,
        /// Its offset in the MAC command bytes.
        offset: usize,
    },
    /// More than [`MAX_MAC_COMMANDS`] commands.
    #[error("more than {MAX_MAC_COMMANDS} MAC commands")]
    TooMany,
}

/// Payload length of an uplink MAC command, by CID (1.0.4 Table 4 and
/// 1.0.3 class B): `None` for CIDs not defined for uplinks.
pub const fn uplink_mac_len(cid: u8) -> Option<usize> {
    match cid {
        0x02 => Some(0), // LinkCheckReq
        0x03 => Some(1), // LinkADRAns
        0x04 => Some(0), // DutyCycleAns
        0x05 => Some(1), // RXParamSetupAns
        0x06 => Some(2), // DevStatusAns
        0x07 => Some(1), // NewChannelAns
        0x08 => Some(0), // RXTimingSetupAns
        0x09 => Some(0), // TxParamSetupAns
        0x0A => Some(1), // DlChannelAns
        0x0D => Some(0), // DeviceTimeReq
        0x10 => Some(1), // PingSlotInfoReq (class B)
        0x11 => Some(1), // PingSlotChannelAns (class B)
        0x13 => Some(1), // BeaconFreqAns (class B)
        _ => None,
    }
}

/// Parses uplink MAC commands (FOpts, or a decrypted FPort 0 payload).
/// Returns the commands read and, if parsing stopped early, why.
pub fn parse_uplink_mac(bytes: &[u8]) -> (Vec<MacUp>, Option<MacParseStop>) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if out.len() == MAX_MAC_COMMANDS {
            return (out, Some(MacParseStop::TooMany));
        }
        let cid = bytes[i];
        let Some(len) = uplink_mac_len(cid) else {
            return (out, Some(MacParseStop::Unknown { cid, offset: i }));
        };
        let Some(payload) = bytes.get(i + 1..i + 1 + len) else {
            return (out, Some(MacParseStop::Truncated { cid, offset: i }));
        };
        out.push(match cid {
            0x02 => MacUp::LinkCheckReq,
            0x0D => MacUp::DeviceTimeReq,
            0x06 => {
                // 6-bit two's complement in the low bits of the second byte.
                let raw = payload[1] & 0x3F;
                let margin = if raw & 0x20 != 0 {
                    raw as i8 - 64
                } else {
                    raw as i8
                };
                MacUp::DevStatusAns {
                    battery: payload[0],
                    margin,
                }
            }
            _ => MacUp::Other {
                cid,
                payload: payload.to_vec(),
            },
        });
        i += 1 + len;
    }
    (out, None)
}

/// A downlink (network → end device) MAC command this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacDown {
    /// 0x02: link margin (dB above the demodulation floor, 0..=254) and the
    /// number of gateways that received the LinkCheckReq.
    LinkCheckAns {
        /// Margin in dB.
        margin: u8,
        /// Gateway count.
        gw_cnt: u8,
    },
    /// 0x0D: seconds since the GPS epoch and fractional seconds in 1/256 s.
    DeviceTimeAns {
        /// Whole GPS seconds (wraps every ~136 years).
        gps_seconds: u32,
        /// Fraction of a second, units of 2⁻⁸ s.
        fraction: u8,
    },
}

/// A MAC command built by the `lorawan` crate's creators, as the crate's
/// serialisation trait wants it.
pub(crate) enum Built {
    LinkCheck(LinkCheckAnsCreator),
    DeviceTime(DeviceTimeAnsCreator),
}

impl Built {
    pub(crate) fn as_dyn(&self) -> &dyn SerializableMacCommand {
        match self {
            Built::LinkCheck(c) => c,
            Built::DeviceTime(c) => c,
        }
    }
}

impl MacDown {
    /// Encoded length including the CID.
    pub const fn len(&self) -> usize {
        match self {
            MacDown::LinkCheckAns { .. } => 3,
            MacDown::DeviceTimeAns { .. } => 6,
        }
    }

    /// Always false: every command has at least its CID.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The command's bytes, CID first, fields little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let built = self.build();
        let cmd = built.as_dyn();
        let mut v = Vec::with_capacity(self.len());
        v.push(cmd.cid());
        v.extend_from_slice(cmd.payload_bytes());
        v
    }

    pub(crate) fn build(&self) -> Built {
        match *self {
            MacDown::LinkCheckAns { margin, gw_cnt } => {
                let mut c = LinkCheckAnsCreator::new();
                c.set_margin(margin).set_gateway_count(gw_cnt);
                Built::LinkCheck(c)
            }
            MacDown::DeviceTimeAns {
                gps_seconds,
                fraction,
            } => {
                let mut c = DeviceTimeAnsCreator::new();
                c.set_seconds(gps_seconds);
                // The creator takes nanoseconds and stores ns / 3_906_250
                // (= 1e9 / 256): fraction × 3_906_250 round-trips exactly
                // and is always below 1e9, so this cannot fail.
                let _ = c.set_nano_seconds(u32::from(fraction) * 3_906_250);
                Built::DeviceTime(c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_check_and_device_time_requests() {
        let (cmds, stop) = parse_uplink_mac(&[0x02, 0x0D]);
        assert_eq!(cmds, vec![MacUp::LinkCheckReq, MacUp::DeviceTimeReq]);
        assert_eq!(stop, None);
    }

    #[test]
    fn parses_answers_of_known_length_and_dev_status() {
        let (cmds, stop) = parse_uplink_mac(&[0x03, 0x07, 0x06, 0xFE, 0x3F, 0x02, 0x08]);
        assert_eq!(
            cmds,
            vec![
                MacUp::Other {
                    cid: 3,
                    payload: vec![7]
                },
                MacUp::DevStatusAns {
                    battery: 0xFE,
                    margin: -1
                },
                MacUp::LinkCheckReq,
                MacUp::Other {
                    cid: 8,
                    payload: vec![]
                },
            ]
        );
        assert_eq!(stop, None);
        let (cmds, _) = parse_uplink_mac(&[0x06, 0x00, 0x1F]);
        assert_eq!(
            cmds,
            vec![MacUp::DevStatusAns {
                battery: 0,
                margin: 31
            }]
        );
    }

    #[test]
    fn unknown_command_stops_parsing_and_keeps_earlier_ones() {
        let (cmds, stop) = parse_uplink_mac(&[0x02, 0x80, 0x02]);
        assert_eq!(cmds, vec![MacUp::LinkCheckReq]);
        assert_eq!(
            stop,
            Some(MacParseStop::Unknown {
                cid: 0x80,
                offset: 1
            })
        );
        let (cmds, stop) = parse_uplink_mac(&[0x01]);
        assert!(cmds.is_empty());
        assert_eq!(stop, Some(MacParseStop::Unknown { cid: 1, offset: 0 }));
    }

    #[test]
    fn truncated_command_is_reported_not_read_past_the_end() {
        // RXParamSetupAns (0x05) needs one byte: the crate's iterator would
        // slice past the end here.
        let (cmds, stop) = parse_uplink_mac(&[0x02, 0x05]);
        assert_eq!(cmds, vec![MacUp::LinkCheckReq]);
        assert_eq!(stop, Some(MacParseStop::Truncated { cid: 5, offset: 1 }));
        let (_, stop) = parse_uplink_mac(&[0x06, 0x01]);
        assert_eq!(stop, Some(MacParseStop::Truncated { cid: 6, offset: 0 }));
    }

    #[test]
    fn too_many_commands_are_capped() {
        let (cmds, stop) = parse_uplink_mac(&[0x02; 100]);
        assert_eq!(cmds.len(), MAX_MAC_COMMANDS);
        assert_eq!(stop, Some(MacParseStop::TooMany));
    }

    #[test]
    fn downlink_answers_encode_little_endian() {
        assert_eq!(
            MacDown::LinkCheckAns {
                margin: 20,
                gw_cnt: 3
            }
            .to_bytes(),
            vec![0x02, 20, 3]
        );
        assert_eq!(
            MacDown::DeviceTimeAns {
                gps_seconds: 0x1234_5678,
                fraction: 0x80
            }
            .to_bytes(),
            vec![0x0D, 0x78, 0x56, 0x34, 0x12, 0x80]
        );
        for f in 0..=255u8 {
            let b = MacDown::DeviceTimeAns {
                gps_seconds: 0,
                fraction: f,
            }
            .to_bytes();
            assert_eq!(b[5], f);
        }
    }
}
