//! The `[edge_apps]` section of gatewayd's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Edge-app runtime settings. Every field has a default, so an empty
/// `[edge_apps]` section (or none) gives a working runtime with no apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Run the edge-app stage at all. With `false`, readings go straight to
    /// the buffer and deployed apps are left on disk, untouched.
    pub enabled: bool,
    /// Where the runtime keeps its database (`apps.db`: registry, key-value
    /// stores, windows, held readings), installed bundles and the compiled
    /// cache. Default: `apps/` beside the buffer database.
    pub state_dir: Option<PathBuf>,
    /// The deployment directory: every `*.gwapp` bundle in it is deployed,
    /// a changed file is an upgrade, a removed file removes its app.
    /// `gatewayd apps deploy|remove` edit it. Default: `<state_dir>/deploy`.
    pub deploy_dir: Option<PathBuf>,
    /// How often the deployment directory is scanned, in milliseconds.
    pub scan_interval_ms: u64,
    /// Public keys (`gatewayd-app keygen` `.pub` files) whose signatures are
    /// trusted. With none, every bundle is refused.
    pub trusted_keys: Vec<PathBuf>,
    /// Signature algorithms every bundle must carry (besides being signed by
    /// a trusted key at all), e.g. `["ed25519", "ml-dsa-65"]` during a
    /// migration. Empty: any one trusted signature is enough.
    pub require_algorithms: Vec<String>,
    /// At most this many apps deployed at once.
    pub max_apps: usize,
    /// Epoch tick for time limits, in milliseconds: a call's time limit is
    /// rounded up to whole ticks.
    pub epoch_tick_ms: u64,
    /// Limits for apps whose manifest sets none.
    pub default_limits: LimitsConfig,
    /// Upper bounds on what a manifest may ask for.
    pub max_limits: LimitsConfig,
    /// When an app is disabled after failing.
    pub failures: FailureConfig,
    /// Per-call cap on log lines an app may write (the rest are counted).
    pub log_lines_per_call: u32,
    /// At most this many held readings per app (policy `hold`); beyond it,
    /// readings pass through untouched and are counted.
    pub max_held_per_app: u64,
    /// Readings per window beyond which the oldest are discarded (counted).
    pub max_window_readings: u32,
    /// Declarative anomaly detectors (model + window + threshold).
    pub anomaly: Vec<AnomalySection>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            enabled: true,
            state_dir: None,
            deploy_dir: None,
            scan_interval_ms: 2000,
            trusted_keys: Vec::new(),
            require_algorithms: Vec::new(),
            max_apps: 32,
            epoch_tick_ms: 5,
            default_limits: LimitsConfig::default(),
            max_limits: LimitsConfig::maximum(),
            failures: FailureConfig::default(),
            log_lines_per_call: 20,
            max_held_per_app: 100_000,
            max_window_readings: 100_000,
            anomaly: Vec::new(),
        }
    }
}

/// Resource limits for one app instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Fuel (roughly, wasm instructions) per call.
    pub fuel_per_call: u64,
    /// Wall-clock limit per call, milliseconds (epoch interruption).
    pub time_ms_per_call: u64,
    /// Linear memory plus tables, bytes.
    pub memory_bytes: u64,
    /// Emitted readings + alerts + replacements per call.
    pub max_output_readings: u32,
    /// Total size of the app's key-value store, bytes.
    pub kv_max_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            fuel_per_call: 500_000_000,
            time_ms_per_call: 100,
            memory_bytes: 16 << 20,
            max_output_readings: 10_000,
            kv_max_bytes: 1 << 20,
        }
    }
}

impl LimitsConfig {
    fn maximum() -> Self {
        LimitsConfig {
            fuel_per_call: 10_000_000_000,
            time_ms_per_call: 2_000,
            memory_bytes: 256 << 20,
            max_output_readings: 100_000,
            kv_max_bytes: 64 << 20,
        }
    }
}

/// Crash-loop handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureConfig {
    /// Consecutive failed calls after which the app is disabled.
    pub max_consecutive: u32,
    /// First disable period, milliseconds; doubles on each further disable.
    pub backoff_initial_ms: u64,
    /// Longest disable period, milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for FailureConfig {
    fn default() -> Self {
        FailureConfig {
            max_consecutive: 3,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
        }
    }
}

/// One declarative anomaly detector: `[[edge_apps.anomaly]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySection {
    /// The ONNX model file.
    pub model: PathBuf,
    /// Everything else: see `gatewayd_ml::AnomalyConfig`.
    #[serde(flatten)]
    pub detector: gatewayd_ml::AnomalyConfig,
}
