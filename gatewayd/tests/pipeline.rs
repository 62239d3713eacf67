//! The writer and forwarder with a real SQLite buffer; the test plays the
//! uplink through its channels (batches in, PUBACK events out).

use std::sync::Arc;
use std::time::Duration;

use gatewayd::config::{BufferSection, ForwarderConfig};
use gatewayd::pipeline::{
    run_forwarder, run_writer, BufferHandle, Signals, WriterCounters, WriterStages,
};
use gatewayd_buffer::{BufferConfig, FullPolicy, SqliteStore, SyncMode};
use gatewayd_core::{ingest_channel, CommitError, ReadingSink};
use gatewayd_model::wire;
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Transport};
use gatewayd_uplink::{OutgoingBatch, UplinkEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn reading(dev: &str, i: i64) -> Reading {
    Reading::new(
        DeviceId::new(Transport::Coap, dev).unwrap(),
        Timestamp(1_700_000_000_000_000 + i),
        vec![Measurement::float("n", Some("count"), i as f64)],
    )
}

struct Rig {
    sink: ReadingSink,
    buffer: BufferHandle,
    batches: mpsc::Receiver<OutgoingBatch>,
    events: mpsc::Sender<UplinkEvent>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

fn rig(max_bytes: u64, when_full: FullPolicy) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&BufferConfig {
        path: dir.path().join("buffer.db"),
        max_bytes,
        when_full,
        sync: SyncMode::Normal,
    })
    .unwrap();
    let (buffer, _thread) = BufferHandle::spawn(store).unwrap();
    let signals = Arc::new(Signals::default());
    let (tx, rx) = ingest_channel(16);
    let section = BufferSection {
        commit_max_delay_ms: 1,
        ..BufferSection::default()
    };
    let stop = CancellationToken::new();
    tokio::spawn(run_writer(
        rx,
        buffer.clone(),
        section,
        signals.clone(),
        Arc::new(WriterCounters::default()),
        stop.clone(),
        WriterStages::default(),
    ));
    let (batch_tx, batch_rx) = mpsc::channel(4);
    let (event_tx, event_rx) = mpsc::channel(16);
    let fwd = ForwarderConfig {
        batch_max_readings: 10,
        ack_flush_ms: 5,
        ..ForwarderConfig::default()
    };
    tokio::spawn(run_forwarder(
        buffer.clone(),
        "gw-test".into(),
        fwd,
        batch_tx,
        event_rx,
        signals,
        stop.clone(),
    ));
    Rig {
        sink: ReadingSink::new(tx, "test"),
        buffer,
        batches: batch_rx,
        events: event_tx,
        stop,
        _dir: dir,
    }
}

async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

async fn ack(rig: &Rig, b: &OutgoingBatch) {
    rig.events
        .send(UplinkEvent::Acked {
            id: b.id,
            first_seq: b.first_seq,
            last_seq: b.last_seq,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn submission_resolves_after_commit_with_contiguous_sequence_numbers() {
    let rig = rig(1 << 20, FullPolicy::DropOldest);
    let a = rig
        .sink
        .submit_and_wait(vec![reading("a", 1), reading("a", 2)])
        .await
        .unwrap();
    let b = rig
        .sink
        .submit_and_wait(vec![reading("b", 3)])
        .await
        .unwrap();
    assert_eq!(a.count, 2);
    assert_eq!(b.first_seq, a.first_seq + 2);
    assert!(rig.buffer.stats().readings >= 2);
    rig.stop.cancel();
}

#[tokio::test]
async fn rows_are_deleted_only_after_their_batch_is_acknowledged() {
    let mut rig = rig(1 << 20, FullPolicy::DropOldest);
    for i in 0..25 {
        rig.sink
            .submit_and_wait(vec![reading("a", i)])
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got
        .iter()
        .map(|b: &OutgoingBatch| (b.last_seq - b.first_seq + 1) as usize)
        .sum::<usize>()
        < 25
    {
        got.push(rig.batches.recv().await.unwrap());
    }
    // Every reading forwarded, in order, decodable, none deleted yet.
    let mut counters = Vec::new();
    for b in &got {
        let batch = wire::decode_batch(&b.payload).unwrap();
        assert_eq!(batch.gateway, "gw-test");
        for (_, r) in batch.readings {
            counters.push(r.measurements[0].value.clone());
        }
    }
    assert_eq!(counters.len(), 25);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        rig.buffer.stats().readings,
        25,
        "nothing deleted without PUBACK"
    );
    // Ack out of order: the last batch first deletes nothing.
    ack(&rig, got.last().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rig.buffer.stats().readings, 25, "a gap keeps everything");
    for b in &got[..got.len() - 1] {
        ack(&rig, b).await;
    }
    let buffer = rig.buffer.clone();
    eventually(move || buffer.stats().readings == 0).await;
    rig.stop.cancel();
}

#[tokio::test]
async fn drop_newest_refuses_with_buffer_full() {
    let rig = rig(64 * 1024, FullPolicy::DropNewest);
    let mut refused = 0;
    for i in 0..2000 {
        match rig.sink.submit_and_wait(vec![reading("a", i)]).await {
            Ok(_) => {}
            Err(CommitError::BufferFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused > 0, "the buffer never filled");
    assert_eq!(rig.buffer.stats().dropped_newest, refused);
    rig.stop.cancel();
}

#[tokio::test]
async fn block_policy_holds_the_submission_until_acks_free_space() {
    let mut rig = rig(64 * 1024, FullPolicy::Block);
    // Fill until a submission does not resolve promptly.
    let mut i = 0;
    let pending = loop {
        let ticket = rig.sink.submit(vec![reading("a", i)]).await.unwrap();
        i += 1;
        let mut ticket = Box::pin(ticket.committed());
        tokio::select! {
            r = &mut ticket => { r.unwrap(); }
            _ = tokio::time::sleep(Duration::from_millis(200)) => break ticket,
        }
        assert!(i < 10_000, "the buffer never filled");
    };
    // Acknowledge everything forwarded so far: space frees, the held
    // submission commits.
    let waiter = tokio::spawn(pending);
    loop {
        let b = tokio::time::timeout(Duration::from_secs(5), rig.batches.recv())
            .await
            .expect("forwarder sends batches")
            .unwrap();
        ack(&rig, &b).await;
        if waiter.is_finished() {
            break;
        }
    }
    waiter.await.unwrap().unwrap();
    assert_eq!(rig.buffer.stats().dropped_newest, 0);
    assert_eq!(rig.buffer.stats().dropped_oldest, 0);
    rig.stop.cancel();
}

#[tokio::test]
async fn invalid_readings_are_refused_and_never_stored() {
    let rig = rig(1 << 20, FullPolicy::DropOldest);
    let mut bad = reading("a", 1);
    bad.measurements[0] = Measurement::float("x", None, f64::NAN);
    let err = rig.sink.submit_and_wait(vec![bad]).await.unwrap_err();
    assert!(matches!(err, CommitError::Invalid(_)), "{err}");
    let ok = rig
        .sink
        .submit_and_wait(vec![reading("a", 2)])
        .await
        .unwrap();
    assert_eq!(rig.buffer.stats().readings, 1);
    assert_eq!(ok.count, 1);
    rig.stop.cancel();
}

#[tokio::test]
async fn writer_drains_queued_submissions_when_sources_close() {
    let rig = rig(1 << 20, FullPolicy::DropOldest);
    let mut tickets = Vec::new();
    for i in 0..10 {
        tickets.push(rig.sink.submit(vec![reading("a", i)]).await.unwrap());
    }
    drop(rig.sink);
    for t in tickets {
        t.committed().await.unwrap();
    }
    assert_eq!(rig.buffer.stats().readings, 10);
}
