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
//! * a [`HealthHandle`] to publish its state for `/healthz`, D-Bus, logs.
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

/// Everything a running source gets from the daemon.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The instance name from the config (e.g. `coap`).
    pub name: String,
    pub sink: ReadingSink,
    pub shutdown: CancellationToken,
    pub health: HealthHandle,
    pub status: StatusHandle,
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
