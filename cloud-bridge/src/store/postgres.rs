//! PostgreSQL store. Two connections: one for writes (transactions), one
//! shared for reads; each is re-established on the next call after it
//! breaks. TLS to PostgreSQL is not supported yet (`sslmode=require` fails
//! with a clear error; use a local socket, a private network or a sidecar).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

use super::{
    device_updates, BoxFuture, DeviceRow, GatewayRow, GatewayStatus, IngestBatch, ListQuery,
    ReadingQuery, ReadingRow, RejectedRecord, RejectedRow, Store, StoreError, StoreOutcome,
    REJECTED_KEEP,
};

/// Serializes schema migrations across replicas starting together.
const MIGRATION_LOCK_KEY: i64 = 0x6761_7465_7761_7964; // "gatewayd"

/// Idempotent, append-only migrations: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE gateways (
        id TEXT PRIMARY KEY,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        status TEXT,
        status_ts BIGINT
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,
        transport TEXT NOT NULL,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        last_reading_us BIGINT
    );
    -- TimescaleDB-ready: time_us is the time column (integer microseconds)
    -- and readings has no foreign keys. A hypertable needs the partitioning
    -- column in every unique index, so converting is:
    --   ALTER TABLE readings DROP CONSTRAINT readings_pkey,
    --     ADD PRIMARY KEY (gateway, seq, time_us);
    --   SELECT create_hypertable('readings', by_range('time_us', 86400000000),
    --     migrate_data => true);
    -- Deduplication is unchanged: a redelivered reading carries the same
    -- time, and inserts use ON CONFLICT DO NOTHING without a target.
    CREATE TABLE readings (
        gateway TEXT NOT NULL,
        seq BIGINT NOT NULL,
        device TEXT NOT NULL,
        time_us BIGINT NOT NULL,
        received_us BIGINT NOT NULL,
        measurements JSONB NOT NULL,
        meta JSONB NOT NULL,
        PRIMARY KEY (gateway, seq)
    );
    CREATE INDEX readings_device_time ON readings (device, time_us);
    CREATE TABLE rejected (
        id BIGSERIAL PRIMARY KEY,
        received_us BIGINT NOT NULL,
        topic TEXT NOT NULL,
        gateway TEXT,
        reason TEXT NOT NULL,
        payload_excerpt TEXT NOT NULL
    );",
)];

pub struct PostgresStore {
    config: tokio_postgres::Config,
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("host", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_us BIGINT NOT NULL
        )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    if i64::from(current) > latest {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this cloud-bridge supports ({latest})"
        )));
    }
    for (version, sql) in MIGRATIONS {
        let v = i32::try_from(*version).map_err(|_| {
            StoreError::Corrupt(format!("migration version {version} out of range"))
        })?;
        let applied = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&v])
            .await?
            .is_some();
        if !applied {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_us) VALUES ($1, $2)",
                &[&v, &crate::now_us()],
            )
            .await?;
            tracing::info!(version, "applied PostgreSQL schema migration");
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn store_batch(client: &mut Client, batch: &IngestBatch) -> Result<StoreOutcome, StoreError> {
    // Sorted so concurrent transactions (replicas) take row locks in the
    // same order and cannot deadlock each other.
    let mut readings: Vec<_> = batch.readings.iter().collect();
    readings.sort_by_key(|r| r.seq);
    let seqs: Vec<i64> = readings.iter().map(|r| r.seq).collect();
    let devices: Vec<&str> = readings.iter().map(|r| r.device.as_str()).collect();
    let times: Vec<i64> = readings.iter().map(|r| r.time_us).collect();
    let measurements: Vec<&str> = readings.iter().map(|r| r.measurements.as_str()).collect();
    let metas: Vec<&str> = readings.iter().map(|r| r.meta.as_str()).collect();
    let transports: HashMap<&str, &'static str> = readings
        .iter()
        .map(|r| (r.device.as_str(), r.transport))
        .collect();

    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO gateways (id, first_seen, last_seen) VALUES ($1, $2, $2)
         ON CONFLICT (id) DO UPDATE SET last_seen = GREATEST(gateways.last_seen, EXCLUDED.last_seen)",
        &[&batch.gateway, &batch.received_us],
    )
    .await?;
    let rows = tx
        .query(
            "INSERT INTO readings (gateway, seq, device, time_us, received_us, measurements, meta)
             SELECT $1, u.seq, u.device, u.time_us, $2, u.m::jsonb, u.x::jsonb
             FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[])
                  AS u(seq, device, time_us, m, x)
             ON CONFLICT DO NOTHING
             RETURNING device, time_us",
            &[
                &batch.gateway,
                &batch.received_us,
                &seqs,
                &devices,
                &times,
                &measurements,
                &metas,
            ],
        )
        .await?;
    let inserted: Vec<(String, i64)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<PgResult<_>>()?;
    let outcome = StoreOutcome {
        inserted: inserted.len() as u64,
        duplicates: (batch.readings.len() - inserted.len()) as u64,
    };
    let mut updates = device_updates(inserted.iter().map(|(d, t)| {
        (
            d.as_str(),
            transports.get(d.as_str()).copied().unwrap_or("unknown"),
            *t,
        )
    }));
    updates.sort_by(|a, b| a.id.cmp(&b.id));
    if !updates.is_empty() {
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        let kinds: Vec<&str> = updates.iter().map(|u| u.transport).collect();
        let lasts: Vec<i64> = updates.iter().map(|u| u.last_reading_us).collect();
        tx.execute(
            "INSERT INTO devices (id, gateway, transport, first_seen, last_seen, last_reading_us)
             SELECT u.id, $1, u.transport, $2, $2, u.last
             FROM unnest($3::text[], $4::text[], $5::bigint[]) AS u(id, transport, last)
             ON CONFLICT (id) DO UPDATE SET
                gateway = EXCLUDED.gateway,
                transport = EXCLUDED.transport,
                last_seen = GREATEST(devices.last_seen, EXCLUDED.last_seen),
                last_reading_us = GREATEST(devices.last_reading_us, EXCLUDED.last_reading_us)",
            &[&batch.gateway, &batch.received_us, &ids, &kinds, &lasts],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

type PgResult<T> = Result<T, tokio_postgres::Error>;

fn gateway_row(r: &Row) -> PgResult<GatewayRow> {
    Ok(GatewayRow {
        id: r.try_get(0)?,
        status: r.try_get(1)?,
        status_ts_us: r.try_get(2)?,
        first_seen_us: r.try_get(3)?,
        last_seen_us: r.try_get(4)?,
    })
}

fn device_row(r: &Row) -> PgResult<DeviceRow> {
    Ok(DeviceRow {
        id: r.try_get(0)?,
        gateway: r.try_get(1)?,
        transport: r.try_get(2)?,
        first_seen_us: r.try_get(3)?,
        last_seen_us: r.try_get(4)?,
        last_reading_us: r.try_get(5)?,
    })
}

fn reading_row(r: &Row) -> PgResult<ReadingRow> {
    Ok(ReadingRow {
        gateway: r.try_get(0)?,
        seq: r.try_get(1)?,
        device: r.try_get(2)?,
        time_us: r.try_get(3)?,
        received_us: r.try_get(4)?,
        measurements: r.try_get(5)?,
        meta: r.try_get(6)?,
    })
}

fn rejected_row(r: &Row) -> PgResult<RejectedRow> {
    Ok(RejectedRow {
        id: r.try_get(0)?,
        received_us: r.try_get(1)?,
        topic: r.try_get(2)?,
        gateway: r.try_get(3)?,
        reason: r.try_get(4)?,
        payload_excerpt: r.try_get(5)?,
    })
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Connects, migrates the schema and returns the store.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("cloud-bridge");
        let mut writer = connect(&config).await?;
        migrate(&mut writer).await?;
        let reader = connect(&config).await?;
        Ok(PostgresStore {
            config,
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(Some(Arc::new(reader))),
        })
    }

    async fn reader(&self) -> Result<Arc<Client>, StoreError> {
        let mut guard = self.reader.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(connect(&self.config).await?);
        *guard = Some(c.clone());
        Ok(c)
    }
}

impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn store_batch(&self, batch: IngestBatch) -> BoxFuture<'_, Result<StoreOutcome, StoreError>> {
        Box::pin(async move {
            let mut guard = self.writer.lock().await;
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(connect(&self.config).await?);
            }
            let client = guard.as_mut().ok_or(StoreError::Closed)?;
            store_batch(client, &batch).await
        })
    }

    fn record_status(&self, s: GatewayStatus) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut guard = self.writer.lock().await;
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(connect(&self.config).await?);
            }
            let client = guard.as_mut().ok_or(StoreError::Closed)?;
            client
                .execute(
                    "INSERT INTO gateways (id, first_seen, last_seen, status, status_ts)
                     VALUES ($1, $2, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, status_ts = EXCLUDED.status_ts
                     WHERE gateways.status_ts IS NULL OR EXCLUDED.status_ts IS NULL
                        OR EXCLUDED.status_ts >= gateways.status_ts",
                    &[&s.gateway, &s.received_us, &s.state, &s.status_ts_us],
                )
                .await?;
            Ok(())
        })
    }

    fn record_rejected(&self, r: RejectedRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut guard = self.writer.lock().await;
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(connect(&self.config).await?);
            }
            let client = guard.as_mut().ok_or(StoreError::Closed)?;
            let tx = client.transaction().await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO rejected (received_us, topic, gateway, reason, payload_excerpt)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &r.received_us,
                        &r.topic,
                        &r.gateway,
                        &r.reason,
                        &r.payload_excerpt,
                    ],
                )
                .await?
                .try_get(0)?;
            tx.execute(
                "DELETE FROM rejected WHERE id <= $1",
                &[&id.saturating_sub(REJECTED_KEEP)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn gateways(&self, q: ListQuery) -> BoxFuture<'_, Result<Vec<GatewayRow>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT id, status, status_ts, first_seen, last_seen FROM gateways
                     WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2",
                    &[&q.after, &limit_param(q.limit)],
                )
                .await?;
            Ok(rows.iter().map(gateway_row).collect::<PgResult<_>>()?)
        })
    }

    fn devices(&self, q: ListQuery) -> BoxFuture<'_, Result<Vec<DeviceRow>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT id, gateway, transport, first_seen, last_seen, last_reading_us FROM devices
                     WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2",
                    &[&q.after, &limit_param(q.limit)],
                )
                .await?;
            Ok(rows.iter().map(device_row).collect::<PgResult<_>>()?)
        })
    }

    fn device(&self, id: String) -> BoxFuture<'_, Result<Option<DeviceRow>, StoreError>> {
        Box::pin(async move {
            let row = self
                .reader()
                .await?
                .query_opt(
                    "SELECT id, gateway, transport, first_seen, last_seen, last_reading_us FROM devices
                     WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok(row.as_ref().map(device_row).transpose()?)
        })
    }

    fn readings(&self, q: ReadingQuery) -> BoxFuture<'_, Result<Vec<ReadingRow>, StoreError>> {
        Box::pin(async move {
            let sql = if q.until_us.is_some() {
                "SELECT gateway, seq, device, time_us, received_us, measurements::text, meta::text
                 FROM readings WHERE device = $1 AND time_us >= $2 AND time_us < $3
                 ORDER BY time_us, gateway, seq LIMIT $4"
            } else {
                "SELECT gateway, seq, device, time_us, received_us, measurements::text, meta::text
                 FROM readings WHERE device = $1 AND time_us >= $2 AND time_us <= $3
                 ORDER BY time_us, gateway, seq LIMIT $4"
            };
            let rows = self
                .reader()
                .await?
                .query(
                    sql,
                    &[
                        &q.device,
                        &q.since_us.unwrap_or(i64::MIN),
                        &q.until_us.unwrap_or(i64::MAX),
                        &limit_param(q.limit),
                    ],
                )
                .await?;
            Ok(rows.iter().map(reading_row).collect::<PgResult<_>>()?)
        })
    }

    fn rejected(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RejectedRow>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .reader()
                .await?
                .query(
                    "SELECT id, received_us, topic, gateway, reason, payload_excerpt FROM rejected
                     ORDER BY id DESC LIMIT $1",
                    &[&limit_param(limit)],
                )
                .await?;
            Ok(rows.iter().map(rejected_row).collect::<PgResult<_>>()?)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.reader().await?.simple_query("SELECT 1").await?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.writer.lock().await.take();
            self.reader.lock().await.take();
        })
    }
}
