//! The Semtech UDP packet-forwarder protocol ("GWMP", `PROTOCOL.TXT` of
//! Lora-net/packet_forwarder), as spoken by the stock `lora_pkt_fwd`: decode
//! and encode datagrams, no I/O.
//!
//! # The protocol
//!
//! Every datagram starts with a 4-byte header: protocol version (`2`), a
//! 2-byte random token, and a packet identifier. Gateway → server packets
//! then carry the 8-byte gateway EUI:
//!
//! | id   | packet    | direction | after the header                      |
//! |------|-----------|-----------|---------------------------------------|
//! | 0x00 | PUSH_DATA | gw → srv  | EUI, JSON `{"rxpk":[..],"stat":{..}}` |
//! | 0x01 | PUSH_ACK  | srv → gw  | nothing (token of the PUSH_DATA)      |
//! | 0x02 | PULL_DATA | gw → srv  | EUI (keep-alive, opens the NAT path)  |
//! | 0x03 | PULL_RESP | srv → gw  | JSON `{"txpk":{..}}`                  |
//! | 0x04 | PULL_ACK  | srv → gw  | nothing (token of the PULL_DATA)      |
//! | 0x05 | TX_ACK    | gw → srv  | EUI, optional JSON `{"txpk_ack":{..}}`|
//!
//! A server answers PUSH_DATA with PUSH_ACK and PULL_DATA with PULL_ACK
//! ([`Packet::ack`]), sends downlinks as PULL_RESP to the address the
//! gateway's last PULL_DATA came from, and learns their fate from TX_ACK.
//!
//! # What is validated
//!
//! * Header: length, version 1 or 2 ([`ProtocolVersion`]: version 1 is the
//!   same protocol without TX_ACK), identifier, EUI present where the
//!   packet has one, nothing after a packet that has no body (trailing NUL
//!   bytes, which some forwarders append, are ignored everywhere).
//! * JSON bodies: UTF-8, valid JSON, objects where the spec says object.
//!   Unknown fields are ignored.
//! * Each `rxpk` on its own ([`PushBody`]): types and ranges, `stat` is a
//!   CRC status, `modu` LORA/FSK and `datr` matching it (`"SF7BW125"` with
//!   SF 5–12 and 125/250/500 kHz, or an FSK bit rate), `freq` a frequency
//!   of 1 Hz..=u32::MAX Hz, `data` base64 (standard alphabet, padding
//!   optional) and `size` equal to its length. A bad entry becomes an
//!   [`RxPkError`] at its index; the others decode. Likewise `stat`.
//! * `txpk` the same way, but a bad `txpk` fails the datagram
//!   ([`Error::TxPk`]). `txpk_ack` statuses map to [`TxAckStatus`] with
//!   [`TxAckStatus::Other`] for unknown ones.
//!
//! # Limits
//!
//! * Datagrams longer than [`MAX_DATAGRAM_LEN`] (65 507, the largest UDP
//!   payload over IPv4) are refused.
//! * More than [`MAX_RXPK`] (1 024) `rxpk` entries are refused; entries past
//!   the limit are skipped without being stored.
//! * JSON nesting is limited to 128 levels (serde_json's limit); unknown
//!   fields are skipped without recursion, so depth cannot overflow the stack.
//! * Error messages quote at most [`MAX_QUOTED`] bytes of anything
//!   derived from the datagram. Decoding never panics.
//!
//! Encoding writes version 2 unless a [`Datagram`] says otherwise, padded
//! base64, and `modu`/`size` derived from `datr`/`data`. Note that
//! `lora_pkt_fwd` reads PULL_RESP into a 1 000-byte buffer
//! ([`LORA_PKT_FWD_MAX_PULL_RESP`]); a LoRaWAN downlink (≤ 255-byte payload)
//! stays well under it.

mod error;
mod ids;
mod json;
mod pull;
mod push;
mod radio;

pub use error::{DataRateError, Error, FieldError, RxPkError, MAX_QUOTED};
pub use ids::{Eui, Identifier, ParseEuiError, ProtocolVersion, Token};
pub use pull::{PullRespBody, TxAckBody, TxAckStatus, TxPk};
pub use push::{Location, PushBody, RSig, RxPk, Stat, StatCounters};
pub use radio::{hz_from_mhz, mhz_from_hz, CodingRate, CrcStatus, DataRate, Modulation};

/// Largest datagram accepted: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM_LEN: usize = 65_507;

/// Most `rxpk` entries accepted in one PUSH_DATA (`lora_pkt_fwd` for SX1302
/// sends up to 255 at a time; SX1301 ones 8).
pub const MAX_RXPK: usize = 1024;

/// Bytes of the common header: version, token, identifier.
pub const HEADER_LEN: usize = 4;

/// Bytes of the header of packets with a gateway EUI.
pub const HEADER_WITH_EUI_LEN: usize = 12;

/// The receive buffer of `lora_pkt_fwd` for downstream datagrams: a longer
/// PULL_RESP is cut (and then fails to parse) on the gateway.
pub const LORA_PKT_FWD_MAX_PULL_RESP: usize = 999;

/// One datagram of the protocol, without its version byte (see
/// [`Datagram`] for that).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// Gateway → server: received packets and/or status.
    PushData {
        /// Random token, to be echoed in the PUSH_ACK.
        token: Token,
        /// The gateway.
        gateway: Eui,
        /// The JSON body.
        body: PushBody,
    },
    /// Server → gateway: acknowledges the PUSH_DATA with the same token.
    PushAck {
        /// Token of the PUSH_DATA.
        token: Token,
    },
    /// Gateway → server: keep-alive; its source address is where downlinks
    /// go.
    PullData {
        /// Random token, to be echoed in the PULL_ACK.
        token: Token,
        /// The gateway.
        gateway: Eui,
    },
    /// Server → gateway: acknowledges the PULL_DATA with the same token.
    PullAck {
        /// Token of the PULL_DATA.
        token: Token,
    },
    /// Server → gateway: a packet to transmit.
    PullResp {
        /// Random token, echoed in the TX_ACK.
        token: Token,
        /// The JSON body.
        body: PullRespBody,
    },
    /// Gateway → server: whether the PULL_RESP with this token was accepted.
    TxAck {
        /// Token of the PULL_RESP.
        token: Token,
        /// The gateway.
        gateway: Eui,
        /// The JSON body; `None` (no JSON) means accepted.
        body: Option<TxAckBody>,
    },
}

/// Decodes a datagram; the version byte (1 or 2) is checked but not kept.
/// Same as [`Packet::decode`].
pub fn decode(datagram: &[u8]) -> Result<Packet, Error> {
    Packet::decode(datagram)
}

impl Packet {
    /// Decodes a datagram; the version byte (1 or 2) is checked but not kept:
    /// use [`Datagram::decode`] to answer a version-1 gateway in kind.
    pub fn decode(datagram: &[u8]) -> Result<Packet, Error> {
        Datagram::decode(datagram).map(|d| d.packet)
    }

    /// Appends the datagram, protocol version 2, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_packet(ProtocolVersion::V2, self, out);
    }

    /// The datagram, protocol version 2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The packet identifier.
    pub fn identifier(&self) -> Identifier {
        match self {
            Packet::PushData { .. } => Identifier::PushData,
            Packet::PushAck { .. } => Identifier::PushAck,
            Packet::PullData { .. } => Identifier::PullData,
            Packet::PullAck { .. } => Identifier::PullAck,
            Packet::PullResp { .. } => Identifier::PullResp,
            Packet::TxAck { .. } => Identifier::TxAck,
        }
    }

    /// The token.
    pub fn token(&self) -> Token {
        match self {
            Packet::PushData { token, .. }
            | Packet::PushAck { token }
            | Packet::PullData { token, .. }
            | Packet::PullAck { token }
            | Packet::PullResp { token, .. }
            | Packet::TxAck { token, .. } => *token,
        }
    }

    /// The gateway EUI, for the packets that carry one.
    pub fn gateway(&self) -> Option<Eui> {
        match self {
            Packet::PushData { gateway, .. }
            | Packet::PullData { gateway, .. }
            | Packet::TxAck { gateway, .. } => Some(*gateway),
            _ => None,
        }
    }

    /// The acknowledgement a server owes: PUSH_ACK for PUSH_DATA, PULL_ACK
    /// for PULL_DATA, same token; `None` for the other packets.
    pub fn ack(&self) -> Option<Packet> {
        match self {
            Packet::PushData { token, .. } => Some(Packet::PushAck { token: *token }),
            Packet::PullData { token, .. } => Some(Packet::PullAck { token: *token }),
            _ => None,
        }
    }

    /// The packet without per-entry errors (see
    /// [`PushBody::without_errors`]): what encoding writes, and so what
    /// decoding the encoding gives back.
    pub fn without_errors(self) -> Packet {
        match self {
            Packet::PushData {
                token,
                gateway,
                body,
            } => Packet::PushData {
                token,
                gateway,
                body: body.without_errors(),
            },
            other => other,
        }
    }
}

/// A [`Packet`] with the protocol version it came in (or is to go out in).
///
/// `lora_pkt_fwd` ignores acknowledgements and PULL_RESP whose version byte
/// differs from its own, so a server that accepts version-1 gateways must
/// answer each gateway in its version: [`Datagram::ack`] does.
#[derive(Debug, Clone, PartialEq)]
pub struct Datagram {
    /// The version byte.
    pub version: ProtocolVersion,
    /// The packet.
    pub packet: Packet,
}

impl Datagram {
    /// A version-2 datagram.
    pub fn v2(packet: Packet) -> Self {
        Datagram {
            version: ProtocolVersion::V2,
            packet,
        }
    }

    /// Decodes a datagram. Never panics; see the crate docs for what is
    /// checked.
    pub fn decode(datagram: &[u8]) -> Result<Datagram, Error> {
        let len = datagram.len();
        if len > MAX_DATAGRAM_LEN {
            return Err(Error::TooLong(len));
        }
        let [version, t0, t1, id, rest @ ..] = datagram else {
            return Err(Error::TooShort {
                len,
                needed: HEADER_LEN,
            });
        };
        let version = match version {
            1 => ProtocolVersion::V1,
            2 => ProtocolVersion::V2,
            v => return Err(Error::UnknownVersion(*v)),
        };
        let token = Token::from_bytes([*t0, *t1]);
        let identifier = Identifier::try_from(*id).map_err(Error::UnknownIdentifier)?;
        if version == ProtocolVersion::V1 && identifier == Identifier::TxAck {
            return Err(Error::NotInVersion {
                identifier,
                version: version.as_u8(),
            });
        }

        let packet = match identifier {
            Identifier::PushData => {
                let (gateway, body) = split_eui(datagram, rest)?;
                let text = json_text(body)?.ok_or(Error::MissingBody(identifier))?;
                Packet::PushData {
                    token,
                    gateway,
                    body: PushBody::decode(text)?,
                }
            }
            Identifier::PushAck => {
                no_body(rest, identifier)?;
                Packet::PushAck { token }
            }
            Identifier::PullData => {
                let (gateway, body) = split_eui(datagram, rest)?;
                no_body(body, identifier)?;
                Packet::PullData { token, gateway }
            }
            Identifier::PullAck => {
                no_body(rest, identifier)?;
                Packet::PullAck { token }
            }
            Identifier::PullResp => {
                let text = json_text(rest)?.ok_or(Error::MissingBody(identifier))?;
                Packet::PullResp {
                    token,
                    body: PullRespBody::decode(text)?,
                }
            }
            Identifier::TxAck => {
                let (gateway, body) = split_eui(datagram, rest)?;
                let body = match json_text(body)? {
                    Some(text) => Some(TxAckBody::decode(text)?),
                    None => None,
                };
                Packet::TxAck {
                    token,
                    gateway,
                    body,
                }
            }
        };
        Ok(Datagram { version, packet })
    }

    /// Appends the datagram to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_packet(self.version, &self.packet, out);
    }

    /// The datagram's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The acknowledgement owed for this datagram, in the same version.
    pub fn ack(&self) -> Option<Datagram> {
        self.packet.ack().map(|packet| Datagram {
            version: self.version,
            packet,
        })
    }

    /// See [`Packet::without_errors`].
    pub fn without_errors(self) -> Datagram {
        Datagram {
            version: self.version,
            packet: self.packet.without_errors(),
        }
    }
}

/// Splits the EUI off the bytes after the 4-byte header.
fn split_eui<'a>(datagram: &[u8], rest: &'a [u8]) -> Result<(Eui, &'a [u8]), Error> {
    match rest.split_first_chunk::<8>() {
        Some((eui, body)) => Ok((Eui(*eui), body)),
        None => Err(Error::TooShort {
            len: datagram.len(),
            needed: HEADER_WITH_EUI_LEN,
        }),
    }
}

fn strip_trailing_nuls(mut body: &[u8]) -> &[u8] {
    while let [head @ .., 0] = body {
        body = head;
    }
    body
}

fn no_body(body: &[u8], identifier: Identifier) -> Result<(), Error> {
    let extra = strip_trailing_nuls(body).len();
    if extra == 0 {
        Ok(())
    } else {
        Err(Error::TrailingBytes { identifier, extra })
    }
}

/// The JSON text of a body, or `None` if there is none (empty, or only
/// whitespace and trailing NULs).
fn json_text(body: &[u8]) -> Result<Option<&str>, Error> {
    let body = strip_trailing_nuls(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    std::str::from_utf8(body)
        .map(Some)
        .map_err(|e| Error::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })
}

fn encode_packet(version: ProtocolVersion, packet: &Packet, out: &mut Vec<u8>) {
    out.push(version.as_u8());
    out.extend_from_slice(&packet.token().to_bytes());
    out.push(packet.identifier().as_u8());
    match packet {
        Packet::PushData { gateway, body, .. } => {
            out.extend_from_slice(&gateway.0);
            body.encode(out);
        }
        Packet::PullData { gateway, .. } => out.extend_from_slice(&gateway.0),
        Packet::PushAck { .. } | Packet::PullAck { .. } => {}
        Packet::PullResp { body, .. } => body.encode(out),
        Packet::TxAck { gateway, body, .. } => {
            out.extend_from_slice(&gateway.0);
            if let Some(body) = body {
                body.encode(out);
            }
        }
    }
}
