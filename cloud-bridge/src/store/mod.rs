//! Storage behind [`Store`]: SQLite (default) and PostgreSQL, same schema.
//!
//! Schema (times are integer microseconds since the UNIX epoch, UTC):
//!
//! * `gateways(id PK, first_seen, last_seen, status, status_ts)`
//! * `devices(id PK, gateway, transport, first_seen, last_seen, last_reading_us)`
//! * `readings(gateway, seq, device, time_us, received_us, measurements, meta,
//!   PRIMARY KEY (gateway, seq))` + index `(device, time_us)`; `measurements`
//!   and `meta` hold the JSON served by the HTTP API.
//! * `rejected(id, received_us, topic, gateway, reason, payload_excerpt)`,
//!   bounded to the newest [`REJECTED_KEEP`] rows.
//! * `schema_migrations(version PK, applied_us)`.
//!
//! Exactly-once: readings are inserted with `ON CONFLICT DO NOTHING` in one
//! transaction per batch, and the caller acknowledges the MQTT PUBLISH only
//! after [`Store::store_batch`] returned `Ok`.

use std::future::Future;
use std::pin::Pin;

pub mod postgres;
pub mod sqlite;

/// Rows kept in the `rejected` table (oldest deleted first).
pub const REJECTED_KEEP: i64 = 1000;
/// Longest stored rejection reason, in bytes.
pub const MAX_REASON_LEN: usize = 1000;
/// Longest stored payload excerpt, in bytes.
pub const MAX_EXCERPT_LEN: usize = 256;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the store is shut down")]
    Closed,
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// One reading ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReading {
    pub seq: i64,
    pub device: String,
    pub transport: &'static str,
    pub time_us: i64,
    /// JSON array, the API's `measurements`.
    pub measurements: String,
    /// JSON object, the API's `meta`.
    pub meta: String,
}

/// A decoded, validated batch of one gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestBatch {
    pub gateway: String,
    pub received_us: i64,
    pub readings: Vec<NewReading>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    pub inserted: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayStatus {
    pub gateway: String,
    pub state: String,
    /// The gateway's own timestamp of the status, if it sent one.
    pub status_ts_us: Option<i64>,
    pub received_us: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    pub received_us: i64,
    pub topic: String,
    pub gateway: Option<String>,
    pub reason: String,
    pub payload_excerpt: String,
}

impl RejectedRecord {
    /// Builds a record with reason and excerpt cut to their bounds.
    pub fn new(
        received_us: i64,
        topic: &str,
        gateway: Option<&str>,
        reason: &str,
        payload: &[u8],
    ) -> Self {
        let excerpt = String::from_utf8_lossy(&payload[..payload.len().min(MAX_EXCERPT_LEN)]);
        RejectedRecord {
            received_us,
            topic: truncate(topic, MAX_REASON_LEN),
            gateway: gateway.map(|g| truncate(g, MAX_REASON_LEN)),
            reason: truncate(reason, MAX_REASON_LEN),
            payload_excerpt: excerpt.into_owned(),
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRow {
    pub id: String,
    pub status: Option<String>,
    pub status_ts_us: Option<i64>,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub id: String,
    pub gateway: String,
    pub transport: String,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub last_reading_us: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRow {
    pub gateway: String,
    pub seq: i64,
    pub device: String,
    pub time_us: i64,
    pub received_us: i64,
    pub measurements: String,
    pub meta: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    pub id: i64,
    pub received_us: i64,
    pub topic: String,
    pub gateway: Option<String>,
    pub reason: String,
    pub payload_excerpt: String,
}

/// Readings of one device with `since <= time_us < until`, ascending by
/// time, at most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingQuery {
    pub device: String,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub limit: usize,
}

/// A page of a listing ordered by id, starting after `after`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: usize,
}

/// Storage backend. Every method is async and never blocks the runtime.
pub trait Store: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    /// Stores a batch in one transaction; readings whose (gateway, seq)
    /// already exist are skipped and counted as duplicates.
    fn store_batch(&self, batch: IngestBatch) -> BoxFuture<'_, Result<StoreOutcome, StoreError>>;
    /// Records a status message unless a newer one (by `status_ts`) is known.
    fn record_status(&self, status: GatewayStatus) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Records a rejected payload, keeping only the newest [`REJECTED_KEEP`].
    fn record_rejected(&self, record: RejectedRecord) -> BoxFuture<'_, Result<(), StoreError>>;
    fn gateways(&self, q: ListQuery) -> BoxFuture<'_, Result<Vec<GatewayRow>, StoreError>>;
    fn devices(&self, q: ListQuery) -> BoxFuture<'_, Result<Vec<DeviceRow>, StoreError>>;
    fn device(&self, id: String) -> BoxFuture<'_, Result<Option<DeviceRow>, StoreError>>;
    fn readings(&self, q: ReadingQuery) -> BoxFuture<'_, Result<Vec<ReadingRow>, StoreError>>;
    /// Newest first.
    fn rejected(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RejectedRow>, StoreError>>;
    /// Cheap liveness check (`SELECT 1`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Finishes pending work and releases connections.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Per-device summary of the readings a batch inserted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceUpdate {
    pub id: String,
    pub transport: &'static str,
    pub last_reading_us: i64,
}

/// Groups inserted readings by device (first-seen order), keeping the
/// newest reading time, so each device is upserted once per batch.
pub(crate) fn device_updates<'a>(
    inserted: impl IntoIterator<Item = (&'a str, &'static str, i64)>,
) -> Vec<DeviceUpdate> {
    let mut out: Vec<DeviceUpdate> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for (device, transport, time_us) in inserted {
        match index.get(device) {
            Some(&i) => {
                let u: &mut DeviceUpdate = &mut out[i];
                u.last_reading_us = u.last_reading_us.max(time_us);
            }
            None => {
                index.insert(device.to_owned(), out.len());
                out.push(DeviceUpdate {
                    id: device.to_owned(),
                    transport,
                    last_reading_us: time_us,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn rejected_records_are_bounded() {
        let payload = vec![b'x'; 10_000];
        let reason = "r".repeat(5000);
        let r = RejectedRecord::new(1, "t", Some("gw"), &reason, &payload);
        assert_eq!(r.payload_excerpt.len(), MAX_EXCERPT_LEN);
        assert_eq!(r.reason.len(), MAX_REASON_LEN);
    }

    #[test]
    fn device_updates_keep_the_newest_time_per_device() {
        let u = device_updates([
            ("a", "coap", 5),
            ("b", "ble", 1),
            ("a", "coap", 9),
            ("a", "coap", 7),
        ]);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].id, "a");
        assert_eq!(u[0].last_reading_us, 9);
        assert_eq!(u[1].last_reading_us, 1);
    }
}
