//! Identifiers and keys. [`Eui64`] and [`DevAddr`] are also the registry's
//! types in `gatewayd-adapter-lorawan` (one parser, one printer); keys have
//! the registry's shape there but a zeroed-on-drop type of their own, so the
//! I/O crate converts keys field by field. Values are written most
//! significant byte first, as on
//! labels and in the specification; the `*_le_bytes` helpers give the
//! over-the-air (little-endian) order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 64-bit EUI (DevEUI, JoinEUI, gateway EUI), most significant byte
/// first, as written on labels and in the LoRaWAN specification.
/// `Display` and `Debug` give 16 uppercase hex digits. Parsed from 16 hex
/// digits in either case, optionally written as 8 byte pairs separated by a
/// single `-` or `:` (the same throughout): `70b3d57ed0000001`,
/// `70-B3-D5-7E-D0-00-00-01`, `70:b3:d5:7e:d0:00:00:01`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Eui64(pub [u8; 8]);

impl Eui64 {
    /// From the over-the-air byte order (least significant byte first).
    pub fn from_le_bytes(mut bytes: [u8; 8]) -> Eui64 {
        bytes.reverse();
        Eui64(bytes)
    }

    /// The over-the-air byte order (least significant byte first).
    pub fn to_le_bytes(self) -> [u8; 8] {
        let mut b = self.0;
        b.reverse();
        b
    }

    /// As a number (most significant byte first).
    pub fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl From<u64> for Eui64 {
    fn from(v: u64) -> Eui64 {
        Eui64(v.to_be_bytes())
    }
}

impl fmt::Display for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A 32-bit device address. `Display` and `Debug` give 8 uppercase hex
/// digits (`26011BDA`), and `FromStr` takes exactly 8 hex digits, either
/// case; on air it is sent least significant byte first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DevAddr(pub u32);

impl DevAddr {
    /// From the over-the-air byte order.
    pub fn from_le_bytes(bytes: [u8; 4]) -> DevAddr {
        DevAddr(u32::from_le_bytes(bytes))
    }

    /// The over-the-air byte order.
    pub fn to_le_bytes(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }
}

impl fmt::Display for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl fmt::Debug for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a hex string was refused. The messages never quote the input (it may
/// be key material): they give lengths and positions only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHexError {
    /// Wrong number of characters.
    #[error("expected {expected} hex digits, got {got} characters")]
    Length {
        /// Hex digits wanted.
        expected: usize,
        /// Characters given.
        got: usize,
    },
    /// A character that is not `0-9`, `a-f` or `A-F` (1-based position).
    #[error("character {position} is not a hex digit")]
    NotHex {
        /// 1-based character position.
        position: usize,
    },
    /// Separators not exactly one `-` or `:` between every byte, the same
    /// one throughout.
    #[error("separators must be one '-' or ':' between every byte (e.g. 70-B3-D5-7E-D0-00-00-01), the same throughout")]
    Separator,
}

/// Decodes exactly `2 * out.len()` hex digits (either case, no separators)
/// into `out`. On error `out` may be partly written: callers decoding key
/// material decode straight into an key type that is zeroed on drop
/// (`gatewayd-adapter-lorawan`'s `AesKey`).
pub fn decode_hex_into(s: &str, out: &mut [u8]) -> Result<(), ParseHexError> {
    let expected = out.len() * 2;
    let got = s.chars().count();
    if got != expected {
        return Err(ParseHexError::Length { expected, got });
    }
    for (i, c) in s.chars().enumerate() {
        let v = c
            .to_digit(16)
            .ok_or(ParseHexError::NotHex { position: i + 1 })? as u8;
        if i % 2 == 0 {
            out[i / 2] = v << 4;
        } else {
            out[i / 2] |= v;
        }
    }
    Ok(())
}

impl FromStr for Eui64 {
    type Err = ParseHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 8];
        if !s.contains(['-', ':']) {
            decode_hex_into(s, &mut out)?;
            return Ok(Eui64(out));
        }
        // "XX-XX-XX-XX-XX-XX-XX-XX": 23 characters, a separator at every
        // position 3k+2.
        if s.chars().count() != 23 {
            return Err(ParseHexError::Separator);
        }
        let mut sep = None;
        let mut digit = 0;
        for (i, c) in s.chars().enumerate() {
            if i % 3 == 2 {
                if c != '-' && c != ':' {
                    return Err(ParseHexError::Separator);
                }
                match sep {
                    None => sep = Some(c),
                    Some(p) if p != c => return Err(ParseHexError::Separator),
                    Some(_) => {}
                }
            } else {
                let v = c
                    .to_digit(16)
                    .ok_or(ParseHexError::NotHex { position: i + 1 })?
                    as u8;
                if digit % 2 == 0 {
                    out[digit / 2] = v << 4;
                } else {
                    out[digit / 2] |= v;
                }
                digit += 1;
            }
        }
        Ok(Eui64(out))
    }
}

impl FromStr for DevAddr {
    type Err = ParseHexError;

    /// Exactly 8 hex digits, either case, no separators.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 4];
        decode_hex_into(s, &mut out)?;
        Ok(DevAddr(u32::from_be_bytes(out)))
    }
}

/// A 128-bit AES key (AppKey, NwkSKey, AppSKey). `Debug` and `Display`
/// give `AesKey(<redacted>)`.
///
/// Unlike the registry's `AesKey` this one is not zeroed on drop (this
/// crate forbids `unsafe`, and keys are copied into the `lorawan` crate's
/// key types on every use anyway); the I/O crate owns key storage.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AesKey(pub [u8; 16]);

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl fmt::Display for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

/// How a device joins, with its root or session keys (registry shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Over-the-air activation with JoinEUI and AppKey (1.0.x root key).
    Otaa {
        /// The JoinEUI (AppEUI in 1.0.x) the device sends.
        join_eui: Eui64,
        /// The root key.
        app_key: AesKey,
    },
    /// Activation by personalisation: fixed address and session keys.
    Abp {
        /// The fixed device address.
        dev_addr: DevAddr,
        /// Network session key.
        nwk_s_key: AesKey,
        /// Application session key.
        app_s_key: AesKey,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_print_msb_first_and_keys_are_redacted() {
        let eui = Eui64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(eui.to_string(), "0807060504030201");
        assert_eq!(eui.to_le_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            DevAddr::from_le_bytes([0xF1, 0x7D, 0xBE, 0x49]).to_string(),
            "49BE7DF1"
        );
        let a = Activation::Abp {
            dev_addr: DevAddr(1),
            nwk_s_key: AesKey([0xAB; 16]),
            app_s_key: AesKey([0xCD; 16]),
        };
        let s = format!("{a:?}");
        assert!(!s.contains("171") && !s.to_lowercase().contains("ab, ") && s.contains("redacted"));
    }
}
