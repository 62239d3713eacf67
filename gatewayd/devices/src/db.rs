//! The SQLite file behind the registry: one table, `PRAGMA user_version`
//! migrations, WAL, `synchronous = NORMAL`, exclusive lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use crate::DevicesError;

/// The schema version this build writes and understands
/// (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of a device registry ("gwdv"), so that another
/// SQLite file (the buffer, say) is never mistaken for one.
pub const APPLICATION_ID: i32 = 0x6777_6476;

/// `MIGRATIONS[v]` takes the schema from version `v` to `v + 1`. Each runs
/// in the open's transaction together with the `user_version` bump, so a
/// crash leaves the file at the old version or the new one.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // 0 -> 1
    "CREATE TABLE devices(
        id            TEXT PRIMARY KEY NOT NULL,
        source        TEXT,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        readings      INTEGER NOT NULL,
        lost          INTEGER NOT NULL,
        rssi          REAL,
        snr           REAL,
        battery       REAL,
        firmware      TEXT
    ) WITHOUT ROWID;",
];

/// How long `open` waits for a lock held by someone else before giving up
/// with [`DevicesError::Locked`] (covers a previous gatewayd still exiting).
const BUSY_TIMEOUT: Duration = Duration::from_millis(1000);
/// Truncate the WAL file back to this size after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// One row of `devices`.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: Arc<str>,
    pub source: Option<Arc<str>>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub readings: u64,
    pub lost: bool,
    pub rssi: Option<f64>,
    pub snr: Option<f64>,
    pub battery: Option<f64>,
    pub firmware: Option<Arc<str>>,
}

/// The open file. Owned exclusively (`locking_mode = EXCLUSIVE`, taken at
/// open): a second opener gets [`DevicesError::Locked`], and no `-shm`
/// file is used.
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
}

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Db {
    /// Opens (creating if missing) the file, creates or migrates the schema
    /// and returns every row.
    pub fn open(path: &Path) -> Result<(Db, Vec<Row>), DevicesError> {
        let open_err = |error: rusqlite::Error| match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                DevicesError::Locked {
                    path: path.to_owned(),
                }
            }
            _ => DevicesError::Open {
                path: path.to_owned(),
                error,
            },
        };
        // No SQLITE_OPEN_URI: the path is a path, never a URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(open_err)?;
        // First statement that reads the file: a garbage file fails here.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Still correct (rollback journal), only slower; not fatal.
            tracing::warn!(path = %path.display(), %mode, "device registry: SQLite refused WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(open_err)?;

        // EXCLUSIVE: takes the write lock now and, in exclusive locking
        // mode, keeps it until the connection closes.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(open_err)?;
        init_or_migrate(&tx, path)?;
        let rows = load(&tx).map_err(|e| DevicesError::sqlite(path, "load the devices", e))?;
        tx.commit()
            .map_err(|e| DevicesError::sqlite(path, "commit the schema", e))?;
        Ok((
            Db {
                conn,
                path: path.to_owned(),
            },
            rows,
        ))
    }

    /// In one transaction: deletes `deletes`, then inserts or replaces
    /// `upserts`. Returns the number of rows changed.
    pub fn write(&mut self, upserts: &[Row], deletes: &[Arc<str>]) -> Result<usize, DevicesError> {
        let path = &self.path;
        let err = |e| DevicesError::sqlite(path, "write the devices", e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut changed = 0;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM devices WHERE id = ?1")
                .map_err(err)?;
            for id in deletes {
                changed += del.execute([&**id]).map_err(err)?;
            }
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO devices(id, source, first_seen_ms, last_seen_ms, \
                     readings, lost, rssi, snr, battery, firmware) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(err)?;
            for r in upserts {
                changed += put
                    .execute(params![
                        &*r.id,
                        r.source.as_deref(),
                        sql_int(r.first_seen_ms),
                        sql_int(r.last_seen_ms),
                        sql_int(r.readings),
                        r.lost,
                        r.rssi,
                        r.snr,
                        r.battery,
                        r.firmware.as_deref(),
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(changed)
    }
}

/// Creates the schema in an empty file, or checks an existing one and
/// applies the migrations it lacks.
fn init_or_migrate(conn: &Connection, path: &Path) -> Result<(), DevicesError> {
    let err = |e| DevicesError::sqlite(path, "create or migrate the schema", e);
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    let fresh = app_id == 0 && version == 0 && tables == 0;
    if !fresh && app_id != APPLICATION_ID {
        return Err(DevicesError::NotARegistry {
            path: path.to_owned(),
            reason: format!(
                "SQLite application_id is {app_id:#x} (expected {APPLICATION_ID:#x}) and it has \
                 {tables} table(s); refusing to modify it"
            ),
        });
    }
    if !(0..=SCHEMA_VERSION).contains(&version) {
        return Err(DevicesError::UnsupportedSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if fresh {
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(err)?;
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn.execute_batch(sql).map_err(err)?;
        conn.pragma_update(None, "user_version", from as i64 + 1)
            .map_err(err)?;
    }
    Ok(())
}

fn load(conn: &Connection) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare(
        "SELECT id, source, first_seen_ms, last_seen_ms, readings, lost, rssi, snr, battery, \
         firmware FROM devices",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Row {
            id: Arc::from(r.get::<_, String>(0)?),
            source: r.get::<_, Option<String>>(1)?.map(Arc::from),
            first_seen_ms: from_sql_int(r.get(2)?),
            last_seen_ms: from_sql_int(r.get(3)?),
            readings: from_sql_int(r.get(4)?),
            lost: r.get(5)?,
            rssi: r.get(6)?,
            snr: r.get(7)?,
            battery: r.get(8)?,
            firmware: r.get::<_, Option<String>>(9)?.map(Arc::from),
        })
    })?;
    rows.collect()
}
