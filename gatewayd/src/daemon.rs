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

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gatewayd_adapter_lorawan::LoraRegistry;
use gatewayd_buffer::{BufferConfig, SqliteStore};
use gatewayd_core::{
    command_channel, ingest_channel, CommandSender, HealthHandle, Ingest, ReadingSink,
    SourceContext, SourceState, StatusHandle,
};
use gatewayd_devices::DeviceRegistry;
use gatewayd_edge::{DeployDir, EdgeRuntime};
use gatewayd_uplink::{Uplink, UplinkStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{BusChoice, Config};
use crate::control::{self, ControlRequest, Handles, LogControl, Shared, SharedParts, SourceEntry};
use crate::pipeline::{self, BufferHandle, EdgeStage, Signals, WriterCounters, WriterStages};
use crate::sources::{self, SourceExit};

/// How the process around the daemon wants it run (everything but the
/// config tree itself).
#[derive(Clone, Default)]
pub struct RunOptions {
    /// The config file the daemon was started with: where D-Bus
    /// `SetConfig` persists and `Reload`/`SIGHUP` re-read. `None`: built-in
    /// defaults, nothing can be persisted.
    pub config_path: Option<PathBuf>,
    /// Overrides `dbus.bus` (`gatewayd --bus`).
    pub bus: Option<BusChoice>,
    /// Sets the log filter at run time (`log.level`).
    pub log: Option<LogControl>,
}

/// The running sources: one task, stop token and health state each.
struct Sources {
    ingest: mpsc::Sender<Ingest>,
    /// `gateway.data_dir`, for adapters that keep state (`lorawan`).
    data_dir: PathBuf,
    stop: CancellationToken,
    tasks: JoinSet<SourceExit>,
    running: BTreeMap<String, Running>,
    published: watch::Sender<Vec<SourceEntry>>,
}

struct Running {
    table: toml::Table,
    kind: String,
    stop: CancellationToken,
    abort: AbortHandle,
    state: watch::Receiver<SourceState>,
    status: watch::Receiver<serde_json::Value>,
    commands: CommandSender,
}

/// Commands queued per source before callers get `Busy`.
const COMMAND_QUEUE: usize = 8;

impl Sources {
    fn start(&mut self, name: &str, table: &toml::Table) -> anyhow::Result<()> {
        let (health, state) = HealthHandle::new();
        let (status_handle, status) = StatusHandle::new();
        let (commands, inbox) = command_channel(COMMAND_QUEUE);
        let stop = self.stop.child_token();
        let ctx = SourceContext {
            name: name.to_owned(),
            sink: ReadingSink::new(self.ingest.clone(), name),
            shutdown: stop.clone(),
            health,
            status: status_handle,
            commands: inbox,
        };
        let abort = sources::spawn(name, table, &self.data_dir, ctx, &mut self.tasks)?;
        let kind = table
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        self.running.insert(
            name.to_owned(),
            Running {
                table: table.clone(),
                kind,
                stop,
                abort,
                state,
                status,
                commands,
            },
        );
        Ok(())
    }

    fn publish(&self) {
        let list = self
            .running
            .iter()
            .map(|(name, r)| SourceEntry {
                name: name.clone(),
                kind: r.kind.clone(),
                state: r.state.clone(),
                status: r.status.clone(),
                commands: r.commands.clone(),
            })
            .collect();
        self.published.send_replace(list);
    }

    fn log_exit(done: Result<SourceExit, tokio::task::JoinError>) {
        match done {
            Ok((name, Ok(()))) => info!(source = %name, "source stopped"),
            Ok((name, Err(e))) => error!(source = %name, error = %e, "source failed"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => error!(error = %e, "source task panicked"),
        }
    }

    /// Makes the running set match `wanted`: stops removed and changed
    /// sources (waiting up to 10 s for each to drain), then starts added
    /// and changed ones. Returns the names touched.
    async fn apply(&mut self, wanted: &BTreeMap<String, toml::Table>) -> Vec<String> {
        let stop: Vec<String> = self
            .running
            .iter()
            .filter(|(n, r)| wanted.get(*n) != Some(&r.table))
            .map(|(n, _)| n.clone())
            .collect();
        let start: Vec<String> = wanted
            .iter()
            .filter(|(n, t)| self.running.get(*n).map(|r| &r.table) != Some(t))
            .map(|(n, _)| n.clone())
            .collect();
        let mut waiting: Vec<(String, AbortHandle)> = Vec::new();
        for n in &stop {
            if let Some(r) = self.running.remove(n) {
                info!(source = %n, "stopping source for its new configuration");
                r.stop.cancel();
                if !r.abort.is_finished() {
                    waiting.push((n.clone(), r.abort));
                }
            }
        }
        // Wait for them (their sockets must be closed before a successor
        // binds the same address).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while waiting.iter().any(|(_, a)| !a.is_finished()) {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(done)) => Self::log_exit(done),
                Ok(None) => break,
                Err(_) => {
                    for (n, a) in &waiting {
                        if !a.is_finished() {
                            warn!(source = %n, "source did not stop within 10 s; aborting it");
                            a.abort();
                        }
                    }
                    break;
                }
            }
        }
        for n in &start {
            if let Some(t) = wanted.get(n) {
                if let Err(e) = self.start(n, t) {
                    // Validated before the file was written; only a
                    // resource problem gets here.
                    error!(source = %n, error = %e, "cannot start source");
                }
            }
        }
        self.publish();
        let mut touched: Vec<String> = stop.into_iter().chain(start).collect();
        touched.sort();
        touched.dedup();
        touched
    }
}

/// Runs gatewayd with defaults for everything but the config (no config
/// file to persist to, no log reload): tests and embedding.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    run_with(config, RunOptions::default(), shutdown).await
}

/// Health of the running daemon, for the periodic log line.
struct Health {
    uplink: watch::Receiver<UplinkStatus>,
    sources: watch::Receiver<Vec<SourceEntry>>,
    buffer: BufferHandle,
}

/// Runs gatewayd until `shutdown` completes, then drains and returns.
pub async fn run_with(
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let gateway_id = config.gateway.id.clone();
    let data_dir = config.gateway.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("gateway.data_dir: cannot create {}", data_dir.display()))?;
    // Every source section is checked before anything starts, so a bad one
    // is a start-up error naming its key rather than a half-started daemon.
    for (name, table) in &config.sources {
        sources::check(name, table)?;
    }
    let bus = match &opts.bus {
        Some(b) => b.clone(),
        None => BusChoice::parse(&config.dbus.bus).map_err(|e| anyhow::anyhow!("dbus.bus: {e}"))?,
    };

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

    // The device registry: persisted; without its file gatewayd still runs
    // (devices are then announced again after a restart).
    let devices_path = data_dir.join("devices.db");
    let devices_cfg = config.devices.clone();
    let devices = match tokio::task::spawn_blocking({
        let (p, c) = (devices_path.clone(), devices_cfg.clone());
        move || DeviceRegistry::open(&p, c)
    })
    .await
    .context("opening the device registry")?
    {
        Ok(d) => d,
        Err(e) => {
            error!(error = %e, "device registry not persisted this run");
            DeviceRegistry::in_memory(devices_cfg)
        }
    };
    let devices_stop = CancellationToken::new();
    let devices_task = tokio::spawn(devices.clone().run(devices_stop.clone()));

    // The LoRaWAN device registry (keys: 0600).
    let lora_path = data_dir.join("lorawan.db");
    let lora = match tokio::task::spawn_blocking(move || LoraRegistry::open(&lora_path))
        .await
        .context("opening the LoRaWAN registry")?
    {
        Ok(r) => Some(r),
        Err(e) => {
            error!(error = %e, "LoRaWAN device registry unavailable");
            None
        }
    };

    // The uplink.
    let uplink = Uplink::new(config.uplink.clone(), &gateway_id).context("uplink")?;
    let retry = uplink.retry_handle();
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
    let mut apps = None;
    if config.edge_apps.enabled {
        let paths = config.edge_paths();
        let cfg = config.edge_apps.clone();
        let p = paths.clone();
        let rt = tokio::task::spawn_blocking(move || EdgeRuntime::start(cfg, &p))
            .await
            .context("edge_apps: starting the runtime")?
            .context("edge_apps")?;
        info!(
            apps = rt.handle.list().len(),
            deploy_dir = %paths.deploy_dir.display(),
            "edge-app runtime running"
        );
        let deploy = DeployDir::spawn(
            rt.handle.clone(),
            paths.deploy_dir.clone(),
            Duration::from_millis(config.edge_apps.scan_interval_ms),
            edge_stop.clone(),
        );
        apps = Some(control::Apps {
            handle: rt.handle.clone(),
            deploy,
        });
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
        WriterStages {
            edge: edge_stage,
            devices: Some(devices.clone()),
        },
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
    let (published, sources_rx) = watch::channel(Vec::new());
    let mut srcs = Sources {
        ingest: ingest_tx,
        data_dir: data_dir.clone(),
        stop: CancellationToken::new(),
        tasks: JoinSet::new(),
        running: BTreeMap::new(),
        published,
    };
    for (name, table) in &config.sources {
        srcs.start(name, table)?;
    }
    srcs.publish();
    let health = Health {
        uplink: status_rx.clone(),
        sources: sources_rx.clone(),
        buffer: buffer.clone(),
    };
    // Ready once every source has left `Starting` (bound its sockets …), so
    // "gatewayd running" means devices can be served. Bounded: a source
    // that takes longer is reported by the health log, not waited for.
    let ready = async {
        for r in srcs.running.values() {
            let mut st = r.state.clone();
            let _ = st.wait_for(|s| *s != SourceState::Starting).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .is_err()
    {
        warn!("a source is still starting after 10 s");
    }

    // The control plane: D-Bus and SIGHUP.
    let (control_tx, mut control_rx) = mpsc::channel::<ControlRequest>(4);
    let shared = Shared::new(SharedParts {
        config: config.clone(),
        config_path: opts.config_path.clone(),
        io: Handles {
            uplink: status_rx,
            retry,
            buffer: buffer.clone(),
            sources: sources_rx,
            devices: devices.clone(),
            lora,
            apps,
        },
        control: control_tx,
        log: opts.log.clone(),
    });
    let control_stop = CancellationToken::new();
    let mut dbus_task = None;
    if config.dbus.enabled {
        dbus_task = Some(tokio::spawn(crate::dbus::serve(
            shared.clone(),
            bus,
            config.dbus.write_group.clone(),
            config.buffer.high_water_percent,
            control_stop.clone(),
        )));
    }
    tokio::spawn(reload_on_sighup(shared.clone(), control_stop.clone()));
    info!(gateway = %gateway_id, sources = srcs.running.len(), "gatewayd running");

    // Run until shutdown.
    tokio::pin!(shutdown);
    let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
    stats_tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(done) = srcs.tasks.join_next() => {
                Sources::log_exit(done);
                if srcs.tasks.is_empty() {
                    warn!("no source is running");
                }
            }
            Some(req) = control_rx.recv() => match req {
                ControlRequest::ApplySources { sources, reply } => {
                    let touched = srcs.apply(&sources).await;
                    let _ = reply.send(touched);
                }
            },
            _ = stats_tick.tick() => log_health(&health),
        }
    }

    // 0. The control plane goes first: no changes during shutdown.
    control_stop.cancel();
    if let Some(t) = dbus_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    drop(shared);
    // 1. Sources drain.
    info!("shutting down: stopping sources");
    srcs.stop.cancel();
    let Sources {
        ingest, mut tasks, ..
    } = srcs;
    drop(ingest);
    let sources_done = async {
        while let Some(done) = tasks.join_next().await {
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
        tasks.abort_all();
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
    // 5. The device registry persists what changed.
    devices_stop.cancel();
    let _ = devices_task.await;
    // 6. The edge-app runtime stops when its last handle goes (its state is
    // in apps.db already).
    if let Some(t) = edge_thread {
        let joined = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || t.join()),
        )
        .await;
        if joined.is_err() {
            warn!("edge-app runtime did not stop within 10 s");
        }
    }
    // 7. Buffer closes when the last handle goes.
    let left = buffer.stats();
    drop(health);
    drop(buffer);
    let _ = tokio::task::spawn_blocking(move || buffer_thread.join()).await;
    info!(buffered = left.readings, "gatewayd stopped");
    Ok(())
}

/// `SIGHUP` re-reads the config file, like D-Bus `Reload`.
async fn reload_on_sighup(shared: Arc<Shared>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot install the SIGHUP handler");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                if let Err(e) = shared.reload().await {
                    error!(error = %e, "reload refused; the running configuration is kept");
                }
            }
        }
    }
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
    for e in h.sources.borrow().iter() {
        let st = e.state.borrow().clone();
        if st != SourceState::Running {
            warn!(source = %e.name, state = ?st, "source not running");
        }
    }
}
