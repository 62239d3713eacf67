//! SQLite store: WAL mode, `synchronous = FULL` (a batch acknowledged to the
//! broker survives power loss). A writer thread and a reader thread each own
//! one connection; async callers reach them through bounded channels.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{
    device_updates, BoxFuture, DeviceRow, GatewayRow, GatewayStatus, IngestBatch, ListQuery,
    ReadingQuery, ReadingRow, RejectedRecord, RejectedRow, Store, StoreError, StoreOutcome,
    REJECTED_KEEP,
};

/// Jobs queued per connection thread before callers wait.
const CHANNEL_CAPACITY: usize = 64;

const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_us INTEGER NOT NULL
)";

/// Idempotent, append-only migrations: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE gateways (
        id TEXT PRIMARY KEY,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        status TEXT,
        status_ts INTEGER
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        transport TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        last_reading_us INTEGER
    );
    CREATE TABLE readings (
        gateway TEXT NOT NULL,
        seq INTEGER NOT NULL,
        device TEXT NOT NULL,
        time_us INTEGER NOT NULL,
        received_us INTEGER NOT NULL,
        measurements TEXT NOT NULL CHECK (json_valid(measurements)),
        meta TEXT NOT NULL CHECK (json_valid(meta)),
        PRIMARY KEY (gateway, seq)
    ) WITHOUT ROWID;
    CREATE INDEX readings_device_time ON readings (device, time_us);
    CREATE TABLE rejected (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_us INTEGER NOT NULL,
        topic TEXT NOT NULL,
        gateway TEXT,
        reason TEXT NOT NULL,
        payload_excerpt TEXT NOT NULL
    );",
)];

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Msg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

/// A thread owning one connection.
struct Worker {
    tx: mpsc::Sender<Msg>,
}

impl Worker {
    fn spawn(name: &str, mut conn: Connection) -> Result<Worker, StoreError> {
        let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL_CAPACITY);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Job(job) => {
                            // A panicking job must not take the connection
                            // (and every later caller) down with it; its
                            // caller sees `Closed` for that one call.
                            if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)))
                                .is_err()
                            {
                                tracing::error!("a SQLite job panicked");
                            }
                        }
                        Msg::Close(done) => {
                            drop(conn);
                            let _ = done.send(());
                            return;
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Io {
                context: format!("spawning the {name} thread"),
                source: e,
            })?;
        Ok(Worker { tx })
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (rtx, rrx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = rtx.send(f(conn));
        });
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rrx.await.map_err(|_| StoreError::Closed)?
    }

    async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

pub struct SqliteStore {
    writer: Worker,
    reader: Worker,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
    }
    let mut conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "{} cannot use WAL journaling (got {mode})",
            path.display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA_TABLE)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !applied {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_us) VALUES (?1, ?2)",
                params![version, crate::now_us()],
            )?;
            tracing::info!(version, "applied SQLite schema migration");
        }
        tx.commit()?;
    }
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > latest {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this cloud-bridge supports ({latest})"
        )));
    }
    Ok(())
}

fn store_batch(conn: &mut Connection, batch: &IngestBatch) -> Result<StoreOutcome, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO gateways (id, first_seen, last_seen) VALUES (?1, ?2, ?2)
         ON CONFLICT (id) DO UPDATE SET last_seen = max(gateways.last_seen, excluded.last_seen)",
        params![batch.gateway, batch.received_us],
    )?;
    let mut inserted = Vec::with_capacity(batch.readings.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO readings (gateway, seq, device, time_us, received_us, measurements, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )?;
        for r in &batch.readings {
            let n = stmt.execute(params![
                batch.gateway,
                r.seq,
                r.device,
                r.time_us,
                batch.received_us,
                r.measurements,
                r.meta
            ])?;
            if n == 1 {
                inserted.push((r.device.as_str(), r.transport, r.time_us));
            }
        }
    }
    let outcome = StoreOutcome {
        inserted: inserted.len() as u64,
        duplicates: (batch.readings.len() - inserted.len()) as u64,
    };
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO devices (id, gateway, transport, first_seen, last_seen, last_reading_us)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET
                gateway = excluded.gateway,
                transport = excluded.transport,
                last_seen = max(devices.last_seen, excluded.last_seen),
                last_reading_us = max(coalesce(devices.last_reading_us, excluded.last_reading_us),
                                      excluded.last_reading_us)",
        )?;
        for u in device_updates(inserted) {
            stmt.execute(params![
                u.id,
                batch.gateway,
                u.transport,
                batch.received_us,
                u.last_reading_us
            ])?;
        }
    }
    tx.commit()?;
    Ok(outcome)
}

fn gateway_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GatewayRow> {
    Ok(GatewayRow {
        id: r.get(0)?,
        status: r.get(1)?,
        status_ts_us: r.get(2)?,
        first_seen_us: r.get(3)?,
        last_seen_us: r.get(4)?,
    })
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        gateway: r.get(1)?,
        transport: r.get(2)?,
        first_seen_us: r.get(3)?,
        last_seen_us: r.get(4)?,
        last_reading_us: r.get(5)?,
    })
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: impl Into<PathBuf>) -> Result<SqliteStore, StoreError> {
        let path = path.into();
        let p = path.clone();
        let (writer, reader) = tokio::task::spawn_blocking(move || {
            let w = open_writer(&p)?;
            let r = open_reader(&p)?;
            Ok::<_, StoreError>((w, r))
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "opening SQLite".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
        Ok(SqliteStore {
            writer: Worker::spawn("sqlite-writer", writer)?,
            reader: Worker::spawn("sqlite-reader", reader)?,
            path,
        })
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn store_batch(&self, batch: IngestBatch) -> BoxFuture<'_, Result<StoreOutcome, StoreError>> {
        Box::pin(self.writer.call(move |c| store_batch(c, &batch)))
    }

    fn record_status(&self, s: GatewayStatus) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.writer.call(move |c| {
            c.execute(
                "INSERT INTO gateways (id, first_seen, last_seen, status, status_ts)
                 VALUES (?1, ?2, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, status_ts = excluded.status_ts
                 WHERE gateways.status_ts IS NULL OR excluded.status_ts IS NULL
                    OR excluded.status_ts >= gateways.status_ts",
                params![s.gateway, s.received_us, s.state, s.status_ts_us],
            )?;
            Ok(())
        }))
    }

    fn record_rejected(&self, r: RejectedRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.writer.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO rejected (received_us, topic, gateway, reason, payload_excerpt)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    r.received_us,
                    r.topic,
                    r.gateway,
                    r.reason,
                    r.payload_excerpt
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "DELETE FROM rejected WHERE id <= ?1",
                [id.saturating_sub(REJECTED_KEEP)],
            )?;
            tx.commit()?;
            Ok(())
        }))
    }

    fn gateways(&self, q: ListQuery) -> BoxFuture<'_, Result<Vec<GatewayRow>, StoreError>> {
        Box::pin(self.reader.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, status, status_ts, first_seen, last_seen FROM gateways
                 WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![q.after, limit_param(q.limit)], gateway_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn devices(&self, q: ListQuery) -> BoxFuture<'_, Result<Vec<DeviceRow>, StoreError>> {
        Box::pin(self.reader.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, gateway, transport, first_seen, last_seen, last_reading_us FROM devices
                 WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![q.after, limit_param(q.limit)], device_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn device(&self, id: String) -> BoxFuture<'_, Result<Option<DeviceRow>, StoreError>> {
        Box::pin(self.reader.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, gateway, transport, first_seen, last_seen, last_reading_us FROM devices
                 WHERE id = ?1",
            )?;
            Ok(stmt.query_row([id], device_row).optional()?)
        }))
    }

    fn readings(&self, q: ReadingQuery) -> BoxFuture<'_, Result<Vec<ReadingRow>, StoreError>> {
        Box::pin(self.reader.call(move |c| {
            let sql = if q.until_us.is_some() {
                "SELECT gateway, seq, device, time_us, received_us, measurements, meta FROM readings
                 WHERE device = ?1 AND time_us >= ?2 AND time_us < ?3
                 ORDER BY time_us, gateway, seq LIMIT ?4"
            } else {
                "SELECT gateway, seq, device, time_us, received_us, measurements, meta FROM readings
                 WHERE device = ?1 AND time_us >= ?2 AND time_us <= ?3
                 ORDER BY time_us, gateway, seq LIMIT ?4"
            };
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt
                .query_map(
                    params![
                        q.device,
                        q.since_us.unwrap_or(i64::MIN),
                        q.until_us.unwrap_or(i64::MAX),
                        limit_param(q.limit)
                    ],
                    |r| {
                        Ok(ReadingRow {
                            gateway: r.get(0)?,
                            seq: r.get(1)?,
                            device: r.get(2)?,
                            time_us: r.get(3)?,
                            received_us: r.get(4)?,
                            measurements: r.get(5)?,
                            meta: r.get(6)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn rejected(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RejectedRow>, StoreError>> {
        Box::pin(self.reader.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, received_us, topic, gateway, reason, payload_excerpt FROM rejected
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([limit_param(limit)], |r| {
                    Ok(RejectedRow {
                        id: r.get(0)?,
                        received_us: r.get(1)?,
                        topic: r.get(2)?,
                        gateway: r.get(3)?,
                        reason: r.get(4)?,
                        payload_excerpt: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.reader
                .call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                .await?;
            self.writer
                .call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                .await?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.reader.close().await;
            self.writer.close().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewReading;

    fn reading(seq: i64, device: &str, t: i64) -> NewReading {
        NewReading {
            seq,
            device: device.into(),
            transport: "coap",
            time_us: t,
            measurements: r#"[{"name":"temperature","unit":"Cel","value":21.5}]"#.into(),
            meta: "{}".into(),
        }
    }

    #[tokio::test]
    async fn storing_a_batch_twice_stores_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db/x.sqlite3"))
            .await
            .unwrap();
        let batch = IngestBatch {
            gateway: "gw-01".into(),
            received_us: 10,
            readings: vec![reading(1, "coap:a", 100), reading(2, "coap:a", 200)],
        };
        let first = store.store_batch(batch.clone()).await.unwrap();
        assert_eq!(
            first,
            StoreOutcome {
                inserted: 2,
                duplicates: 0
            }
        );
        let second = store.store_batch(batch).await.unwrap();
        assert_eq!(
            second,
            StoreOutcome {
                inserted: 0,
                duplicates: 2
            }
        );
        let rows = store
            .readings(ReadingQuery {
                device: "coap:a".into(),
                since_us: None,
                until_us: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        let dev = store.device("coap:a".into()).await.unwrap().unwrap();
        assert_eq!(dev.last_reading_us, Some(200));
        store.close().await;
        assert!(matches!(store.ping().await, Err(StoreError::Closed)));
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sqlite3");
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .store_batch(IngestBatch {
                gateway: "gw".into(),
                received_us: 1,
                readings: vec![reading(7, "coap:b", 5)],
            })
            .await
            .unwrap();
        store.close().await;
        let store = SqliteStore::open(&path).await.unwrap();
        let gws = store
            .gateways(ListQuery {
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(gws.len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn older_status_does_not_overwrite_newer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("x.sqlite3"))
            .await
            .unwrap();
        let status = |state: &str, ts| GatewayStatus {
            gateway: "gw".into(),
            state: state.into(),
            status_ts_us: Some(ts),
            received_us: 1,
        };
        store.record_status(status("online", 20)).await.unwrap();
        store.record_status(status("offline", 10)).await.unwrap();
        let gws = store
            .gateways(ListQuery {
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(gws[0].status.as_deref(), Some("online"));
        store.record_status(status("offline", 30)).await.unwrap();
        let gws = store
            .gateways(ListQuery {
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(gws[0].status.as_deref(), Some("offline"));
        store.close().await;
    }

    #[tokio::test]
    async fn rejected_table_keeps_only_the_newest_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("x.sqlite3"))
            .await
            .unwrap();
        for i in 0..(REJECTED_KEEP + 5) {
            store
                .record_rejected(RejectedRecord::new(i, "t", None, "bad", b"x"))
                .await
                .unwrap();
        }
        let rows = store.rejected(10_000).await.unwrap();
        assert_eq!(rows.len() as i64, REJECTED_KEEP);
        assert_eq!(rows[0].received_us, REJECTED_KEEP + 4);
        store.close().await;
    }
}
