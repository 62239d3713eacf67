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
//!
//! The control interface (D-Bus `Apps.Deploy/Upgrade/Remove`) goes through
//! the same task ([`DeployDir`]): its requests are served between two scans,
//! so a scan never sees a half-done change. A deploy writes the bundle into
//! the directory *first* (it is the desired state), installs it, and puts
//! the previous file back if the install is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatewayd_artifact::{Bundle, BundleLimits};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::EdgeHandle;
use crate::EdgeError;

/// Whether a directory entry is a bundle the scanner considers (`*.gwapp`,
/// not hidden: writers stage files under a `.` name).
fn is_bundle_file(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".gwapp")
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub name: String,
    pub version: String,
    /// The version it replaced, if the app was deployed already.
    pub previous_version: Option<String>,
}

enum DirRequest {
    Deploy {
        bundle: Vec<u8>,
        must_exist: bool,
        reply: oneshot::Sender<Result<Deployed, EdgeError>>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<Result<String, EdgeError>>,
    },
}

/// Deploys and removes apps through the deployment directory, in turn with
/// its scans. Cheap to clone.
#[derive(Clone)]
pub struct DeployDir {
    tx: mpsc::Sender<DirRequest>,
}

impl DeployDir {
    /// Starts the task that watches `dir` every `interval` and serves
    /// requests, until `stop`.
    pub fn spawn(
        handle: EdgeHandle,
        dir: PathBuf,
        interval: Duration,
        stop: CancellationToken,
    ) -> DeployDir {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(run(handle, dir, interval, rx, stop));
        DeployDir { tx }
    }

    /// Verifies and installs a bundle (an upgrade if the app exists, and
    /// then only if `must_exist`), and keeps it in the directory.
    pub async fn deploy(&self, bundle: Vec<u8>, must_exist: bool) -> Result<Deployed, EdgeError> {
        crate::runtime::request(&self.tx, |reply| DirRequest::Deploy {
            bundle,
            must_exist,
            reply,
        })
        .await
    }

    /// Removes an app and its bundle file(s); returns the removed version
    /// (`""` if only a file was left).
    pub async fn remove(&self, name: &str) -> Result<String, EdgeError> {
        let name = name.to_owned();
        crate::runtime::request(&self.tx, |reply| DirRequest::Remove { name, reply }).await
    }
}

/// Reconciles the directory with the running apps and serves requests,
/// until `stop`.
async fn run(
    handle: EdgeHandle,
    dir: PathBuf,
    interval: Duration,
    mut requests: mpsc::Receiver<DirRequest>,
    stop: CancellationToken,
) {
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        warn!(dir = %dir.display(), error = %e, "cannot create the deployment directory; not watching it");
        // Still answer requests, with the reason.
        while let Some(r) =
            tokio::select! { r = requests.recv() => r, _ = stop.cancelled() => None }
        {
            let err = || EdgeError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::other("the deployment directory cannot be created"),
            };
            match r {
                DirRequest::Deploy { reply, .. } => drop(reply.send(Err(err()))),
                DirRequest::Remove { reply, .. } => drop(reply.send(Err(err()))),
            }
        }
        return;
    }
    let mut scanner = Scanner::default();
    let mut requests_open = true;
    loop {
        scanner.scan(&handle, &dir).await;
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                r = requests.recv(), if requests_open => match r {
                    None => requests_open = false,
                    Some(DirRequest::Deploy { bundle, must_exist, reply }) => {
                        let r = scanner.deploy(&handle, &dir, bundle, must_exist).await;
                        let _ = reply.send(r);
                    }
                    Some(DirRequest::Remove { name, reply }) => {
                        let r = scanner.remove(&handle, &dir, &name).await;
                        let _ = reply.send(r);
                    }
                },
            }
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
            if !is_bundle_file(&entry.file_name().to_string_lossy()) {
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

    /// The bundle files in `dir` that claim `app` (parsed only when their
    /// size or mtime changed since the last scan).
    async fn files_claiming(&mut self, dir: &Path, app: &str) -> Vec<PathBuf> {
        let limits = BundleLimits::default();
        let mut out = Vec::new();
        let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
            return out;
        };
        while let Ok(Some(entry)) = rd.next_entry().await {
            let path = entry.path();
            if !is_bundle_file(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(meta) = tokio::fs::metadata(&path).await else {
                continue;
            };
            let cached = self
                .seen
                .get(&path)
                .filter(|s| s.len == meta.len() && s.modified == meta.modified().ok())
                .map(|s| s.app.clone());
            let claimed = match cached {
                Some(a) => a,
                None => match tokio::fs::read(&path).await {
                    Ok(bytes) => Bundle::parse(&bytes, &limits)
                        .ok()
                        .map(|b| b.manifest.app.name.clone()),
                    Err(_) => None,
                },
            };
            if claimed.as_deref() == Some(app) {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    /// Serves a deploy request (see the module docs).
    async fn deploy(
        &mut self,
        handle: &EdgeHandle,
        dir: &Path,
        bundle: Vec<u8>,
        must_exist: bool,
    ) -> Result<Deployed, EdgeError> {
        let limits = BundleLimits::default();
        let parsed = Bundle::parse(&bundle, &limits)?;
        let (name, version) = (
            parsed.manifest.app.name.clone(),
            parsed.manifest.app.version.clone(),
        );
        drop(parsed);
        let sha = hex::encode(Sha256::digest(&bundle));
        let running = handle.list().into_iter().find(|s| s.name == name);
        if must_exist && running.is_none() {
            return Err(EdgeError::NotDeployed(name));
        }
        let previous_version = running.as_ref().map(|s| s.version.clone());
        let target = self
            .files_claiming(dir, &name)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| dir.join(format!("{name}.gwapp")));
        let io_err = |path: &Path, source: std::io::Error| EdgeError::Io {
            path: path.display().to_string(),
            source,
        };
        let old = match tokio::fs::read(&target).await {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&target, e)),
        };
        if running.as_ref().is_some_and(|s| s.bundle_sha256 == sha) && old.is_some() {
            // The same bundle again: nothing to do.
            return Ok(Deployed {
                name,
                version,
                previous_version,
            });
        }
        let write = |path: PathBuf, bytes: Vec<u8>| async move {
            tokio::task::spawn_blocking(move || gatewayd_artifact::write_atomic(&path, &bytes))
                .await
                .map_err(std::io::Error::other)?
        };
        write(target.clone(), bundle.clone())
            .await
            .map_err(|e| io_err(&target, e))?;
        match handle.deploy(bundle).await {
            Ok(_) => {
                info!(file = %target.display(), app = %name, %version, "deployed through the control interface");
                self.refused.remove(&sha);
                Ok(Deployed {
                    name,
                    version,
                    previous_version,
                })
            }
            Err(e) => {
                // Put the desired state back as it was.
                let restored = match old {
                    Some(old) => write(target.clone(), old).await,
                    None => tokio::fs::remove_file(&target).await,
                };
                if let Err(re) = restored {
                    warn!(file = %target.display(), error = %re, "could not restore the deployment directory after a refused deploy");
                }
                Err(e)
            }
        }
    }

    /// Serves a remove request: deletes the app's bundle file(s), then the
    /// app.
    async fn remove(
        &mut self,
        handle: &EdgeHandle,
        dir: &Path,
        name: &str,
    ) -> Result<String, EdgeError> {
        let running = handle.list().into_iter().find(|s| s.name == name);
        let files = self.files_claiming(dir, name).await;
        if running.is_none() && files.is_empty() {
            return Err(EdgeError::NotDeployed(name.to_owned()));
        }
        for f in &files {
            tokio::fs::remove_file(f).await.map_err(|e| EdgeError::Io {
                path: f.display().to_string(),
                source: e,
            })?;
        }
        match running {
            Some(s) => {
                handle.remove(name).await?;
                info!(app = %name, "removed through the control interface");
                Ok(s.version)
            }
            None => Ok(String::new()),
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
