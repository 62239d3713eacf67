//! Data uplinks: classification, MIC, FCnt, decryption, MAC commands.
//!
//! [`classify`] looks at the frame layout only (no keys): it is the
//! *decode* step and tells join requests from data uplinks.
//! [`process_data_uplink`] does *MIC → fcnt → decrypt → MAC* for one
//! candidate session and changes that session only when it accepts the
//! frame.

use lorawan::keys::AES128;
use lorawan::parser::EncryptedDataPayload;

use crate::mac::{parse_uplink_mac, MacParseStop, MacUp};
use crate::session::{fcnt32, FcntError, Session};
use crate::types::{DevAddr, Eui64};

/// The longest PHYPayload accepted: MHDR + the largest MACPayload of any
/// region here (250) + MIC.
pub const MAX_PHY_PAYLOAD: usize = 255;
/// MHDR (1) + FHDR without FOpts (7) + MIC (4).
const MIN_DATA_LEN: usize = 12;

/// Why an uplink was not accepted. Messages never quote payload or keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UplinkError {
    /// Too short, too long, or the FHDR does not fit.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// Not a LoRaWAN R1 frame (MHDR major bits).
    #[error("unsupported LoRaWAN major version")]
    UnsupportedMajor,
    /// A downlink, proprietary or RFU message type where an uplink was
    /// expected (or a join request given to the data path).
    #[error("message type {0:#05b} is not handled on the uplink data path")]
    NotDataUplink(u8),
    /// The frame's DevAddr is not the session's.
    #[error("DevAddr {got} does not match the session's {expected}")]
    WrongDevAddr {
        /// The session's address.
        expected: DevAddr,
        /// The frame's address.
        got: DevAddr,
    },
    /// The MIC does not verify with the session's NwkSKey (wrong key,
    /// corrupted frame, or not this device).
    #[error("MIC check failed")]
    Mic,
    /// Authenticated, but older than the last accepted frame.
    #[error("replayed frame: counter {fcnt} is not above the last accepted {last}")]
    Replay {
        /// The last accepted counter.
        last: u32,
        /// The frame's (reconstructed) counter.
        fcnt: u32,
    },
    /// Authenticated, same counter as the last accepted frame, and not an
    /// identical confirmed retransmission (unconfirmed NbTrans repetition
    /// or different content): dropped.
    #[error("frame counter {fcnt} repeated")]
    Repeated {
        /// The repeated counter.
        fcnt: u32,
    },
    /// Authenticated, but more than MAX_FCNT_GAP ahead.
    #[error("frame counter {fcnt} is more than MAX_FCNT_GAP ahead of {last}")]
    FcntGap {
        /// The last accepted counter.
        last: u32,
        /// The frame's (reconstructed) counter.
        fcnt: u32,
    },
    /// The session's uplink counter is at `u32::MAX`.
    #[error("uplink frame counter exhausted; the device must rejoin")]
    FcntExhausted,
    /// MAC commands both in FOpts and in an FPort 0 payload (forbidden,
    /// LoRaWAN 1.0.4 §4.3.1.6).
    #[error("MAC commands in both FOpts and an FPort 0 payload")]
    MacInFoptsAndPayload,
}

/// What [`classify`] found, without keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A JoinRequest (23 bytes).
    JoinRequest {
        /// JoinEUI (AppEUI).
        join_eui: Eui64,
        /// DevEUI.
        dev_eui: Eui64,
        /// DevNonce (little-endian on air).
        dev_nonce: u16,
    },
    /// An unconfirmed or confirmed data uplink.
    DataUp {
        /// Device address.
        dev_addr: DevAddr,
        /// The 16 transmitted FCnt bits.
        fcnt16: u16,
        /// ConfirmedDataUp.
        confirmed: bool,
    },
}

/// The layout of a data frame, read by hand (no keys needed).
#[derive(Debug, Clone, Copy)]
struct Layout {
    confirmed: bool,
    dev_addr: DevAddr,
    fctrl: u8,
    fcnt16: u16,
    fopts_len: usize,
    /// FPort, if the MACPayload has a byte after the FHDR.
    fport: Option<u8>,
    /// Start of FRMPayload (after FPort).
    frm_start: usize,
    /// End of FRMPayload (start of the MIC).
    frm_end: usize,
}

fn data_layout(phy: &[u8]) -> Result<Layout, UplinkError> {
    if phy.len() < MIN_DATA_LEN {
        return Err(UplinkError::Malformed("shorter than a data frame"));
    }
    if phy.len() > MAX_PHY_PAYLOAD {
        return Err(UplinkError::Malformed("longer than any region allows"));
    }
    let mhdr = phy[0];
    if mhdr & 0x03 != 0 {
        return Err(UplinkError::UnsupportedMajor);
    }
    let mtype = mhdr >> 5;
    let confirmed = match mtype {
        0b010 => false,
        0b100 => true,
        other => return Err(UplinkError::NotDataUplink(other)),
    };
    let fctrl = phy[5];
    let fopts_len = usize::from(fctrl & 0x0F);
    let fhdr_end = 8 + fopts_len;
    let mic_start = phy.len() - 4;
    if fhdr_end > mic_start {
        return Err(UplinkError::Malformed("FOpts run into the MIC"));
    }
    let (fport, frm_start) = if fhdr_end < mic_start {
        (Some(phy[fhdr_end]), fhdr_end + 1)
    } else {
        (None, fhdr_end)
    };
    Ok(Layout {
        confirmed,
        dev_addr: DevAddr::from_le_bytes([phy[1], phy[2], phy[3], phy[4]]),
        fctrl,
        fcnt16: u16::from_le_bytes([phy[6], phy[7]]),
        fopts_len,
        fport,
        frm_start,
        frm_end: mic_start,
    })
}

/// The *decode* step: tells a JoinRequest from a data uplink by the MHDR
/// and checks the layout. No keys, no state.
pub fn classify(phy: &[u8]) -> Result<Frame, UplinkError> {
    let Some(&mhdr) = phy.first() else {
        return Err(UplinkError::Malformed("empty"));
    };
    if mhdr & 0x03 != 0 {
        return Err(UplinkError::UnsupportedMajor);
    }
    if mhdr >> 5 == 0 {
        if phy.len() != 23 {
            return Err(UplinkError::Malformed("a JoinRequest is 23 bytes"));
        }
        let mut join = [0u8; 8];
        join.copy_from_slice(&phy[1..9]);
        let mut dev = [0u8; 8];
        dev.copy_from_slice(&phy[9..17]);
        return Ok(Frame::JoinRequest {
            join_eui: Eui64::from_le_bytes(join),
            dev_eui: Eui64::from_le_bytes(dev),
            dev_nonce: u16::from_le_bytes([phy[17], phy[18]]),
        });
    }
    let l = data_layout(phy)?;
    Ok(Frame::DataUp {
        dev_addr: l.dev_addr,
        fcnt16: l.fcnt16,
        confirmed: l.confirmed,
    })
}

/// An accepted data uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Device address.
    pub dev_addr: DevAddr,
    /// Reconstructed 32-bit FCnt.
    pub fcnt32: u32,
    /// FPort, if present.
    pub fport: Option<u8>,
    /// ConfirmedDataUp: the network must answer with ACK.
    pub confirmed: bool,
    /// FCtrl.ADR: the device runs adaptive data rate.
    pub adr: bool,
    /// FCtrl.ADRACKReq: the device asks for any downlink.
    pub adr_ack_req: bool,
    /// FCtrl.ACK: the device acknowledges the last confirmed downlink.
    pub ack_bit: bool,
    /// FRMPayload, decrypted (AppSKey for FPort > 0, NwkSKey for FPort 0).
    /// For FPort 0 these are the MAC command bytes, also parsed into
    /// `mac_commands`.
    pub payload: Vec<u8>,
    /// MAC commands from FOpts or the FPort 0 payload.
    pub mac_commands: Vec<MacUp>,
    /// Set when MAC command parsing stopped early.
    pub mac_stop: Option<MacParseStop>,
    /// An identical retransmission of the last accepted confirmed uplink:
    /// answer with an ACK, produce no reading (see [`crate::session`]).
    pub retransmission: bool,
    /// The frame's MIC.
    pub mic: [u8; 4],
}

/// Runs MIC → fcnt → decrypt → MAC for one candidate session.
///
/// On success the session's `fcnt_up` and `last_uplink_mic` are updated
/// (not for a retransmission, which changes nothing). On any error the
/// session is left unchanged. The MIC is always checked with the 32-bit
/// counter the frame would have, so every counter error (`Replay`,
/// `Repeated`, `FcntGap`) is reported only for authenticated frames;
/// unauthenticated ones are `Mic`.
pub fn process_data_uplink(session: &mut Session, phy: &[u8]) -> Result<Uplink, UplinkError> {
    let l = data_layout(phy)?;
    if l.dev_addr.0 != session.dev_addr {
        return Err(UplinkError::WrongDevAddr {
            expected: DevAddr(session.dev_addr),
            got: l.dev_addr,
        });
    }
    let frame = EncryptedDataPayload::new(phy.to_vec())
        .map_err(|_| UplinkError::Malformed("rejected by the frame parser"))?;
    let nwk = AES128(session.nwk_s_key);
    let mic_ok = |fcnt: u32| frame.validate_mic(&nwk, fcnt);
    let mut mic = [0u8; 4];
    mic.copy_from_slice(&phy[l.frm_end..]);

    let mut retransmission = false;
    let fcnt = match fcnt32(session.fcnt_up, l.fcnt16) {
        Ok(f) => {
            if !mic_ok(f) {
                return Err(UplinkError::Mic);
            }
            f
        }
        Err(FcntError::Repeated { fcnt }) => {
            if !mic_ok(fcnt) {
                return Err(UplinkError::Mic);
            }
            if !(l.confirmed && session.last_uplink_mic == Some(mic)) {
                return Err(UplinkError::Repeated { fcnt });
            }
            retransmission = true;
            fcnt
        }
        Err(FcntError::Replay {
            last, candidate, ..
        }) => {
            return Err(if mic_ok(candidate) {
                UplinkError::Replay {
                    last,
                    fcnt: candidate,
                }
            } else {
                UplinkError::Mic
            });
        }
        Err(FcntError::Gap {
            last, candidate, ..
        }) => {
            return Err(if mic_ok(candidate) {
                UplinkError::FcntGap {
                    last,
                    fcnt: candidate,
                }
            } else {
                UplinkError::Mic
            });
        }
        Err(FcntError::Exhausted) => return Err(UplinkError::FcntExhausted),
    };

    if l.fport == Some(0) && l.fopts_len > 0 {
        return Err(UplinkError::MacInFoptsAndPayload);
    }

    let app = AES128(session.app_s_key);
    let plain = frame
        .decrypt(Some(&nwk), Some(&app), fcnt)
        .map_err(|_| UplinkError::Malformed("decryption refused"))?
        .to_inner();
    let payload = plain[l.frm_start..l.frm_end].to_vec();
    let (mac_commands, mac_stop) = if l.fport == Some(0) {
        parse_uplink_mac(&payload)
    } else {
        parse_uplink_mac(&phy[8..8 + l.fopts_len])
    };

    if !retransmission {
        session.fcnt_up = Some(fcnt);
        session.last_uplink_mic = Some(mic);
    }
    Ok(Uplink {
        dev_addr: l.dev_addr,
        fcnt32: fcnt,
        fport: l.fport,
        confirmed: l.confirmed,
        adr: l.fctrl & 0x80 != 0,
        adr_ack_req: l.fctrl & 0x40 != 0,
        ack_bit: l.fctrl & 0x20 != 0,
        payload,
        mac_commands,
        mac_stop,
        retransmission,
        mic,
    })
}
