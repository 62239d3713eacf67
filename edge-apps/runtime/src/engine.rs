//! The wasmtime engine, its epoch ticker, and the on-disk compiled cache.
//!
//! Compiled components are cached as `<cache>/<module sha256>-<engine hash>.cwasm`.
//! The engine hash covers wasmtime's version and every setting that affects
//! code generation (`Engine::precompile_compatibility_hash`), so an upgraded
//! daemon never loads code compiled by another. Files are written to a temp
//! name and renamed, so a crash leaves no half-written cache entry.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gatewayd_artifact::VerifiedBundle;
use gatewayd_ml::{Model, ModelCache};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::app::{EffectiveLimits, HostState, Prepared};
use crate::bindings::EdgeAppPre;
use crate::config::EdgeConfig;
use crate::error::EdgeError;

/// The engine shared by every app, and what prepares bundles for it.
#[derive(Clone)]
pub struct Compiler {
    pub engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache_dir: PathBuf,
    engine_hash: String,
    models: Arc<Mutex<ModelCache>>,
    cfg: Arc<EdgeConfig>,
}

impl Compiler {
    pub fn new(cfg: Arc<EdgeConfig>, cache_dir: PathBuf) -> Result<Self, EdgeError> {
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| EdgeError::Engine(format!("{e:#}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = format!("{:016x}", h.finish());
        std::fs::create_dir_all(&cache_dir).map_err(|e| EdgeError::io(&cache_dir, e))?;
        let linker =
            crate::app::linker(&engine).map_err(|e| EdgeError::Engine(format!("{e:#}")))?;
        Ok(Compiler {
            engine,
            linker: Arc::new(linker),
            cache_dir,
            engine_hash,
            models: Arc::new(Mutex::new(ModelCache::new(64))),
            cfg,
        })
    }

    fn cache_path(&self, module_sha: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{module_sha}-{}.cwasm", self.engine_hash))
    }

    /// Loads the component from the cache, or compiles it and fills the
    /// cache. Returns whether the cache was used.
    pub fn component(&self, module: &[u8]) -> Result<(Component, bool), EdgeError> {
        let sha = hex::encode(Sha256::digest(module));
        let path = self.cache_path(&sha);
        if path.exists() {
            // SAFETY: `deserialize_file` runs native code from the file, so it
            // must be a wasmtime artifact for this engine. Only this runtime
            // writes this directory (inside gatewayd's private state
            // directory, same trust as the daemon binary); the name binds the
            // exact module digest and this engine's compatibility hash, and
            // files are renamed into place only after being fully written.
            // wasmtime additionally checks the header's version and settings.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "compiled cache entry unusable; recompiling");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = self
            .engine
            .precompile_component(module)
            .map_err(|e| EdgeError::Compile(format!("{e:#}")))?;
        if let Err(e) = gatewayd_artifact::write_atomic(&path, &compiled) {
            warn!(path = %path.display(), error = %e, "could not write the compiled cache");
        }
        // SAFETY: `compiled` was produced just now by `precompile_component`
        // of this very engine.
        let c = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| EdgeError::Compile(format!("{e:#}")))?;
        debug!(module = %sha, "compiled component");
        Ok((c, false))
    }

    /// Compiles and links a verified bundle, and loads its models.
    pub fn prepare(&self, bundle: &VerifiedBundle) -> Result<Prepared, EdgeError> {
        let manifest = bundle.manifest().clone();
        let name = manifest.app.name.clone();
        let (component, from_cache) = self.component(bundle.module())?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(EdgeAppPre::new)
            .map_err(|e| EdgeError::Link {
                app: name.clone(),
                reason: format!("{e:#}"),
            })?;
        let mut models = BTreeMap::new();
        for m in &manifest.models {
            let bytes = bundle
                .models()
                .get(&m.name)
                .ok_or_else(|| EdgeError::Model {
                    app: name.clone(),
                    model: m.name.clone(),
                    reason: "not in the bundle".into(),
                })?;
            let model: Arc<Model> = self
                .models
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_load(&m.name, bytes)
                .map_err(|e| EdgeError::Model {
                    app: name.clone(),
                    model: m.name.clone(),
                    reason: e.to_string(),
                })?;
            models.insert(m.name.clone(), model);
        }
        let limits = EffectiveLimits::resolve(
            &manifest.limits,
            &self.cfg.default_limits,
            &self.cfg.max_limits,
        );
        let config_json = manifest.config_json();
        Ok(Prepared {
            manifest,
            bundle_sha256: hex::encode(bundle.sha256()),
            pre,
            models: Arc::new(models),
            limits,
            from_cache,
            config_json,
        })
    }

    /// Loads a model file for a declarative stage (operator-provided, from
    /// the configuration: trusted like the configuration itself).
    pub fn load_model_file(&self, name: &str, path: &Path) -> Result<Arc<Model>, EdgeError> {
        let bytes = std::fs::read(path).map_err(|e| EdgeError::io(path, e))?;
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_load(name, &bytes)
            .map_err(|e| EdgeError::Model {
                app: format!("anomaly:{name}"),
                model: path.display().to_string(),
                reason: e.to_string(),
            })
    }
}

/// Increments the engine's epoch every `tick`, until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("edge-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
