//! [`Store`] on SQLite (WAL mode, one transaction per operation).

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatewayd_model::wire;
use gatewayd_model::Reading;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tracing::debug;

use crate::store::{row_cost, ROW_OVERHEAD};
use crate::{
    AppendOutcome, BufferConfig, BufferError, BufferStats, FullPolicy, Store, StoredReading,
    SyncMode,
};

/// The schema version this build writes and understands (`meta.schema_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of a gatewayd buffer ("gwdb"), so that an
/// unrelated SQLite file is never mistaken for one.
pub const APPLICATION_ID: i32 = 0x6777_6462;

/// How long `open` waits for a lock held by someone else before giving up
/// with [`BufferError::Locked`] (covers a previous gatewayd still exiting).
const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);
/// Checkpoint the WAL into the database every this many pages (~4 MiB).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 1000;
/// Truncate the WAL file back to this size after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;
/// Cap on the initial capacity of `read_after`'s result.
const READ_PREALLOC: usize = 256;

const SCHEMA: &str = "
CREATE TABLE readings(seq INTEGER PRIMARY KEY, device TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER);
";

const K_SCHEMA_VERSION: &str = "schema_version";
const K_NEXT_SEQ: &str = "next_seq";

/// How far `next_seq` jumps at each open with `sync = "normal"`, so that
/// sequence numbers lost to a power-loss rollback are never reused.
pub const SEQ_RESTART_GAP: u64 = 1 << 32;

/// With `synchronous = NORMAL`, a power loss can roll back the last
/// committed transactions, and with them `next_seq`: sequence numbers that
/// were already forwarded (and stored by the cloud) would be assigned again
/// to new readings, which the cloud's `(gateway, seq)` deduplication would
/// then silently discard. So at every open in that mode `next_seq` jumps
/// by [`SEQ_RESTART_GAP`], in a transaction forced to `synchronous = FULL`
/// (one fsync per start): numbers issued after this open stay above any
/// number a rollback could have lost, unless more than 2^32 readings were
/// rolled back. Gaps are harmless: nobody relies on contiguity across
/// opens, and 2^63 / 2^32 leaves room for 2^31 restarts.
fn skip_restart_gap(
    conn: &mut Connection,
    path: &Path,
    old: Counters,
) -> Result<Counters, BufferError> {
    let err = |e| BufferError::sqlite(path, "reserve sequence numbers", e);
    let next = old
        .next_seq
        .checked_add(SEQ_RESTART_GAP)
        .filter(|n| *n <= i64::MAX as u64)
        .ok_or(BufferError::SequenceExhausted {
            next_seq: old.next_seq,
            requested: SEQ_RESTART_GAP,
        })?;
    let new = Counters {
        next_seq: next,
        ..old
    };
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    SqliteStore::write_meta(&tx, path, &old, &new)?;
    tx.commit().map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    Ok(new)
}
const K_READINGS: &str = "readings";
const K_BYTES: &str = "bytes";
const K_ACKED_THROUGH: &str = "acked_through";
const K_DROPPED_OLDEST: &str = "dropped_oldest";
const K_DROPPED_NEWEST: &str = "dropped_newest";
const K_DROPPED_TOO_LARGE: &str = "dropped_too_large";

/// The persistent bookkeeping, mirrored in `meta` and always written in the
/// transaction that changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    next_seq: u64,
    readings: u64,
    bytes: u64,
    acked_through: u64,
    dropped_oldest: u64,
    dropped_newest: u64,
    dropped_too_large: u64,
}

impl Counters {
    const INITIAL: Counters = Counters {
        next_seq: 1,
        readings: 0,
        bytes: 0,
        acked_through: 0,
        dropped_oldest: 0,
        dropped_newest: 0,
        dropped_too_large: 0,
    };

    fn entries(&self) -> [(&'static str, u64); 7] {
        [
            (K_NEXT_SEQ, self.next_seq),
            (K_READINGS, self.readings),
            (K_BYTES, self.bytes),
            (K_ACKED_THROUGH, self.acked_through),
            (K_DROPPED_OLDEST, self.dropped_oldest),
            (K_DROPPED_NEWEST, self.dropped_newest),
            (K_DROPPED_TOO_LARGE, self.dropped_too_large),
        ]
    }
}

/// The durable buffer: one SQLite file in WAL mode, owned exclusively by
/// this value (`PRAGMA locking_mode=EXCLUSIVE`: a second opener gets
/// [`BufferError::Locked`], and no `-shm` file is used).
///
/// Not `Sync`: the daemon gives it to one thread and talks to that thread.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    max_bytes: u64,
    when_full: FullPolicy,
    counters: Counters,
}

/// Converts a value that the schema keeps below 2^63 into an SQLite integer.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating if missing) the buffer at `config.path`, recovering
    /// from any crash (SQLite rolls back an interrupted transaction), and
    /// checks the file is a gatewayd buffer of a known schema version.
    pub fn open(config: &BufferConfig) -> Result<Self, BufferError> {
        if config.max_bytes == 0 {
            return Err(BufferError::InvalidConfig(
                "max_bytes must be at least 1".into(),
            ));
        }
        let path = config.path.clone();
        let open_err = |error: rusqlite::Error| match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                BufferError::Locked { path: path.clone() }
            }
            _ => BufferError::Open {
                path: path.clone(),
                error,
            },
        };
        // No SQLITE_OPEN_URI: the path is a path, never a URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(open_err)?;
        // First statement that reads the file: a garbage file fails here.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(BufferError::NoWal { path, mode });
        }
        let sync = match config.sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(open_err)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(open_err)?;

        let counters = {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(open_err)?;
            let counters = init_or_load(&tx, &path).map_err(|e| match e {
                InitError::Sql(error) => open_err(error),
                InitError::Buffer(e) => e,
            })?;
            tx.commit().map_err(open_err)?;
            counters
        };
        let counters = if config.sync == SyncMode::Normal && counters.next_seq > 1 {
            skip_restart_gap(&mut conn, &path, counters)?
        } else {
            counters
        };
        let store = SqliteStore {
            conn,
            path,
            max_bytes: config.max_bytes,
            when_full: config.when_full,
            counters,
        };
        debug!(path = %store.path.display(), stats = ?store.stats(), "buffer opened");
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Recounts every row and compares with the bookkeeping, and runs
    /// SQLite's `quick_check`. Reads the whole file: for diagnostics and
    /// tests, not the hot path.
    pub fn verify(&mut self) -> Result<(), BufferError> {
        let err = |e| BufferError::sqlite(&self.path, "verify", e);
        let check: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(BufferError::corrupt(
                &self.path,
                format!("quick_check: {check}"),
            ));
        }
        let (count, payload, min, max): (i64, i64, Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(octet_length(device) + length(payload)), 0), \
                 MIN(seq), MAX(seq) FROM readings",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(err)?;
        let c = self.counters;
        let bytes = (count as u64)
            .saturating_mul(ROW_OVERHEAD)
            .saturating_add(payload as u64);
        if count as u64 != c.readings || bytes != c.bytes {
            return Err(BufferError::corrupt(
                &self.path,
                format!(
                    "meta says {} rows / {} bytes, table has {count} rows / {bytes} bytes",
                    c.readings, c.bytes
                ),
            ));
        }
        check_bounds(&self.path, &c, min, max)
    }

    /// Closes the file, reporting any error SQLite raises while doing so
    /// (dropping the store closes it too, silently).
    pub fn close(self) -> Result<(), BufferError> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| BufferError::sqlite(&path, "close", e))
    }

    /// Deletes the oldest rows until `c.bytes <= target`, counting them as
    /// dropped. Runs inside the caller's transaction.
    fn evict(
        conn: &Connection,
        path: &Path,
        c: &mut Counters,
        target: u64,
    ) -> Result<(), BufferError> {
        let err = |e| BufferError::sqlite(path, "drop the oldest readings", e);
        let mut freed_rows = 0u64;
        let mut freed_bytes = 0u64;
        let mut last_seq = None;
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, octet_length(device) + length(payload) FROM readings ORDER BY seq",
                )
                .map_err(err)?;
            let mut rows = stmt.query([]).map_err(err)?;
            while c.bytes.saturating_sub(freed_bytes) > target {
                let Some(row) = rows.next().map_err(err)? else {
                    return Err(BufferError::corrupt(
                        path,
                        format!(
                            "meta says {} bytes but the rows hold only {freed_bytes}",
                            c.bytes
                        ),
                    ));
                };
                let seq: i64 = row.get(0).map_err(err)?;
                let len: i64 = row.get(1).map_err(err)?;
                freed_rows += 1;
                freed_bytes = freed_bytes
                    .saturating_add(ROW_OVERHEAD)
                    .saturating_add(len.max(0) as u64);
                last_seq = Some(seq);
            }
        }
        let Some(last_seq) = last_seq else {
            return Ok(());
        };
        let deleted = conn
            .prepare_cached("DELETE FROM readings WHERE seq <= ?1")
            .and_then(|mut s| s.execute([last_seq]))
            .map_err(err)?;
        if deleted as u64 != freed_rows {
            return Err(BufferError::corrupt(
                path,
                format!("expected to drop {freed_rows} rows, deleted {deleted}"),
            ));
        }
        c.readings = c
            .readings
            .checked_sub(freed_rows)
            .ok_or_else(|| BufferError::corrupt(path, "row count went negative while dropping"))?;
        c.bytes -= freed_bytes.min(c.bytes);
        c.dropped_oldest = c.dropped_oldest.saturating_add(freed_rows);
        debug!(
            rows = freed_rows,
            bytes = freed_bytes,
            through = last_seq,
            "buffer full: dropped the oldest readings"
        );
        Ok(())
    }

    /// Writes the counters that differ between `old` and `new`.
    fn write_meta(
        conn: &Connection,
        path: &Path,
        old: &Counters,
        new: &Counters,
    ) -> Result<(), BufferError> {
        let err = |e| BufferError::sqlite(path, "update the bookkeeping", e);
        let mut stmt = conn
            .prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")
            .map_err(err)?;
        for ((key, was), (_, now)) in old.entries().into_iter().zip(new.entries()) {
            if was != now {
                let changed = stmt.execute(params![key, sql_int(now)]).map_err(err)?;
                if changed != 1 {
                    return Err(BufferError::corrupt(
                        path,
                        format!("meta key {key:?} is missing"),
                    ));
                }
            }
        }
        Ok(())
    }
}

enum InitError {
    Sql(rusqlite::Error),
    Buffer(BufferError),
}

impl From<rusqlite::Error> for InitError {
    fn from(e: rusqlite::Error) -> Self {
        InitError::Sql(e)
    }
}

impl From<BufferError> for InitError {
    fn from(e: BufferError) -> Self {
        InitError::Buffer(e)
    }
}

/// Creates the schema in an empty file, or checks and loads an existing one.
fn init_or_load(conn: &Connection, path: &Path) -> Result<Counters, InitError> {
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get(0),
    )?;
    if app_id == 0 && tables == 0 {
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        let mut insert = conn.prepare("INSERT INTO meta(key, value) VALUES (?1, ?2)")?;
        insert.execute(params![K_SCHEMA_VERSION, SCHEMA_VERSION])?;
        for (key, value) in Counters::INITIAL.entries() {
            insert.execute(params![key, sql_int(value)])?;
        }
        return Ok(Counters::INITIAL);
    }
    if app_id != APPLICATION_ID {
        return Err(BufferError::NotABuffer {
            path: path.to_owned(),
            reason: format!(
                "SQLite application_id is {app_id:#x} (expected {APPLICATION_ID:#x}) and it has \
                 {tables} table(s); refusing to modify it"
            ),
        }
        .into());
    }
    let get = |key: &'static str| -> Result<u64, InitError> {
        let value: Option<Option<i64>> = conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        match value {
            None => Err(BufferError::corrupt(path, format!("meta key {key:?} is missing")).into()),
            Some(None) => {
                Err(BufferError::corrupt(path, format!("meta key {key:?} is NULL")).into())
            }
            Some(Some(v)) => u64::try_from(v).map_err(|_| {
                BufferError::corrupt(path, format!("meta key {key:?} is negative ({v})")).into()
            }),
        }
    };
    let version = get(K_SCHEMA_VERSION)?;
    if version != SCHEMA_VERSION as u64 {
        if version > SCHEMA_VERSION as u64 {
            return Err(BufferError::UnsupportedSchema {
                path: path.to_owned(),
                found: sql_int(version),
                supported: SCHEMA_VERSION,
            }
            .into());
        }
        return Err(BufferError::corrupt(path, format!("unknown schema version {version}")).into());
    }
    let c = Counters {
        next_seq: get(K_NEXT_SEQ)?,
        readings: get(K_READINGS)?,
        bytes: get(K_BYTES)?,
        acked_through: get(K_ACKED_THROUGH)?,
        dropped_oldest: get(K_DROPPED_OLDEST)?,
        dropped_newest: get(K_DROPPED_NEWEST)?,
        dropped_too_large: get(K_DROPPED_TOO_LARGE)?,
    };
    // MIN and MAX separately: each is then a single b-tree probe.
    let min: Option<i64> = conn.query_row("SELECT MIN(seq) FROM readings", [], |r| r.get(0))?;
    let max: Option<i64> = conn.query_row("SELECT MAX(seq) FROM readings", [], |r| r.get(0))?;
    check_bounds(path, &c, min, max)?;
    Ok(c)
}

/// Checks the cheap invariants between the counters and the table's ends.
fn check_bounds(
    path: &Path,
    c: &Counters,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(), BufferError> {
    let bad = |reason: String| Err(BufferError::corrupt(path, reason));
    if c.next_seq < 1 || c.next_seq > i64::MAX as u64 {
        return bad(format!("next_seq {} is out of range", c.next_seq));
    }
    if c.acked_through >= c.next_seq {
        return bad(format!(
            "acked_through {} is not below next_seq {}",
            c.acked_through, c.next_seq
        ));
    }
    match (min, max) {
        (None, _) | (_, None) => {
            if c.readings != 0 || c.bytes != 0 {
                return bad(format!(
                    "meta says {} rows / {} bytes but the table is empty",
                    c.readings, c.bytes
                ));
            }
        }
        (Some(min), Some(max)) => {
            if c.readings == 0 {
                return bad("meta says no rows but the table has some".into());
            }
            if max < 0 || max as u64 >= c.next_seq {
                return bad(format!(
                    "row with seq {max} is not below next_seq {}",
                    c.next_seq
                ));
            }
            if min < 0 || (min as u64) <= c.acked_through {
                return bad(format!(
                    "row with seq {min} is at or below acked_through {}",
                    c.acked_through
                ));
            }
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn append(&mut self, groups: &[Vec<Reading>]) -> Result<Vec<AppendOutcome>, BufferError> {
        // Validate and encode everything before touching the file.
        let mut encoded: Vec<Vec<(&str, Vec<u8>)>> = Vec::with_capacity(groups.len());
        let mut total = 0u64;
        for (g, group) in groups.iter().enumerate() {
            let mut rows = Vec::with_capacity(group.len());
            for (i, reading) in group.iter().enumerate() {
                wire::validate(reading).map_err(|e| BufferError::InvalidReading {
                    group: g,
                    index: i,
                    reason: e.to_string(),
                })?;
                rows.push((reading.device.as_str(), wire::encode_reading(reading)));
            }
            total += rows.len() as u64;
            encoded.push(rows);
        }
        let SqliteStore {
            conn,
            path,
            max_bytes,
            when_full,
            counters,
        } = self;
        let (max_bytes, when_full, old) = (*max_bytes, *when_full, *counters);
        if total > (i64::MAX as u64).saturating_sub(old.next_seq) {
            return Err(BufferError::SequenceExhausted {
                next_seq: old.next_seq,
                requested: total,
            });
        }
        let path = path.as_path();
        let err = |e| BufferError::sqlite(path, "append readings", e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut c = old;
        let mut outcomes = Vec::with_capacity(encoded.len());
        let mut blocked = false;
        for rows in &encoded {
            if blocked {
                outcomes.push(AppendOutcome::WouldBlock);
                continue;
            }
            let n = rows.len() as u64;
            let cost = rows
                .iter()
                .fold(0u64, |acc, (d, p)| acc.saturating_add(row_cost(d, p.len())));
            if n > 0 && cost > max_bytes {
                c.dropped_too_large = c.dropped_too_large.saturating_add(n);
                outcomes.push(AppendOutcome::Refused);
                continue;
            }
            if n > 0 && cost > max_bytes.saturating_sub(c.bytes) {
                match when_full {
                    FullPolicy::Block => {
                        blocked = true;
                        outcomes.push(AppendOutcome::WouldBlock);
                        continue;
                    }
                    FullPolicy::DropNewest => {
                        c.dropped_newest = c.dropped_newest.saturating_add(n);
                        outcomes.push(AppendOutcome::Refused);
                        continue;
                    }
                    FullPolicy::DropOldest => {
                        Self::evict(&tx, path, &mut c, max_bytes - cost)?;
                    }
                }
            }
            let first_seq = c.next_seq;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO readings(seq, device, payload) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(err)?;
                for (device, payload) in rows {
                    insert
                        .execute(params![sql_int(c.next_seq), device, payload])
                        .map_err(err)?;
                    c.next_seq += 1;
                }
            }
            c.readings += n;
            c.bytes = c.bytes.saturating_add(cost);
            outcomes.push(AppendOutcome::Committed {
                first_seq,
                count: rows.len(),
            });
        }
        if c != old {
            Self::write_meta(&tx, path, &old, &c)?;
            tx.commit().map_err(err)?;
            *counters = c;
        }
        // Otherwise the transaction wrote nothing; dropping it rolls back
        // without an fsync.
        Ok(outcomes)
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
        let path = self.path.as_path();
        let err = |e| BufferError::sqlite(path, "read readings", e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, device, payload FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(err)?;
        let limit = i64::try_from(max_count).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![sql_int(after), limit]).map_err(err)?;
        let mut out = Vec::with_capacity(max_count.min(READ_PREALLOC));
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(err)? {
            let seq: i64 = row.get(0).map_err(err)?;
            let payload: Vec<u8> = row.get(2).map_err(err)?;
            if !out.is_empty() && bytes.saturating_add(payload.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(payload.len());
            out.push(StoredReading {
                seq: u64::try_from(seq)
                    .map_err(|_| BufferError::corrupt(path, format!("negative seq {seq}")))?,
                device: row.get(1).map_err(err)?,
                payload,
            });
        }
        Ok(out)
    }

    fn ack_through(&mut self, seq: u64) -> Result<u64, BufferError> {
        let old = self.counters;
        if seq >= old.next_seq {
            return Err(BufferError::AckBeyondEnd {
                seq,
                last: old.next_seq - 1,
            });
        }
        if seq <= old.acked_through {
            // Everything at or below acked_through is already gone.
            return Ok(0);
        }
        let SqliteStore {
            conn,
            path,
            counters,
            ..
        } = self;
        let path = path.as_path();
        let err = |e| BufferError::sqlite(path, "delete acknowledged readings", e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let (count, payload): (i64, i64) = tx
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(octet_length(device) + length(payload)), 0) \
                 FROM readings WHERE seq <= ?1",
            )
            .and_then(|mut s| s.query_row([sql_int(seq)], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(err)?;
        let deleted = tx
            .prepare_cached("DELETE FROM readings WHERE seq <= ?1")
            .and_then(|mut s| s.execute([sql_int(seq)]))
            .map_err(err)? as u64;
        let count = count.max(0) as u64;
        let freed = count
            .saturating_mul(ROW_OVERHEAD)
            .saturating_add(payload.max(0) as u64);
        let mut c = old;
        c.readings = c
            .readings
            .checked_sub(deleted)
            .filter(|_| deleted == count)
            .ok_or_else(|| {
                BufferError::corrupt(
                    path,
                    format!(
                        "meta says {} rows, acknowledging deleted {deleted}",
                        old.readings
                    ),
                )
            })?;
        c.bytes = c.bytes.checked_sub(freed).ok_or_else(|| {
            BufferError::corrupt(
                path,
                format!("meta says {} bytes, acknowledging freed {freed}", old.bytes),
            )
        })?;
        c.acked_through = seq;
        Self::write_meta(&tx, path, &old, &c)?;
        tx.commit().map_err(err)?;
        *counters = c;
        Ok(deleted)
    }

    fn stats(&self) -> BufferStats {
        let c = &self.counters;
        BufferStats {
            readings: c.readings,
            bytes: c.bytes,
            max_bytes: self.max_bytes,
            next_seq: c.next_seq,
            acked_through: c.acked_through,
            dropped_oldest: c.dropped_oldest,
            dropped_newest: c.dropped_newest,
            dropped_too_large: c.dropped_too_large,
        }
    }
}
