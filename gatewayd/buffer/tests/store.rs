//! Behaviour of `SqliteStore`, one behaviour per test.

mod common;

use common::{config, cost, open, padded, reading};
use gatewayd_buffer::{
    row_cost, AppendOutcome, BufferConfig, BufferError, FullPolicy, SqliteStore, Store, SyncMode,
    APPLICATION_ID, DEFAULT_MAX_BYTES, ROW_OVERHEAD, SCHEMA_VERSION,
};
use gatewayd_model::wire::{decode_reading, encode_reading};
use gatewayd_model::{Measurement, Reading};

const MIB: u64 = 1024 * 1024;

fn committed(first_seq: u64, count: usize) -> AppendOutcome {
    AppendOutcome::Committed { first_seq, count }
}

fn seqs(store: &mut SqliteStore) -> Vec<u64> {
    store
        .read_after(0, usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn sequence_numbers_start_at_one_and_are_contiguous_across_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    let out = s
        .append(&[
            vec![reading("a", 1), reading("a", 2)],
            vec![reading("b", 3)],
            vec![reading("a", 4), reading("b", 5), reading("c", 6)],
        ])
        .unwrap();
    assert_eq!(out, vec![committed(1, 2), committed(3, 1), committed(4, 3)]);
    assert_eq!(
        s.append(&[vec![reading("a", 7)]]).unwrap(),
        vec![committed(7, 1)]
    );
    assert_eq!(seqs(&mut s), (1..=7).collect::<Vec<_>>());
    let st = s.stats();
    assert_eq!((st.readings, st.next_seq, st.acked_through), (7, 8, 0));
}

#[test]
fn empty_group_uses_no_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    let out = s.append(&[vec![], vec![reading("a", 1)], vec![]]).unwrap();
    assert_eq!(out, vec![committed(1, 0), committed(1, 1), committed(2, 0)]);
    assert_eq!(s.append(&[]).unwrap(), vec![]);
    assert_eq!(s.stats().next_seq, 2);
}

#[test]
fn reopen_keeps_sequence_numbers_monotonic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    {
        let mut s = open(&path, MIB, FullPolicy::DropOldest);
        s.append(&[vec![reading("a", 1), reading("a", 2)]]).unwrap();
        s.close().unwrap();
    }
    let mut s = open(&path, MIB, FullPolicy::DropOldest);
    assert_eq!(s.stats().next_seq, 3);
    assert_eq!(s.stats().readings, 2);
    assert_eq!(
        s.append(&[vec![reading("a", 3)]]).unwrap(),
        vec![committed(3, 1)]
    );
    assert_eq!(seqs(&mut s), vec![1, 2, 3]);
}

#[test]
fn sequence_numbers_survive_reopen_after_every_row_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    {
        let mut s = open(&path, MIB, FullPolicy::DropOldest);
        s.append(&[vec![reading("a", 1), reading("a", 2), reading("a", 3)]])
            .unwrap();
        assert_eq!(s.ack_through(3).unwrap(), 3);
        assert_eq!(s.stats().readings, 0);
        assert_eq!(s.stats().bytes, 0);
    }
    let mut s = open(&path, MIB, FullPolicy::DropOldest);
    let st = s.stats();
    assert_eq!((st.readings, st.next_seq, st.acked_through), (0, 4, 3));
    assert_eq!(
        s.append(&[vec![reading("a", 4)]]).unwrap(),
        vec![committed(4, 1)]
    );
}

#[test]
fn ack_through_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    s.append(&[(1..=5).map(|i| reading("a", i)).collect()])
        .unwrap();
    assert_eq!(s.ack_through(3).unwrap(), 3);
    let after_first = s.stats();
    assert_eq!(s.ack_through(3).unwrap(), 0);
    assert_eq!(s.ack_through(2).unwrap(), 0);
    assert_eq!(s.ack_through(0).unwrap(), 0);
    assert_eq!(s.stats(), after_first);
    assert_eq!(seqs(&mut s), vec![4, 5]);
    assert_eq!(s.ack_through(5).unwrap(), 2);
    assert_eq!(s.stats().acked_through, 5);
}

#[test]
fn ack_through_a_sequence_number_never_assigned_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    s.append(&[vec![reading("a", 1), reading("a", 2)]]).unwrap();
    let before = s.stats();
    let err = s.ack_through(3).unwrap_err();
    assert!(
        matches!(err, BufferError::AckBeyondEnd { seq: 3, last: 2 }),
        "{err}"
    );
    assert!(s.ack_through(u64::MAX).is_err());
    assert_eq!(s.stats(), before);
    assert_eq!(s.ack_through(0).unwrap(), 0, "0 means nothing acknowledged");
}

#[test]
fn read_after_paginates_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    s.append(&[(1..=10).map(|i| reading("a", i)).collect()])
        .unwrap();
    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = s.read_after(cursor, 4, usize::MAX).unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().unwrap().seq;
        pages.push(page.iter().map(|r| r.seq).collect::<Vec<_>>());
    }
    assert_eq!(pages, vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10]]);
    assert!(s.read_after(10, 4, usize::MAX).unwrap().is_empty());
    assert!(s.read_after(u64::MAX, 4, usize::MAX).unwrap().is_empty());
    // Reading deletes nothing.
    assert_eq!(s.stats().readings, 10);
}

#[test]
fn read_after_paginates_by_payload_bytes_but_always_returns_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    let rows: Vec<Reading> = (1..=6).map(|i| padded("a", i, 100)).collect();
    let len = encode_reading(&rows[0]).len();
    assert!(rows.iter().all(|r| encode_reading(r).len() == len));
    s.append(&[rows]).unwrap();
    let page = s.read_after(0, 100, 3 * len).unwrap();
    assert_eq!(page.len(), 3, "exactly three payloads fit");
    let page = s.read_after(0, 100, 3 * len - 1).unwrap();
    assert_eq!(page.len(), 2);
    let page = s.read_after(2, 100, 1).unwrap();
    assert_eq!(
        page.len(),
        1,
        "a row larger than the limit still comes alone"
    );
    assert_eq!(page[0].seq, 3);
    let page = s.read_after(2, 100, 0).unwrap();
    assert_eq!(page.len(), 1);
}

#[test]
fn read_after_zero_rows_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    assert!(matches!(
        s.read_after(0, 0, 100),
        Err(BufferError::ZeroReadCount)
    ));
}

#[test]
fn stored_payload_is_the_wire_encoding_of_the_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    let mut r = padded("dev-1", 42, 10);
    r.meta.rssi = Some(-70.0);
    s.append(&[vec![r.clone()]]).unwrap();
    let row = s.read_after(0, 1, usize::MAX).unwrap().remove(0);
    assert_eq!(row.device, "coap:dev-1");
    assert_eq!(row.payload, encode_reading(&r));
    assert_eq!(decode_reading(&row.payload).unwrap(), r);
}

#[test]
fn byte_accounting_is_the_sum_of_row_costs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    let rows = vec![reading("a", 1), padded("bb", 2, 50), padded("ccc", 3, 7)];
    let total: u64 = rows.iter().map(cost).sum();
    assert_eq!(
        cost(&rows[0]),
        ROW_OVERHEAD + "coap:a".len() as u64 + encode_reading(&rows[0]).len() as u64
    );
    s.append(std::slice::from_ref(&rows)).unwrap();
    assert_eq!(s.stats().bytes, total);
    s.verify().unwrap();
    s.ack_through(1).unwrap();
    assert_eq!(s.stats().bytes, total - cost(&rows[0]));
    s.verify().unwrap();
}

#[test]
fn drop_oldest_evicts_the_lowest_sequence_numbers_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let one = cost(&padded("a", 0, 100));
    // Room for exactly four rows.
    let max = 4 * one + one / 2;
    {
        let mut s = open(&path, max, FullPolicy::DropOldest);
        for i in 1..=4 {
            s.append(&[vec![padded("a", i, 100)]]).unwrap();
        }
        assert_eq!(s.stats().dropped_oldest, 0);
        let out = s
            .append(&[vec![padded("a", 5, 100), padded("a", 6, 100)]])
            .unwrap();
        assert_eq!(out, vec![committed(5, 2)]);
        assert_eq!(seqs(&mut s), vec![3, 4, 5, 6]);
        let st = s.stats();
        assert_eq!((st.dropped_oldest, st.readings, st.bytes), (2, 4, 4 * one));
        assert!(st.bytes <= st.max_bytes);
        s.verify().unwrap();
    }
    let s = open(&path, max, FullPolicy::DropOldest);
    assert_eq!(
        s.stats().dropped_oldest,
        2,
        "the counter survives reopening"
    );
}

#[test]
fn drop_oldest_can_evict_rows_of_an_earlier_group_of_the_same_call() {
    let dir = tempfile::tempdir().unwrap();
    let one = cost(&padded("a", 0, 100));
    let mut s = open(&dir.path().join("b.db"), 3 * one, FullPolicy::DropOldest);
    let g1: Vec<_> = (1..=2).map(|i| padded("a", i, 100)).collect();
    let g2: Vec<_> = (3..=4).map(|i| padded("a", i, 100)).collect();
    let out = s.append(&[g1, g2]).unwrap();
    assert_eq!(out, vec![committed(1, 2), committed(3, 2)]);
    assert_eq!(seqs(&mut s), vec![2, 3, 4]);
    assert_eq!(s.stats().dropped_oldest, 1);
    s.verify().unwrap();
}

#[test]
fn drop_newest_refuses_the_group_and_counts_its_readings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let one = cost(&padded("a", 0, 100));
    let max = 3 * one;
    {
        let mut s = open(&path, max, FullPolicy::DropNewest);
        let out = s
            .append(&[
                vec![padded("a", 1, 100), padded("a", 2, 100)],
                vec![padded("a", 3, 100), padded("a", 4, 100)],
                vec![padded("a", 5, 100)],
                vec![padded("a", 6, 100)],
            ])
            .unwrap();
        assert_eq!(
            out,
            vec![
                committed(1, 2),
                AppendOutcome::Refused,
                committed(3, 1),
                AppendOutcome::Refused
            ]
        );
        assert_eq!(seqs(&mut s), vec![1, 2, 3]);
        let st = s.stats();
        assert_eq!(
            (st.dropped_newest, st.dropped_oldest, st.next_seq),
            (3, 0, 4)
        );
    }
    let mut s = open(&path, max, FullPolicy::DropNewest);
    assert_eq!(
        s.stats().dropped_newest,
        3,
        "the counter survives reopening"
    );
    s.ack_through(1).unwrap();
    assert_eq!(
        s.append(&[vec![padded("a", 7, 100)]]).unwrap(),
        vec![committed(4, 1)]
    );
}

#[test]
fn block_stores_nothing_counts_nothing_and_holds_every_later_group() {
    let dir = tempfile::tempdir().unwrap();
    let one = cost(&padded("a", 0, 100));
    let mut s = open(&dir.path().join("b.db"), 3 * one, FullPolicy::Block);
    let out = s
        .append(&[
            vec![padded("a", 1, 100), padded("a", 2, 100)],
            vec![padded("a", 3, 100), padded("a", 4, 100)],
            // Would fit on its own, but must not overtake the blocked group.
            vec![padded("a", 5, 100)],
            vec![],
        ])
        .unwrap();
    assert_eq!(
        out,
        vec![
            committed(1, 2),
            AppendOutcome::WouldBlock,
            AppendOutcome::WouldBlock,
            AppendOutcome::WouldBlock
        ]
    );
    let st = s.stats();
    assert_eq!(
        (
            st.readings,
            st.next_seq,
            st.dropped_newest,
            st.dropped_oldest
        ),
        (2, 3, 0, 0)
    );
}

#[test]
fn block_commits_the_held_group_once_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let one = cost(&padded("a", 0, 100));
    let mut s = open(&dir.path().join("b.db"), 2 * one, FullPolicy::Block);
    s.append(&[vec![padded("a", 1, 100), padded("a", 2, 100)]])
        .unwrap();
    let held = vec![padded("a", 3, 100)];
    assert_eq!(
        s.append(std::slice::from_ref(&held)).unwrap(),
        vec![AppendOutcome::WouldBlock]
    );
    s.ack_through(1).unwrap();
    assert_eq!(s.append(&[held]).unwrap(), vec![committed(3, 1)]);
}

#[test]
fn a_group_larger_than_max_bytes_is_refused_under_every_policy() {
    for policy in [
        FullPolicy::Block,
        FullPolicy::DropOldest,
        FullPolicy::DropNewest,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let small = reading("a", 1);
        let big = padded("a", 2, 2000);
        let max = cost(&big) - 1;
        {
            let mut s = open(&path, max, policy);
            s.append(&[vec![small.clone()]]).unwrap();
            let out = s
                .append(&[vec![big.clone()], vec![reading("a", 3)]])
                .unwrap();
            assert_eq!(
                out,
                vec![AppendOutcome::Refused, committed(2, 1)],
                "{policy:?}: refused, and it blocks nobody"
            );
            let st = s.stats();
            assert_eq!(st.dropped_too_large, 1, "{policy:?}");
            assert_eq!((st.dropped_newest, st.dropped_oldest), (0, 0), "{policy:?}");
            assert_eq!(
                seqs(&mut s),
                vec![1, 2],
                "{policy:?}: nothing evicted for it"
            );
        }
        let s = open(&path, max, policy);
        assert_eq!(
            s.stats().dropped_too_large,
            1,
            "{policy:?}: survives reopening"
        );
    }
}

#[test]
fn each_device_reads_back_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    let devices = ["a", "b", "c"];
    let mut expected: Vec<Vec<i64>> = vec![Vec::new(); 3];
    let mut n = 0;
    for round in 0..20 {
        let mut groups = Vec::new();
        for g in 0..(round % 4 + 1) {
            let mut group = Vec::new();
            for k in 0..(g + round) % 3 + 1 {
                let d = (round + g + k) % 3;
                n += 1;
                group.push(reading(devices[d], n));
                expected[d].push(n);
            }
            groups.push(group);
        }
        s.append(&groups).unwrap();
    }
    let rows = s.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    for (d, want) in devices.iter().zip(&expected) {
        let got: Vec<i64> = rows
            .iter()
            .filter(|r| r.device == format!("coap:{d}"))
            .map(|r| decode_reading(&r.payload).unwrap().time.0 - 1_732_460_000_000_000)
            .collect();
        assert_eq!(&got, want, "device {d}");
    }
}

#[test]
fn an_invalid_reading_fails_the_call_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(&dir.path().join("b.db"), MIB, FullPolicy::DropOldest);
    let mut nan = reading("a", 2);
    nan.measurements[0] = Measurement::float("t", None, f64::NAN);
    let mut empty = reading("a", 3);
    empty.measurements.clear();
    for bad in [nan, empty] {
        let err = s
            .append(&[vec![reading("a", 1)], vec![reading("a", 1), bad]])
            .unwrap_err();
        assert!(
            matches!(
                err,
                BufferError::InvalidReading {
                    group: 1,
                    index: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(s.stats().readings, 0);
    assert_eq!(s.stats().next_seq, 1);
}

#[test]
fn a_smaller_max_bytes_on_reopen_is_enforced_on_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let one = cost(&padded("a", 0, 100));
    {
        let mut s = open(&path, 10 * one, FullPolicy::DropOldest);
        s.append(&[(1..=8).map(|i| padded("a", i, 100)).collect()])
            .unwrap();
    }
    {
        let mut s = open(&path, 3 * one, FullPolicy::Block);
        assert_eq!(s.stats().bytes, 8 * one, "over the new limit until drained");
        assert_eq!(
            s.append(&[vec![padded("a", 9, 100)]]).unwrap(),
            vec![AppendOutcome::WouldBlock]
        );
    }
    let mut s = open(&path, 3 * one, FullPolicy::DropOldest);
    assert_eq!(
        s.append(&[vec![padded("a", 9, 100)]]).unwrap(),
        vec![committed(9, 1)]
    );
    assert_eq!(seqs(&mut s), vec![7, 8, 9]);
    assert_eq!(s.stats().dropped_oldest, 6);
    s.verify().unwrap();
}

#[test]
fn unknown_future_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    open(&path, MIB, FullPolicy::DropOldest).close().unwrap();
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    }
    let err = SqliteStore::open(&config(&path, MIB, FullPolicy::DropOldest)).unwrap_err();
    assert!(
        matches!(err, BufferError::UnsupportedSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("newer"), "{msg}");
}

#[test]
fn a_foreign_sqlite_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TABLE users(id INTEGER PRIMARY KEY); INSERT INTO users VALUES (1);",
        )
        .unwrap();
    }
    let err = SqliteStore::open(&config(&path, MIB, FullPolicy::DropOldest)).unwrap_err();
    assert!(matches!(err, BufferError::NotABuffer { .. }), "{err}");
    assert!(err.to_string().contains("other.db"), "{err}");
    let raw = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = raw
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "nothing was created in the foreign file");
}

#[test]
fn a_garbage_file_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0xA5u8; 8192]).unwrap();
    let err = SqliteStore::open(&config(&path, MIB, FullPolicy::DropOldest)).unwrap_err();
    assert!(matches!(err, BufferError::Open { .. }), "{err}");
    assert!(err.to_string().contains("garbage.db"), "{err}");
}

#[test]
fn a_missing_directory_is_refused_with_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("b.db");
    let err = SqliteStore::open(&config(&path, MIB, FullPolicy::DropOldest)).unwrap_err();
    assert!(matches!(err, BufferError::Open { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn a_second_open_of_the_same_file_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let mut first = open(&path, MIB, FullPolicy::DropOldest);
    first.append(&[vec![reading("a", 1)]]).unwrap();
    let err = SqliteStore::open(&config(&path, MIB, FullPolicy::DropOldest)).unwrap_err();
    assert!(matches!(err, BufferError::Locked { .. }), "{err}");
    first.append(&[vec![reading("a", 2)]]).unwrap();
    drop(first);
    let s = open(&path, MIB, FullPolicy::DropOldest);
    assert_eq!(s.stats().readings, 2);
}

#[test]
fn tampered_bookkeeping_is_reported_as_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    {
        let mut s = open(&path, MIB, FullPolicy::DropOldest);
        s.append(&[vec![reading("a", 1), reading("a", 2)]]).unwrap();
    }
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute("UPDATE meta SET value = 2 WHERE key = 'next_seq'", [])
            .unwrap();
    }
    let err = SqliteStore::open(&config(&path, MIB, FullPolicy::DropOldest)).unwrap_err();
    assert!(matches!(err, BufferError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("next_seq"), "{err}");
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute("UPDATE meta SET value = 3 WHERE key = 'next_seq'", [])
            .unwrap();
        raw.execute("UPDATE meta SET value = value + 1 WHERE key = 'bytes'", [])
            .unwrap();
    }
    let mut s = open(&path, MIB, FullPolicy::DropOldest);
    let err = s.verify().unwrap_err();
    assert!(matches!(err, BufferError::Corrupt { .. }), "{err}");
}

#[test]
fn the_file_is_marked_as_a_gatewayd_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    open(&path, MIB, FullPolicy::DropOldest).close().unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    let app_id: i32 = raw
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app_id, APPLICATION_ID);
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn zero_max_bytes_is_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        SqliteStore::open(&config(&dir.path().join("b.db"), 0, FullPolicy::Block)).unwrap_err();
    assert!(matches!(err, BufferError::InvalidConfig(_)), "{err}");
}

#[test]
fn sync_full_store_commits_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let cfg = BufferConfig {
        sync: SyncMode::Full,
        ..BufferConfig::new(&path)
    };
    assert_eq!(cfg.max_bytes, DEFAULT_MAX_BYTES);
    {
        let mut s = SqliteStore::open(&cfg).unwrap();
        s.append(&[vec![reading("a", 1)]]).unwrap();
    }
    let s = SqliteStore::open(&cfg).unwrap();
    assert_eq!(s.stats().readings, 1);
}

#[test]
fn policies_and_sync_modes_have_kebab_case_names_and_documented_defaults() {
    assert_eq!(FullPolicy::default(), FullPolicy::DropOldest);
    assert_eq!(SyncMode::default(), SyncMode::Full);
    for (p, name) in [
        (FullPolicy::Block, "\"block\""),
        (FullPolicy::DropOldest, "\"drop-oldest\""),
        (FullPolicy::DropNewest, "\"drop-newest\""),
    ] {
        assert_eq!(serde_json::to_string(&p).unwrap(), name);
        assert_eq!(serde_json::from_str::<FullPolicy>(name).unwrap(), p);
    }
    for (m, name) in [
        (SyncMode::Full, "\"full\""),
        (SyncMode::Normal, "\"normal\""),
    ] {
        assert_eq!(serde_json::to_string(&m).unwrap(), name);
        assert_eq!(serde_json::from_str::<SyncMode>(name).unwrap(), m);
    }
    assert!(serde_json::from_str::<FullPolicy>("\"explode\"").is_err());
}

#[test]
fn row_cost_is_overhead_plus_device_plus_payload() {
    assert_eq!(row_cost("coap:a", 10), ROW_OVERHEAD + 6 + 10);
    assert_eq!(
        row_cost("", usize::MAX),
        u64::MAX,
        "saturates, never overflows"
    );
}

#[test]
fn reopen_with_sync_normal_skips_a_gap_so_rolled_back_seqs_are_never_reused() {
    use gatewayd_buffer::SEQ_RESTART_GAP;
    let dir = tempfile::tempdir().unwrap();
    let config = BufferConfig {
        sync: SyncMode::Normal,
        ..BufferConfig::new(dir.path().join("b.db"))
    };
    // A fresh store starts at 1: nothing was ever issued, nothing to skip.
    let mut s = SqliteStore::open(&config).unwrap();
    assert_eq!(s.stats().next_seq, 1);
    let r = common::reading("a", 1);
    s.append(&[vec![r.clone(), r.clone()]]).unwrap();
    assert_eq!(s.stats().next_seq, 3);
    drop(s);
    let mut s = SqliteStore::open(&config).unwrap();
    assert_eq!(s.stats().next_seq, 3 + SEQ_RESTART_GAP);
    let out = s.append(&[vec![r]]).unwrap();
    assert!(matches!(
        out[0],
        gatewayd_buffer::AppendOutcome::Committed { first_seq, .. } if first_seq == 3 + SEQ_RESTART_GAP
    ));
    // The rows from before the gap are still there, in order.
    let rows = s.read_after(0, 10, usize::MAX).unwrap();
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3 + SEQ_RESTART_GAP]);
    drop(s);
    // sync = full never skips.
    let full = BufferConfig {
        sync: SyncMode::Full,
        ..config
    };
    let s = SqliteStore::open(&full).unwrap();
    assert_eq!(s.stats().next_seq, 4 + SEQ_RESTART_GAP);
}
