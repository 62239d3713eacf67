//! The application downlink queue on disk: table `downlinks` of
//! `lorawan.db`.
//!
//! # Who does what
//!
//! * The control API (D-Bus `EnqueueDownlink`, `gatewayctl lora downlink`)
//!   adds rows with [`LoraRegistry::enqueue_downlink`]: validated (device
//!   registered, FPort 1..=223, payload at most [`MAX_PAYLOAD`] bytes, at
//!   most [`MAX_QUEUED`] per device) and durable before the call returns.
//! * The network server (the source) loads rows it has not seen (ids only
//!   grow: `AUTOINCREMENT`) into its in-memory per-device queue when the
//!   database changes, and sends one per uplink of the device (class A).
//! * A row is deleted when its item has left the queue for good: an
//!   unconfirmed downlink once sent, a confirmed one once acknowledged or
//!   dropped after its last attempt. The delete is in the same transaction
//!   as the session write of that uplink ([`crate::store::SessionDb::commit`]).
//!
//! # Guarantees
//!
//! A queued downlink survives a restart until it has left the queue. After a
//! crash between sending and that commit, it is sent again (at least once):
//! applications should make downlinks idempotent. Removing a device deletes
//! its queue.

use rusqlite::{params, OptionalExtension};

use crate::registry::{Eui64, LoraRegistry, RegistryError};

/// Most application payload bytes of a downlink (LoRaWAN 1.0.x: 250-byte
/// MACPayload at the fastest data rates, less the 8-byte frame header). The
/// region and the data rate of the window may allow less: an item too large
/// for the region is refused when the network server loads it; one too
/// large for the device's current windows waits.
pub const MAX_PAYLOAD: usize = 242;
/// Most queued downlinks per device (the pending confirmed one included).
pub const MAX_QUEUED: usize = 16;

/// A queued downlink as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueuedRow {
    /// Row id: unique, never reused.
    pub id: u64,
    /// 16 uppercase hex digits.
    pub dev_eui: String,
    pub fport: u8,
    pub payload: Vec<u8>,
    pub confirmed: bool,
    /// When it was queued (unix ms).
    pub created_ms: u64,
}

fn invalid(key: &str, message: impl std::fmt::Display) -> RegistryError {
    RegistryError::Invalid {
        key: key.to_owned(),
        message: message.to_string(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why [`require_device`] failed.
enum Missing {
    Device(String),
    Sql(rusqlite::Error),
}

impl Missing {
    fn or_storage(self, reg: &LoraRegistry) -> RegistryError {
        match self {
            Missing::Device(eui) => RegistryError::NotFound(eui),
            Missing::Sql(e) => reg.storage(e),
        }
    }
}

/// `NotFound` unless the (canonical) DevEUI is registered.
fn require_device(conn: &rusqlite::Connection, eui: &str) -> Result<(), Missing> {
    let known: Option<i64> = conn
        .query_row("SELECT 1 FROM devices WHERE dev_eui = ?1", [eui], |r| {
            r.get(0)
        })
        .optional()
        .map_err(Missing::Sql)?;
    match known {
        Some(_) => Ok(()),
        None => Err(Missing::Device(eui.to_owned())),
    }
}

impl LoraRegistry {
    /// Queues an application downlink for a registered device's next uplink
    /// and returns its id. Durable before it returns. Errors: `Invalid`
    /// naming `dev_eui`, `fport` or `payload`; `NotFound`; `QueueFull`.
    pub fn enqueue_downlink(
        &self,
        dev_eui: &str,
        fport: u8,
        payload: &[u8],
        confirmed: bool,
    ) -> Result<u64, RegistryError> {
        let eui: Eui64 = dev_eui.parse().map_err(|e| invalid("dev_eui", e))?;
        if !(1..=223).contains(&fport) {
            return Err(invalid(
                "fport",
                format!("{fport} is not an application port (1..=223)"),
            ));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(invalid(
                "payload",
                format!(
                    "{} bytes is more than a LoRaWAN downlink carries ({MAX_PAYLOAD})",
                    payload.len()
                ),
            ));
        }
        let eui = eui.to_string();
        let sql = |e: rusqlite::Error| self.storage(e);
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        require_device(&tx, &eui).map_err(|e| e.or_storage(self))?;
        let queued: i64 = tx
            .query_row(
                "SELECT count(*) FROM downlinks WHERE dev_eui = ?1",
                [&eui],
                |r| r.get(0),
            )
            .map_err(sql)?;
        if queued as usize >= MAX_QUEUED {
            return Err(RegistryError::QueueFull {
                dev_eui: eui,
                capacity: MAX_QUEUED,
            });
        }
        tx.execute(
            "INSERT INTO downlinks (dev_eui, fport, payload, confirmed, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![eui, fport, payload, confirmed, now_ms()],
        )
        .map_err(sql)?;
        let id = tx.last_insert_rowid() as u64;
        tx.commit().map_err(sql)?;
        drop(conn);
        self.bump();
        tracing::info!(dev_eui = %eui, id, fport, len = payload.len(), confirmed, "LoRaWAN downlink queued");
        Ok(id)
    }

    /// Queued downlinks, oldest first: of one device (`Invalid` if
    /// `dev_eui` is malformed; an unknown device has none), or of all when
    /// `None`; only ids above `after`.
    pub fn downlinks(
        &self,
        dev_eui: Option<&str>,
        after: u64,
    ) -> Result<Vec<QueuedRow>, RegistryError> {
        let eui = match dev_eui {
            Some(s) => Some(
                s.parse::<Eui64>()
                    .map_err(|e| invalid("dev_eui", e))?
                    .to_string(),
            ),
            None => None,
        };
        let sql = |e: rusqlite::Error| self.storage(e);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, dev_eui, fport, payload, confirmed, created_ms FROM downlinks
                 WHERE id > ?1 AND (?2 IS NULL OR dev_eui = ?2) ORDER BY id",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![after as i64, eui], |r| {
                Ok(QueuedRow {
                    id: r.get::<_, i64>(0)? as u64,
                    dev_eui: r.get(1)?,
                    fport: r.get(2)?,
                    payload: r.get(3)?,
                    confirmed: r.get(4)?,
                    created_ms: r.get::<_, i64>(5)?.max(0) as u64,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// Deletes a device's queued downlinks (all, or the one `id`); returns
    /// how many. `NotFound` if the device is not registered.
    pub fn clear_downlinks(&self, dev_eui: &str, id: Option<u64>) -> Result<usize, RegistryError> {
        let eui: Eui64 = dev_eui.parse().map_err(|e| invalid("dev_eui", e))?;
        let eui = eui.to_string();
        let sql = |e: rusqlite::Error| self.storage(e);
        let conn = self.lock();
        require_device(&conn, &eui).map_err(|e| e.or_storage(self))?;
        let n = conn
            .execute(
                "DELETE FROM downlinks WHERE dev_eui = ?1 AND (?2 IS NULL OR id = ?2)",
                params![eui, id.map(|i| i as i64)],
            )
            .map_err(sql)?;
        drop(conn);
        if n > 0 {
            self.bump();
        }
        Ok(n)
    }
}
