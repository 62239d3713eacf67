//! The sans-IO state machine of one serial port.
//!
//! A [`Session`] is fed what happens to its port — it is being opened
//! ([`opening`](Session::opening)), it opened ([`opened`](Session::opened)),
//! bytes arrived ([`handle_bytes`](Session::handle_bytes)), time passed
//! ([`handle_timeout`](Session::handle_timeout), at
//! [`poll_timeout`](Session::poll_timeout)), a command came in
//! ([`submit_command`](Session::submit_command)), the port closed
//! ([`closed`](Session::closed)) — and yields [`Output`]s from
//! [`poll_output`](Session::poll_output): frames to write, readings to
//! submit, command completions. It does no I/O and reads no clock: the
//! caller passes a monotonic `now` (timers) and the gateway's wall clock
//! (reading timestamps), so it is tested without ports or sleeping.
//!
//! Everything it keeps is bounded: the frame decoder's buffer
//! ([`MAX_FRAME`](gatewayd_sensor_proto::frame::MAX_FRAME)), the readings
//! held until the device identifies itself ([`MAX_HELD`]), the commands
//! waiting for their ack (`max_pending`), the probe seqs
//! ([`MAX_PROBE_SEQS`]) and the output queue (a few entries per input).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use gatewayd_core::{CommandError, CommandResult, LogRateLimit};
use gatewayd_model::{DeviceId, Measurement, Metadata, Reading, Timestamp, Transport, Value};
use gatewayd_sensor_proto::frame::{FrameDecoder, FrameError, MAX_FRAME, MAX_PAYLOAD};
use gatewayd_sensor_proto::msg::{
    self, AckResult, Body, Command, DecodeError, Diagnostics, Envelope, ErrorCode, ResetReason,
    PROTOCOL_VERSION,
};
use serde::Serialize;

/// Messages (`Reading`, `Readings`, `Diagnostics`) held while the device
/// has not identified itself on this open, at most; beyond, the oldest is
/// dropped (`dropped_unidentified`).
pub const MAX_HELD: usize = 32;
/// A held message older than `hello_timeout` × this is dropped.
pub const HOLD_TIMEOUT_FACTOR: u32 = 10;
/// Longest interval between two identity probes.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Seqs of recent identity probes remembered (their acks are expected).
pub const MAX_PROBE_SEQS: usize = 4;
/// Least time between two log lines of the same kind (per port).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the port task needs to know to drive one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The port's name (`extra["port"]`, status, command routing).
    pub port: String,
    /// The device path (status only).
    pub path: String,
    pub command_timeout: Duration,
    pub command_retries: u32,
    pub max_pending: usize,
    pub hello_timeout: Duration,
}

/// Where the port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Closed,
    Opening,
    Open,
}

/// Per-port counters (the `counters` object of the status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Bytes read from the port.
    pub bytes_rx: u64,
    /// Frames with a good CRC.
    pub frames_ok: u64,
    pub crc_errors: u64,
    pub cobs_errors: u64,
    pub too_short: u64,
    pub too_long: u64,
    /// Frames of another protocol version.
    pub version_mismatch: u64,
    /// Version-1 messages of a kind this gateway does not know.
    pub unknown_message: u64,
    pub malformed: u64,
    /// Good messages that a device does not send (`Command`).
    pub unexpected_message: u64,
    /// `Error` messages received.
    pub device_errors: u64,
    pub hellos: u64,
    /// Sensor readings (items of `Reading`/`Readings`) received.
    pub readings: u64,
    /// `Diagnostics` messages received.
    pub diagnostics: u64,
    /// Readings handed to the pipeline.
    pub readings_submitted: u64,
    /// Non-finite values left out of a reading.
    pub invalid_values: u64,
    pub commands_sent: u64,
    /// Resends of an unanswered command (same seq).
    pub commands_resent: u64,
    pub commands_acked: u64,
    pub commands_refused: u64,
    pub commands_timed_out: u64,
    /// Commands failed because the port closed.
    pub commands_failed: u64,
    /// Acks whose seq matches no command in flight.
    pub unmatched_acks: u64,
    /// `RequestDiagnostics` sent to learn the identity.
    pub hello_probes: u64,
    /// Successful opens after the first.
    pub reopen_count: u64,
    /// Messages dropped because the device had not identified itself.
    pub dropped_unidentified: u64,
    /// `Hello`s whose device id is not a valid device id.
    pub invalid_device_id: u64,
    /// Messages dropped because the device's id is invalid.
    pub dropped_invalid_id: u64,
    /// Submissions dropped because the pipeline did not take them in time
    /// (counted by the port task).
    pub dropped_backpressure: u64,
}

/// What the status shows about the device on a port.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceStatus {
    /// `serial:<Hello.device_id>`; `null` until a valid `Hello`.
    pub id: Option<String>,
    /// Whether a `Hello` arrived since the port was (re)opened.
    pub identified: bool,
    pub firmware: Option<String>,
    pub protocol: Option<u8>,
    /// Last message from the device, unix ms.
    pub last_seen_ms: Option<i64>,
    pub uptime_s: Option<u32>,
    pub reset_reason: Option<&'static str>,
    pub sample_interval_ms: Option<u32>,
    pub watchdog_resets: Option<u16>,
    pub stack_free_min: Option<u32>,
    pub battery_mv: Option<u16>,
    pub frames_rx_errors: Option<u32>,
}

/// One port in the status JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortStatus {
    pub name: String,
    pub path: String,
    pub state: LinkState,
    pub last_error: Option<String>,
    pub reopens: u64,
    pub counters: Counters,
    pub device: Option<DeviceStatus>,
}

/// What the session asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write these bytes (one or more frames) to the port.
    Send(Vec<u8>),
    /// Submit these readings (one message's worth) to the pipeline.
    Submit(Vec<Reading>),
    /// The command submitted with this id is finished.
    CommandDone { id: u64, result: CommandResult },
}

/// `reset_reason` as lowercase words.
pub fn reset_reason_name(r: ResetReason) -> &'static str {
    match r {
        ResetReason::PowerOn => "power_on",
        ResetReason::Watchdog => "watchdog",
        ResetReason::Software => "software",
        ResetReason::Brownout => "brownout",
        ResetReason::Pin => "pin",
        ResetReason::Lockup => "lockup",
        ResetReason::Unknown => "unknown",
    }
}

/// The device's error code as written in `Refused` messages.
pub fn error_code_name(c: ErrorCode) -> &'static str {
    match c {
        ErrorCode::InvalidArgument => "InvalidArgument",
        ErrorCode::Unsupported => "Unsupported",
        ErrorCode::Busy => "Busy",
        ErrorCode::Internal => "Internal",
    }
}

/// Checks a command's arguments as the device will; the message names the
/// argument.
pub fn validate_command(cmd: &Command) -> Result<(), CommandError> {
    cmd.validate().map_err(|_| {
        CommandError::InvalidArgument(match cmd {
            Command::SetSampleInterval { .. } => format!(
                "ms: must be {}..={}",
                msg::MIN_SAMPLE_INTERVAL_MS,
                msg::MAX_SAMPLE_INTERVAL_MS
            ),
            Command::Identify { .. } => format!("seconds: must be 0..={}", msg::MAX_IDENTIFY_S),
            _ => "invalid argument".to_owned(),
        })
    })
}

/// Encodes one envelope as a frame, preceded by a `0x00` that flushes
/// whatever garbage the device's decoder holds.
pub fn encode(env: &Envelope) -> Option<Vec<u8>> {
    let mut scratch = [0u8; MAX_PAYLOAD];
    let mut wire = [0u8; MAX_FRAME];
    let n = msg::write_frame(env, &mut scratch, &mut wire).ok()?;
    let mut out = Vec::with_capacity(n + 1);
    out.push(0);
    out.extend_from_slice(wire.get(..n)?);
    Some(out)
}

struct Pending {
    id: u64,
    seq: u16,
    frame: Vec<u8>,
    first_sent: Instant,
    deadline: Instant,
    resends: u32,
}

enum HeldBody {
    Readings(Vec<msg::Reading>),
    Diagnostics(Diagnostics),
}

struct Held {
    received: Instant,
    wall: Timestamp,
    body: HeldBody,
}

/// The state machine of one port (see the module docs).
pub struct Session {
    cfg: SessionConfig,
    state: LinkState,
    last_error: Option<String>,
    ever_opened: bool,
    decoder: FrameDecoder,
    counters: Counters,
    /// What is known about the device (kept across reopens for status and
    /// command routing; a new `Hello` replaces it).
    device: Option<DeviceStatus>,
    /// The valid id from the last `Hello`, if any.
    device_id: Option<DeviceId>,
    /// A `Hello` arrived on this open.
    identified: bool,
    held: VecDeque<Held>,
    pending: Vec<Pending>,
    next_seq: u16,
    probe_at: Option<Instant>,
    probe_interval: Duration,
    probe_seqs: VecDeque<u16>,
    out: VecDeque<Output>,
    log_device_error: LogRateLimit,
    log_bad_frame: LogRateLimit,
    log_dropped: LogRateLimit,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("port", &self.cfg.port)
            .field("state", &self.state)
            .field("identified", &self.identified)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Self {
        let probe_interval = cfg.hello_timeout;
        Session {
            cfg,
            state: LinkState::Closed,
            last_error: None,
            ever_opened: false,
            decoder: FrameDecoder::new(),
            counters: Counters::default(),
            device: None,
            device_id: None,
            identified: false,
            held: VecDeque::new(),
            pending: Vec::new(),
            next_seq: 0,
            probe_at: None,
            probe_interval,
            probe_seqs: VecDeque::new(),
            out: VecDeque::new(),
            log_device_error: LogRateLimit::new(LOG_EVERY),
            log_bad_frame: LogRateLimit::new(LOG_EVERY),
            log_dropped: LogRateLimit::new(LOG_EVERY),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// For the driver's own counters (`dropped_backpressure`).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// The device's id from its last valid `Hello`.
    pub fn device_id(&self) -> Option<&DeviceId> {
        self.device_id.as_ref()
    }

    /// Whether the device identified itself since the port opened.
    pub fn identified(&self) -> bool {
        self.identified
    }

    /// Commands waiting for their ack.
    pub fn pending_commands(&self) -> usize {
        self.pending.len()
    }

    /// Messages held until the device identifies itself.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The port as the status shows it.
    pub fn status(&self) -> PortStatus {
        PortStatus {
            name: self.cfg.port.clone(),
            path: self.cfg.path.clone(),
            state: self.state,
            last_error: self.last_error.clone(),
            reopens: self.counters.reopen_count,
            counters: self.counters.clone(),
            device: self.device.clone().map(|mut d| {
                d.identified = self.identified;
                d
            }),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let commands = self.pending.iter().map(|p| p.deadline).min();
        let held = self.held.front().map(|h| h.received + self.hold_timeout());
        [commands, held, self.probe_at].into_iter().flatten().min()
    }

    fn hold_timeout(&self) -> Duration {
        self.cfg.hello_timeout.saturating_mul(HOLD_TIMEOUT_FACTOR)
    }

    /// The driver is opening the port.
    pub fn opening(&mut self) {
        self.state = LinkState::Opening;
    }

    /// Opening failed (the port stays closed; the driver retries).
    pub fn open_failed(&mut self, reason: String) {
        self.state = LinkState::Closed;
        self.last_error = Some(reason);
    }

    /// The port is open: the device must (re)identify itself.
    pub fn opened(&mut self, now: Instant) {
        if self.ever_opened {
            self.counters.reopen_count += 1;
        }
        self.ever_opened = true;
        self.state = LinkState::Open;
        self.last_error = None;
        self.decoder.reset();
        self.identified = false;
        self.held.clear();
        self.probe_seqs.clear();
        self.probe_interval = self.cfg.hello_timeout;
        self.probe_at = Some(now + self.probe_interval);
    }

    /// The port closed (read error, EOF, write failure): commands in
    /// flight fail, held messages are dropped (the next device on this port
    /// may be another one).
    pub fn closed(&mut self, reason: String) {
        self.state = LinkState::Closed;
        self.last_error = Some(reason);
        self.end(|| CommandError::Failed("port closed".into()));
    }

    /// The source is stopping: commands in flight are answered `Closed`.
    pub fn shutdown(&mut self) {
        self.state = LinkState::Closed;
        self.end(|| CommandError::Closed);
    }

    fn end(&mut self, err: impl Fn() -> CommandError) {
        self.decoder.reset();
        self.identified = false;
        self.probe_at = None;
        self.probe_seqs.clear();
        let dropped = self.held.len() as u64;
        self.counters.dropped_unidentified += dropped;
        self.held.clear();
        for p in std::mem::take(&mut self.pending) {
            self.counters.commands_failed += 1;
            self.out.push_back(Output::CommandDone {
                id: p.id,
                result: Err(err()),
            });
        }
    }

    fn alloc_seq(&mut self) -> u16 {
        loop {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            if !self.pending.iter().any(|p| p.seq == seq) && !self.probe_seqs.contains(&seq) {
                return seq;
            }
        }
    }

    /// Sends `command`; its completion comes back as
    /// [`Output::CommandDone`] with `id`. Refused at once (nothing sent)
    /// when an argument is invalid, the port is not open or too many
    /// commands are in flight.
    pub fn submit_command(
        &mut self,
        id: u64,
        command: Command,
        now: Instant,
    ) -> Result<(), CommandError> {
        validate_command(&command)?;
        if self.state != LinkState::Open {
            return Err(CommandError::Failed("port closed".into()));
        }
        if self.pending.len() >= self.cfg.max_pending {
            return Err(CommandError::Busy);
        }
        let seq = self.alloc_seq();
        let frame = encode(&Envelope::new(seq, Body::Command(command)))
            .ok_or_else(|| CommandError::Failed("the command does not encode".into()))?;
        self.out.push_back(Output::Send(frame.clone()));
        self.counters.commands_sent += 1;
        self.pending.push(Pending {
            id,
            seq,
            frame,
            first_sent: now,
            deadline: now + self.cfg.command_timeout,
            resends: 0,
        });
        Ok(())
    }

    /// Runs the timers due at `now`: command resends and timeouts, identity
    /// probes, expiry of held messages.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(p) = self.pending.get_mut(i) {
            if p.deadline > now {
                i += 1;
                continue;
            }
            if p.resends < self.cfg.command_retries {
                p.resends += 1;
                p.deadline = now + self.cfg.command_timeout;
                let frame = p.frame.clone();
                self.counters.commands_resent += 1;
                self.out.push_back(Output::Send(frame));
                i += 1;
            } else {
                let p = self.pending.remove(i);
                self.counters.commands_timed_out += 1;
                self.out.push_back(Output::CommandDone {
                    id: p.id,
                    result: Err(CommandError::Timeout(format!(
                        "no ack from the device on port {} (seq {}) after {} attempts",
                        self.cfg.port,
                        p.seq,
                        p.resends + 1
                    ))),
                });
            }
        }
        if self.state == LinkState::Open
            && !self.identified
            && self.probe_at.is_some_and(|at| at <= now)
        {
            self.probe(now);
        }
        let limit = self.hold_timeout();
        while self
            .held
            .front()
            .is_some_and(|h| now.saturating_duration_since(h.received) >= limit)
        {
            self.held.pop_front();
            self.drop_unidentified(now, "no Hello in time");
        }
    }

    fn probe(&mut self, now: Instant) {
        let seq = self.alloc_seq();
        if let Some(frame) = encode(&Envelope::new(
            seq,
            Body::Command(Command::RequestDiagnostics),
        )) {
            self.out.push_back(Output::Send(frame));
            self.counters.hello_probes += 1;
            if self.probe_seqs.len() >= MAX_PROBE_SEQS {
                self.probe_seqs.pop_front();
            }
            self.probe_seqs.push_back(seq);
            tracing::debug!(port = %self.cfg.port, seq, "no Hello from the device: asking for it");
        }
        self.probe_interval = self
            .probe_interval
            .saturating_mul(2)
            .min(MAX_PROBE_INTERVAL.max(self.cfg.hello_timeout));
        self.probe_at = Some(now + self.probe_interval);
    }

    fn drop_unidentified(&mut self, now: Instant, why: &str) {
        self.counters.dropped_unidentified += 1;
        if let Some(suppressed) = self.log_dropped.allow(now) {
            tracing::warn!(
                port = %self.cfg.port,
                suppressed,
                "dropped a message from an unidentified device ({why})"
            );
        }
    }

    /// Feeds bytes read from the port. `now` is monotonic, `wall` the
    /// gateway's clock (the time of the readings).
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant, wall: Timestamp) {
        self.counters.bytes_rx += bytes.len() as u64;
        for &b in bytes {
            let Some(r) = self.decoder.push(b) else {
                continue;
            };
            let decoded = match r {
                Ok(payload) => Ok(msg::decode_message(payload)),
                Err(e) => Err(e),
            };
            match decoded {
                Ok(Ok(env)) => {
                    self.counters.frames_ok += 1;
                    self.handle_message(env, now, wall);
                }
                Ok(Err(e)) => {
                    self.counters.frames_ok += 1;
                    match e {
                        DecodeError::Version { .. } => self.counters.version_mismatch += 1,
                        DecodeError::UnknownMessage { .. } => self.counters.unknown_message += 1,
                        DecodeError::Malformed => self.counters.malformed += 1,
                    }
                    self.log_bad(now, &e.to_string());
                }
                Err(e) => {
                    match e {
                        FrameError::Crc => self.counters.crc_errors += 1,
                        FrameError::Cobs => self.counters.cobs_errors += 1,
                        FrameError::TooShort => self.counters.too_short += 1,
                        FrameError::TooLong => self.counters.too_long += 1,
                        FrameError::PayloadTooLarge | FrameError::BufferTooSmall => {}
                    }
                    self.log_bad(now, &e.to_string());
                }
            }
        }
    }

    fn log_bad(&mut self, now: Instant, what: &str) {
        if let Some(suppressed) = self.log_bad_frame.allow(now) {
            tracing::debug!(port = %self.cfg.port, suppressed, "bad frame: {what}");
        }
    }

    fn device_mut(&mut self, wall: Timestamp) -> &mut DeviceStatus {
        let d = self.device.get_or_insert_with(DeviceStatus::default);
        d.last_seen_ms = Some(wall.as_micros() / 1000);
        d
    }

    fn handle_message(&mut self, env: Envelope, now: Instant, wall: Timestamp) {
        match env.body {
            Body::Reading(r) => {
                self.device_mut(wall);
                self.readings(vec![r], now, wall);
            }
            Body::Readings(batch) => {
                self.device_mut(wall);
                self.readings(batch.iter().copied().collect(), now, wall);
            }
            Body::Diagnostics(d) => {
                self.counters.diagnostics += 1;
                let dev = self.device_mut(wall);
                dev.firmware = Some(d.firmware.as_str().to_owned());
                dev.uptime_s = Some(d.uptime_s);
                dev.reset_reason = Some(reset_reason_name(d.reset_reason));
                dev.sample_interval_ms = Some(d.sample_interval_ms);
                dev.watchdog_resets = Some(d.watchdog_resets);
                dev.stack_free_min = Some(d.stack_free_min);
                dev.battery_mv = d.battery_mv;
                dev.frames_rx_errors = Some(d.frames_rx_errors);
                self.emit(HeldBody::Diagnostics(d), now, wall);
            }
            Body::Command(_) => self.counters.unexpected_message += 1,
            Body::Ack { seq, result } => {
                self.device_mut(wall);
                self.ack(seq, result, now);
            }
            Body::Error { code, detail } => {
                self.device_mut(wall);
                self.counters.device_errors += 1;
                if let Some(suppressed) = self.log_device_error.allow(now) {
                    tracing::warn!(
                        port = %self.cfg.port,
                        code = error_code_name(code),
                        detail = detail.as_str(),
                        suppressed,
                        "the device reported an error"
                    );
                }
            }
            Body::Hello {
                device_id,
                firmware,
                protocol,
            } => {
                self.counters.hellos += 1;
                let id = DeviceId::new(Transport::Serial, device_id.as_str());
                if let Err(e) = &id {
                    self.counters.invalid_device_id += 1;
                    tracing::warn!(port = %self.cfg.port, "the device's Hello has an invalid id: {e}; its readings are dropped");
                }
                if protocol != PROTOCOL_VERSION {
                    tracing::warn!(port = %self.cfg.port, protocol, "the device announces another protocol version");
                }
                let id = id.ok();
                let changed = self.device_id != id;
                if changed {
                    // Another device on this port: what was known is stale.
                    self.device = None;
                }
                let dev = self.device_mut(wall);
                dev.id = id.as_ref().map(|i| i.to_string());
                dev.firmware = Some(firmware.as_str().to_owned());
                dev.protocol = Some(protocol);
                self.device_id = id;
                if changed {
                    tracing::info!(port = %self.cfg.port, device = ?self.device_id.as_ref().map(|d| d.to_string()), firmware = firmware.as_str(), "device identified");
                }
                self.identified = true;
                self.probe_at = None;
                for h in std::mem::take(&mut self.held) {
                    self.release(h.body, h.wall);
                }
            }
        }
    }

    fn ack(&mut self, seq: u16, result: AckResult, now: Instant) {
        if let Some(i) = self.pending.iter().position(|p| p.seq == seq) {
            let p = self.pending.remove(i);
            let result = match result {
                AckResult::Ok => {
                    self.counters.commands_acked += 1;
                    let rtt = now.saturating_duration_since(p.first_sent);
                    Ok(serde_json::json!({
                        "device": self.device_id.as_ref().map(|d| d.to_string()),
                        "port": self.cfg.port,
                        "seq": seq,
                        "result": "ok",
                        "rtt_ms": u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX),
                    }))
                }
                AckResult::Err(code) => {
                    self.counters.commands_refused += 1;
                    Err(CommandError::Refused(format!(
                        "device answered {}",
                        error_code_name(code)
                    )))
                }
            };
            self.out.push_back(Output::CommandDone { id: p.id, result });
        } else if let Some(i) = self.probe_seqs.iter().position(|s| *s == seq) {
            self.probe_seqs.remove(i);
        } else {
            self.counters.unmatched_acks += 1;
        }
    }

    fn readings(&mut self, items: Vec<msg::Reading>, now: Instant, wall: Timestamp) {
        self.counters.readings += items.len() as u64;
        if items.is_empty() {
            return;
        }
        self.emit(HeldBody::Readings(items), now, wall);
    }

    /// Submits now if the device identified itself, else holds.
    fn emit(&mut self, body: HeldBody, now: Instant, wall: Timestamp) {
        if self.identified {
            self.release(body, wall);
            return;
        }
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            self.drop_unidentified(now, "too many held");
        }
        self.held.push_back(Held {
            received: now,
            wall,
            body,
        });
    }

    fn release(&mut self, body: HeldBody, wall: Timestamp) {
        let Some(id) = self.device_id.clone() else {
            self.counters.dropped_invalid_id += 1;
            return;
        };
        let reading = match body {
            HeldBody::Readings(items) => self.sensor_reading(id, &items, wall),
            HeldBody::Diagnostics(d) => Some(self.diagnostics_reading(id, &d, wall)),
        };
        if let Some(r) = reading {
            self.counters.readings_submitted += 1;
            self.out.push_back(Output::Submit(vec![r]));
        }
    }

    fn base_meta(&self) -> Metadata {
        let mut extra = BTreeMap::new();
        extra.insert("port".to_owned(), self.cfg.port.clone());
        if let Some(d) = &self.device {
            if let Some(f) = &d.firmware {
                extra.insert("firmware".to_owned(), f.clone());
            }
        }
        Metadata {
            extra,
            ..Metadata::default()
        }
    }

    /// One message's sensor readings → one reading (one measurement each).
    fn sensor_reading(
        &mut self,
        id: DeviceId,
        items: &[msg::Reading],
        wall: Timestamp,
    ) -> Option<Reading> {
        let mut meta = self.base_meta();
        if let Some(d) = &self.device {
            if let Some(u) = d.uptime_s {
                meta.extra.insert("uptime_s".into(), u.to_string());
            }
            if let Some(r) = d.reset_reason {
                meta.extra.insert("reset_reason".into(), r.to_owned());
            }
            if let Some(mv) = d.battery_mv {
                meta.extra.insert("battery_mv".into(), mv.to_string());
            }
        }
        let mut measurements = Vec::with_capacity(items.len());
        for r in items {
            let value = match r.value {
                msg::Value::F32(f) if f.is_finite() => {
                    // The shortest decimal of the f32 (21.3, not 21.2999…).
                    Value::Float(f.to_string().parse().unwrap_or(f64::from(f)))
                }
                msg::Value::F32(_) => {
                    self.counters.invalid_values += 1;
                    continue;
                }
                msg::Value::I32(i) => Value::Float(f64::from(i)),
                msg::Value::Bool(b) => Value::Bool(b),
            };
            measurements.push(Measurement {
                name: sensor_name(r.sensor.as_str()),
                unit: Some(r.unit.senml().to_owned()).filter(|u| !u.is_empty()),
                value: Some(value),
                sum: None,
            });
        }
        // The device time of the batch (its readings are taken together).
        if let Some(t) = items.iter().find_map(|r| r.time_ms) {
            meta.extra.insert("device_time_ms".into(), t.to_string());
        }
        if measurements.is_empty() {
            return None;
        }
        Some(Reading {
            device: id,
            time: wall,
            measurements,
            meta,
        })
    }

    fn diagnostics_reading(&self, id: DeviceId, d: &Diagnostics, wall: Timestamp) -> Reading {
        let mut meta = self.base_meta();
        meta.extra.insert("kind".into(), "diagnostics".into());
        meta.extra
            .insert("firmware".into(), d.firmware.as_str().to_owned());
        meta.extra.insert(
            "reset_reason".into(),
            reset_reason_name(d.reset_reason).into(),
        );
        let mut m = vec![
            Measurement::float("uptime", Some("s"), f64::from(d.uptime_s)),
            Measurement::float(
                "watchdog_resets",
                Some("count"),
                f64::from(d.watchdog_resets),
            ),
            Measurement::float("stack_free_min", Some("By"), f64::from(d.stack_free_min)),
            Measurement::float(
                "sample_interval",
                Some("s"),
                f64::from(d.sample_interval_ms) / 1000.0,
            ),
            Measurement::float(
                "rx_frame_errors",
                Some("count"),
                f64::from(d.frames_rx_errors),
            ),
        ];
        if let Some(mv) = d.battery_mv {
            m.push(Measurement::float(
                "battery",
                Some("V"),
                f64::from(mv) / 1000.0,
            ));
            meta.extra.insert("battery_mv".into(), mv.to_string());
        }
        Reading {
            device: id,
            time: wall,
            measurements: m,
            meta,
        }
    }
}

/// The `session` fuzz target's body (`fuzz/fuzz_targets/session.rs`), here
/// so that `tests/fuzz_corpus.rs` runs the same code on stable.
///
/// The input is cut into chunks; the first byte of each chunk picks what
/// happens besides feeding the rest: time passes (timers run), a command is
/// submitted, or the port closes and reopens. Checks, after every step,
/// that every reading handed out has a `serial:` device id, at least one
/// measurement and only finite values, and that nothing the session holds
/// grows past its bounds. Returns the number of readings handed out, or
/// which check failed (a bug; the fuzz target panics on it).
#[doc(hidden)]
pub fn fuzz_session(data: &[u8]) -> Result<usize, &'static str> {
    let cfg = SessionConfig {
        port: "fuzz".into(),
        path: "/dev/ttyFUZZ".into(),
        command_timeout: Duration::from_millis(100),
        command_retries: 1,
        max_pending: 4,
        hello_timeout: Duration::from_millis(50),
    };
    let mut now = Instant::now();
    let wall = Timestamp(1_700_000_000_000_000);
    let mut s = Session::new(cfg);
    s.opening();
    s.opened(now);
    let mut readings = 0;
    let mut next_id = 0u64;
    for chunk in data.chunks(64) {
        let Some((&op, bytes)) = chunk.split_first() else {
            continue;
        };
        match op % 8 {
            0 => {
                now += Duration::from_millis(u64::from(op));
                s.handle_timeout(now);
            }
            1 => {
                let cmd = match op % 3 {
                    0 => Command::Reboot,
                    1 => Command::RequestDiagnostics,
                    _ => Command::SetSampleInterval {
                        ms: u32::from(op) * 100,
                    },
                };
                next_id += 1;
                let _ = s.submit_command(next_id, cmd, now);
            }
            2 => {
                s.closed("fuzz".into());
                s.opening();
                s.opened(now);
            }
            _ => {}
        }
        s.handle_bytes(bytes, now, wall);
        if s.held() > MAX_HELD || s.pending_commands() > 4 {
            return Err("a bound was exceeded");
        }
        while let Some(out) = s.poll_output() {
            if let Output::Submit(batch) = out {
                for r in batch {
                    readings += 1;
                    if r.device.transport() != Transport::Serial {
                        return Err("a reading of another transport");
                    }
                    if r.measurements.is_empty() {
                        return Err("a reading without measurements");
                    }
                    let finite = r.measurements.iter().all(|m| match m.value {
                        Some(Value::Float(f)) => f.is_finite(),
                        _ => true,
                    });
                    if !finite {
                        return Err("a non-finite value");
                    }
                }
            }
        }
    }
    Ok(readings)
}

/// A sensor name in the SenML name character set (others become `_`).
fn sensor_name(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if n.is_empty() {
        n.push_str("value");
    }
    n
}

#[cfg(test)]
mod tests;
