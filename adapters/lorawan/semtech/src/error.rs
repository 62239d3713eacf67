//! Errors. None of them holds more than [`MAX_QUOTED`] bytes of text that
//! came from the datagram.

use std::fmt;

use crate::{Identifier, MAX_DATAGRAM_LEN, MAX_RXPK};

/// The most bytes of a message derived from attacker-controlled input that an
/// error keeps (longer text is cut on a character boundary and ends in `…`).
pub const MAX_QUOTED: usize = 96;

/// Why a datagram could not be decoded at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than its header: 4 bytes, or 12 for the packet types that
    /// carry a gateway EUI (PUSH_DATA, PULL_DATA, TX_ACK).
    #[error("datagram too short: {len} bytes, at least {needed} needed")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// Longer than a UDP/IPv4 payload can be.
    #[error("datagram too long: {0} bytes, the limit is {max}", max = MAX_DATAGRAM_LEN)]
    TooLong(usize),
    /// Byte 0 is neither 1 nor 2.
    #[error("unknown protocol version {0} (1 and 2 are understood)")]
    UnknownVersion(u8),
    /// Byte 3 is not one of 0x00..=0x05.
    #[error("unknown packet identifier 0x{0:02x}")]
    UnknownIdentifier(u8),
    /// A packet type that the version does not have (TX_ACK in version 1).
    #[error("{identifier} does not exist in protocol version {version}")]
    NotInVersion {
        /// The packet type.
        identifier: Identifier,
        /// The version byte.
        version: u8,
    },
    /// Bytes after a packet that has no body (PUSH_ACK, PULL_DATA, PULL_ACK).
    /// Trailing NUL bytes are tolerated and not counted.
    #[error("{identifier} has no body, but {extra} more bytes follow its header")]
    TrailingBytes {
        /// The packet type.
        identifier: Identifier,
        /// How many bytes follow the header.
        extra: usize,
    },
    /// PUSH_DATA or PULL_RESP without its JSON object.
    #[error("{0} has no JSON body")]
    MissingBody(Identifier),
    /// The JSON body is not UTF-8.
    #[error("the JSON body is not valid UTF-8 (valid up to byte {valid_up_to} of the body)")]
    NotUtf8 {
        /// Offset in the body of the first invalid byte.
        valid_up_to: usize,
    },
    /// The body is not JSON, or not JSON of the expected shape (a root
    /// object; `rxpk` an array of objects; `txpk` / `txpk_ack` objects).
    #[error("invalid JSON body: {0}")]
    Json(String),
    /// More `rxpk` entries than [`MAX_RXPK`].
    #[error("too many rxpk: {0}, the limit is {max}", max = MAX_RXPK)]
    TooManyRxPk(usize),
    /// The PULL_RESP `txpk` is well-formed JSON but its content is invalid.
    #[error("invalid txpk: {0}")]
    TxPk(FieldError),
}

/// What is wrong with one `rxpk`, the `stat` object or a `txpk`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// Wrong JSON shape: missing field, wrong type, out-of-range integer.
    #[error("{0}")]
    Json(String),
    /// `data` is not base64 (standard alphabet, padding optional).
    #[error("data is not valid base64: {0}")]
    Base64(String),
    /// `size` differs from the length of the decoded `data`.
    #[error("size is {declared} but data holds {actual} bytes")]
    SizeMismatch {
        /// The `size` field.
        declared: u64,
        /// Length of the decoded `data`.
        actual: usize,
    },
    /// `modu` is neither `"LORA"` nor `"FSK"` (e.g. `"LR-FHSS"`).
    #[error("modu {0:?} is neither LORA nor FSK")]
    UnknownModulation(String),
    /// `datr` is invalid or does not match `modu`.
    #[error("datr: {0}")]
    DataRate(#[from] DataRateError),
    /// `stat` of an rxpk is not 1, -1 or 0.
    #[error("stat {0} is not a CRC status (1, -1 or 0)")]
    CrcStatus(i64),
    /// `freq` does not round to a frequency of 1 Hz to `u32::MAX` Hz.
    #[error("freq {0} MHz is not in 0.000001..=4294.967295 MHz")]
    Frequency(f64),
}

/// A `datr` that is not a valid data rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataRateError {
    /// Not of the form `SF<n>BW<khz>` (canonical, no leading zeros), nor a
    /// bit rate.
    #[error("expected a LoRa data rate such as \"SF7BW125\"")]
    Format,
    /// The spreading factor is not 5..=12.
    #[error("spreading factor {0} is not in 5..=12")]
    SpreadingFactor(u32),
    /// The bandwidth is not 125, 250 or 500 kHz.
    #[error("bandwidth {0} kHz is not 125, 250 or 500")]
    Bandwidth(u32),
    /// An FSK bit rate that is not an integer in 1..=u32::MAX.
    #[error("an FSK bit rate is an integer from 1 to 4294967295")]
    FskRate,
    /// `modu` is LORA but `datr` is not a string.
    #[error("LORA needs a string such as \"SF7BW125\"")]
    LoraNotString,
    /// `modu` is FSK but `datr` is not a number.
    #[error("FSK needs a bit rate number")]
    FskNotNumber,
}

/// One `rxpk` entry of a PUSH_DATA that could not be used; the others of the
/// same datagram are unaffected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rxpk[{index}]: {error}")]
pub struct RxPkError {
    /// Position in the `rxpk` array (0-based).
    pub index: usize,
    /// What is wrong with it.
    pub error: FieldError,
}

/// Text of `msg`, cut to [`MAX_QUOTED`] bytes.
pub(crate) fn short(msg: impl fmt::Display) -> String {
    let mut s = msg.to_string();
    if s.len() > MAX_QUOTED {
        let mut end = MAX_QUOTED;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cuts_long_text_on_a_character_boundary() {
        assert_eq!(short("abc"), "abc");
        let long = "é".repeat(200);
        let cut = short(&long);
        assert!(cut.len() <= MAX_QUOTED + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
