//! The serial protocol between gatewayd and its sensor firmware.
//!
//! Two layers, both `no_std` without heap, shared by the Cortex-M firmware
//! and the gateway's serial adapter:
//!
//! * [`frame`]: COBS + CRC-32 framing, `0x00`-delimited, with a streaming
//!   [`Decoder`](frame::Decoder) that resynchronizes after garbage;
//! * [`msg`]: the versioned [postcard](https://docs.rs/postcard) messages
//!   ([`Envelope`](msg::Envelope), [`Body`](msg::Body)) and the
//!   compatibility rule;
//! * [`types`]: the fixed-capacity [`Str`] and [`Bounded`] used by messages.
//!
//! Sending: [`msg::write_frame`]. Receiving: feed UART bytes to a
//! [`frame::FrameDecoder`] and pass each payload to [`msg::decode_message`].
//!
//! ```
//! use gatewayd_sensor_proto::frame::{FrameDecoder, MAX_FRAME, MAX_PAYLOAD};
//! use gatewayd_sensor_proto::msg::{decode_message, write_frame, Body, Command, Envelope};
//!
//! let env = Envelope::new(7, Body::Command(Command::Identify { seconds: 5 }));
//! let (mut scratch, mut wire) = ([0u8; MAX_PAYLOAD], [0u8; MAX_FRAME]);
//! let n = write_frame(&env, &mut scratch, &mut wire).unwrap();
//!
//! let mut decoder = FrameDecoder::new();
//! let mut got = None;
//! decoder.feed(&wire[..n], |frame| got = Some(decode_message(frame.unwrap())));
//! assert_eq!(got, Some(Ok(env)));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod frame;
pub mod msg;
pub mod types;

pub use types::{Bounded, CapacityError, Str};

/// The `frame` fuzz target's body (`fuzz/fuzz_targets/frame.rs`), here so
/// that `tests/fuzz_corpus.rs` runs the same code on stable.
///
/// Feeds `data` to a [`frame::FrameDecoder`] and every payload to
/// [`msg::decode_message`]; every decoded message must re-encode, and the
/// re-encoding must decode and re-encode to the same bytes. Returns the
/// number of messages decoded, or which check failed (a bug in this crate;
/// the fuzz target panics on it).
#[doc(hidden)]
pub fn fuzz_frame(data: &[u8]) -> Result<usize, &'static str> {
    let mut decoder = frame::FrameDecoder::new();
    let mut decoded = 0;
    let mut failure = None;
    decoder.feed(data, |r| {
        let Ok(payload) = r else { return };
        let Ok(env) = msg::decode_message(payload) else {
            return;
        };
        decoded += 1;
        if let Err(e) = check_round_trip(&env) {
            failure.get_or_insert(e);
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(decoded),
    }
}

fn check_round_trip(env: &msg::Envelope) -> Result<(), &'static str> {
    let mut a = [0u8; frame::MAX_PAYLOAD];
    let mut b = [0u8; frame::MAX_PAYLOAD];
    let first =
        msg::encode_message(env, &mut a).map_err(|_| "a decoded message fails to encode")?;
    let again = msg::decode_message(first).map_err(|_| "a re-encoded message fails to decode")?;
    let second =
        msg::encode_message(&again, &mut b).map_err(|_| "a message fails to encode twice")?;
    if first != second {
        return Err("re-encoding changed the bytes");
    }
    Ok(())
}
