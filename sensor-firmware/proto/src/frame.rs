//! Framing: how one payload travels over the UART.
//!
//! # Wire format
//!
//! ```text
//! frame = COBS( payload ‖ CRC-32(payload) as 4 bytes little-endian ) ‖ 0x00
//! ```
//!
//! * **Payload**: 0..=[`MAX_PAYLOAD`] bytes (in this protocol, one postcard
//!   encoded [`Envelope`](crate::msg::Envelope)).
//! * **CRC-32**: IEEE 802.3 (the zlib / Ethernet CRC): reflected, polynomial
//!   `0xEDB88320`, initial value `0xFFFFFFFF`, final XOR `0xFFFFFFFF`; the
//!   check value of the ASCII bytes `123456789` is `0xCBF43926`. It covers the
//!   payload only and is appended least significant byte first.
//! * **COBS** (Consistent Overhead Byte Stuffing, Cheshire & Baker 1999)
//!   removes every `0x00` from `payload ‖ crc`: the data is split at each zero
//!   into blocks; each block is written as a code byte `n` (1..=255) followed
//!   by `n - 1` non-zero data bytes. A code below `0xFF` means "followed by a
//!   zero", except for the last block, whose zero is implied by the end of the
//!   frame. A code of `0xFF` means 254 data bytes and *no* zero; a run of 254
//!   non-zero bytes at the very end of the data is therefore not followed by
//!   an extra `0x01` block (the encoder never emits one; the decoder accepts
//!   one). The overhead is at most one byte per 254 bytes of data.
//! * **Delimiter**: a single `0x00` ends the frame. It can never occur inside
//!   an encoded frame, so a receiver that lost sync (line noise, a reset
//!   mid-frame, attaching to a running device) resynchronizes at the next
//!   `0x00`. An empty frame (two `0x00` in a row) carries nothing and is
//!   ignored; a sender may emit a `0x00` *before* each frame to flush any
//!   garbage the receiver holds.
//!
//! The largest frame ([`MAX_FRAME`] bytes) carries [`MAX_PAYLOAD`] bytes of
//! payload: 256 + 4 CRC bytes + 2 COBS code bytes + 1 delimiter = 263.
//!
//! # Receiving
//!
//! [`Decoder`] accumulates bytes in a fixed buffer and hands out each payload
//! when its delimiter arrives (see [`Decoder::push`] for the error rules).

use core::fmt;

/// Largest payload a frame carries.
pub const MAX_PAYLOAD: usize = 256;

/// Length of the CRC appended to the payload.
pub const CRC_LEN: usize = 4;

/// Worst-case COBS encoded length of `n` data bytes (without delimiter).
pub const fn cobs_max_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Largest frame on the wire: encoded payload and CRC plus the delimiter.
pub const MAX_FRAME: usize = cobs_max_len(MAX_PAYLOAD + CRC_LEN) + 1;

/// A [`Decoder`] sized for every frame of this protocol.
pub type FrameDecoder = Decoder<MAX_FRAME>;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Encoding: the payload is longer than [`MAX_PAYLOAD`].
    PayloadTooLarge,
    /// Encoding: the output buffer cannot hold the encoded frame.
    BufferTooSmall,
    /// Decoding: more bytes than the decoder's buffer arrived before a
    /// delimiter; the rest of the frame is discarded.
    TooLong,
    /// Decoding: the bytes are not valid COBS.
    Cobs,
    /// Decoding: the decoded frame is shorter than its CRC.
    TooShort,
    /// Decoding: the CRC does not match the payload.
    Crc,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FrameError::PayloadTooLarge => "payload larger than the maximum of 256 bytes",
            FrameError::BufferTooSmall => "output buffer too small for the encoded frame",
            FrameError::TooLong => "frame longer than the receive buffer; discarded",
            FrameError::Cobs => "invalid COBS encoding",
            FrameError::TooShort => "frame shorter than its 4-byte CRC",
            FrameError::Crc => "CRC mismatch",
        };
        f.write_str(s)
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        // The index is masked to 0..=255, so it always exists.
        let idx = usize::from((crc as u8) ^ b);
        crc = CRC_TABLE.get(idx).copied().unwrap_or(0) ^ (crc >> 8);
    }
    !crc
}

fn put(out: &mut [u8], at: usize, byte: u8) -> Result<(), FrameError> {
    *out.get_mut(at).ok_or(FrameError::BufferTooSmall)? = byte;
    Ok(())
}

/// COBS-encodes exactly `total` bytes from `input` into `out`.
fn cobs_encode_iter(
    input: impl Iterator<Item = u8>,
    total: usize,
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let mut code_at = 0usize; // where the current block's code byte goes
    let mut code: u8 = 1; // 1 + data bytes in the current block
    let mut w = 1usize; // next data byte position
    for (i, b) in input.take(total).enumerate() {
        if b == 0 {
            put(out, code_at, code)?;
            code_at = w;
            w += 1;
            code = 1;
        } else {
            put(out, w, b)?;
            w += 1;
            code += 1;
            if code == 0xFF && i + 1 < total {
                put(out, code_at, code)?;
                code_at = w;
                w += 1;
                code = 1;
            }
        }
    }
    put(out, code_at, code)?;
    Ok(w)
}

/// COBS-encodes `input` into `out` (no delimiter); returns the encoded
/// length, at most [`cobs_max_len`]`(input.len())`.
pub fn cobs_encode(input: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    cobs_encode_iter(input.iter().copied(), input.len(), out)
}

/// Decodes COBS data (without delimiter) in place; returns the decoded
/// length. The decoded bytes are `buf[..len]`.
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, FrameError> {
    let len = buf.len();
    if len == 0 {
        return Err(FrameError::Cobs);
    }
    // Invariant: w < r after reading a code byte, so writes never overtake
    // unread input.
    let (mut r, mut w) = (0usize, 0usize);
    while r < len {
        let code = buf.get(r).copied().ok_or(FrameError::Cobs)?;
        if code == 0 {
            return Err(FrameError::Cobs);
        }
        r += 1;
        let n = usize::from(code) - 1;
        let end = r
            .checked_add(n)
            .filter(|&e| e <= len)
            .ok_or(FrameError::Cobs)?;
        let block = buf.get(r..end).ok_or(FrameError::Cobs)?;
        if block.contains(&0) {
            return Err(FrameError::Cobs);
        }
        buf.copy_within(r..end, w);
        w += n;
        r = end;
        if code != 0xFF && r < len {
            *buf.get_mut(w).ok_or(FrameError::Cobs)? = 0;
            w += 1;
        }
    }
    Ok(w)
}

/// COBS-decodes `input` (without delimiter) into `out`, which must be at
/// least `input.len()` bytes long; returns the decoded length.
pub fn cobs_decode(input: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let buf = out
        .get_mut(..input.len())
        .ok_or(FrameError::BufferTooSmall)?;
    buf.copy_from_slice(input);
    cobs_decode_in_place(buf)
}

/// Writes the frame for `payload` (encoded bytes and the `0x00` delimiter)
/// to `out`; returns the number of bytes written. An `out` of
/// [`MAX_FRAME`] bytes is always large enough.
pub fn encode_frame(payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge);
    }
    let crc = crc32(payload).to_le_bytes();
    let data = payload.iter().copied().chain(crc);
    let n = cobs_encode_iter(data, payload.len() + CRC_LEN, out)?;
    put(out, n, 0)?;
    Ok(n + 1)
}

/// Streaming frame decoder with a fixed buffer of `N` encoded bytes.
///
/// `N` bounds the encoded frame without its delimiter; [`FrameDecoder`]
/// (`N` = [`MAX_FRAME`]) accepts every frame of this protocol. The decoder
/// counts the frames it delivered and the errors it reported
/// ([`frames`](Self::frames), [`errors`](Self::errors); both wrap around);
/// the caller may count on its own instead.
#[derive(Debug, Clone)]
pub struct Decoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    discarding: bool,
    frames: u32,
    errors: u32,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            discarding: false,
            frames: 0,
            errors: 0,
        }
    }

    /// Feeds one byte.
    ///
    /// Returns `None` while a frame is incomplete, and at a delimiter that
    /// ends an empty frame (ignored silently) or a discarded over-long frame.
    /// Otherwise, at a delimiter, returns the payload (CRC stripped) or the
    /// error: [`FrameError::Cobs`], [`FrameError::TooShort`] or
    /// [`FrameError::Crc`]. The byte that overflows the buffer returns
    /// [`FrameError::TooLong`] once; the decoder then drops everything up to
    /// and including the next `0x00`.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if byte != 0 {
            if self.discarding {
                return None;
            }
            return match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                    None
                }
                None => {
                    self.discarding = true;
                    self.len = 0;
                    Some(Err(self.fail(FrameError::TooLong)))
                }
            };
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.discarding) || len == 0 {
            return None;
        }
        match self.decode(len) {
            Ok(n) => {
                self.frames = self.frames.wrapping_add(1);
                Some(Ok(self.buf.get(..n).unwrap_or(&[])))
            }
            Err(e) => Some(Err(self.fail(e))),
        }
    }

    /// Feeds `bytes`, calling `f` with every payload or error, in order.
    pub fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(Result<&[u8], FrameError>)) {
        for &b in bytes {
            if let Some(r) = self.push(b) {
                f(r);
            }
        }
    }

    /// Decodes `buf[..len]` in place; returns the payload length.
    fn decode(&mut self, len: usize) -> Result<usize, FrameError> {
        let buf = self.buf.get_mut(..len).ok_or(FrameError::TooLong)?;
        let n = cobs_decode_in_place(buf)?;
        let payload_len = n.checked_sub(CRC_LEN).ok_or(FrameError::TooShort)?;
        let payload = buf.get(..payload_len).ok_or(FrameError::TooShort)?;
        let crc = buf
            .get(payload_len..n)
            .and_then(|b| <[u8; CRC_LEN]>::try_from(b).ok())
            .ok_or(FrameError::TooShort)?;
        if crc32(payload) != u32::from_le_bytes(crc) {
            return Err(FrameError::Crc);
        }
        Ok(payload_len)
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.errors = self.errors.wrapping_add(1);
        e
    }

    /// Drops a partially received frame (for example after a UART error).
    pub fn reset(&mut self) {
        self.len = 0;
        self.discarding = false;
    }

    /// Payloads delivered so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Errors reported so far (one per bad or over-long frame).
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Bytes of the frame being received (0 while discarding).
    pub fn pending(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_frame_is_the_encoding_of_a_full_payload() {
        assert_eq!(MAX_FRAME, 263);
        let payload = [0x55u8; MAX_PAYLOAD];
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(&payload, &mut out).unwrap();
        assert!(n <= MAX_FRAME);
    }

    #[test]
    fn decoder_buffer_of_max_frame_accepts_the_largest_frame() {
        let payload = [0x01u8; MAX_PAYLOAD];
        let mut out = [0u8; MAX_FRAME];
        let n = encode_frame(&payload, &mut out).unwrap();
        let mut d = FrameDecoder::new();
        let mut got = 0;
        d.feed(&out[..n], |r| {
            assert_eq!(r.unwrap(), &payload[..]);
            got += 1;
        });
        assert_eq!(got, 1);
    }
}
