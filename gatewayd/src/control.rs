//! The control plane's view of the running daemon, and the operations that
//! change it. The D-Bus service ([`crate::dbus`]) and `SIGHUP` call these;
//! nothing here knows about D-Bus.
//!
//! Configuration changes are serialised by one lock and follow the steps in
//! [`crate::config_edit`]: plan (edit, validate, diff), write the file
//! atomically, then apply what applies live: `log.level` through the
//! logging layer's reload handle, `sources.*` by asking the daemon's main
//! loop to restart exactly the source instances whose section changed.
//! Everything else is listed in `PendingRestart` until gatewayd restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatewayd_adapter_lorawan::LoraRegistry;
use gatewayd_core::SourceState;
use gatewayd_devices::DeviceRegistry;
use gatewayd_edge::{DeployDir, EdgeHandle};
use gatewayd_uplink::{RetryNow, UplinkStatus};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::config_edit::{self, Edit, EditError};
use crate::pipeline::BufferHandle;

/// Sets the log filter at run time (`log.level`).
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// One configured source, as the daemon runs it.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    pub name: String,
    pub kind: String,
    pub state: watch::Receiver<SourceState>,
    /// What the source last published about itself (`null`: nothing).
    pub status: watch::Receiver<serde_json::Value>,
    /// Sends control-plane commands to it (D-Bus `SourceCommand`).
    pub commands: gatewayd_core::CommandSender,
}

/// `(state, detail)` as D-Bus shows a source.
pub fn state_words(s: &SourceState) -> (&'static str, String) {
    match s {
        SourceState::Starting => ("starting", String::new()),
        SourceState::Running => ("running", String::new()),
        SourceState::Degraded(d) => ("degraded", d.clone()),
        SourceState::Stopped => ("stopped", String::new()),
        SourceState::Failed(d) => ("failed", d.clone()),
    }
}

/// Requests the daemon's main loop serves.
pub enum ControlRequest {
    /// Make the running sources match these sections: stop removed and
    /// changed ones, start added and changed ones. Replies with the names
    /// (re)started or stopped.
    ApplySources {
        sources: BTreeMap<String, toml::Table>,
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// What `SetConfig`/`UnsetConfig` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    RestartRequired,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::RestartRequired => "restart-required",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Why a configuration change failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("gatewayd was started without --config: there is no file to persist changes to")]
    NotPersistent,
    #[error("{0}")]
    Io(String),
}

/// The edge-app side, when enabled.
#[derive(Clone)]
pub struct Apps {
    pub handle: EdgeHandle,
    pub deploy: DeployDir,
}

/// Everything the control plane reads or drives. Shared (`Arc`).
pub struct Shared {
    pub version: &'static str,
    pub gateway_id: String,
    pub started: Instant,
    pub started_at_ms: u64,
    pub config_path: Option<PathBuf>,
    /// The configuration this process started with (for `PendingRestart`).
    pub boot: Config,
    /// The configuration as last read or written (file = running for live
    /// keys).
    current: Mutex<Config>,
    pending: watch::Sender<Vec<String>>,
    edit_lock: tokio::sync::Mutex<()>,
    /// The running parts the control plane reads and drives.
    pub io: Handles,
    control: mpsc::Sender<ControlRequest>,
    log: Option<LogControl>,
}

/// Handles to the running daemon's parts.
pub struct Handles {
    pub uplink: watch::Receiver<UplinkStatus>,
    pub retry: RetryNow,
    pub buffer: BufferHandle,
    pub sources: watch::Receiver<Vec<SourceEntry>>,
    pub devices: DeviceRegistry,
    pub lora: Option<LoraRegistry>,
    pub apps: Option<Apps>,
}

/// The parts [`Shared::new`] takes.
pub struct SharedParts {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub io: Handles,
    pub control: mpsc::Sender<ControlRequest>,
    pub log: Option<LogControl>,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    pub fn new(p: SharedParts) -> Arc<Shared> {
        let (pending, _) = watch::channel(Vec::new());
        Arc::new(Shared {
            version: env!("CARGO_PKG_VERSION"),
            gateway_id: p.config.gateway.id.clone(),
            started: Instant::now(),
            started_at_ms: unix_ms(SystemTime::now()),
            config_path: p.config_path,
            boot: p.config.clone(),
            current: Mutex::new(p.config),
            pending,
            edit_lock: tokio::sync::Mutex::new(()),
            io: p.io,
            control: p.control,
            log: p.log,
        })
    }

    /// The configuration as last read or written.
    pub fn current(&self) -> Config {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keys changed since start that only a restart applies.
    pub fn pending_restart(&self) -> watch::Receiver<Vec<String>> {
        self.pending.subscribe()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// `GetConfig`.
    pub fn get_config(&self, key: &str) -> Result<serde_json::Value, EditError> {
        config_edit::get(&self.current(), key)
    }

    fn path(&self) -> Result<PathBuf, ChangeError> {
        self.config_path.clone().ok_or(ChangeError::NotPersistent)
    }

    async fn read_file(path: &PathBuf) -> Result<String, ChangeError> {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ChangeError::Io(format!("cannot read {}: {e}", path.display())))
    }

    /// `SetConfig` / `UnsetConfig`.
    pub async fn change(&self, edit: Edit) -> Result<Outcome, ChangeError> {
        let _guard = self.edit_lock.lock().await;
        let path = self.path()?;
        let text = Self::read_file(&path).await?;
        let planned = config_edit::plan(&text, &edit)?;
        if planned.text != text {
            let (p, t) = (path.clone(), planned.text.clone());
            tokio::task::spawn_blocking(move || gatewayd_artifact::write_atomic(&p, t.as_bytes()))
                .await
                .map_err(|e| ChangeError::Io(e.to_string()))?
                .map_err(|e| ChangeError::Io(format!("cannot write {}: {e}", path.display())))?;
        }
        info!(key = edit.key(), changed = ?planned.changed, "configuration changed");
        let changed = planned.changed.clone();
        self.apply(planned.config, &changed).await;
        Ok(if changed.is_empty() {
            Outcome::Unchanged
        } else if changed.iter().all(|k| config_edit::is_live(k)) {
            Outcome::Applied
        } else {
            Outcome::RestartRequired
        })
    }

    /// `Reload` and `SIGHUP`: re-reads the file. Returns the changed keys
    /// split into applied and restart-required.
    pub async fn reload(&self) -> Result<(Vec<String>, Vec<String>), ChangeError> {
        let _guard = self.edit_lock.lock().await;
        let path = self.path()?;
        let text = Self::read_file(&path).await?;
        let new = config_edit::validate_text(&text)?;
        let before = config_edit::effective(&self.current())?;
        let after = config_edit::effective(&new)?;
        let changed = config_edit::diff_keys(&before, &after);
        self.apply(new, &changed).await;
        let (live, restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| config_edit::is_live(k));
        info!(applied = ?live, restart_required = ?restart, "configuration reloaded");
        Ok((live, restart))
    }

    /// Applies what applies live and records the rest.
    async fn apply(&self, new: Config, changed: &[String]) {
        if changed.iter().any(|k| k == "log.level") {
            match &self.log {
                Some(set) => match set(&new.log.level) {
                    Ok(()) => info!(level = %new.log.level, "log level changed"),
                    Err(e) => warn!(error = %e, "log.level not applied"),
                },
                None => warn!("log.level changed but this process cannot reload its log filter"),
            }
        }
        if changed.iter().any(|k| k.starts_with("sources")) {
            let (reply, rx) = oneshot::channel();
            let req = ControlRequest::ApplySources {
                sources: new.sources.clone(),
                reply,
            };
            if self.control.send(req).await.is_ok() {
                if let Ok(names) = rx.await {
                    info!(sources = ?names, "sources restarted with their new configuration");
                }
            }
        }
        let pending = config_edit::pending_restart(&self.boot, &new);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = new;
        self.pending.send_if_modified(|p| {
            if *p != pending {
                *p = pending;
                true
            } else {
                false
            }
        });
    }

    /// `FlushBuffer`: returns `(delivered, remaining)`.
    pub async fn flush(&self, timeout: Duration) -> (u64, u64) {
        let start = self.io.buffer.stats();
        let target = start.next_seq.saturating_sub(1);
        if start.acked_through >= target || start.readings == 0 {
            return (0, 0);
        }
        self.io.retry.retry();
        let mut stats = self.io.buffer.watch_stats();
        let _ = tokio::time::timeout(timeout, stats.wait_for(|s| s.acked_through >= target)).await;
        let end = self.io.buffer.stats();
        let delivered = end.acked_through.min(target) - start.acked_through.min(target);
        let remaining = if end.acked_through >= target {
            0
        } else {
            (target - end.acked_through).min(end.readings)
        };
        (delivered, remaining)
    }
}

/// Whether the caller may change state: root, gatewayd's own user, or a
/// member of `group` (supplementary or primary).
pub fn may_write(uid: u32, gids: &[u32], own_uid: u32, group: Option<u32>) -> bool {
    uid == 0 || uid == own_uid || group.is_some_and(|g| gids.contains(&g))
}

/// The gid of a group name, from `/etc/group`.
pub fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let n = f.next()?;
        let _pw = f.next()?;
        let gid = f.next()?;
        (n == name).then(|| gid.parse().ok()).flatten()
    })
}

/// This process's effective uid (the owner of `/proc/self`).
pub fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// A process's primary and supplementary groups, from `/proc/<pid>/status`
/// (used when the bus does not report `UnixGroupIDs`).
pub fn process_groups(pid: u32) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Groups:") {
            out.extend(
                rest.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        } else if let Some(rest) = line.strip_prefix("Gid:") {
            // real, effective, saved, fs: the effective one.
            out.extend(
                rest.split_whitespace()
                    .nth(1)
                    .and_then(|g| g.parse::<u32>().ok()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_are_root_own_user_and_group_members() {
        assert!(may_write(0, &[], 999, None));
        assert!(may_write(999, &[], 999, None));
        assert!(may_write(1000, &[5, 77], 999, Some(77)));
        assert!(!may_write(1000, &[5], 999, Some(77)));
        assert!(!may_write(1000, &[77], 999, None));
    }

    #[test]
    fn group_ids_resolve_from_etc_group() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }

    #[test]
    fn own_process_groups_are_read() {
        let pid = std::process::id();
        assert!(!process_groups(pid).is_empty());
    }
}
