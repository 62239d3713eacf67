//! The I/O around the [`Session`]s: one task per configured port opens it
//! with tokio-serial and drives its session with a `select!` loop (bytes
//! read, commands from the source, the session's next timer, shutdown);
//! the source's own task routes commands to the ports, publishes the
//! status about once a second and the health on every port change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatewayd_core::{
    CommandError, ConfigError, ReadingSink, SinkError, Source, SourceCommand, SourceContext,
    SourceError, SourceState,
};
use gatewayd_model::Reading;
use gatewayd_sensor_proto::msg::Command;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

use crate::config::{self, FlowControl, Parity, PortSettings, SerialConfig, Validated};
use crate::request::{parse_request, Request};
use crate::session::{LinkState, Output, PortStatus, Session, SessionConfig};

/// How long a submission waits for room in the pipeline before it is
/// dropped (`dropped_backpressure`): the port is not read meanwhile, so
/// this bounds how long a stalled pipeline stalls a port.
pub const SUBMIT_WAIT: Duration = Duration::from_secs(1);
/// How long a write to the port may take (flow control can stall it);
/// beyond, the port is closed and reopened.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Status publication period.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Bytes read from the port at once.
const READ_CHUNK: usize = 1024;

/// The live state of every port (what the status publishes), readable
/// while the source runs: [`SerialSource::stats`].
#[derive(Debug, Clone, Default)]
pub struct SerialStats {
    ports: Arc<Mutex<Vec<PortStatus>>>,
}

impl SerialStats {
    /// Every port, in config order.
    pub fn ports(&self) -> Vec<PortStatus> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One port by name.
    pub fn port(&self, name: &str) -> Option<PortStatus> {
        self.ports().into_iter().find(|p| p.name == name)
    }

    /// The status JSON: `{"ports": [...]}`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({ "ports": self.ports() })
    }

    fn set(&self, index: usize, status: PortStatus) {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = ports.get_mut(index) {
            *slot = status;
        }
    }
}

/// A serial source (`kind = "serial"`).
#[derive(Debug)]
pub struct SerialSource {
    config: Validated,
    stats: SerialStats,
}

impl SerialSource {
    /// The live port states and counters.
    pub fn stats(&self) -> SerialStats {
        self.stats.clone()
    }

    /// The validated configuration.
    pub fn config(&self) -> &Validated {
        &self.config
    }
}

fn session_config(c: &Validated, p: &PortSettings) -> SessionConfig {
    SessionConfig {
        port: p.name.clone(),
        path: p.path.clone(),
        command_timeout: c.command_timeout,
        command_retries: c.command_retries,
        max_pending: c.max_pending_commands,
        hello_timeout: c.hello_timeout,
    }
}

impl Source for SerialSource {
    const KIND: &'static str = "serial";
    type Config = SerialConfig;
    const TAKES_COMMANDS: bool = true;

    fn build(key: &str, config: SerialConfig) -> Result<Self, ConfigError> {
        let config = config::validate(key, config)?;
        let ports = config
            .ports
            .iter()
            .map(|p| Session::new(session_config(&config, p)).status())
            .collect();
        Ok(SerialSource {
            config,
            stats: SerialStats {
                ports: Arc::new(Mutex::new(ports)),
            },
        })
    }

    /// Never fails: a port that cannot be opened degrades the source and
    /// is retried.
    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let SourceContext {
            name,
            sink,
            shutdown,
            health,
            status,
            mut commands,
        } = ctx;
        let notify = Arc::new(Notify::new());
        let mut port_txs = Vec::with_capacity(self.config.ports.len());
        let mut tasks = Vec::with_capacity(self.config.ports.len());
        for (index, p) in self.config.ports.iter().enumerate() {
            let (tx, rx) = mpsc::channel(self.config.max_pending_commands);
            port_txs.push(tx);
            let task = PortTask {
                index,
                settings: p.clone(),
                session: Session::new(session_config(&self.config, p)),
                rx,
                sink: sink.clone(),
                shutdown: shutdown.clone(),
                stats: self.stats.clone(),
                notify: notify.clone(),
                reopen_min: self.config.reopen_min,
                reopen_max: self.config.reopen_max,
                waiting: HashMap::new(),
                next_id: 0,
            };
            tasks.push(tokio::spawn(task.run()));
        }
        drop(sink);
        tracing::info!(source = %name, ports = self.config.ports.len(), "serial source started");
        let mut tick = tokio::time::interval(STATUS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inbox_open = true;
        let mut last_health = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = notify.notified() => {
                    update_health(&health, &self.stats, &mut last_health);
                }
                _ = tick.tick() => {
                    update_health(&health, &self.stats, &mut last_health);
                    status.publish(self.stats.status_json());
                }
                cmd = commands.recv(), if inbox_open => match cmd {
                    Some(cmd) => route(cmd, &self.stats, &port_txs),
                    None => inbox_open = false,
                },
            }
        }
        // The ports stop on the same token: wait for them (each answers
        // its commands and flushes its submissions), then refuse the rest.
        drop(port_txs);
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(source = %name, "serial port task failed: {e}");
            }
        }
        // Answer what is already queued, then refuse the rest.
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => cmd.reply(Err(CommandError::Closed)),
                    None => break,
                },
                _ = std::future::ready(()) => break,
            }
        }
        commands.close();
        status.publish(self.stats.status_json());
        health.set(SourceState::Stopped);
        tracing::info!(source = %name, "serial source stopped");
        Ok(())
    }
}

fn update_health(
    health: &gatewayd_core::HealthHandle,
    stats: &SerialStats,
    last: &mut Option<SourceState>,
) {
    let problems: Vec<String> = stats
        .ports()
        .iter()
        .filter(|p| p.state != LinkState::Open)
        .map(|p| match &p.last_error {
            Some(e) => format!("port {}: {e}", p.name),
            None => format!("port {}: not open yet", p.name),
        })
        .collect();
    let state = if problems.is_empty() {
        SourceState::Running
    } else {
        SourceState::Degraded(problems.join("; "))
    };
    if last.as_ref() != Some(&state) {
        health.set(state.clone());
        *last = Some(state);
    }
}

/// Whether `device` names this port or its device.
fn matches(p: &PortStatus, device: &str) -> bool {
    if p.name == device {
        return true;
    }
    let Some(id) = p.device.as_ref().and_then(|d| d.id.as_deref()) else {
        return false;
    };
    id == device || id.strip_prefix("serial:") == Some(device)
}

fn route(cmd: SourceCommand, stats: &SerialStats, ports: &[mpsc::Sender<PortRequest>]) {
    let (device, command) = match parse_request(&cmd.request) {
        Err(e) => return cmd.reply(Err(e)),
        Ok(Request::List) => {
            let list = serde_json::to_value(stats.ports()).unwrap_or_default();
            return cmd.reply(Ok(list));
        }
        Ok(Request::Device { device, command }) => (device, command),
    };
    let all = stats.ports();
    // A port name wins over a device id; the first port wins among ids.
    let index = all
        .iter()
        .position(|p| p.name == device)
        .or_else(|| all.iter().position(|p| matches(p, &device)));
    let Some(tx) = index.and_then(|i| ports.get(i)) else {
        return cmd.reply(Err(CommandError::NotFound(format!(
            "no serial device or port {device:?}"
        ))));
    };
    match tx.try_send(PortRequest { command, cmd }) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(r)) => r.cmd.reply(Err(CommandError::Busy)),
        Err(mpsc::error::TrySendError::Closed(r)) => r.cmd.reply(Err(CommandError::Closed)),
    }
}

/// A command for one port.
struct PortRequest {
    command: Command,
    cmd: SourceCommand,
}

/// Why the port is no longer driven.
enum End {
    Shutdown,
    Closed(String),
}

struct PortTask {
    index: usize,
    settings: PortSettings,
    session: Session,
    rx: mpsc::Receiver<PortRequest>,
    sink: ReadingSink,
    shutdown: CancellationToken,
    stats: SerialStats,
    notify: Arc<Notify>,
    reopen_min: Duration,
    reopen_max: Duration,
    /// Commands sent to the device, by session id.
    waiting: HashMap<u64, SourceCommand>,
    next_id: u64,
}

/// Whether `path` is (a link to) a pseudo-terminal slave.
fn is_pty(path: &str) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p.starts_with("/dev/pts"))
}

fn builder(s: &PortSettings) -> tokio_serial::SerialPortBuilder {
    tokio_serial::new(&s.path, s.baud)
        .data_bits(match s.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match s.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(if s.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(match s.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Software => tokio_serial::FlowControl::Software,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        })
}

/// Opens the port with its line settings. A pseudo-terminal may refuse
/// some termios settings (they mean nothing there): it is then opened
/// with the defaults (115200 8N1, no flow control) and a warning.
fn open_port(s: &PortSettings) -> Result<SerialStream, String> {
    match builder(s).open_native_async() {
        Ok(p) => Ok(p),
        Err(e) if is_pty(&s.path) => {
            tracing::warn!(port = %s.name, path = %s.path, "a pseudo-terminal refused the line settings ({e}); opening it with the defaults");
            tokio_serial::new(&s.path, 115_200)
                .open_native_async()
                .map_err(|e| format!("opening {}: {e}", s.path))
        }
        Err(e) => Err(format!("opening {}: {e}", s.path)),
    }
}

impl PortTask {
    fn publish(&self) {
        self.stats.set(self.index, self.session.status());
    }

    /// Publishes and wakes the source (health follows port states).
    fn changed(&self) {
        self.publish();
        self.notify.notify_one();
    }

    async fn run(mut self) {
        let mut backoff = self.reopen_min;
        let mut failures = 0u64;
        'ports: loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            self.session.opening();
            self.changed();
            match open_port(&self.settings) {
                Ok(port) => {
                    failures = 0;
                    backoff = self.reopen_min;
                    self.session.opened(std::time::Instant::now());
                    self.changed();
                    tracing::info!(port = %self.settings.name, path = %self.settings.path, "serial port open");
                    match self.drive(port).await {
                        End::Shutdown => break,
                        End::Closed(reason) => {
                            tracing::warn!(port = %self.settings.name, path = %self.settings.path, "serial port closed: {reason}; reopening");
                            self.session.closed(reason);
                            self.publish();
                            let _ = self.flush(None).await;
                            self.changed();
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(port = %self.settings.name, "{e}; retrying");
                    } else {
                        tracing::debug!(port = %self.settings.name, failures, "{e}; retrying");
                    }
                    self.session.open_failed(e);
                    self.changed();
                }
            }
            let delay = jitter(backoff, self.reopen_min, self.reopen_max);
            backoff = backoff.saturating_mul(2).min(self.reopen_max);
            let until = Instant::now() + delay;
            loop {
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => break 'ports,
                    _ = tokio::time::sleep_until(until) => break,
                    req = self.rx.recv() => match req {
                        Some(r) => r.cmd.reply(Err(CommandError::Failed("port closed".into()))),
                        None => break 'ports,
                    },
                }
            }
        }
        self.session.shutdown();
        self.publish();
        let _ = self.flush(None).await;
        self.rx.close();
        while let Ok(r) = self.rx.try_recv() {
            r.cmd.reply(Err(CommandError::Closed));
        }
        for (_, cmd) in self.waiting.drain() {
            cmd.reply(Err(CommandError::Closed));
        }
        self.changed();
    }

    /// Reads and writes the open port until it fails or the source stops.
    async fn drive(&mut self, mut port: SerialStream) -> End {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            // Published before the outputs are carried out too, so that a
            // caller answered by them finds the status already up to date.
            self.publish();
            if let Err(e) = self.flush(Some(&mut port)).await {
                return End::Closed(e);
            }
            self.publish();
            let deadline = self.session.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return End::Shutdown,
                r = port.read(&mut buf) => match r {
                    Ok(0) => return End::Closed("end of file".into()),
                    Ok(n) => {
                        let bytes = buf.get(..n).unwrap_or(&[]);
                        self.session.handle_bytes(bytes, std::time::Instant::now(), gatewayd_core::wall_clock());
                    }
                    Err(e) => return End::Closed(format!("read: {e}")),
                },
                req = self.rx.recv() => match req {
                    Some(r) => self.command(r),
                    None => return End::Shutdown,
                },
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    self.session.handle_timeout(std::time::Instant::now());
                }
            }
        }
    }

    fn command(&mut self, r: PortRequest) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        match self
            .session
            .submit_command(id, r.command, std::time::Instant::now())
        {
            Ok(()) => {
                self.waiting.insert(id, r.cmd);
            }
            Err(e) => r.cmd.reply(Err(e)),
        }
    }

    /// Carries out the session's outputs. Without a port (closed), frames
    /// are dropped. A write error is returned (the port is closed).
    async fn flush(&mut self, mut port: Option<&mut SerialStream>) -> Result<(), String> {
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Send(bytes) => {
                    if let Some(p) = port.as_deref_mut() {
                        match tokio::time::timeout(WRITE_TIMEOUT, write_all(p, &bytes)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(format!("write: {e}")),
                            Err(_) => return Err("write: timed out (flow control?)".into()),
                        }
                    }
                }
                Output::Submit(readings) => self.submit(readings).await,
                Output::CommandDone { id, result } => {
                    if let Some(cmd) = self.waiting.remove(&id) {
                        cmd.reply(result);
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands one message's readings to the pipeline without waiting for
    /// the commit; waits at most [`SUBMIT_WAIT`] for room.
    async fn submit(&mut self, readings: Vec<Reading>) {
        match tokio::time::timeout(SUBMIT_WAIT, self.sink.submit(readings)).await {
            Ok(Ok(_ticket)) => {}
            Ok(Err(SinkError::Closed | SinkError::Full)) => {
                self.session.counters_mut().dropped_backpressure += 1;
                tracing::debug!(port = %self.settings.name, "the pipeline is closed: readings dropped");
            }
            Err(_) => {
                self.session.counters_mut().dropped_backpressure += 1;
                tracing::warn!(port = %self.settings.name, "the pipeline is full: readings dropped");
            }
        }
    }
}

async fn write_all(port: &mut SerialStream, bytes: &[u8]) -> std::io::Result<()> {
    port.write_all(bytes).await?;
    port.flush().await
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `backoff` ± 20 %, within `min..=max`.
fn jitter(backoff: Duration, min: Duration, max: Duration) -> Duration {
    let f = rand::thread_rng().gen_range(0.8..=1.2);
    backoff.mul_f64(f).clamp(min, max)
}
