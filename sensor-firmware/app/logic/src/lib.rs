//! Board-independent application logic of the gatewayd sensor firmware.
//!
//! The firmware (`../firmware`) is a thin board layer around [`App`]: it
//! implements the [`board`] traits (UART, clock, sensors, LED, health) for a
//! board, feeds received UART bytes to [`App::on_rx_byte`] and calls
//! [`App::poll`] from its main loop. Everything that decides *what* goes on
//! the wire lives here, is `no_std` without heap, and is unit-tested on the
//! host (`cargo test -p gatewayd-sensor-logic`).
//!
//! Behaviour (the contract with gatewayd's serial adapter):
//!
//! * [`App::start`] (boot): `Hello`, then `Diagnostics`. The first frame is
//!   preceded by a `0x00` so that a receiver holding garbage resynchronizes.
//! * every `sample_interval_ms` (default [`DEFAULT_SAMPLE_INTERVAL_MS`]):
//!   one `Readings` message (`temperature` in `Cel`, `humidity` in `%RH`,
//!   `time_ms` = uptime in ms, wrapping at 2³² ms);
//! * every [`DIAGNOSTICS_PERIOD_MS`]: `Diagnostics`;
//! * commands are validated with [`Command::validate`]; an invalid one is
//!   answered `Ack{Err(code)}` and changes nothing:
//!   * `SetSampleInterval{ms}`: `Ack Ok`; the next sample comes `ms` after
//!     the ack, then every `ms`;
//!   * `Identify{seconds}`: `Ack Ok`, the LED blinks (250 ms on/off) for
//!     that long (`0` stops it);
//!   * `Reboot`: `Ack Ok`, then [`Request::Reboot`] is returned to the board
//!     layer, which drains the UART, records the reason and resets;
//!   * `RequestDiagnostics`: `Hello`, `Diagnostics`, then `Ack Ok` (so that a
//!     gateway which attached late learns who is talking);
//! * a payload of another protocol version: `Error{Unsupported, "protocol
//!   version N"}`; an unknown tag: `Error{Unsupported, "unknown tag N"}`; a
//!   malformed payload: `Error{InvalidArgument, "malformed message"}`;
//! * a valid message the device never receives (a device → gateway kind:
//!   `Reading`, `Readings`, `Diagnostics`, `Ack`, `Hello`):
//!   `Error{Unsupported, "unexpected message tag N"}`; an `Error` from the
//!   gateway is ignored (an error is never answered with an error, so two
//!   confused peers cannot ping-pong);
//! * bad frames (COBS, CRC, too long) are counted (`frames_rx_errors`) and
//!   not answered: they are line noise, not a peer speaking.
//!
//! Outgoing sequence numbers are a wrapping `u16` counter starting at 0.
//! No input can panic: there is no indexing or `unwrap` on received data.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod board;
pub mod sim;

use core::fmt::Write as _;

use gatewayd_sensor_proto::frame::{FrameDecoder, MAX_FRAME, MAX_PAYLOAD};
use gatewayd_sensor_proto::msg::{
    decode_message, write_frame, AckResult, Body, Command, DecodeError, Diagnostics, Envelope,
    ErrorCode, Reading, ResetReason, Unit, Value, PROTOCOL_VERSION,
};
use gatewayd_sensor_proto::{Bounded, Str};

pub use board::{Board, Clock, Health, Led, SensorSample, Sensors, SerialTx};

/// Sample interval after boot.
pub const DEFAULT_SAMPLE_INTERVAL_MS: u32 = 1000;
/// Period of the unsolicited `Diagnostics` message.
pub const DIAGNOSTICS_PERIOD_MS: u64 = 60_000;
/// LED toggle period while identifying.
pub const IDENTIFY_BLINK_MS: u64 = 250;

/// What the device is, fixed at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Stable device id (`Hello.device_id`).
    pub device_id: Str<24>,
    /// Firmware version (`Hello.firmware`, `Diagnostics.firmware`).
    pub firmware: Str<16>,
    /// Why the device last reset (from the board's reset-reason logic).
    pub reset_reason: ResetReason,
    /// Watchdog resets counted across resets (from the noinit record).
    pub watchdog_resets: u16,
}

/// Something only the board layer can do, asked for by [`App::on_rx_byte`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A `Reboot` command was acknowledged: flush the UART, record
    /// [`ResetReason::Software`] and reset.
    Reboot,
}

/// The application state machine.
pub struct App {
    id: Identity,
    seq: u16,
    interval_ms: u32,
    next_sample_ms: u64,
    next_diag_ms: u64,
    /// End of the identify blinking, and when the LED toggles next.
    identify: Option<(u64, u64)>,
    led_on: bool,
    decoder: FrameDecoder,
    first_frame: bool,
    scratch: [u8; MAX_PAYLOAD],
    wire: [u8; MAX_FRAME],
    tx_failures: u32,
}

impl App {
    /// A new application; call [`App::start`] once the UART is up.
    pub const fn new(id: Identity) -> Self {
        Self {
            id,
            seq: 0,
            interval_ms: DEFAULT_SAMPLE_INTERVAL_MS,
            next_sample_ms: 0,
            next_diag_ms: 0,
            identify: None,
            led_on: false,
            decoder: FrameDecoder::new(),
            first_frame: true,
            scratch: [0; MAX_PAYLOAD],
            wire: [0; MAX_FRAME],
            tx_failures: 0,
        }
    }

    /// Boot: sends `Hello` and `Diagnostics` and starts the schedule (first
    /// sample one interval from now, diagnostics every minute).
    pub fn start<B: Board>(&mut self, board: &mut B) {
        let now = board.now_ms();
        self.send_hello(board);
        self.send_diagnostics(board);
        self.next_sample_ms = now.saturating_add(u64::from(self.interval_ms));
        self.next_diag_ms = now.saturating_add(DIAGNOSTICS_PERIOD_MS);
    }

    /// Current sample interval.
    pub fn sample_interval_ms(&self) -> u32 {
        self.interval_ms
    }

    /// Frames received with errors so far.
    pub fn frames_rx_errors(&self) -> u32 {
        self.decoder.errors()
    }

    /// Messages that could not be encoded (a bug; never expected).
    pub fn tx_failures(&self) -> u32 {
        self.tx_failures
    }

    /// The earliest time [`App::poll`] has something to do; the board may
    /// sleep until then (or until a byte arrives).
    pub fn next_deadline_ms(&self) -> u64 {
        let mut t = self.next_sample_ms.min(self.next_diag_ms);
        if let Some((_, toggle)) = self.identify {
            t = t.min(toggle);
        }
        t
    }

    /// Runs the timers: sampling, periodic diagnostics, identify blinking.
    pub fn poll<B: Board>(&mut self, board: &mut B) {
        let now = board.now_ms();
        if now >= self.next_sample_ms {
            self.send_readings(board, now);
            self.next_sample_ms = next_after(self.next_sample_ms, u64::from(self.interval_ms), now);
        }
        if now >= self.next_diag_ms {
            self.send_diagnostics(board);
            self.next_diag_ms = next_after(self.next_diag_ms, DIAGNOSTICS_PERIOD_MS, now);
        }
        if let Some((end, toggle)) = self.identify {
            if now >= end {
                self.identify = None;
                self.led_on = false;
                board.set_led(false);
            } else if now >= toggle {
                self.led_on = !self.led_on;
                board.set_led(self.led_on);
                self.identify = Some((end, next_after(toggle, IDENTIFY_BLINK_MS, now)));
            }
        }
    }

    /// Feeds one received UART byte; handles a message when a frame ends.
    pub fn on_rx_byte<B: Board>(&mut self, byte: u8, board: &mut B) -> Option<Request> {
        // Copy the payload out of the decoder so that it can be borrowed
        // again for sending; frames are at most MAX_PAYLOAD bytes.
        let mut payload = [0u8; MAX_PAYLOAD];
        let len = match self.decoder.push(byte)? {
            Ok(p) => {
                let dst = payload.get_mut(..p.len())?;
                dst.copy_from_slice(p);
                p.len()
            }
            Err(_) => return None, // counted by the decoder
        };
        match decode_message(payload.get(..len)?) {
            Ok(env) => self.on_message(env, board),
            Err(DecodeError::Version { got, .. }) => {
                self.send_error(
                    board,
                    ErrorCode::Unsupported,
                    format_args!("protocol version {got}"),
                );
                None
            }
            Err(DecodeError::UnknownMessage { tag }) => {
                self.send_error(
                    board,
                    ErrorCode::Unsupported,
                    format_args!("unknown tag {tag}"),
                );
                None
            }
            Err(DecodeError::Malformed) => {
                self.send_error(
                    board,
                    ErrorCode::InvalidArgument,
                    format_args!("malformed message"),
                );
                None
            }
        }
    }

    fn on_message<B: Board>(&mut self, env: Envelope, board: &mut B) -> Option<Request> {
        let cmd = match env.body {
            Body::Command(cmd) => cmd,
            Body::Error { .. } => return None,
            other => {
                let tag = other.tag();
                self.send_error(
                    board,
                    ErrorCode::Unsupported,
                    format_args!("unexpected message tag {tag}"),
                );
                return None;
            }
        };
        if let Err(code) = cmd.validate() {
            self.send_ack(board, env.seq, AckResult::Err(code));
            return None;
        }
        let now = board.now_ms();
        match cmd {
            Command::SetSampleInterval { ms } => {
                self.interval_ms = ms;
                self.send_ack(board, env.seq, AckResult::Ok);
                // Measured from the ack: the old schedule is dropped.
                self.next_sample_ms = board.now_ms().max(now).saturating_add(u64::from(ms));
                None
            }
            Command::Identify { seconds } => {
                self.send_ack(board, env.seq, AckResult::Ok);
                if seconds == 0 {
                    self.identify = None;
                    self.led_on = false;
                    board.set_led(false);
                } else {
                    self.led_on = true;
                    board.set_led(true);
                    let end = now.saturating_add(u64::from(seconds) * 1000);
                    self.identify = Some((end, now.saturating_add(IDENTIFY_BLINK_MS)));
                }
                None
            }
            Command::Reboot => {
                self.send_ack(board, env.seq, AckResult::Ok);
                Some(Request::Reboot)
            }
            Command::RequestDiagnostics => {
                self.send_hello(board);
                self.send_diagnostics(board);
                self.send_ack(board, env.seq, AckResult::Ok);
                None
            }
        }
    }

    fn send_hello<B: Board>(&mut self, board: &mut B) {
        let body = Body::Hello {
            device_id: self.id.device_id,
            firmware: self.id.firmware,
            protocol: PROTOCOL_VERSION,
        };
        self.send(board, body);
    }

    /// The current diagnostics.
    pub fn diagnostics<B: Board>(&self, board: &mut B) -> Diagnostics {
        Diagnostics {
            firmware: self.id.firmware,
            uptime_s: u32::try_from(board.now_ms() / 1000).unwrap_or(u32::MAX),
            reset_reason: self.id.reset_reason,
            battery_mv: board.battery_mv(),
            stack_free_min: board.stack_free_min(),
            watchdog_resets: self.id.watchdog_resets,
            sample_interval_ms: self.interval_ms,
            frames_rx_errors: self.decoder.errors(),
        }
    }

    fn send_diagnostics<B: Board>(&mut self, board: &mut B) {
        let d = self.diagnostics(board);
        self.send(board, Body::Diagnostics(d));
    }

    fn send_readings<B: Board>(&mut self, board: &mut B, now: u64) {
        let sample = board.sample(now);
        let time_ms = Some(now as u32); // wraps after ~49.7 days, by design
        let mut batch: Bounded<Reading, 5> = Bounded::new();
        if let Some(t) = sample.temperature_c {
            let _ = batch.push(reading("temperature", Unit::Celsius, t, time_ms));
        }
        if let Some(h) = sample.humidity_rh {
            let _ = batch.push(reading("humidity", Unit::RelativeHumidity, h, time_ms));
        }
        if !batch.is_empty() {
            self.send(board, Body::Readings(batch));
        }
    }

    fn send_ack<B: Board>(&mut self, board: &mut B, seq: u16, result: AckResult) {
        self.send(board, Body::Ack { seq, result });
    }

    fn send_error<B: Board>(
        &mut self,
        board: &mut B,
        code: ErrorCode,
        detail: core::fmt::Arguments,
    ) {
        let mut buf = TruncBuf::<32>::new();
        let _ = buf.write_fmt(detail);
        let detail = Str::new(buf.as_str()).unwrap_or_default();
        self.send(board, Body::Error { code, detail });
    }

    fn send<B: Board>(&mut self, board: &mut B, body: Body) {
        let env = Envelope::new(self.seq, body);
        self.seq = self.seq.wrapping_add(1);
        match write_frame(&env, &mut self.scratch, &mut self.wire) {
            Ok(n) => {
                if core::mem::take(&mut self.first_frame) {
                    board.write_all(&[0]);
                }
                board.write_all(self.wire.get(..n).unwrap_or(&[]));
            }
            Err(_) => self.tx_failures = self.tx_failures.wrapping_add(1),
        }
    }
}

fn reading(name: &str, unit: Unit, v: f32, time_ms: Option<u32>) -> Reading {
    Reading {
        sensor: Str::new(name).unwrap_or_default(),
        unit,
        value: Value::F32(v),
        time_ms,
    }
}

/// The next deadline of a periodic timer that fired at `now` (due at
/// `due`): one period later, or one period after `now` if that is already
/// past (no burst of catch-up messages after a long stall).
fn next_after(due: u64, period: u64, now: u64) -> u64 {
    let next = due.saturating_add(period);
    if next <= now {
        now.saturating_add(period)
    } else {
        next
    }
}

/// A `fmt::Write` into `N` bytes that silently truncates (at a char
/// boundary).
struct TruncBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> TruncBuf<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl<const N: usize> core::fmt::Write for TruncBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            let mut tmp = [0u8; 4];
            let enc = c.encode_utf8(&mut tmp).as_bytes();
            let end = self.len + enc.len();
            match self.buf.get_mut(self.len..end) {
                Some(dst) => {
                    dst.copy_from_slice(enc);
                    self.len = end;
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Formats `lm3s6965-<8 hex digits>`-style ids: `prefix` then `value` as 8
/// lower-case hex digits (truncated to 24 bytes).
pub fn device_id_hex(prefix: &str, value: u32) -> Str<24> {
    let mut buf = TruncBuf::<24>::new();
    let _ = write!(buf, "{prefix}{value:08x}");
    Str::new(buf.as_str()).unwrap_or_default()
}

/// Like [`device_id_hex`] for a 64-bit value (16 hex digits).
pub fn device_id_hex64(prefix: &str, value: u64) -> Str<24> {
    let mut buf = TruncBuf::<24>::new();
    let _ = write!(buf, "{prefix}{value:016x}");
    Str::new(buf.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
