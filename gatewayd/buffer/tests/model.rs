//! Model tests: `SqliteStore` against an obviously-correct in-memory model
//! implementing the same `Store` semantics, and `AckTracker` against a naive
//! recomputation, over random operation sequences.

mod common;

use std::collections::{HashSet, VecDeque};

use common::padded;
use gatewayd_buffer::{
    row_cost, AckTracker, AppendOutcome, BufferConfig, BufferError, BufferStats, FullPolicy,
    SqliteStore, Store, StoredReading, SyncMode,
};
use gatewayd_model::wire::{encode_reading, validate};
use gatewayd_model::Reading;
use proptest::prelude::*;

/// The specification, written as plainly as possible.
struct ModelStore {
    rows: VecDeque<StoredReading>,
    stats: BufferStats,
    when_full: FullPolicy,
}

impl ModelStore {
    fn new(max_bytes: u64, when_full: FullPolicy) -> Self {
        ModelStore {
            rows: VecDeque::new(),
            stats: BufferStats {
                max_bytes,
                next_seq: 1,
                ..BufferStats::default()
            },
            when_full,
        }
    }

    /// What reopening with a new configuration changes: only the settings.
    fn reconfigure(&mut self, max_bytes: u64, when_full: FullPolicy) {
        self.stats.max_bytes = max_bytes;
        self.when_full = when_full;
    }

    fn cost(r: &StoredReading) -> u64 {
        row_cost(&r.device, r.payload.len())
    }

    fn pop_oldest(&mut self) {
        let r = self.rows.pop_front().expect("model: nothing to drop");
        self.stats.bytes -= Self::cost(&r);
        self.stats.readings -= 1;
        self.stats.dropped_oldest += 1;
    }
}

impl Store for ModelStore {
    fn append(&mut self, groups: &[Vec<Reading>]) -> Result<Vec<AppendOutcome>, BufferError> {
        for (g, group) in groups.iter().enumerate() {
            for (i, r) in group.iter().enumerate() {
                validate(r).map_err(|e| BufferError::InvalidReading {
                    group: g,
                    index: i,
                    reason: e.to_string(),
                })?;
            }
        }
        let mut out = Vec::new();
        let mut blocked = false;
        for group in groups {
            let rows: Vec<StoredReading> = group
                .iter()
                .map(|r| StoredReading {
                    seq: 0,
                    device: r.device.to_string(),
                    payload: encode_reading(r),
                })
                .collect();
            let n = rows.len() as u64;
            let cost: u64 = rows.iter().map(Self::cost).sum();
            let max = self.stats.max_bytes;
            if blocked {
                out.push(AppendOutcome::WouldBlock);
                continue;
            }
            if n > 0 && cost > max {
                self.stats.dropped_too_large += n;
                out.push(AppendOutcome::Refused);
                continue;
            }
            if n > 0 && self.stats.bytes + cost > max {
                match self.when_full {
                    FullPolicy::Block => {
                        blocked = true;
                        out.push(AppendOutcome::WouldBlock);
                        continue;
                    }
                    FullPolicy::DropNewest => {
                        self.stats.dropped_newest += n;
                        out.push(AppendOutcome::Refused);
                        continue;
                    }
                    FullPolicy::DropOldest => {
                        while self.stats.bytes + cost > max {
                            self.pop_oldest();
                        }
                    }
                }
            }
            let first_seq = self.stats.next_seq;
            for mut r in rows {
                r.seq = self.stats.next_seq;
                self.stats.next_seq += 1;
                self.stats.bytes += Self::cost(&r);
                self.stats.readings += 1;
                self.rows.push_back(r);
            }
            out.push(AppendOutcome::Committed {
                first_seq,
                count: group.len(),
            });
        }
        Ok(out)
    }

    fn read_after(
        &mut self,
        after: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredReading>, BufferError> {
        if max_count == 0 {
            return Err(BufferError::ZeroReadCount);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for r in self.rows.iter().filter(|r| r.seq > after).take(max_count) {
            if !out.is_empty() && bytes + r.payload.len() > max_bytes {
                break;
            }
            bytes += r.payload.len();
            out.push(r.clone());
        }
        Ok(out)
    }

    fn ack_through(&mut self, seq: u64) -> Result<u64, BufferError> {
        if seq >= self.stats.next_seq {
            return Err(BufferError::AckBeyondEnd {
                seq,
                last: self.stats.next_seq - 1,
            });
        }
        let mut deleted = 0;
        while self.rows.front().is_some_and(|r| r.seq <= seq) {
            let r = self.rows.pop_front().unwrap();
            self.stats.bytes -= Self::cost(&r);
            self.stats.readings -= 1;
            deleted += 1;
        }
        self.stats.acked_through = self.stats.acked_through.max(seq);
        Ok(deleted)
    }

    fn stats(&self) -> BufferStats {
        self.stats
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Groups of (device index, padding) readings.
    Append(Vec<Vec<(usize, usize)>>),
    /// `after` is `pick % (next_seq + 1)`.
    Read {
        pick: u64,
        max_count: usize,
        max_bytes: usize,
    },
    /// The seq is `pick % (next_seq + 2)`: sometimes never assigned.
    Ack { pick: u64 },
    /// Drop the store and open the same file, maybe with new settings.
    Reopen {
        max_bytes: Option<u64>,
        when_full: Option<FullPolicy>,
    },
}

fn policy() -> impl Strategy<Value = FullPolicy> {
    prop_oneof![
        Just(FullPolicy::Block),
        Just(FullPolicy::DropOldest),
        Just(FullPolicy::DropNewest)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let reading = (0usize..3, prop_oneof![4 => 0usize..60, 1 => 200usize..900]);
    let group = prop::collection::vec(reading, 0..5);
    prop_oneof![
        5 => prop::collection::vec(group, 0..4).prop_map(Op::Append),
        2 => (any::<u64>(), 1usize..8, 0usize..600).prop_map(|(pick, max_count, max_bytes)| Op::Read {
            pick,
            max_count,
            max_bytes
        }),
        3 => any::<u64>().prop_map(|pick| Op::Ack { pick }),
        1 => (prop::option::of(300u64..3000), prop::option::of(policy()))
            .prop_map(|(max_bytes, when_full)| Op::Reopen { max_bytes, when_full }),
    ]
}

fn normalize<T>(r: Result<T, BufferError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

const DEVICES: [&str; 3] = ["a", "bb", "sensor-7"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_behaves_like_the_model(
        max_bytes in 300u64..3000,
        when_full in policy(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BufferConfig {
            path: dir.path().join("b.db"),
            max_bytes,
            when_full,
            sync: SyncMode::Normal,
        };
        let mut real = Some(SqliteStore::open(&config).unwrap());
        let mut model = ModelStore::new(max_bytes, when_full);
        let mut n = 0i64;
        for op in ops {
            let store = real.as_mut().unwrap();
            match op {
                Op::Append(groups) => {
                    let groups: Vec<Vec<Reading>> = groups
                        .into_iter()
                        .map(|g| {
                            g.into_iter()
                                .map(|(d, pad)| {
                                    n += 1;
                                    padded(DEVICES[d], n, pad)
                                })
                                .collect()
                        })
                        .collect();
                    prop_assert_eq!(
                        normalize(store.append(&groups)),
                        normalize(model.append(&groups))
                    );
                }
                Op::Read { pick, max_count, max_bytes } => {
                    let after = pick % (model.stats().next_seq + 1);
                    prop_assert_eq!(
                        normalize(store.read_after(after, max_count, max_bytes)),
                        normalize(model.read_after(after, max_count, max_bytes))
                    );
                }
                Op::Ack { pick } => {
                    let seq = pick % (model.stats().next_seq + 2);
                    prop_assert_eq!(
                        normalize(store.ack_through(seq)),
                        normalize(model.ack_through(seq))
                    );
                }
                Op::Reopen { max_bytes, when_full } => {
                    drop(real.take());
                    config.max_bytes = max_bytes.unwrap_or(config.max_bytes);
                    config.when_full = when_full.unwrap_or(config.when_full);
                    real = Some(SqliteStore::open(&config).unwrap());
                    model.reconfigure(config.max_bytes, config.when_full);
                    // sync = normal: next_seq jumps past anything a power
                    // loss could have rolled back (SEQ_RESTART_GAP).
                    if model.stats.next_seq > 1 {
                        model.stats.next_seq += gatewayd_buffer::SEQ_RESTART_GAP;
                    }
                }
            }
            let store = real.as_mut().unwrap();
            prop_assert_eq!(store.stats(), model.stats());
            prop_assert_eq!(
                store.read_after(0, usize::MAX, usize::MAX).unwrap(),
                model.read_after(0, usize::MAX, usize::MAX).unwrap()
            );
            store.verify().unwrap();
        }
    }
}

/// `AckTracker` semantics recomputed from scratch after every event.
#[derive(Default)]
struct NaiveTracker {
    sent: Vec<(u64, u64)>,
    acked: HashSet<u64>,
    released: usize,
}

impl NaiveTracker {
    fn ack(&mut self, id: u64) -> Option<u64> {
        if !self.sent.iter().any(|(b, _)| *b == id) || !self.acked.insert(id) {
            return None;
        }
        let prefix = self
            .sent
            .iter()
            .take_while(|(b, _)| self.acked.contains(b))
            .count();
        if prefix > self.released {
            self.released = prefix;
            Some(self.sent[prefix - 1].1)
        } else {
            None
        }
    }

    fn in_flight(&self) -> usize {
        self.sent.len() - self.acked.len()
    }
}

#[derive(Debug, Clone)]
enum TrackerOp {
    /// Send a batch of this many rows.
    Send(u64),
    /// Acknowledge batch `pick % (ids issued + 2)`: sometimes unknown.
    Ack(u64),
    Reset,
}

proptest! {
    #[test]
    fn ack_tracker_releases_exactly_the_contiguous_acknowledged_prefix(
        ops in prop::collection::vec(
            prop_oneof![
                3 => (1u64..50).prop_map(TrackerOp::Send),
                4 => any::<u64>().prop_map(TrackerOp::Ack),
                1 => Just(TrackerOp::Reset),
            ],
            1..80,
        )
    ) {
        let mut real = AckTracker::new();
        let mut naive = NaiveTracker::default();
        let mut next_id = 1u64;
        let mut last_seq = 0u64;
        let mut deletable = 0u64;
        for op in ops {
            match op {
                TrackerOp::Send(rows) => {
                    last_seq += rows;
                    real.sent(next_id, last_seq);
                    naive.sent.push((next_id, last_seq));
                    next_id += 1;
                }
                TrackerOp::Ack(pick) => {
                    let id = pick % (next_id + 2);
                    let got = real.ack(id);
                    prop_assert_eq!(got, naive.ack(id));
                    if let Some(seq) = got {
                        prop_assert!(seq > deletable, "the released point only advances");
                        deletable = seq;
                    }
                }
                TrackerOp::Reset => {
                    real.reset();
                    naive = NaiveTracker::default();
                }
            }
            prop_assert_eq!(real.in_flight(), naive.in_flight());
        }
    }
}
