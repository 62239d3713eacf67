//! `apps.db`: the runtime's durable state, owned by the runtime thread.
//!
//! * `apps`: the registry (what is deployed, from which bundle);
//! * `kv`: each app's key-value store;
//! * `window_rows`: readings in windows (`win = 0`: the open window;
//!   `win > 0`: a closed window whose output is not yet confirmed committed);
//! * `held`: readings held for a failing app (policy `hold`).
//!
//! Readings are stored in the wire encoding (`gatewayd_model::wire`).
//! WAL with `synchronous = FULL`: a change is durable before the buffer
//! commit that depends on it.

use std::path::Path;

use gatewayd_model::{wire, Reading};
use rusqlite::{params, Connection, OptionalExtension};

use crate::app::Kv;
use crate::error::EdgeError;

pub struct AppsDb {
    conn: Connection,
}

/// A registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub name: String,
    pub version: String,
    pub bundle_sha256: String,
    pub deployed_at_us: i64,
}

/// One change made while processing a group.
#[derive(Debug)]
pub enum Op {
    Kv {
        app: String,
        key: String,
        value: Option<Vec<u8>>,
    },
    WindowAdd {
        app: String,
        reading: Reading,
        /// The reading left its group (`keep_originals = false`).
        moved: bool,
    },
    /// Close the open window of `app` as window number `win`.
    WindowClose {
        app: String,
        win: i64,
    },
    HeldAdd {
        app: String,
        reading: Reading,
    },
}

/// Changes made while processing one group, written in order in one
/// transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl AppsDb {
    pub fn open(path: &Path) -> Result<Self, EdgeError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| EdgeError::io(dir, e))?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS apps(
                name TEXT PRIMARY KEY,
                version TEXT NOT NULL,
                bundle_sha256 TEXT NOT NULL,
                deployed_at_us INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS kv(
                app TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY(app, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS window_rows(
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                app TEXT NOT NULL, win INTEGER NOT NULL, reading BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS window_rows_app ON window_rows(app, win);
             CREATE TABLE IF NOT EXISTS held(
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                app TEXT NOT NULL, reading BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS held_app ON held(app, id);",
        )?;
        Ok(AppsDb { conn })
    }

    /// Opens read-only, for `gatewayd apps list` beside a running daemon.
    pub fn open_read_only(path: &Path) -> Result<Self, EdgeError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(AppsDb { conn })
    }

    pub fn registry(&self) -> Result<Vec<Registered>, EdgeError> {
        let mut st = self.conn.prepare(
            "SELECT name, version, bundle_sha256, deployed_at_us FROM apps ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Registered {
                name: r.get(0)?,
                version: r.get(1)?,
                bundle_sha256: r.get(2)?,
                deployed_at_us: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn register(&mut self, r: &Registered) -> Result<(), EdgeError> {
        self.conn.execute(
            "INSERT INTO apps(name, version, bundle_sha256, deployed_at_us) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET version = ?2, bundle_sha256 = ?3, deployed_at_us = ?4",
            params![r.name, r.version, r.bundle_sha256, r.deployed_at_us],
        )?;
        Ok(())
    }

    /// Forgets an app: registry row, key-value store, windows. Held readings
    /// must have been released first.
    pub fn unregister(&mut self, name: &str) -> Result<(), EdgeError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM apps WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM kv WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM window_rows WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM held WHERE app = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    pub fn load_kv(&self, app: &str) -> Result<Kv, EdgeError> {
        let mut st = self
            .conn
            .prepare("SELECT key, value FROM kv WHERE app = ?1")?;
        let mut kv = Kv::default();
        let rows = st.query_map([app], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (k, v) = row?;
            kv.insert(k, v);
        }
        Ok(kv)
    }

    pub fn apply(&mut self, b: &Batch) -> Result<(), EdgeError> {
        if b.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut set = tx.prepare_cached(
                "INSERT INTO kv(app, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(app, key) DO UPDATE SET value = ?3",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM kv WHERE app = ?1 AND key = ?2")?;
            let mut win =
                tx.prepare_cached("INSERT INTO window_rows(app, win, reading) VALUES (?1, 0, ?2)")?;
            let mut close =
                tx.prepare_cached("UPDATE window_rows SET win = ?2 WHERE app = ?1 AND win = 0")?;
            let mut held = tx.prepare_cached("INSERT INTO held(app, reading) VALUES (?1, ?2)")?;
            for op in &b.ops {
                match op {
                    Op::Kv {
                        app,
                        key,
                        value: Some(v),
                    } => set.execute(params![app, key, v])?,
                    Op::Kv {
                        app,
                        key,
                        value: None,
                    } => del.execute(params![app, key])?,
                    Op::WindowAdd { app, reading, .. } => {
                        win.execute(params![app, wire::encode_reading(reading)])?
                    }
                    Op::WindowClose { app, win } => close.execute(params![app, win])?,
                    Op::HeldAdd { app, reading } => {
                        held.execute(params![app, wire::encode_reading(reading)])?
                    }
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Readings of a window (`win = 0`: the open one), oldest first.
    pub fn window(&self, app: &str, win: i64) -> Result<Vec<Reading>, EdgeError> {
        let mut st = self
            .conn
            .prepare("SELECT reading FROM window_rows WHERE app = ?1 AND win = ?2 ORDER BY id")?;
        let rows = st.query_map(params![app, win], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            // A row that no longer decodes (it was encoded by us) is skipped
            // rather than wedging the app forever.
            if let Ok(r) = wire::decode_reading(&row?) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Closed windows not yet confirmed (after a crash), per app.
    pub fn closed_windows(&self, app: &str) -> Result<Vec<i64>, EdgeError> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT win FROM window_rows WHERE app = ?1 AND win > 0 ORDER BY win",
        )?;
        let rows = st.query_map([app], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn max_window(&self, app: &str) -> Result<i64, EdgeError> {
        Ok(self
            .conn
            .query_row(
                "SELECT MAX(win) FROM window_rows WHERE app = ?1",
                [app],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .unwrap_or(0))
    }

    pub fn delete_window(&mut self, app: &str, win: i64) -> Result<(), EdgeError> {
        self.conn.execute(
            "DELETE FROM window_rows WHERE app = ?1 AND win = ?2",
            params![app, win],
        )?;
        Ok(())
    }

    /// Up to `limit` held readings after id `after`, oldest first.
    pub fn held(
        &self,
        app: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Reading)>, EdgeError> {
        let mut st = self.conn.prepare(
            "SELECT id, reading FROM held WHERE app = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = st.query_map(params![app, after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, bytes) = row?;
            if let Ok(r) = wire::decode_reading(&bytes) {
                out.push((id, r));
            }
        }
        Ok(out)
    }

    pub fn held_count(&self, app: &str) -> Result<u64, EdgeError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM held WHERE app = ?1", [app], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub fn delete_held_through(&mut self, app: &str, through: i64) -> Result<(), EdgeError> {
        self.conn.execute(
            "DELETE FROM held WHERE app = ?1 AND id <= ?2",
            params![app, through],
        )?;
        Ok(())
    }
}
