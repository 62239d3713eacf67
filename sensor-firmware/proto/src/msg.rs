//! Messages: what a frame's payload contains.
//!
//! # Envelope
//!
//! Every payload is the [postcard](https://postcard.jamesmunns.com/wire-format)
//! encoding of an [`Envelope`]:
//!
//! ```text
//! payload = version: u8 (1 raw byte) ‖ seq: u16 (varint) ‖ body: Body
//! body    = tag: varint(u32) ‖ fields of that variant, in declaration order
//! ```
//!
//! postcard writes `u8` as one raw byte; `u16`/`u32` as LEB128-style varints
//! (7 bits per byte, least significant first, high bit = "more"); `i32` as a
//! zigzag varint; `f32` as 4 bytes little-endian; `bool` as `0x00`/`0x01`;
//! `Option` as `0x00` (None) or `0x01` followed by the value; a string as a
//! varint byte length and the UTF-8 bytes; a sequence as a varint element
//! count and the elements; an enum as a varint variant index and the
//! variant's fields. Nothing is self-describing: field order is the schema.
//!
//! `seq` is chosen by the sender (typically incremented per message, wrapping
//! around) and is echoed in [`Body::Ack`] to answer a [`Body::Command`].
//!
//! # Body tags (append-only)
//!
//! | tag | variant                 | direction          |
//! |-----|-------------------------|--------------------|
//! | 0   | [`Body::Reading`]       | device → gateway   |
//! | 1   | [`Body::Readings`]      | device → gateway   |
//! | 2   | [`Body::Diagnostics`]   | device → gateway   |
//! | 3   | [`Body::Command`]       | gateway → device   |
//! | 4   | [`Body::Ack`]           | device → gateway   |
//! | 5   | [`Body::Error`]         | either             |
//! | 6   | [`Body::Hello`]         | device → gateway   |
//!
//! The nested enums ([`Unit`], [`Value`], [`ResetReason`], [`Command`],
//! [`AckResult`], [`ErrorCode`]) are encoded the same way, their variant index
//! being their declaration order as listed in their docs.
//!
//! # Compatibility rule
//!
//! 1. A receiver reads the version byte first. A version other than
//!    [`PROTOCOL_VERSION`] is a different, incompatible protocol: the payload
//!    is refused with [`DecodeError::Version`], which names both versions.
//!    Any change to existing messages (adding, removing, reordering or
//!    retyping a field or a nested enum variant) requires a new version.
//! 2. Within version 1, new message kinds are only ever *appended* to
//!    [`Body`] (tag 7, 8, …); existing tags never change meaning. A receiver
//!    that meets a tag it does not know gets
//!    [`DecodeError::UnknownMessage`] with the tag, so it can count and skip
//!    the message (the frame itself was valid) instead of treating it as
//!    corruption. Payloads must be exactly one envelope: trailing bytes are
//!    [`DecodeError::Malformed`].
//!
//! # Size
//!
//! Every [`Envelope`] that can be built encodes to at most [`MAX_PAYLOAD`]
//! bytes: the largest is a [`Body::Readings`] of [`MAX_READINGS`] readings
//! with the longest names, an `Other` unit and a time (6 + 5 × 47 = 241
//! bytes). A batch is therefore limited to 5 readings, not 8.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::frame::{encode_frame, FrameError, MAX_PAYLOAD};
use crate::types::{Bounded, Str};

/// The protocol version this crate speaks (the first payload byte).
pub const PROTOCOL_VERSION: u8 = 1;

/// Highest [`Body`] tag this crate knows.
pub const MAX_KNOWN_TAG: u32 = 6;

/// Most readings in one [`Body::Readings`] batch.
pub const MAX_READINGS: usize = 5;

/// Smallest sample interval a device accepts ([`Command::validate`]).
pub const MIN_SAMPLE_INTERVAL_MS: u32 = 100;
/// Largest sample interval a device accepts (one hour).
pub const MAX_SAMPLE_INTERVAL_MS: u32 = 3_600_000;
/// Longest identify (blink) duration a device accepts.
pub const MAX_IDENTIFY_S: u8 = 60;

/// A sensor name, SenML style (`"temperature"`, `"humidity"`), ≤ 24 bytes.
pub type Name = Str<24>;

/// One payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version; [`PROTOCOL_VERSION`] for everything this crate
    /// sends (see [`Envelope::new`]).
    pub version: u8,
    /// Sender's sequence number.
    pub seq: u16,
    /// The message.
    pub body: Body,
}

impl Envelope {
    /// An envelope of the current [`PROTOCOL_VERSION`].
    pub fn new(seq: u16, body: Body) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            seq,
            body,
        }
    }
}

/// The message kinds. Append-only: the variant index is the wire tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "no heap to box into: a batch is stored inline (about 400 bytes)"
)]
pub enum Body {
    /// Tag 0: one sensor reading.
    Reading(Reading),
    /// Tag 1: up to [`MAX_READINGS`] readings taken together.
    Readings(Bounded<Reading, MAX_READINGS>),
    /// Tag 2: device health, periodically or on [`Command::RequestDiagnostics`].
    Diagnostics(Diagnostics),
    /// Tag 3: a command to the device, answered by [`Body::Ack`].
    Command(Command),
    /// Tag 4: the answer to the command sent with sequence number `seq`.
    Ack {
        /// `seq` of the command's envelope.
        seq: u16,
        /// Outcome.
        result: AckResult,
    },
    /// Tag 5: a protocol error seen by the sender (bad CRC, unknown message…).
    Error {
        /// Category.
        code: ErrorCode,
        /// Human-readable detail, ≤ 32 bytes.
        detail: Str<32>,
    },
    /// Tag 6: sent by the device at boot.
    Hello {
        /// Stable device identifier, ≤ 24 bytes.
        device_id: Str<24>,
        /// Firmware version (semver, e.g. `"0.1.0"`), ≤ 16 bytes.
        firmware: Str<16>,
        /// The device's [`PROTOCOL_VERSION`].
        protocol: u8,
    },
}

impl Body {
    /// The wire tag of this variant.
    pub fn tag(&self) -> u32 {
        match self {
            Body::Reading(_) => 0,
            Body::Readings(_) => 1,
            Body::Diagnostics(_) => 2,
            Body::Command(_) => 3,
            Body::Ack { .. } => 4,
            Body::Error { .. } => 5,
            Body::Hello { .. } => 6,
        }
    }
}

/// A sensor reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// SenML name, e.g. `"temperature"`.
    pub sensor: Name,
    /// Unit of `value`.
    pub unit: Unit,
    /// The value.
    pub value: Value,
    /// Device time of the measurement (ms since boot), if known.
    pub time_ms: Option<u32>,
}

/// SenML units (RFC 8428 §12.1) used by the sensors.
///
/// Variant indexes: 0 `Cel`, 1 `%RH`, 2 `Pa`, 3 `V`, 4 `A`, 5 `W`, 6 `lx`,
/// 7 `m/s2`, 8 `ppm`, 9 `count`, 10 `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// `Cel`: degrees Celsius.
    Celsius,
    /// `%RH`: relative humidity.
    RelativeHumidity,
    /// `Pa`: pascal.
    Pascal,
    /// `V`: volt.
    Volt,
    /// `A`: ampere.
    Ampere,
    /// `W`: watt.
    Watt,
    /// `lx`: lux.
    Lux,
    /// `m/s2`: metres per second squared.
    MetersPerSecondSquared,
    /// `ppm`: parts per million.
    Ppm,
    /// `count`: a count.
    Count,
    /// Any other SenML unit symbol, ≤ 8 bytes.
    Other(Str<8>),
}

impl Unit {
    /// The SenML unit symbol.
    pub fn senml(&self) -> &str {
        match self {
            Unit::Celsius => "Cel",
            Unit::RelativeHumidity => "%RH",
            Unit::Pascal => "Pa",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Watt => "W",
            Unit::Lux => "lx",
            Unit::MetersPerSecondSquared => "m/s2",
            Unit::Ppm => "ppm",
            Unit::Count => "count",
            Unit::Other(s) => s.as_str(),
        }
    }

    /// The unit for a SenML symbol: a named variant when there is one,
    /// else `Other` (`None` if the symbol is longer than 8 bytes).
    pub fn from_senml(symbol: &str) -> Option<Unit> {
        Some(match symbol {
            "Cel" => Unit::Celsius,
            "%RH" => Unit::RelativeHumidity,
            "Pa" => Unit::Pascal,
            "V" => Unit::Volt,
            "A" => Unit::Ampere,
            "W" => Unit::Watt,
            "lx" => Unit::Lux,
            "m/s2" => Unit::MetersPerSecondSquared,
            "ppm" => Unit::Ppm,
            "count" => Unit::Count,
            other => Unit::Other(Str::new(other).ok()?),
        })
    }
}

/// A reading's value. Variant indexes: 0 `F32`, 1 `I32`, 2 `Bool`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A measurement (SenML `v`).
    F32(f32),
    /// An integer measurement or count (SenML `v`).
    I32(i32),
    /// A boolean state (SenML `vb`).
    Bool(bool),
}

/// Device health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Firmware version (semver, e.g. `"0.1.0"`).
    pub firmware: Str<16>,
    /// Seconds since boot.
    pub uptime_s: u32,
    /// Why the device last reset.
    pub reset_reason: ResetReason,
    /// Battery voltage in millivolts, if measured.
    pub battery_mv: Option<u16>,
    /// Lowest free stack seen since boot, bytes (high-water mark).
    pub stack_free_min: u32,
    /// Watchdog resets counted (persisted across resets).
    pub watchdog_resets: u16,
    /// Current sample interval, ms.
    pub sample_interval_ms: u32,
    /// Frames the device received with errors (COBS, CRC, too long…).
    pub frames_rx_errors: u32,
}

/// Cause of the last reset. Variant indexes: 0 `PowerOn`, 1 `Watchdog`,
/// 2 `Software`, 3 `Brownout`, 4 `Pin`, 5 `Lockup`, 6 `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetReason {
    /// Power-on reset.
    PowerOn,
    /// Watchdog timeout.
    Watchdog,
    /// Software request (e.g. [`Command::Reboot`]).
    Software,
    /// Supply voltage dropped.
    Brownout,
    /// Reset pin.
    Pin,
    /// Core lockup.
    Lockup,
    /// Not determined.
    Unknown,
}

/// A command to the device. Variant indexes: 0 `SetSampleInterval`,
/// 1 `Identify`, 2 `Reboot`, 3 `RequestDiagnostics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Change the sample interval.
    SetSampleInterval {
        /// New interval in ms, [`MIN_SAMPLE_INTERVAL_MS`]..=[`MAX_SAMPLE_INTERVAL_MS`].
        ms: u32,
    },
    /// Make the device noticeable (blink an LED).
    Identify {
        /// Duration, at most [`MAX_IDENTIFY_S`].
        seconds: u8,
    },
    /// Restart the device (acknowledged first).
    Reboot,
    /// Send a [`Body::Diagnostics`] now.
    RequestDiagnostics,
}

impl Command {
    /// Checks the arguments; the receiving device must call this and answer
    /// [`AckResult::Err`] with the returned code on failure.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        match *self {
            Command::SetSampleInterval { ms }
                if !(MIN_SAMPLE_INTERVAL_MS..=MAX_SAMPLE_INTERVAL_MS).contains(&ms) =>
            {
                Err(ErrorCode::InvalidArgument)
            }
            Command::Identify { seconds } if seconds > MAX_IDENTIFY_S => {
                Err(ErrorCode::InvalidArgument)
            }
            _ => Ok(()),
        }
    }
}

/// Outcome of a command. Variant indexes: 0 `Ok`, 1 `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckResult {
    /// Done (or, for `Reboot`, about to be done).
    Ok,
    /// Refused.
    Err(ErrorCode),
}

/// Error categories. Variant indexes: 0 `InvalidArgument`, 1 `Unsupported`,
/// 2 `Busy`, 3 `Internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// An argument is out of range.
    InvalidArgument,
    /// Not supported (unknown message, missing hardware…).
    Unsupported,
    /// Try again later.
    Busy,
    /// Failure inside the device.
    Internal,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer cannot hold the encoded message.
    BufferTooSmall,
    /// The serializer failed otherwise (not expected for these types).
    Serialize,
    /// Framing failed ([`write_frame`]).
    Frame(FrameError),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("buffer too small for the message"),
            EncodeError::Serialize => f.write_str("message serialization failed"),
            EncodeError::Frame(e) => write!(f, "framing failed: {e}"),
        }
    }
}

impl From<FrameError> for EncodeError {
    fn from(e: FrameError) -> Self {
        EncodeError::Frame(e)
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is of another protocol version.
    Version {
        /// The payload's version byte.
        got: u8,
        /// [`PROTOCOL_VERSION`].
        supported: u8,
    },
    /// A version-1 message kind this receiver does not know (newer sender).
    UnknownMessage {
        /// The body tag.
        tag: u32,
    },
    /// Truncated, invalid field values, over-long strings or sequences,
    /// invalid UTF-8, or trailing bytes.
    Malformed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Version { got, supported } => write!(
                f,
                "protocol version {got} not supported (this side speaks version {supported})"
            ),
            DecodeError::UnknownMessage { tag } => write!(f, "unknown message tag {tag}"),
            DecodeError::Malformed => f.write_str("malformed message"),
        }
    }
}

/// Serializes `env` into `buf`; returns the encoded bytes. A `buf` of
/// [`MAX_PAYLOAD`] bytes is always large enough.
pub fn encode_message<'a>(env: &Envelope, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
    match postcard::to_slice(env, buf) {
        Ok(bytes) => Ok(bytes),
        Err(postcard::Error::SerializeBufferFull) => Err(EncodeError::BufferTooSmall),
        Err(_) => Err(EncodeError::Serialize),
    }
}

/// Reads a postcard varint of at most `max_bytes` bytes.
fn take_varint(bytes: &[u8], max_bytes: usize) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(max_bytes) {
        let shift = 7 * u32::try_from(i).ok()?;
        let part = u32::from(b & 0x7F);
        let shifted = part.checked_shl(shift)?;
        if shifted >> shift != part {
            return None; // more than 32 bits
        }
        value |= shifted;
        if b & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

/// Decodes one payload, applying the compatibility rule (module docs).
pub fn decode_message(payload: &[u8]) -> Result<Envelope, DecodeError> {
    let (&version, rest) = payload.split_first().ok_or(DecodeError::Malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let (_seq, rest) = take_varint(rest, 3)
        .filter(|&(seq, _)| seq <= u32::from(u16::MAX))
        .ok_or(DecodeError::Malformed)?;
    let (tag, _) = take_varint(rest, 5).ok_or(DecodeError::Malformed)?;
    if tag > MAX_KNOWN_TAG {
        return Err(DecodeError::UnknownMessage { tag });
    }
    match postcard::take_from_bytes::<Envelope>(payload) {
        Ok((env, [])) => Ok(env),
        _ => Err(DecodeError::Malformed),
    }
}

/// Encodes `env` into `scratch` (≥ [`MAX_PAYLOAD`] bytes is enough), then
/// frames it into `out` (≥ [`MAX_FRAME`](crate::frame::MAX_FRAME) is
/// enough); returns the number of frame bytes in `out`.
pub fn write_frame(
    env: &Envelope,
    scratch: &mut [u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let payload = encode_message(env, scratch)?;
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::Frame(FrameError::PayloadTooLarge));
    }
    Ok(encode_frame(payload, out)?)
}
