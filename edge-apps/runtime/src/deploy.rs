//! The deployment directory: the desired set of apps, as files.
//!
//! Every `*.gwapp` file in the directory is deployed; a file whose content
//! changes is an upgrade; a file that disappears removes its app. Writers
//! (`gatewayd apps deploy`, provisioning, later the D-Bus interface) put a
//! bundle in place with write-to-temp + rename, so a scan never sees half a
//! file. Files whose name starts with `.` are ignored.
//!
//! A refused bundle (bad signature, does not compile…) is reported once per
//! content digest, and whatever was deployed under that name keeps running.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatewayd_artifact::{Bundle, BundleLimits};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::EdgeHandle;

/// Reconciles the directory with the running apps, forever (until `stop`).
pub async fn run_deploy_dir(
    handle: EdgeHandle,
    dir: PathBuf,
    interval: Duration,
    stop: CancellationToken,
) {
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        warn!(dir = %dir.display(), error = %e, "cannot create the deployment directory; not watching it");
        return;
    }
    let mut scanner = Scanner::default();
    loop {
        scanner.scan(&handle, &dir).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// What a scan learned about one file, kept while its size and
/// modification time stay the same (writers rename a new file into place,
/// which changes both), so an unchanged directory costs a `stat` per file.
#[derive(Debug, Clone)]
struct Seen {
    len: u64,
    modified: Option<std::time::SystemTime>,
    sha256: String,
    /// The app the bundle claims; `None` if it does not even parse.
    app: Option<String>,
}

#[derive(Default)]
pub struct Scanner {
    /// Refused contents (by digest), reported once, with the app they
    /// claim when known: a refused file still claims its app name, so the
    /// running version is kept, not removed.
    refused: HashMap<String, Option<String>>,
    /// Other problems already reported (duplicates, oversized files).
    reported: HashSet<String>,
    seen: HashMap<PathBuf, Seen>,
}

impl Scanner {
    /// One reconciliation pass.
    pub async fn scan(&mut self, handle: &EdgeHandle, dir: &Path) {
        let limits = BundleLimits::default();
        let mut files: BTreeMap<PathBuf, Seen> = BTreeMap::new();
        let mut rd = match tokio::fs::read_dir(dir).await {
            Ok(rd) => rd,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot read the deployment directory");
                return;
            }
        };
        while let Ok(Some(entry)) = rd.next_entry().await {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".gwapp") {
                continue;
            }
            let meta = match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            if meta.len() > limits.max_bundle_bytes {
                self.report_once(
                    handle,
                    &path,
                    "?",
                    &format!("larger than {} bytes", limits.max_bundle_bytes),
                    format!("size:{}:{}", path.display(), meta.len()),
                );
                continue;
            }
            let modified = meta.modified().ok();
            let cached = self
                .seen
                .get(&path)
                .filter(|s| s.len == meta.len() && s.modified == modified)
                .cloned();
            let seen = match cached {
                Some(s) => s,
                None => {
                    let Ok(bytes) = tokio::fs::read(&path).await else {
                        continue;
                    };
                    let sha256 = hex::encode(Sha256::digest(&bytes));
                    let app = match Bundle::parse(&bytes, &limits) {
                        Ok(b) => Some(b.manifest.app.name.clone()),
                        Err(e) => {
                            self.refuse(handle, &path, None, &e.to_string(), &sha256);
                            None
                        }
                    };
                    Seen {
                        len: meta.len(),
                        modified,
                        sha256,
                        app,
                    }
                }
            };
            files.insert(path, seen);
        }
        self.seen = files.clone().into_iter().collect();
        let running: HashMap<String, String> = handle
            .list()
            .into_iter()
            .map(|s| (s.name, s.bundle_sha256))
            .collect();
        // Which app each file wants; app names claimed by any file, usable
        // or not.
        let mut wanted: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
        let mut claimed: HashSet<String> = HashSet::new();
        for (path, seen) in files {
            if let Some(app) = self.refused.get(&seen.sha256) {
                claimed.extend(app.clone());
                continue;
            }
            let Some(app) = seen.app else { continue };
            claimed.insert(app.clone());
            if let Some((other, _)) = wanted.get(&app) {
                // Not remembered as refused: if the other file goes, this
                // one is the app's bundle.
                self.report_once(
                    handle,
                    &path,
                    &app,
                    &format!("app {app:?} is already deployed from {}", other.display()),
                    format!("dup:{}:{}", seen.sha256, other.display()),
                );
                continue;
            }
            wanted.insert(app, (path, seen.sha256));
        }
        // Deploy new and changed (the only time a bundle is read again).
        for (app, (path, sha)) in &wanted {
            if running.get(app) == Some(sha) {
                continue;
            }
            let Ok(bytes) = tokio::fs::read(path).await else {
                continue;
            };
            if hex::encode(Sha256::digest(&bytes)) != *sha {
                continue; // replaced since the listing: next scan
            }
            match handle.deploy(bytes).await {
                Ok(_) => {
                    info!(file = %path.display(), %app, "deployed from the deployment directory");
                }
                Err(e) => self.refuse(handle, path, Some(app), &e.to_string(), sha),
            }
        }
        // Remove apps no file claims any more. (A refused replacement
        // keeps the running version.)
        for (app, _) in running {
            if !claimed.contains(&app) {
                match handle.remove(&app).await {
                    Ok(()) => info!(%app, "removed: its bundle left the deployment directory"),
                    Err(e) => warn!(%app, error = %e, "could not remove app"),
                }
            }
        }
    }

    fn refuse(
        &mut self,
        handle: &EdgeHandle,
        path: &Path,
        app: Option<&str>,
        reason: &str,
        sha: &str,
    ) {
        if self
            .refused
            .insert(sha.to_owned(), app.map(str::to_owned))
            .is_none()
        {
            handle.report_refused(app.unwrap_or("?"), &path.display().to_string(), reason);
        }
    }

    fn report_once(
        &mut self,
        handle: &EdgeHandle,
        path: &Path,
        app: &str,
        reason: &str,
        key: String,
    ) {
        if self.reported.insert(key) {
            handle.report_refused(app, &path.display().to_string(), reason);
        }
    }
}
