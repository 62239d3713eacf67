//! Wiring: builds the pipeline from the config, runs it, and shuts it down
//! in order so that nothing in flight is lost.
//!
//! Shutdown order (on the `shutdown` future):
//! 1. sources stop taking input, answer what they have in flight, return;
//! 2. the ingest queue closes; the writer commits what is queued, returns;
//! 3. the forwarder keeps forwarding for `forwarder.drain_timeout_secs`
//!    (or until the buffer is empty and every batch is acknowledged);
//! 4. the uplink publishes its retained offline status and disconnects;
//! 5. the buffer thread closes SQLite.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use gatewayd_adapter_coap::CoapSource;
use gatewayd_buffer::{BufferConfig, SqliteStore};
use gatewayd_core::{
    ingest_channel, HealthHandle, ReadingSink, Source, SourceContext, SourceState,
};
use gatewayd_edge::{run_deploy_dir, EdgeRuntime};
use gatewayd_uplink::{Uplink, UplinkStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::pipeline::{self, BufferHandle, EdgeStage, Signals, WriterCounters};

/// Builds one source from its `[sources.<name>]` table and spawns it.
fn spawn_source<S: Source>(
    key: &str,
    table: &toml::Table,
    ctx: SourceContext,
    tasks: &mut JoinSet<(String, Result<(), gatewayd_core::SourceError>)>,
) -> anyhow::Result<()> {
    let mut table = table.clone();
    table.remove("kind");
    let cfg: S::Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                anyhow::anyhow!("{key}: {msg}")
            } else {
                anyhow::anyhow!("{key}.{path}: {msg}")
            }
        })?;
    let source = S::build(key, cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = ctx.name.clone();
    tasks.spawn(async move {
        let r = source.run(ctx).await;
        (name, r)
    });
    Ok(())
}

/// Health of the running daemon, for logs now and D-Bus later.
#[derive(Clone)]
pub struct Health {
    pub uplink: watch::Receiver<UplinkStatus>,
    pub sources: Vec<(String, watch::Receiver<SourceState>)>,
    pub buffer: BufferHandle,
}

/// Runs gatewayd until `shutdown` completes, then drains and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let gateway_id = config.gateway.id.clone();
    std::fs::create_dir_all(&config.gateway.data_dir).with_context(|| {
        format!(
            "gateway.data_dir: cannot create {}",
            config.gateway.data_dir.display()
        )
    })?;

    // The buffer.
    let buffer_cfg = BufferConfig {
        path: config.buffer_path(),
        max_bytes: config.buffer.max_bytes,
        when_full: config.buffer.when_full,
        sync: config.buffer.sync,
    };
    let store = SqliteStore::open(&buffer_cfg)
        .with_context(|| format!("buffer.path: cannot open {}", buffer_cfg.path.display()))?;
    let (buffer, buffer_thread) = BufferHandle::spawn(store).context("starting buffer thread")?;
    let stats = buffer.stats();
    info!(
        gateway = %gateway_id,
        buffered = stats.readings,
        next_seq = stats.next_seq,
        path = %buffer_cfg.path.display(),
        "buffer open"
    );

    // The uplink.
    let uplink = Uplink::new(config.uplink.clone(), &gateway_id).context("uplink")?;
    // Capacity 1: the forwarder builds a batch only when the uplink is about
    // to take it, so readings buffered during an outage leave in full
    // batches instead of the one-reading batches queued while disconnected.
    let (batch_tx, batch_rx) = mpsc::channel(1);
    let (event_tx, event_rx) = mpsc::channel(1024);
    let (status_tx, status_rx) = watch::channel(UplinkStatus::default());
    let uplink_stop = CancellationToken::new();
    let uplink_task = tokio::spawn(uplink.run(batch_rx, event_tx, status_tx, uplink_stop.clone()));

    // Edge apps: loaded (from the compiled cache when possible) before any
    // reading is accepted, so no reading can bypass them after a restart.
    let edge_stop = CancellationToken::new();
    let mut edge_thread = None;
    let mut edge_stage = None;
    let mut edge_handle = None;
    if config.edge_apps.enabled {
        let paths = config.edge_paths();
        let cfg = config.edge_apps.clone();
        let p = paths.clone();
        let rt = tokio::task::spawn_blocking(move || EdgeRuntime::start(cfg, &p))
            .await
            .context("edge_apps: starting the runtime")?
            .context("edge_apps")?;
        let apps = rt.handle.list();
        info!(
            apps = apps.len(),
            deploy_dir = %paths.deploy_dir.display(),
            "edge-app runtime running"
        );
        tokio::spawn(run_deploy_dir(
            rt.handle.clone(),
            paths.deploy_dir.clone(),
            Duration::from_millis(config.edge_apps.scan_interval_ms),
            edge_stop.clone(),
        ));
        edge_handle = Some(rt.handle.clone());
        edge_stage = Some(EdgeStage {
            handle: rt.handle,
            derived: rt.derived,
        });
        edge_thread = Some(rt.thread);
    }

    // Writer and forwarder.
    let signals = Arc::new(Signals::default());
    let (ingest_tx, ingest_rx) = ingest_channel(config.buffer.queue_capacity);
    let writer_abort = CancellationToken::new();
    let writer_task = tokio::spawn(pipeline::run_writer(
        ingest_rx,
        buffer.clone(),
        config.buffer.clone(),
        signals.clone(),
        Arc::new(WriterCounters::default()),
        writer_abort.clone(),
        edge_stage,
    ));
    let forwarder_stop = CancellationToken::new();
    let forwarder_task = tokio::spawn(pipeline::run_forwarder(
        buffer.clone(),
        gateway_id.clone(),
        config.forwarder.clone(),
        batch_tx,
        event_rx,
        signals.clone(),
        forwarder_stop.clone(),
    ));

    // Sources.
    let sources_stop = CancellationToken::new();
    let mut sources = JoinSet::new();
    let mut health_sources = Vec::new();
    for (name, table) in &config.sources {
        let key = format!("sources.{name}");
        let kind = table
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let (health, state) = HealthHandle::new();
        let ctx = SourceContext {
            name: name.clone(),
            sink: ReadingSink::new(ingest_tx.clone(), name),
            shutdown: sources_stop.child_token(),
            health,
        };
        match kind {
            CoapSource::KIND => spawn_source::<CoapSource>(&key, table, ctx, &mut sources)?,
            other => bail!(
                "{key}.kind: unknown source kind {other:?} (this build supports: {})",
                CoapSource::KIND
            ),
        }
        health_sources.push((name.clone(), state));
    }
    drop(ingest_tx);
    let health = Health {
        uplink: status_rx,
        sources: health_sources,
        buffer: buffer.clone(),
    };
    // Ready once every source has left `Starting` (bound its sockets …), so
    // "gatewayd running" means devices can be served. Bounded: a source
    // that takes longer is reported by the health log, not waited for.
    let ready = async {
        for (_, state) in &health.sources {
            let mut st = state.clone();
            let _ = st.wait_for(|s| *s != SourceState::Starting).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .is_err()
    {
        warn!("a source is still starting after 10 s");
    }
    info!(gateway = %gateway_id, sources = sources.len(), "gatewayd running");

    // Run until shutdown (or a source dies).
    tokio::pin!(shutdown);
    let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
    stats_tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(done) = sources.join_next() => {
                match done {
                    Ok((name, Ok(()))) => warn!(source = %name, "source stopped"),
                    Ok((name, Err(e))) => error!(source = %name, error = %e, "source failed"),
                    Err(e) => error!(error = %e, "source task panicked"),
                }
                if sources.is_empty() {
                    warn!("no source is running");
                }
            }
            _ = stats_tick.tick() => log_health(&health),
        }
    }

    // 1. Sources drain.
    info!("shutting down: stopping sources");
    sources_stop.cancel();
    let sources_done = async {
        while let Some(done) = sources.join_next().await {
            if let Ok((name, Err(e))) = done {
                warn!(source = %name, error = %e, "source ended with an error");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), sources_done)
        .await
        .is_err()
    {
        warn!("sources did not stop within 10 s; aborting them");
        sources.abort_all();
    }
    edge_stop.cancel();
    // 2. Writer commits what is queued.
    let writer_done = tokio::time::timeout(Duration::from_secs(10), writer_task).await;
    if writer_done.is_err() {
        warn!("buffer writer did not finish within 10 s; aborting");
        writer_abort.cancel();
    }
    // 3. Forward what we can within the drain timeout.
    let drain = Duration::from_secs(config.forwarder.drain_timeout_secs);
    let deadline = tokio::time::Instant::now() + drain;
    let mut status = health.uplink.clone();
    while tokio::time::Instant::now() < deadline {
        let s = buffer.stats();
        if s.readings == 0 {
            break;
        }
        if !status.borrow().connected {
            info!(
                buffered = s.readings,
                "uplink not connected; leaving readings buffered"
            );
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = status.changed() => {}
        }
    }
    forwarder_stop.cancel();
    match forwarder_task.await {
        Ok(Err(e)) => warn!(error = %e, "forwarder ended with an error"),
        Err(e) => warn!(error = %e, "forwarder task failed"),
        Ok(Ok(())) => {}
    }
    // 4. Uplink: offline status, disconnect.
    uplink_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(5), uplink_task).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "uplink ended with an error"),
        Err(_) => warn!("uplink did not stop within 5 s"),
        _ => {}
    }
    // 5. The edge-app runtime stops when its last handle goes (its state is
    // in apps.db already).
    drop(edge_handle);
    if let Some(t) = edge_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    // 6. Buffer closes when the last handle goes.
    let left = buffer.stats();
    drop(health);
    drop(buffer);
    let _ = tokio::task::spawn_blocking(move || buffer_thread.join()).await;
    info!(buffered = left.readings, "gatewayd stopped");
    Ok(())
}

fn log_health(h: &Health) {
    let s = h.buffer.stats();
    let u = h.uplink.borrow().clone();
    info!(
        buffered = s.readings,
        buffered_bytes = s.bytes,
        next_seq = s.next_seq,
        dropped_oldest = s.dropped_oldest,
        dropped_newest = s.dropped_newest,
        uplink_connected = u.connected,
        in_flight = u.in_flight,
        "health"
    );
    for (name, state) in &h.sources {
        let st = state.borrow().clone();
        if st != SourceState::Running {
            warn!(source = %name, state = ?st, "source not running");
        }
    }
}
