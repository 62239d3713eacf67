//! Identifiers and keys, with the same shapes as the registry types of
//! `gatewayd-adapter-lorawan` (`registry.rs`), so the I/O crate converts
//! field by field. Values are written most significant byte first, as on
//! labels and in the specification; the `*_le_bytes` helpers give the
//! over-the-air (little-endian) order.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 64-bit EUI (DevEUI, JoinEUI, gateway EUI), most significant byte
/// first. `Display` and `Debug` give 16 uppercase hex digits.
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
/// digits (`26011BDA`); on air it is sent least significant byte first.
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
