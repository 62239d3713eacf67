//! Crash recovery: a writer killed with SIGKILL mid-stream, and a crash
//! image taken in the middle of a transaction.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{padded, reading};
use gatewayd_buffer::{BufferConfig, FullPolicy, SqliteStore, Store, SyncMode};
use gatewayd_model::wire::decode_reading;

const CHILD_ENV: &str = "GATEWAYD_BUFFER_CRASH_CHILD";
const CHILD_TEST: &str = "a_killed_writer_loses_no_committed_reading";

fn full_config(path: &Path) -> BufferConfig {
    BufferConfig {
        path: path.to_owned(),
        max_bytes: 1 << 30,
        when_full: FullPolicy::DropOldest,
        sync: SyncMode::Full,
    }
}

/// Child mode: append (and now and then acknowledge) forever, reporting
/// each commit on stdout after it returned.
fn run_child(path: PathBuf) -> ! {
    let mut store = SqliteStore::open(&full_config(&path)).unwrap();
    let mut out = std::io::stdout().lock();
    // The test harness may have left a partial line on stdout.
    writeln!(out).unwrap();
    let mut n = 0i64;
    for round in 0u64.. {
        let groups: Vec<Vec<_>> = (0..3)
            .map(|g| {
                (0..(round % 7 + g + 1))
                    .map(|_| {
                        n += 1;
                        padded("crash", n, (n % 300) as usize)
                    })
                    .collect()
            })
            .collect();
        for outcome in store.append(&groups).unwrap() {
            let gatewayd_buffer::AppendOutcome::Committed { first_seq, count } = outcome else {
                panic!("unexpected {outcome:?}");
            };
            writeln!(out, "committed {first_seq} {count}").unwrap();
        }
        if round % 5 == 4 {
            let through = store.stats().next_seq - 20;
            store.ack_through(through).unwrap();
            writeln!(out, "acked {through}").unwrap();
        }
        out.flush().unwrap();
    }
    unreachable!()
}

#[test]
fn a_killed_writer_loses_no_committed_reading() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        run_child(PathBuf::from(path));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let mut reported_end = 1u64; // one past the last reported seq
    let mut reported_acked = 0u64;
    for kill in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut commits = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["committed", first, count] => {
                    let (first, count): (u64, u64) =
                        (first.parse().unwrap(), count.parse().unwrap());
                    assert_eq!(first, reported_end, "round {kill}: contiguous after reopen");
                    reported_end = first + count;
                    commits += 1;
                }
                ["acked", seq] => reported_acked = seq.parse().unwrap(),
                _ => continue,
            }
            if commits == 40 + kill * 17 {
                break;
            }
        }
        assert!(
            commits > 0,
            "the child wrote nothing: {:?}",
            child.wait_with_output()
        );
        child.kill().unwrap(); // SIGKILL, in the middle of whatever it does
        child.wait().unwrap();

        let mut store = SqliteStore::open(&full_config(&path)).unwrap();
        store.verify().unwrap();
        let st = store.stats();
        assert!(
            st.next_seq >= reported_end,
            "no committed sequence number lost"
        );
        assert!(st.acked_through >= reported_acked);
        let rows = store.read_after(0, usize::MAX, usize::MAX).unwrap();
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        let expected: Vec<u64> = (st.acked_through + 1..st.next_seq).collect();
        assert_eq!(
            seqs, expected,
            "every unacknowledged committed row is there"
        );
        for r in &rows {
            decode_reading(&r.payload).unwrap();
        }
        // The child continues where the store says; re-sync our view.
        reported_end = st.next_seq;
        reported_acked = st.acked_through;
    }
}

fn copy_crash_image(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    let wal = |p: &Path| PathBuf::from(format!("{}-wal", p.display()));
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to)).unwrap();
    }
}

#[test]
fn a_transaction_interrupted_by_a_crash_is_rolled_back_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    {
        let mut s = SqliteStore::open(&full_config(&path)).unwrap();
        s.append(&[vec![reading("a", 1), reading("a", 2)]]).unwrap();
        s.ack_through(1).unwrap();
    }
    // A writer in the middle of a large transaction: its pages spill into
    // the WAL before any commit record. Image the files at that moment.
    let image = dir.path().join("image.db");
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.pragma_update(None, "cache_size", 10).unwrap();
        raw.execute_batch("BEGIN IMMEDIATE").unwrap();
        for seq in 3..2000 {
            raw.execute(
                "INSERT INTO readings(seq, device, payload) VALUES (?1, 'coap:a', zeroblob(500))",
                [seq],
            )
            .unwrap();
        }
        raw.execute("UPDATE meta SET value = 2000 WHERE key = 'next_seq'", [])
            .unwrap();
        let wal_len = std::fs::metadata(format!("{}-wal", path.display()))
            .unwrap()
            .len();
        assert!(wal_len > 0, "the uncommitted transaction reached the WAL");
        copy_crash_image(&path, &image);
        raw.execute_batch("ROLLBACK").unwrap();
    }
    let mut s = SqliteStore::open(&full_config(&image)).unwrap();
    s.verify().unwrap();
    let st = s.stats();
    assert_eq!((st.readings, st.next_seq, st.acked_through), (1, 3, 1));
    assert_eq!(
        s.append(&[vec![reading("a", 3)]]).unwrap(),
        vec![gatewayd_buffer::AppendOutcome::Committed {
            first_seq: 3,
            count: 1
        }]
    );
}

#[test]
fn a_crash_image_after_commit_keeps_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let image = dir.path().join("image.db");
    let mut s = SqliteStore::open(&full_config(&path)).unwrap();
    s.append(&[vec![reading("a", 1), reading("a", 2), reading("b", 3)]])
        .unwrap();
    // The store is still open (no checkpoint on close): the commit lives
    // only in the WAL.
    copy_crash_image(&path, &image);
    let mut copy = SqliteStore::open(&full_config(&image)).unwrap();
    copy.verify().unwrap();
    assert_eq!(copy.stats(), s.stats());
    assert_eq!(
        copy.read_after(0, 10, usize::MAX).unwrap(),
        s.read_after(0, 10, usize::MAX).unwrap()
    );
}
