//! Small identifiers of the datagram header: gateway EUI, token, version,
//! packet identifier.

use std::fmt;
use std::str::FromStr;

/// A gateway's 64-bit EUI ("MAC address" in `PROTOCOL.TXT`), in wire order
/// (most significant byte first, as `lora_pkt_fwd` sends it).
///
/// Displays as 16 upper-case hex digits, e.g. `AA555A0000000000`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Eui(pub [u8; 8]);

impl Eui {
    /// The EUI as a big-endian integer.
    pub fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl From<[u8; 8]> for Eui {
    fn from(bytes: [u8; 8]) -> Self {
        Eui(bytes)
    }
}

impl From<u64> for Eui {
    fn from(value: u64) -> Self {
        Eui(value.to_be_bytes())
    }
}

impl fmt::Display for Eui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Eui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Eui({self})")
    }
}

/// The text is not 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an EUI is 16 hex digits")]
pub struct ParseEuiError;

impl FromStr for Eui {
    type Err = ParseEuiError;

    /// Parses 16 hex digits (either case), e.g. `AA555A0000000000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 16 {
            return Err(ParseEuiError);
        }
        let mut out = [0u8; 8];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(ParseEuiError)?;
            let lo = hex_digit(pair[1]).ok_or(ParseEuiError)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Eui(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The 2-byte random token of a datagram. An acknowledgement carries the
/// token of the datagram it acknowledges.
///
/// The value is the two wire bytes read big-endian (byte 1 is the high
/// byte); the forwarder only compares bytes, so the order only matters for
/// display.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Token(pub u16);

impl Token {
    /// The two bytes as they appear at offsets 1 and 2 of the datagram.
    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    /// The token from bytes 1 and 2 of a datagram.
    pub fn from_bytes(bytes: [u8; 2]) -> Self {
        Token(u16::from_be_bytes(bytes))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({self})")
    }
}

/// The protocol version byte (byte 0).
///
/// Version 2 is what every `lora_pkt_fwd` since v3.0.0 sends. Version 1 is
/// the same protocol without TX_ACK (packet forwarder v1.x/v2.x); it is
/// accepted for every packet type that existed then. A gateway drops
/// acknowledgements and PULL_RESP whose version differs from its own, so a
/// server must answer in the version it was spoken to: see
/// [`Datagram`](crate::Datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtocolVersion {
    /// `PROTOCOL.TXT` v1.0–v1.2: no TX_ACK.
    V1 = 1,
    /// `PROTOCOL.TXT` v1.3 onwards (TX_ACK added).
    #[default]
    V2 = 2,
}

impl ProtocolVersion {
    /// The version byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The packet identifier (byte 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// Gateway → server: received packets and/or status (0x00).
    PushData = 0x00,
    /// Server → gateway: acknowledges a PUSH_DATA (0x01).
    PushAck = 0x01,
    /// Gateway → server: keep-alive that opens the downlink route (0x02).
    PullData = 0x02,
    /// Server → gateway: a packet to transmit (0x03).
    PullResp = 0x03,
    /// Server → gateway: acknowledges a PULL_DATA (0x04).
    PullAck = 0x04,
    /// Gateway → server: outcome of a PULL_RESP (0x05, version 2 only).
    TxAck = 0x05,
}

impl Identifier {
    /// The identifier byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name used in `PROTOCOL.TXT`, e.g. `PUSH_DATA`.
    pub fn name(self) -> &'static str {
        match self {
            Identifier::PushData => "PUSH_DATA",
            Identifier::PushAck => "PUSH_ACK",
            Identifier::PullData => "PULL_DATA",
            Identifier::PullResp => "PULL_RESP",
            Identifier::PullAck => "PULL_ACK",
            Identifier::TxAck => "TX_ACK",
        }
    }
}

impl TryFrom<u8> for Identifier {
    type Error = u8;

    fn try_from(value: u8) -> Result<Self, u8> {
        Ok(match value {
            0x00 => Identifier::PushData,
            0x01 => Identifier::PushAck,
            0x02 => Identifier::PullData,
            0x03 => Identifier::PullResp,
            0x04 => Identifier::PullAck,
            0x05 => Identifier::TxAck,
            other => return Err(other),
        })
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui_displays_as_16_upper_case_hex_digits_and_parses_back() {
        let eui = Eui([0xaa, 0x55, 0x5a, 0, 0, 0, 0x0b, 0xcd]);
        assert_eq!(eui.to_string(), "AA555A0000000BCD");
        assert_eq!("aa555a0000000bcd".parse::<Eui>(), Ok(eui));
        assert_eq!(Eui::from(eui.to_u64()), eui);
        assert_eq!("AA555A0000000BC".parse::<Eui>(), Err(ParseEuiError));
        assert_eq!("AA555A0000000BCG".parse::<Eui>(), Err(ParseEuiError));
        assert_eq!("ÄA555A0000000BC".parse::<Eui>(), Err(ParseEuiError));
    }

    #[test]
    fn token_is_the_two_wire_bytes_big_endian() {
        assert_eq!(Token::from_bytes([0x12, 0x34]), Token(0x1234));
        assert_eq!(Token(0x1234).to_bytes(), [0x12, 0x34]);
        assert_eq!(Token(0xab).to_string(), "00AB");
    }
}
