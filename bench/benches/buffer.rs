//! Buffer throughput: group-commit appends of 1, 100 and 1000 readings with
//! `sync = full` and `sync = normal`, and forwarding (read_after +
//! ack_through) in pages of 1000. On a temp file; short runs.
//!
//! `cargo bench -p gatewayd-bench --bench buffer`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gatewayd_buffer::{AppendOutcome, BufferConfig, FullPolicy, SqliteStore, Store, SyncMode};
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Transport};

/// A typical environmental reading (~150 bytes encoded).
fn reading(i: u64) -> Reading {
    let mut r = Reading::new(
        DeviceId::new(Transport::Lora, &format!("70B3D57ED000{:04X}", i % 64)).unwrap(),
        Timestamp(1_732_460_000_000_000 + i as i64),
        vec![
            Measurement::float("temperature", Some("Cel"), 20.0 + (i % 100) as f64 / 10.0),
            Measurement::float("humidity", Some("%RH"), 40.0 + (i % 50) as f64),
        ],
    );
    r.meta.rssi = Some(-70.0);
    r.meta.snr = Some(7.5);
    r
}

fn open(dir: &tempfile::TempDir, name: &str, sync: SyncMode) -> SqliteStore {
    SqliteStore::open(&BufferConfig {
        path: dir.path().join(name),
        max_bytes: 1 << 30,
        when_full: FullPolicy::DropOldest,
        sync,
    })
    .expect("open buffer")
}

fn sync_name(sync: SyncMode) -> &'static str {
    match sync {
        SyncMode::Full => "full",
        SyncMode::Normal => "normal",
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer_append");
    for sync in [SyncMode::Full, SyncMode::Normal] {
        for size in [1u64, 100, 1000] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut store = open(&dir, "append.db", sync);
            let groups = vec![(0..size).map(reading).collect::<Vec<_>>()];
            group.throughput(Throughput::Elements(size));
            group.bench_function(BenchmarkId::new(sync_name(sync), size), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let out = store.append(&groups).expect("append");
                        spent += start.elapsed();
                        assert!(matches!(out[0], AppendOutcome::Committed { .. }));
                        // Keep the table small (as when forwarding keeps
                        // up); not measured.
                        let last = store.stats().next_seq - 1;
                        store.ack_through(last).expect("ack");
                    }
                    spent
                })
            });
        }
    }
    group.finish();
}

fn forward(c: &mut Criterion) {
    const PAGE: u64 = 1000;
    let mut group = c.benchmark_group("buffer_read_ack");
    group.throughput(Throughput::Elements(PAGE));
    for sync in [SyncMode::Full, SyncMode::Normal] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = open(&dir, "forward.db", sync);
        let groups = vec![(0..PAGE).map(reading).collect::<Vec<_>>()];
        group.bench_function(BenchmarkId::new(sync_name(sync), PAGE), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    store.append(&groups).expect("append");
                    let cursor = store.stats().acked_through;
                    let start = Instant::now();
                    let rows = store
                        .read_after(cursor, PAGE as usize, usize::MAX)
                        .expect("read");
                    let last = rows.last().expect("rows").seq;
                    store.ack_through(last).expect("ack");
                    spent += start.elapsed();
                    assert_eq!(rows.len() as u64, PAGE);
                }
                spent
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = append, forward
}
criterion_main!(benches);
