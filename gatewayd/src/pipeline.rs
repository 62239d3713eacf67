//! The pipeline between sources and the uplink:
//!
//! ```text
//! sources ──Ingest──▶ writer ──append──▶ buffer thread (SQLite) ◀──read/ack── forwarder ──batches──▶ uplink
//!   ▲  (bounded queue)   │ group commit                                  ▲   (bounded)              │
//!   └──── commit reply ──┘                                               └────── PUBACK events ──────┘
//! ```
//!
//! * The **buffer thread** owns the SQLite [`Store`]; everything else talks to
//!   it through [`BufferHandle`] (a bounded command channel), so no async task
//!   ever blocks on disk.
//! * The **writer** takes submissions from the bounded ingest queue, groups
//!   them (up to `commit_max_readings`, waiting at most `commit_max_delay_ms`),
//!   appends each group in one transaction and only then answers every
//!   submission's commit ticket.
//! * The **forwarder** reads committed rows in sequence order, packs them into
//!   batches, hands them to the uplink (bounded by its in-flight window) and
//!   feeds PUBACKs to an [`AckTracker`]; the contiguous acknowledged prefix
//!   is deleted from the buffer every `ack_flush_ms`.

use std::sync::Arc;
use std::time::Duration;

use gatewayd_buffer::{
    AckTracker, AppendOutcome, BufferError, BufferStats, SqliteStore, Store, StoredReading,
};
use gatewayd_core::{CommitError, Committed, Ingest};
use gatewayd_devices::DeviceRegistry;
use gatewayd_edge::{Derived, EdgeHandle};
use gatewayd_model::wire::{self, BatchWriter};
use gatewayd_model::Reading;
use gatewayd_uplink::{OutgoingBatch, UplinkEvent};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{BufferSection, ForwarderConfig};

enum Cmd {
    Append {
        groups: Vec<Vec<Reading>>,
        reply: oneshot::Sender<Result<Appended, BufferError>>,
    },
    Read {
        after: u64,
        max_count: usize,
        max_bytes: usize,
        reply: oneshot::Sender<Result<Vec<StoredReading>, BufferError>>,
    },
    Ack {
        through: u64,
        reply: oneshot::Sender<Result<u64, BufferError>>,
    },
}

/// What an append returns: one outcome per group, and the groups.
pub struct Appended {
    pub outcomes: Vec<AppendOutcome>,
    pub groups: Vec<Vec<Reading>>,
}

/// Async access to the buffer thread.
#[derive(Clone)]
pub struct BufferHandle {
    tx: mpsc::Sender<Cmd>,
    stats: watch::Receiver<BufferStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("buffer: {0}")]
    Buffer(#[from] BufferError),
    #[error("the buffer thread has stopped")]
    BufferGone,
}

impl BufferHandle {
    /// Starts the buffer thread owning `store`. The thread ends when every
    /// handle is dropped.
    pub fn spawn(
        mut store: SqliteStore,
    ) -> std::io::Result<(BufferHandle, std::thread::JoinHandle<()>)> {
        let (tx, mut rx) = mpsc::channel::<Cmd>(64);
        let (stats_tx, stats_rx) = watch::channel(store.stats());
        let join = std::thread::Builder::new()
            .name("gatewayd-buffer".into())
            .spawn(move || {
                // Stats are published before each reply, so whoever gets an
                // answer sees stats that include its effect.
                while let Some(cmd) = rx.blocking_recv() {
                    match cmd {
                        Cmd::Append { groups, reply } => {
                            let r = store
                                .append(&groups)
                                .map(|outcomes| Appended { outcomes, groups });
                            stats_tx.send_replace(store.stats());
                            let _ = reply.send(r);
                        }
                        Cmd::Read {
                            after,
                            max_count,
                            max_bytes,
                            reply,
                        } => {
                            let _ = reply.send(store.read_after(after, max_count, max_bytes));
                        }
                        Cmd::Ack { through, reply } => {
                            let r = store.ack_through(through);
                            stats_tx.send_replace(store.stats());
                            let _ = reply.send(r);
                        }
                    }
                }
            })?;
        Ok((
            BufferHandle {
                tx,
                stats: stats_rx,
            },
            join,
        ))
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, BufferError>>) -> Cmd,
    ) -> Result<T, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| PipelineError::BufferGone)?;
        Ok(rx.await.map_err(|_| PipelineError::BufferGone)??)
    }

    /// Appends the groups in one transaction; the groups come back with the
    /// outcomes so that a caller can retry blocked ones without copying.
    pub async fn append(&self, groups: Vec<Vec<Reading>>) -> Result<Appended, PipelineError> {
        self.call(|reply| Cmd::Append { groups, reply }).await
    }

    pub async fn read_after(
        &self,
        after: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredReading>, PipelineError> {
        self.call(|reply| Cmd::Read {
            after,
            max_count,
            max_bytes,
            reply,
        })
        .await
    }

    pub async fn ack_through(&self, through: u64) -> Result<u64, PipelineError> {
        self.call(|reply| Cmd::Ack { through, reply }).await
    }

    /// The latest buffer statistics.
    pub fn stats(&self) -> BufferStats {
        *self.stats.borrow()
    }

    pub fn watch_stats(&self) -> watch::Receiver<BufferStats> {
        self.stats.clone()
    }
}

/// Wake-ups between the writer and the forwarder.
#[derive(Default)]
pub struct Signals {
    /// New rows were committed.
    pub committed: Notify,
    /// Rows were deleted (space freed).
    pub freed: Notify,
}

/// Readings refused as invalid, per writer lifetime.
#[derive(Debug, Default)]
pub struct WriterCounters {
    pub invalid: std::sync::atomic::AtomicU64,
}

/// What the writer calls besides the buffer: the edge apps (before the
/// commit) and the device registry (after it).
#[derive(Default)]
pub struct WriterStages {
    pub edge: Option<EdgeStage>,
    pub devices: Option<DeviceRegistry>,
}

/// The group-commit writer. Returns when the ingest queue is closed (every
/// sender dropped) and drained, or when `abort` fires while blocked on a full
/// buffer (those submissions are answered `Closed`: never acknowledged).
pub async fn run_writer(
    mut rx: mpsc::Receiver<Ingest>,
    buffer: BufferHandle,
    cfg: BufferSection,
    signals: Arc<Signals>,
    counters: Arc<WriterCounters>,
    abort: CancellationToken,
    stages: WriterStages,
) -> Result<(), PipelineError> {
    let WriterStages { mut edge, devices } = stages;
    let delay = Duration::from_millis(cfg.commit_max_delay_ms);
    loop {
        // Step 1: wait for the first submission of a group, or for output
        // the edge apps derived on their own (windows closed by time, …).
        let first = match edge.as_mut() {
            None => rx.recv().await,
            Some(e) => tokio::select! {
                biased;
                i = rx.recv() => i,
                Some(d) = e.derived.recv() => {
                    commit_derived(&buffer, &e.handle, d, &signals, &abort).await;
                    continue;
                }
            },
        };
        let Some(first) = first else {
            debug!("ingest queue closed and drained; writer done");
            return Ok(());
        };
        // Step 2: gather more, by count or until the deadline.
        let mut group = vec![first];
        let mut count = group[0].readings.len();
        let deadline = Instant::now() + delay;
        while count < cfg.commit_max_readings {
            match rx.try_recv() {
                Ok(i) => {
                    count += i.readings.len();
                    group.push(i);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if delay.is_zero() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(i)) => {
                            count += i.readings.len();
                            group.push(i);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        // Step 3: refuse invalid submissions (whole submission: a sensor's
        // request is accepted or refused as a unit).
        let mut pending: Vec<(Ingest, Vec<Reading>)> = Vec::with_capacity(group.len());
        for mut ingest in group {
            if let Some(err) = ingest.readings.iter().find_map(|r| wire::validate(r).err()) {
                counters.invalid.fetch_add(
                    ingest.readings.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                reply(ingest, Err(CommitError::Invalid(err.to_string())));
            } else if ingest.readings.is_empty() {
                reply(
                    ingest,
                    Ok(Committed {
                        first_seq: 0,
                        count: 0,
                    }),
                );
            } else {
                let readings = std::mem::take(&mut ingest.readings);
                pending.push((ingest, readings));
            }
        }
        // Step 4: the edge apps (pass, drop, transform, derive). What they
        // derive is committed with the group, as a submission of its own.
        let mut edge_token = None;
        let edge_active = edge.as_ref().filter(|e| e.handle.is_active());
        if let (Some(e), false) = (edge_active, pending.is_empty()) {
            let (ingests, groups): (Vec<Ingest>, Vec<Vec<Reading>>) = pending.drain(..).unzip();
            match e.handle.process(groups).await {
                Ok(p) => {
                    edge_token = p.token;
                    pending = ingests.into_iter().zip(p.groups).collect();
                    if !p.derived.is_empty() {
                        pending.push((
                            Ingest {
                                readings: Vec::new(),
                                reply: None,
                            },
                            p.derived,
                        ));
                    }
                }
                Err(err) => {
                    // Only when the runtime thread is gone (it never fails a
                    // group otherwise): the readings went down with it.
                    warn!(error = %err, "edge-app runtime stopped");
                    for i in ingests {
                        reply(i, Err(CommitError::Closed));
                    }
                }
            }
        }
        let mut group_ok = true;
        // Step 5: append (one transaction), retrying what would block. The
        // readings move to the buffer thread and come back with the outcomes.
        while !pending.is_empty() {
            let (ingests, groups): (Vec<Ingest>, Vec<Vec<Reading>>) = pending.drain(..).unzip();
            let appended = match buffer.append(groups).await {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "buffer append failed");
                    for i in ingests {
                        reply(i, Err(CommitError::Storage(e.to_string())));
                    }
                    group_ok = false;
                    break;
                }
            };
            let mut blocked = Vec::new();
            let mut any_committed = false;
            // One clock read per commit, for every group's devices.
            let now_ms = gatewayd_devices::now_ms();
            for ((ingest, outcome), readings) in ingests
                .into_iter()
                .zip(appended.outcomes)
                .zip(appended.groups)
            {
                if !blocked.is_empty() {
                    // Keep order: everything after a blocked group waits too.
                    blocked.push((ingest, readings));
                    continue;
                }
                match outcome {
                    AppendOutcome::Committed { first_seq, count } => {
                        any_committed = true;
                        // Devices are those sources submitted for (not
                        // what apps derived on their own).
                        if let (Some(d), true) = (&devices, ingest.reply.is_some()) {
                            d.observe(&readings, now_ms);
                        }
                        reply(ingest, Ok(Committed { first_seq, count }));
                    }
                    AppendOutcome::Refused => {
                        group_ok = false;
                        reply(ingest, Err(CommitError::BufferFull))
                    }
                    AppendOutcome::WouldBlock => blocked.push((ingest, readings)),
                }
            }
            if any_committed {
                signals.committed.notify_one();
            }
            if blocked.is_empty() {
                break;
            }
            // Step 6 (policy block): wait for the forwarder to free space.
            debug!(waiting = blocked.len(), "buffer full; blocking sources");
            tokio::select! {
                _ = signals.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = abort.cancelled() => {
                    for (i, _) in blocked {
                        reply(i, Err(CommitError::Closed));
                    }
                    while let Ok(i) = rx.try_recv() {
                        reply(i, Err(CommitError::Closed));
                    }
                    if let (Some(e), Some(t)) = (edge.as_ref(), edge_token) {
                        e.handle.abandoned(t).await;
                    }
                    return Ok(());
                }
            }
            pending = blocked;
        }
        // Step 7: tell the apps their output is durable (or not).
        if let (Some(e), Some(t)) = (edge.as_ref(), edge_token) {
            if group_ok {
                e.handle.committed(t).await;
            } else {
                e.handle.abandoned(t).await;
            }
        }
    }
}

/// The edge-app runtime as the writer sees it.
pub struct EdgeStage {
    pub handle: EdgeHandle,
    pub derived: mpsc::Receiver<Derived>,
}

/// Commits output the apps derived outside any submission, then confirms
/// it to them. Retries while the buffer would block (policy `block`).
async fn commit_derived(
    buffer: &BufferHandle,
    edge: &EdgeHandle,
    d: Derived,
    signals: &Signals,
    abort: &CancellationToken,
) {
    let mut readings = d.readings;
    readings.retain(|r| match wire::validate(r) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "edge apps derived an invalid reading; dropped");
            false
        }
    });
    let mut ok = true;
    while !readings.is_empty() {
        match buffer.append(vec![readings]).await {
            Ok(mut a) => match a.outcomes.first() {
                Some(AppendOutcome::Committed { .. }) => {
                    signals.committed.notify_one();
                    break;
                }
                Some(AppendOutcome::WouldBlock) => {
                    readings = a.groups.pop().unwrap_or_default();
                    tokio::select! {
                        _ = signals.freed.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = abort.cancelled() => { ok = false; break; }
                    }
                }
                _ => {
                    warn!("buffer refused readings derived by edge apps");
                    ok = false;
                    break;
                }
            },
            Err(e) => {
                warn!(error = %e, "buffer append of derived readings failed");
                ok = false;
                break;
            }
        }
    }
    if let Some(t) = d.token {
        if ok {
            edge.committed(t).await;
        } else {
            edge.abandoned(t).await;
        }
    }
}

fn reply(ingest: Ingest, result: Result<Committed, CommitError>) {
    if let Some(tx) = ingest.reply {
        let _ = tx.send(result);
    }
}

/// The forwarder: buffer → uplink batches, PUBACKs → buffer deletions.
/// Returns when `stop` fires, after flushing acknowledged deletions.
pub async fn run_forwarder(
    buffer: BufferHandle,
    gateway_id: String,
    cfg: ForwarderConfig,
    batches: mpsc::Sender<OutgoingBatch>,
    mut events: mpsc::Receiver<UplinkEvent>,
    signals: Arc<Signals>,
    stop: CancellationToken,
) -> Result<(), PipelineError> {
    let mut tracker = AckTracker::new();
    let mut cursor = 0u64;
    let mut next_batch_id = 1u64;
    let mut has_data = true;
    let mut ack_pending: Option<u64> = None;
    let mut flush = tokio::time::interval(Duration::from_millis(cfg.ack_flush_ms));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                Some(UplinkEvent::Acked { id, .. }) => {
                    if let Some(seq) = tracker.ack(id) {
                        ack_pending = Some(seq);
                    }
                }
                Some(UplinkEvent::Connected { broker, protocol }) => {
                    info!(%broker, protocol, "uplink connected");
                }
                Some(UplinkEvent::Disconnected { reason }) => {
                    info!(%reason, "uplink disconnected; readings stay buffered");
                }
                None => {
                    warn!("uplink stopped; forwarder stopping");
                    break;
                }
            },
            _ = flush.tick() => {
                if let Some(seq) = ack_pending.take() {
                    buffer.ack_through(seq).await?;
                    signals.freed.notify_waiters();
                }
            }
            permit = batches.reserve(), if has_data => {
                let Ok(permit) = permit else {
                    warn!("uplink stopped taking batches; forwarder stopping");
                    break;
                };
                let rows = buffer
                    .read_after(cursor, cfg.batch_max_readings, cfg.batch_max_bytes)
                    .await?;
                if rows.is_empty() {
                    has_data = false;
                    continue;
                }
                // Pack rows while the whole payload (envelope and per-row
                // framing included) stays within batch_max_bytes; always at
                // least one. Rows left out are read again next time.
                let mut w = BatchWriter::new(&gateway_id);
                let first_seq = rows[0].seq;
                let mut last_seq = first_seq;
                for row in &rows {
                    if w.count() > 0
                        && w.len_bytes() + BatchWriter::cost(&row.payload) > cfg.batch_max_bytes
                    {
                        break;
                    }
                    w.push(row.seq, &row.payload);
                    last_seq = row.seq;
                }
                cursor = last_seq;
                let id = next_batch_id;
                next_batch_id += 1;
                tracker.sent(id, last_seq);
                permit.send(OutgoingBatch { id, first_seq, last_seq, payload: w.finish() });
            }
            _ = signals.committed.notified(), if !has_data => {
                has_data = true;
            }
        }
    }
    if let Some(seq) = ack_pending.take() {
        buffer.ack_through(seq).await?;
    }
    Ok(())
}
