//! Device sessions on disk, and the in-memory device table the network
//! server looks devices up in.
//!
//! * [`SessionDb`] owns the `sessions` table of `lorawan.db` (beside the
//!   registry's `devices` table, through its own connection): one row per
//!   DevEUI with the [`Session`] fields as columns, keys as 16-byte BLOBs.
//!   All its methods block: call them from `spawn_blocking`.
//! * [`CachedStore`] is the [`DeviceStore`] the server reads: registry
//!   devices joined with their sessions, in memory. The source applies
//!   every `SessionChanged` to it synchronously, persists it afterwards,
//!   and rebuilds it ([`CachedStore::merge_reload`]) when the registry
//!   changes (its generation, or `PRAGMA data_version` for changes made by
//!   another connection such as the D-Bus interface's).
//!
//! A stored ABP session whose DevAddr or keys differ from the registry's
//! (the device was re-registered) is ignored: the device starts afresh.
//! Session keys of OTAA devices are in this file like the registry's keys
//! (mode 0600, `secure_delete`); they may stay in the WAL until SQLite's
//! next automatic checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use gatewayd_lorawan_proto as proto;
use proto::{Activation, AesKey, DevAddr, DeviceRecord, DeviceStore, Eui64, Session};
use rusqlite::{params, Connection, OpenFlags};

use crate::registry::{self, DeviceSpec};

/// Why the session table could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StoreError {
    pub path: String,
    pub message: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    dev_eui         TEXT    NOT NULL PRIMARY KEY CHECK (length(dev_eui) = 16),
    dev_addr        INTEGER NOT NULL,
    nwk_s_key       BLOB    NOT NULL CHECK (length(nwk_s_key) = 16),
    app_s_key       BLOB    NOT NULL CHECK (length(app_s_key) = 16),
    fcnt_up         INTEGER,
    fcnt_down       INTEGER NOT NULL,
    rx1_dr_offset   INTEGER NOT NULL,
    rx2_dr          INTEGER NOT NULL,
    rx1_delay_s     INTEGER NOT NULL,
    join_nonce      INTEGER NOT NULL,
    used_dev_nonces BLOB    NOT NULL,
    last_uplink_mic BLOB,
    updated_ms      INTEGER NOT NULL
) STRICT;
";

/// The `sessions` table. Blocking.
pub struct SessionDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SessionDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionDb")
            .field("path", &self.path)
            .finish()
    }
}

fn key16(v: Vec<u8>) -> Option<[u8; 16]> {
    v.try_into().ok()
}

impl SessionDb {
    /// Opens the table in the database at `path`, which the registry has
    /// created (mode 0600). Creates the table if needed.
    pub fn open(path: &Path) -> Result<SessionDb, StoreError> {
        let err = |e: rusqlite::Error| StoreError {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "secure_delete", true)
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(SessionDb {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `PRAGMA data_version`: changes when another connection commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.lock()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Every stored session. Rows that do not decode are skipped with a
    /// warning naming the device (never a value).
    pub fn load(&self) -> Result<HashMap<Eui64, Session>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT dev_eui, dev_addr, nwk_s_key, app_s_key, fcnt_up, fcnt_down,
                        rx1_dr_offset, rx2_dr, rx1_delay_s, join_nonce, used_dev_nonces,
                        last_uplink_mic
                 FROM sessions",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let eui: String = row.get(0).map_err(|e| self.err(e))?;
            let decoded = (|| -> Result<(Eui64, Session), String> {
                let dev_eui: Eui64 = eui.parse().map_err(|_| "dev_eui")?;
                let g = |e: rusqlite::Error| e.to_string();
                let nonces: Vec<u8> = row.get(10).map_err(g)?;
                if !nonces.len().is_multiple_of(2) {
                    return Err("used_dev_nonces".into());
                }
                let mic: Option<Vec<u8>> = row.get(11).map_err(g)?;
                let session = Session {
                    dev_addr: row.get(1).map_err(g)?,
                    nwk_s_key: key16(row.get(2).map_err(g)?).ok_or("nwk_s_key")?,
                    app_s_key: key16(row.get(3).map_err(g)?).ok_or("app_s_key")?,
                    fcnt_up: row.get(4).map_err(g)?,
                    fcnt_down: row.get(5).map_err(g)?,
                    rx1_dr_offset: row.get(6).map_err(g)?,
                    rx2_dr: row.get(7).map_err(g)?,
                    rx1_delay_s: row.get(8).map_err(g)?,
                    join_nonce: row.get(9).map_err(g)?,
                    used_dev_nonces: nonces
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect::<BTreeSet<u16>>(),
                    last_uplink_mic: match mic {
                        None => None,
                        Some(m) => Some(m.try_into().map_err(|_| "last_uplink_mic")?),
                    },
                };
                Ok((dev_eui, session))
            })();
            match decoded {
                Ok((k, s)) => {
                    out.insert(k, s);
                }
                Err(column) => tracing::warn!(
                    path = %self.path.display(), dev_eui = %eui, %column,
                    "LoRaWAN session row unreadable; ignored"
                ),
            }
        }
        Ok(out)
    }

    /// Writes sessions (insert or replace) and deletes the queued
    /// downlinks that left the queue ([`crate::downlinks`]), in one
    /// transaction.
    pub fn save(
        &self,
        sessions: &[(Eui64, Session)],
        done_downlinks: &[u64],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        if !done_downlinks.is_empty() {
            let mut stmt = tx
                .prepare_cached("DELETE FROM downlinks WHERE id = ?1")
                .map_err(|e| self.err(e))?;
            for id in done_downlinks {
                stmt.execute([*id as i64]).map_err(|e| self.err(e))?;
            }
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO sessions
                     (dev_eui, dev_addr, nwk_s_key, app_s_key, fcnt_up, fcnt_down, rx1_dr_offset,
                      rx2_dr, rx1_delay_s, join_nonce, used_dev_nonces, last_uplink_mic, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(|e| self.err(e))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            for (eui, s) in sessions {
                let nonces: Vec<u8> = s
                    .used_dev_nonces
                    .iter()
                    .flat_map(|n| n.to_le_bytes())
                    .collect();
                stmt.execute(params![
                    eui.to_string(),
                    s.dev_addr,
                    &s.nwk_s_key[..],
                    &s.app_s_key[..],
                    s.fcnt_up,
                    s.fcnt_down,
                    s.rx1_dr_offset,
                    s.rx2_dr,
                    s.rx1_delay_s,
                    s.join_nonce,
                    nonces,
                    s.last_uplink_mic.map(|m| m.to_vec()),
                    now,
                ])
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

/// A registry device in the server's types (the identifiers are the same
/// types; keys are copied out of their zeroed-on-drop wrapper).
pub fn record_from_spec(spec: &DeviceSpec) -> DeviceRecord {
    let activation = match &spec.activation {
        registry::Activation::Otaa { join_eui, app_key } => Activation::Otaa {
            join_eui: *join_eui,
            app_key: AesKey(app_key.0),
        },
        registry::Activation::Abp {
            dev_addr,
            nwk_s_key,
            app_s_key,
        } => Activation::Abp {
            dev_addr: *dev_addr,
            nwk_s_key: AesKey(nwk_s_key.0),
            app_s_key: AesKey(app_s_key.0),
        },
    };
    DeviceRecord {
        dev_eui: spec.dev_eui,
        profile: spec.profile.clone(),
        activation,
        session: None,
    }
}

/// Whether a stored session still belongs to the registration.
fn session_matches(activation: &Activation, s: &Session) -> bool {
    match activation {
        Activation::Otaa { .. } => true,
        Activation::Abp {
            dev_addr,
            nwk_s_key,
            app_s_key,
        } => s.dev_addr == dev_addr.0 && s.nwk_s_key == nwk_s_key.0 && s.app_s_key == app_s_key.0,
    }
}

/// The in-memory [`DeviceStore`].
#[derive(Debug, Default, Clone)]
pub struct CachedStore {
    devices: BTreeMap<Eui64, DeviceRecord>,
    by_addr: HashMap<u32, Vec<Eui64>>,
}

impl CachedStore {
    /// Registry devices with their stored sessions.
    pub fn build(specs: &[DeviceSpec], mut sessions: HashMap<Eui64, Session>) -> CachedStore {
        let mut store = CachedStore::default();
        for spec in specs {
            let mut rec = record_from_spec(spec);
            if let Some(s) = sessions.remove(&rec.dev_eui) {
                if session_matches(&rec.activation, &s) {
                    rec.session = Some(s);
                }
            }
            store.devices.insert(rec.dev_eui, rec);
        }
        store.reindex();
        store
    }

    fn reindex(&mut self) {
        self.by_addr.clear();
        for d in self.devices.values() {
            let addr = match (&d.session, &d.activation) {
                (Some(s), _) => Some(s.dev_addr),
                (None, Activation::Abp { dev_addr, .. }) => Some(dev_addr.0),
                _ => None,
            };
            if let Some(a) = addr {
                self.by_addr.entry(a).or_default().push(d.dev_eui);
            }
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// A device's session.
    pub fn session(&self, dev_eui: Eui64) -> Option<&Session> {
        self.devices.get(&dev_eui)?.session.as_ref()
    }

    /// Applies a `SessionChanged`; `false` if the device is gone.
    pub fn apply_session(&mut self, dev_eui: Eui64, session: Session) -> bool {
        let Some(d) = self.devices.get_mut(&dev_eui) else {
            return false;
        };
        let old = d.session.as_ref().map(|s| s.dev_addr);
        let new = session.dev_addr;
        d.session = Some(session);
        if old != Some(new) {
            self.reindex();
        }
        true
    }

    /// Replaces the table with a reloaded one, keeping the in-memory
    /// session of every device whose registration did not change (it is
    /// at least as new as the stored one).
    pub fn merge_reload(&mut self, mut fresh: CachedStore) {
        for (eui, d) in fresh.devices.iter_mut() {
            if let Some(old) = self.devices.get(eui) {
                if old.activation == d.activation {
                    if let Some(s) = &old.session {
                        d.session = Some(s.clone());
                    }
                }
            }
        }
        fresh.reindex();
        *self = fresh;
    }
}

impl DeviceStore for CachedStore {
    fn by_dev_eui(&self, dev_eui: Eui64) -> Option<DeviceRecord> {
        self.devices.get(&dev_eui).cloned()
    }

    fn sessions_by_dev_addr(&self, dev_addr: DevAddr) -> Vec<DeviceRecord> {
        self.by_addr
            .get(&dev_addr.0)
            .into_iter()
            .flatten()
            .filter_map(|e| self.devices.get(e).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Region;

    #[test]
    fn sessions_round_trip_through_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lorawan.db");
        let _reg = registry::LoraRegistry::open(&path).unwrap();
        let db = SessionDb::open(&path).unwrap();
        let mut s = Session::abp(DevAddr(0x2601_1BDA), [1; 16], [2; 16], Region::Eu868);
        s.fcnt_up = Some(70_000);
        s.fcnt_down = 5;
        s.used_dev_nonces = BTreeSet::from([1, 0xBEEF]);
        s.last_uplink_mic = Some([1, 2, 3, 4]);
        let eui = Eui64([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0, 0, 1]);
        db.save(&[(eui, s.clone())], &[]).unwrap();
        drop(db);
        let db = SessionDb::open(&path).unwrap();
        assert_eq!(db.load().unwrap().get(&eui), Some(&s));
    }
}
