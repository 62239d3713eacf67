//! The runtime thread and its async handle.
//!
//! wasmtime calls are CPU work, so apps run on one dedicated OS thread
//! (`edge-apps`) that owns the [`Stage`] and `apps.db`; async code talks to
//! it through a bounded channel and gets answers on oneshots. Compiling a
//! bundle happens on tokio's blocking pool, not on this thread, so a deploy
//! never stalls the pipeline; only the swap itself is done here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gatewayd_artifact::{open_verified, Algorithm, BundleLimits, TrustStore};
use gatewayd_model::Reading;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::app::Prepared;
use crate::config::EdgeConfig;
use crate::db::AppsDb;
use crate::engine::{Compiler, EpochTicker};
use crate::error::EdgeError;
use crate::stage::{AppEvent, AppEventKind, AppStatus, Derived, Processed, Stage};

enum Request {
    Process {
        groups: Vec<Vec<Reading>>,
        reply: oneshot::Sender<Processed>,
    },
    Committed(u64),
    Abandoned(u64),
    Install {
        prepared: Box<Prepared>,
        bundle: Arc<Vec<u8>>,
        reply: oneshot::Sender<Result<(), EdgeError>>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<Result<(), EdgeError>>,
    },
    Tick,
}

/// Paths derived from the configuration.
#[derive(Debug, Clone)]
pub struct EdgePaths {
    pub state_dir: PathBuf,
    pub deploy_dir: PathBuf,
}

impl EdgePaths {
    /// `default_state` is used when `edge_apps.state_dir` is not set.
    pub fn resolve(cfg: &EdgeConfig, default_state: &Path) -> Self {
        let state_dir = cfg
            .state_dir
            .clone()
            .unwrap_or_else(|| default_state.to_path_buf());
        let deploy_dir = cfg
            .deploy_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("deploy"));
        EdgePaths {
            state_dir,
            deploy_dir,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.state_dir.join("apps.db")
    }

    pub fn bundles(&self) -> PathBuf {
        self.state_dir.join("bundles")
    }

    pub fn cache(&self) -> PathBuf {
        self.state_dir.join("cache")
    }
}

/// Loads the trust store the configuration names.
pub fn trust_store(cfg: &EdgeConfig) -> Result<TrustStore, EdgeError> {
    let mut required = Vec::new();
    for a in &cfg.require_algorithms {
        required.push(a.parse::<Algorithm>().map_err(|_| {
            EdgeError::Config(format!(
                "edge_apps.require_algorithms: unknown algorithm {a:?} (expected ed25519 or ml-dsa-65)"
            ))
        })?);
    }
    Ok(TrustStore::load(&cfg.trusted_keys, &required)?)
}

/// The async side: cheap to clone.
#[derive(Clone)]
pub struct EdgeHandle {
    tx: mpsc::Sender<Request>,
    compiler: Compiler,
    trust: Arc<TrustStore>,
    limits: Arc<BundleLimits>,
    events: broadcast::Sender<AppEvent>,
    status: watch::Receiver<Vec<AppStatus>>,
    active: Arc<std::sync::atomic::AtomicBool>,
}

/// What starting the runtime gives the daemon.
pub struct EdgeRuntime {
    pub handle: EdgeHandle,
    /// Output not tied to an ingest (windows closed by time, replays, flushes).
    pub derived: mpsc::Receiver<Derived>,
    pub thread: EdgeThread,
}

/// The runtime thread (and the epoch ticker), joined at shutdown.
pub struct EdgeThread {
    thread: Option<std::thread::JoinHandle<()>>,
    _ticker: EpochTicker,
}

impl EdgeThread {
    /// Waits for the runtime thread; it ends once every [`EdgeHandle`] is
    /// dropped. Blocking: call from a blocking context.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl EdgeRuntime {
    /// Opens the state, loads every registered app (from the compiled cache
    /// when possible) and starts the runtime thread. Synchronous on purpose:
    /// the daemon must not accept readings before its apps are in place.
    /// Call from a tokio runtime (the tick task is spawned on it).
    pub fn start(cfg: EdgeConfig, paths: &EdgePaths) -> Result<EdgeRuntime, EdgeError> {
        let cfg = Arc::new(cfg);
        let trust = Arc::new(trust_store(&cfg)?);
        let compiler = Compiler::new(cfg.clone(), paths.cache())?;
        let ticker = EpochTicker::start(
            compiler.engine.clone(),
            Duration::from_millis(cfg.epoch_tick_ms.max(1)),
        )
        .map_err(|e| EdgeError::Engine(format!("epoch ticker: {e}")))?;
        let db = AppsDb::open(&paths.db())?;
        let (events, _) = broadcast::channel(256);
        let mut anomaly = Vec::new();
        for a in &cfg.anomaly {
            let model = compiler.load_model_file(&a.detector.name, &a.model)?;
            anomaly.push(
                gatewayd_ml::AnomalyStage::new(a.detector.clone(), model).map_err(|e| {
                    EdgeError::Config(format!("edge_apps.anomaly {:?}: {e}", a.detector.name))
                })?,
            );
        }
        let registry = db.registry()?;
        let mut stage = Stage::new(
            cfg.clone(),
            compiler.clone(),
            db,
            paths.bundles(),
            anomaly,
            events.clone(),
        );
        let limits = Arc::new(BundleLimits::default());
        // Restore the registered apps. Each bundle is verified again: the
        // trust roots may have changed since it was deployed.
        for r in registry {
            let path = paths
                .bundles()
                .join(format!("{}.{}.gwapp", r.name, r.bundle_sha256));
            let restored = std::fs::read(&path)
                .map_err(|e| EdgeError::io(&path, e))
                .and_then(|bytes| {
                    let v = open_verified(&bytes, &trust, &limits)?;
                    let p = compiler.prepare(&v)?;
                    Ok((p, bytes))
                });
            match restored {
                Ok((p, bytes)) => {
                    info!(app = %r.name, version = %r.version, from_cache = p.from_cache, "restoring app");
                    stage.install(p, &bytes)?;
                }
                Err(e) => {
                    error!(app = %r.name, error = %e, "could not restore app; its readings pass untouched");
                    let _ = events.send(AppEvent {
                        app: r.name.clone(),
                        version: r.version.clone(),
                        kind: AppEventKind::Refused {
                            file: path.display().to_string(),
                            reason: e.to_string(),
                        },
                    });
                }
            }
        }
        let active = stage.activity();
        let (tx, rx) = mpsc::channel(64);
        let (derived_tx, derived_rx) = mpsc::channel(4);
        let (status_tx, status_rx) = watch::channel(stage.statuses());
        let thread = std::thread::Builder::new()
            .name("edge-apps".into())
            .spawn(move || run(stage, rx, derived_tx, status_tx))
            .map_err(|e| EdgeError::Engine(format!("runtime thread: {e}")))?;
        // Time-driven work: windows, retries, replays.
        // A weak sender: the thread stops when the last handle goes.
        let tick_tx = tx.downgrade();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(250));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                let Some(tx) = tick_tx.upgrade() else { break };
                if tx.send(Request::Tick).await.is_err() {
                    break;
                }
            }
        });
        Ok(EdgeRuntime {
            handle: EdgeHandle {
                tx,
                compiler,
                trust,
                limits,
                events,
                status: status_rx,
                active,
            },
            derived: derived_rx,
            thread: EdgeThread {
                thread: Some(thread),
                _ticker: ticker,
            },
        })
    }
}

fn run(
    mut stage: Stage,
    mut rx: mpsc::Receiver<Request>,
    derived_tx: mpsc::Sender<Derived>,
    status_tx: watch::Sender<Vec<AppStatus>>,
) {
    let mut ticks = 0u64;
    while let Some(req) = rx.blocking_recv() {
        let mut changed = false;
        match req {
            Request::Process { groups, reply } => {
                let _ = reply.send(stage.process(groups));
            }
            Request::Committed(t) => {
                if let Err(e) = stage.committed(t) {
                    error!(error = %e, "edge apps: confirming a commit failed");
                }
            }
            Request::Abandoned(t) => stage.abandoned(t),
            Request::Install {
                prepared,
                bundle,
                reply,
            } => {
                // Status first, so `list()` after `deploy().await` sees it.
                let r = stage.install(*prepared, &bundle);
                status_tx.send_replace(stage.statuses());
                let _ = reply.send(r);
            }
            Request::Remove { name, reply } => {
                let r = stage.remove(&name);
                status_tx.send_replace(stage.statuses());
                let _ = reply.send(r);
            }
            Request::Tick => {
                if let Err(e) = stage.tick() {
                    error!(error = %e, "edge apps: periodic work failed");
                }
                ticks += 1;
                changed |= ticks.is_multiple_of(4);
            }
        }
        // Hand derived output to the writer without ever blocking on it
        // (the writer may itself be waiting for a `Process` reply).
        while let Some(d) = stage.take_outbox() {
            match derived_tx.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => {
                    stage.requeue_front(d);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        if changed {
            status_tx.send_replace(stage.statuses());
        }
    }
    debug!("edge-apps runtime thread stopped");
}

/// Sends a request carrying its reply channel to a task (the runtime
/// thread, the deployment-directory task) and waits for the answer; a gone
/// task is [`EdgeError::Stopped`].
pub(crate) async fn request<R, T>(
    tx: &mpsc::Sender<R>,
    make: impl FnOnce(oneshot::Sender<Result<T, EdgeError>>) -> R,
) -> Result<T, EdgeError> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.map_err(|_| EdgeError::Stopped)?;
    rx.await.map_err(|_| EdgeError::Stopped)?
}

impl EdgeHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EdgeError>>) -> Request,
    ) -> Result<T, EdgeError> {
        request(&self.tx, make).await
    }

    /// Whether any app or detector is installed: when not, `process` would
    /// hand the readings back unchanged, so callers may skip it.
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs the apps over one group of submissions.
    pub async fn process(&self, groups: Vec<Vec<Reading>>) -> Result<Processed, EdgeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Process { groups, reply })
            .await
            .map_err(|_| EdgeError::Stopped)?;
        rx.await.map_err(|_| EdgeError::Stopped)
    }

    /// The output carrying `token` is committed.
    pub async fn committed(&self, token: u64) {
        let _ = self.tx.send(Request::Committed(token)).await;
    }

    /// The output carrying `token` could not be committed.
    pub async fn abandoned(&self, token: u64) {
        let _ = self.tx.send(Request::Abandoned(token)).await;
    }

    /// Verifies, compiles and installs a bundle (deploy or upgrade).
    /// Returns the app's name.
    pub async fn deploy(&self, bundle: Vec<u8>) -> Result<String, EdgeError> {
        let bundle = Arc::new(bundle);
        let (compiler, trust, limits, b) = (
            self.compiler.clone(),
            self.trust.clone(),
            self.limits.clone(),
            bundle.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || -> Result<Prepared, EdgeError> {
            let v = open_verified(&b, &trust, &limits)?;
            compiler.prepare(&v)
        })
        .await
        .map_err(|e| EdgeError::Engine(format!("compile task: {e}")))??;
        let name = prepared.manifest.app.name.clone();
        self.call(|reply| Request::Install {
            prepared: Box::new(prepared),
            bundle,
            reply,
        })
        .await?;
        Ok(name)
    }

    pub async fn remove(&self, name: &str) -> Result<(), EdgeError> {
        let name = name.to_owned();
        self.call(|reply| Request::Remove { name, reply }).await
    }

    /// The apps and their live state (refreshed about once a second and on
    /// every lifecycle change).
    pub fn list(&self) -> Vec<AppStatus> {
        self.status.borrow().clone()
    }

    pub fn events(&self) -> broadcast::Receiver<AppEvent> {
        self.events.subscribe()
    }

    /// Reports a refused bundle (used by the deployment directory scanner).
    pub(crate) fn report_refused(&self, app: &str, file: &str, reason: &str) {
        warn!(file, %reason, "bundle refused");
        let _ = self.events.send(AppEvent {
            app: app.into(),
            version: String::new(),
            kind: AppEventKind::Refused {
                file: file.into(),
                reason: reason.into(),
            },
        });
    }
}
