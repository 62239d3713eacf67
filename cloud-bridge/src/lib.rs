//! # cloud-bridge
//!
//! The cloud side of gatewayd: consumes gateway batches from MQTT (a shared
//! subscription, so replicas split the load), stores every reading exactly
//! once (dedup on `(gateway, seq)`, ack after commit, persistent session),
//! tracks gateway online/offline status, and serves an HTTP JSON API.
//!
//! * [`config`]: the configuration tree and its validation;
//! * [`store`]: the [`store::Store`] trait, SQLite and PostgreSQL;
//! * [`consumer`]: the MQTT consumer (manual acks);
//! * [`broker`]: the optional embedded rumqttd broker;
//! * [`http`]: the API.
//!
//! Use [`start`] to run in-process (tests) and learn the bound HTTP
//! address, or [`run`] to run until a cancellation token fires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod broker;
pub mod config;
pub mod consumer;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod store;
pub mod timefmt;

pub use config::Config;
pub use metrics::{Counters, Metrics};

/// How long shutdown waits for in-flight batches to be stored and acked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the DISCONNECT to go out.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Microseconds since the UNIX epoch, now.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A running service.
pub struct Running {
    /// The address the HTTP API is bound to.
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    crash: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The token that stops the service.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops gracefully: stores and acknowledges what was received, then
    /// disconnects and closes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Stops at once, like a crash: nothing in flight is stored or
    /// acknowledged and no DISCONNECT is sent, so the broker redelivers
    /// the unacknowledged messages to the session later.
    pub async fn abort(self) {
        self.crash.cancel();
        let _ = self.task.await;
    }

    /// Waits until the service stops (its token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("cloud-bridge task panicked")?
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn store::Store>> {
    Ok(match config.storage.kind {
        config::StorageKind::Sqlite => {
            let s = store::sqlite::SqliteStore::open(&config.storage.sqlite_path)
                .await
                .with_context(|| {
                    format!(
                        "storage.sqlite_path: opening {}",
                        config.storage.sqlite_path.display()
                    )
                })?;
            Arc::new(s)
        }
        config::StorageKind::Postgres => {
            let url = config
                .storage
                .postgres_url
                .as_deref()
                .context("storage.postgres_url: required when storage.kind = \"postgres\"")?;
            let s = store::postgres::PostgresStore::open(url)
                .await
                .context("storage.postgres_url: connecting to PostgreSQL")?;
            Arc::new(s)
        }
    })
}

/// Validates the configuration, opens the store, starts the embedded
/// broker (if configured), binds the HTTP API and starts consuming. Returns
/// once everything is listening.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with(config, CancellationToken::new()).await
}

/// [`start`] with a caller-provided shutdown token.
pub async fn start_with(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    config.validate().context("invalid configuration")?;
    let store = open_store(&config).await?;
    tracing::info!(kind = store.kind(), "store ready");
    // With the embedded broker, the consumer connects to rumqttd's internal
    // listener; gateways are let in through the gate once it has subscribed.
    let mut config = config;
    let mut embedded = None;
    let started = async {
        if config.broker.embedded {
            let b = broker::start(&config)?;
            if config.uses_embedded_broker() {
                config.mqtt.url = Some(format!("mqtt://{}", b.internal));
                config.mqtt.shared_group = String::new();
            }
            embedded = Some(b);
        }
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
        let http_addr = listener
            .local_addr()
            .context("http.listen: local address")?;
        Ok::<_, anyhow::Error>((listener, http_addr))
    }
    .await;
    let (listener, http_addr) = match started {
        Ok(v) => v,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let metrics = Arc::new(Metrics::default());
    let consumer_token = shutdown.child_token();
    let consumer = match consumer::start(
        &config,
        store.clone(),
        metrics.clone(),
        consumer_token.clone(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            store.close().await;
            return Err(e).context("starting the MQTT consumer");
        }
    };
    if let Some(b) = embedded {
        let m = metrics.clone();
        let ready = async move {
            while !m.mqtt_connected.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::spawn(b.open_gate(ready, shutdown.child_token()));
    }
    let app = http::router(http::AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        client_id: config.mqtt.client_id.clone().unwrap_or_default(),
    });
    let http_token = CancellationToken::new();
    let http_stop = http_token.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });
    tracing::info!(%http_addr, "HTTP API listening");

    let token = shutdown.clone();
    let crash = CancellationToken::new();
    let crashed = crash.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => {}
            _ = crashed.cancelled() => {
                consumer.ingest_task.abort();
                consumer.poll_task.abort();
                http_task.abort();
                let _ = consumer.ingest_task.await;
                let _ = consumer.poll_task.await;
                let _ = http_task.await;
                tracing::warn!("aborted");
                return Ok(());
            }
        }
        tracing::info!("shutting down: storing in-flight batches");
        consumer_token.cancel();
        let mut ingest = consumer.ingest_task;
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut ingest)
            .await
            .is_err()
        {
            tracing::warn!("in-flight batches not stored in time; they will be redelivered");
            ingest.abort();
        }
        let mut poll = consumer.poll_task;
        if tokio::time::timeout(DISCONNECT_TIMEOUT, &mut poll)
            .await
            .is_err()
        {
            poll.abort();
        }
        http_token.cancel();
        let http_result = http_task.await;
        store.close().await;
        tracing::info!("stopped");
        match http_result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("HTTP server failed")),
            Err(e) => Err(anyhow::Error::new(e).context("HTTP server task panicked")),
        }
    });
    Ok(Running {
        http_addr,
        metrics,
        shutdown,
        crash,
        task,
    })
}

/// Runs the service until `shutdown` is cancelled, then stops gracefully.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start_with(config, shutdown).await?.wait().await
}
