//! # gatewayd-core: the adapter contract
//!
//! Every sensor adapter (CoAP, LoRaWAN, BLE, serial, Thread/Matter, local
//! workloads) implements [`Source`]: it is built from its own config section,
//! then run with a [`SourceContext`] holding
//!
//! * a [`ReadingSink`]: a bounded sender into the pipeline. Each submission
//!   returns a [`CommitTicket`] that resolves once the readings are durably
//!   committed to the buffer (or were refused), so a confirmable CoAP request
//!   or a confirmed LoRaWAN uplink is answered only after commit;
//! * a shutdown [`CancellationToken`]: when it fires the source stops taking
//!   new input, finishes what is in flight and returns;
//! * a [`HealthHandle`] to publish its state for `/healthz`, D-Bus, logs;
//! * a [`StatusHandle`] to publish a JSON snapshot of its own status;
//! * a [`CommandInbox`] of requests from the control plane (D-Bus
//!   `SourceCommand`), for sources that act on devices (serial: set the
//!   sample interval, reboot…). Sources declare [`Source::TAKES_COMMANDS`];
//!   for the others the inbox is closed and callers get
//!   [`CommandError::Unsupported`] at once.
//!
//! Sources never talk to the buffer or the uplink directly.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatewayd_model::Reading;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
pub use tokio_util::sync::CancellationToken;

/// Readings submitted together, with an optional commit reply.
#[derive(Debug)]
pub struct Ingest {
    pub readings: Vec<Reading>,
    pub reply: Option<oneshot::Sender<Result<Committed, CommitError>>>,
}

/// What the buffer reports once a submission is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Sequence number of the first reading; the rest follow contiguously.
    pub first_seq: u64,
    pub count: usize,
}

/// Why a submission was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("buffer full: readings refused")]
    BufferFull,
    #[error("invalid reading: {0}")]
    Invalid(String),
    #[error("buffer storage failed: {0}")]
    Storage(String),
    #[error("the pipeline is shutting down")]
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("the pipeline is shutting down")]
    Closed,
    #[error("the pipeline queue is full")]
    Full,
}

/// Resolves when the submission it came from is committed (or refused).
#[derive(Debug)]
pub struct CommitTicket(oneshot::Receiver<Result<Committed, CommitError>>);

impl CommitTicket {
    pub async fn committed(self) -> Result<Committed, CommitError> {
        self.0.await.unwrap_or(Err(CommitError::Closed))
    }
}

/// Counters a sink keeps for its source.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub submitted: AtomicU64,
}

/// The bounded sending half of the pipeline, one clone per source.
#[derive(Clone)]
pub struct ReadingSink {
    tx: mpsc::Sender<Ingest>,
    source: Arc<str>,
    counters: Arc<SinkCounters>,
}

impl fmt::Debug for ReadingSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadingSink")
            .field("source", &self.source)
            .finish()
    }
}

/// Creates the pipeline's ingest channel. `capacity` bounds submissions in
/// flight between all sources and the buffer writer.
pub fn ingest_channel(capacity: usize) -> (mpsc::Sender<Ingest>, mpsc::Receiver<Ingest>) {
    mpsc::channel(capacity.max(1))
}

impl ReadingSink {
    pub fn new(tx: mpsc::Sender<Ingest>, source: &str) -> Self {
        ReadingSink {
            tx,
            source: source.into(),
            counters: Arc::default(),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn counters(&self) -> &SinkCounters {
        &self.counters
    }

    fn stamp(&self, readings: &mut [Reading]) {
        for r in readings.iter_mut() {
            if r.meta.source.is_none() {
                r.meta.source = Some(self.source.to_string());
            }
        }
        self.counters
            .submitted
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
    }

    /// Submits readings, waiting for queue space (back-pressure), and returns
    /// a ticket that resolves on commit.
    pub async fn submit(&self, mut readings: Vec<Reading>) -> Result<CommitTicket, SinkError> {
        self.stamp(&mut readings);
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Ingest {
                readings,
                reply: Some(tx),
            })
            .await
            .map_err(|_| SinkError::Closed)?;
        Ok(CommitTicket(rx))
    }

    /// Like [`submit`](Self::submit) but fails at once when the queue is full.
    pub fn try_submit(&self, mut readings: Vec<Reading>) -> Result<CommitTicket, SinkError> {
        self.stamp(&mut readings);
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Ingest {
                readings,
                reply: Some(tx),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SinkError::Full,
                mpsc::error::TrySendError::Closed(_) => SinkError::Closed,
            })?;
        Ok(CommitTicket(rx))
    }

    /// Submits and waits for the commit.
    pub async fn submit_and_wait(&self, readings: Vec<Reading>) -> Result<Committed, CommitError> {
        match self.submit(readings).await {
            Ok(t) => t.committed().await,
            Err(_) => Err(CommitError::Closed),
        }
    }
}

/// The state a source reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    Starting,
    Running,
    /// Running but impaired (e.g. a port is gone and being reopened).
    Degraded(String),
    Stopped,
    Failed(String),
}

/// A source's handle to publish its state.
#[derive(Debug, Clone)]
pub struct HealthHandle(Arc<watch::Sender<SourceState>>);

impl HealthHandle {
    pub fn new() -> (HealthHandle, watch::Receiver<SourceState>) {
        let (tx, rx) = watch::channel(SourceState::Starting);
        (HealthHandle(Arc::new(tx)), rx)
    }

    pub fn set(&self, state: SourceState) {
        self.0.send_replace(state);
    }
}

/// A source's handle to publish a snapshot of its own status (counters,
/// peers, anything an operator inspects) as a JSON object. The control
/// plane shows the latest one (D-Bus `SourceStatus`, `gatewayctl source
/// status`). Publishing replaces the previous snapshot: sources publish on
/// their own schedule (e.g. once a second), never per message.
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<watch::Sender<serde_json::Value>>);

impl StatusHandle {
    /// A handle and the receiver the daemon keeps; the first value is
    /// `null` (nothing published).
    pub fn new() -> (StatusHandle, watch::Receiver<serde_json::Value>) {
        let (tx, rx) = watch::channel(serde_json::Value::Null);
        (StatusHandle(Arc::new(tx)), rx)
    }

    /// Replaces the published snapshot.
    pub fn publish(&self, status: serde_json::Value) {
        self.0.send_replace(status);
    }
}

/// Why a command to a source failed. Each maps to one D-Bus error name
/// (docs/dbus.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The request is malformed or an argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request names a device (or other thing) the source doesn't know.
    #[error("{0}")]
    NotFound(String),
    /// The device did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The device answered and refused.
    #[error("{0}")]
    Refused(String),
    /// The source's command queue is full: try again.
    #[error("the source has too many commands in progress")]
    Busy,
    /// This kind of source takes no commands.
    #[error("this source takes no commands")]
    Unsupported,
    /// The source stopped before answering.
    #[error("the source is not running")]
    Closed,
    /// Anything else (an I/O error writing to the device…).
    #[error("{0}")]
    Failed(String),
}

/// What a command returns: a JSON value the source defines.
pub type CommandResult = Result<serde_json::Value, CommandError>;

/// One request from the control plane, with its reply slot.
#[derive(Debug)]
pub struct SourceCommand {
    /// The source-defined request (for `serial`: `{"command": "reboot",
    /// "device": "…"}`, see the adapter's README).
    pub request: serde_json::Value,
    reply: oneshot::Sender<CommandResult>,
}

impl SourceCommand {
    /// Answers the caller. A caller that gave up (timed out) is ignored.
    pub fn reply(self, result: CommandResult) {
        let _ = self.reply.send(result);
    }
}

/// The daemon's side: sends commands to one source.
#[derive(Debug, Clone)]
pub struct CommandSender(mpsc::Sender<SourceCommand>);

impl CommandSender {
    /// Sends `request` and waits for the answer, at most `timeout`
    /// (then [`CommandError::Timeout`]). Never waits for queue space: a
    /// full queue is [`CommandError::Busy`].
    pub async fn call(
        &self,
        request: serde_json::Value,
        timeout: std::time::Duration,
    ) -> CommandResult {
        let (tx, rx) = oneshot::channel();
        self.0
            .try_send(SourceCommand { request, reply: tx })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommandError::Busy,
                // Closed before the source ran, or by `close()` for a
                // source that takes no commands.
                mpsc::error::TrySendError::Closed(_) => CommandError::Unsupported,
            })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CommandError::Closed),
            Err(_) => Err(CommandError::Timeout(format!(
                "no answer from the source within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// The source's side: a bounded queue of [`SourceCommand`]s.
#[derive(Debug)]
pub struct CommandInbox(mpsc::Receiver<SourceCommand>);

impl CommandInbox {
    /// The next command; `None` once the daemon dropped its sender.
    pub async fn recv(&mut self) -> Option<SourceCommand> {
        self.0.recv().await
    }

    /// Refuses further commands (callers get [`CommandError::Unsupported`]);
    /// commands already queued are answered the same way.
    pub fn close(&mut self) {
        self.0.close();
        while let Ok(cmd) = self.0.try_recv() {
            cmd.reply(Err(CommandError::Unsupported));
        }
    }
}

/// A command channel holding at most `capacity` unanswered requests.
pub fn command_channel(capacity: usize) -> (CommandSender, CommandInbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (CommandSender(tx), CommandInbox(rx))
}

/// Everything a running source gets from the daemon.
#[derive(Debug)]
pub struct SourceContext {
    /// The instance name from the config (e.g. `coap`).
    pub name: String,
    pub sink: ReadingSink,
    pub shutdown: CancellationToken,
    pub health: HealthHandle,
    pub status: StatusHandle,
    /// Requests from the control plane (only read by sources with
    /// [`Source::TAKES_COMMANDS`]).
    pub commands: CommandInbox,
}

/// Errors building a source from its config.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `sources.coap.bind`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A source failed while running.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// The adapter contract.
pub trait Source: Sized + Send + 'static {
    /// The config section's `kind`, e.g. `"coap"`.
    const KIND: &'static str;
    /// The adapter's config section; defaults make a working adapter.
    /// Serialisable so the effective configuration (defaults included) can
    /// be shown (`gatewayctl config get sources.<name>`).
    type Config: DeserializeOwned + Serialize + Default + Send;
    /// Whether [`SourceContext::commands`] is read. When `false` the daemon
    /// closes the inbox, so a command fails at once as unsupported.
    const TAKES_COMMANDS: bool = false;

    /// Validates the config and builds the source. `key` is the dotted path
    /// of its section, for error messages. Binds no sockets yet.
    fn build(key: &str, config: Self::Config) -> Result<Self, ConfigError>;

    /// Runs until `ctx.shutdown` fires (then drains and returns) or a fatal
    /// error, which the daemon records as [`SourceState::Failed`].
    fn run(self, ctx: SourceContext) -> impl Future<Output = Result<(), SourceError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatewayd_model::{DeviceId, Measurement, Timestamp, Transport};

    fn reading() -> Reading {
        Reading::new(
            DeviceId::new(Transport::Coap, "a").unwrap(),
            Timestamp(1),
            vec![Measurement::float("t", Some("Cel"), 1.0)],
        )
    }

    #[tokio::test]
    async fn ticket_resolves_with_the_writers_answer() {
        let (tx, mut rx) = ingest_channel(1);
        let sink = ReadingSink::new(tx, "coap");
        let ticket = sink.submit(vec![reading()]).await.unwrap();
        let ingest = rx.recv().await.unwrap();
        assert_eq!(ingest.readings[0].meta.source.as_deref(), Some("coap"));
        ingest
            .reply
            .unwrap()
            .send(Ok(Committed {
                first_seq: 7,
                count: 1,
            }))
            .unwrap();
        assert_eq!(ticket.committed().await.unwrap().first_seq, 7);
    }

    #[tokio::test]
    async fn dropped_reply_means_not_committed() {
        let (tx, mut rx) = ingest_channel(1);
        let sink = ReadingSink::new(tx, "coap");
        let ticket = sink.submit(vec![reading()]).await.unwrap();
        drop(rx.recv().await.unwrap());
        assert_eq!(ticket.committed().await, Err(CommitError::Closed));
    }

    #[tokio::test]
    async fn a_command_gets_the_sources_answer() {
        let (tx, mut inbox) = command_channel(2);
        tokio::spawn(async move {
            while let Some(cmd) = inbox.recv().await {
                let echo = cmd.request.clone();
                cmd.reply(Ok(echo));
            }
        });
        let v = tx
            .call(
                serde_json::json!({"x": 1}),
                std::time::Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(v["x"], 1);
    }

    #[tokio::test]
    async fn commands_to_a_closed_inbox_are_unsupported_and_a_silent_source_times_out() {
        let (tx, mut inbox) = command_channel(1);
        let short = std::time::Duration::from_millis(20);
        let first = tokio::spawn({
            let tx = tx.clone();
            async move { tx.call(serde_json::Value::Null, short).await }
        });
        assert_eq!(
            first.await.unwrap().unwrap_err(),
            CommandError::Timeout("no answer from the source within 20 ms".into())
        );
        // The queue (capacity 1) still holds the first: the next is refused.
        assert_eq!(
            tx.call(serde_json::Value::Null, short).await.unwrap_err(),
            CommandError::Busy
        );
        inbox.close();
        assert_eq!(
            tx.call(serde_json::Value::Null, short).await.unwrap_err(),
            CommandError::Unsupported
        );
    }

    #[tokio::test]
    async fn a_source_that_stops_without_answering_is_reported_closed() {
        let (tx, mut inbox) = command_channel(1);
        tokio::spawn(async move {
            let cmd = inbox.recv().await.unwrap();
            drop(cmd);
        });
        assert_eq!(
            tx.call(serde_json::Value::Null, std::time::Duration::from_secs(5))
                .await
                .unwrap_err(),
            CommandError::Closed
        );
    }

    #[tokio::test]
    async fn try_submit_reports_a_full_queue() {
        let (tx, _rx) = ingest_channel(1);
        let sink = ReadingSink::new(tx, "coap");
        let _t = sink.try_submit(vec![reading()]).unwrap();
        assert_eq!(
            sink.try_submit(vec![reading()]).unwrap_err(),
            SinkError::Full
        );
    }
}

/// Rate limit for a repeated log line of a source (bad frames, drops):
/// at most one line per period, each telling how many were suppressed
/// since the previous one. Time is passed in (no clock read here).
#[derive(Debug, Clone)]
pub struct LogRateLimit {
    period: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogRateLimit {
    /// At most one line every `period`.
    pub const fn new(period: std::time::Duration) -> Self {
        LogRateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` if a line may be
    /// written at `now`; else counts this one as suppressed.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.period)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod log_rate_limit_tests {
    use super::LogRateLimit;
    use std::time::{Duration, Instant};

    #[test]
    fn one_line_per_period_with_the_count_of_the_suppressed() {
        let mut r = LogRateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(25)), Some(1));
    }
}

/// The gateway's wall clock as a reading timestamp (µs since the Unix
/// epoch): the time sources give readings whose devices send none. A clock
/// before 1970 gives 0.
pub fn wall_clock() -> gatewayd_model::Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    gatewayd_model::Timestamp(micros)
}
