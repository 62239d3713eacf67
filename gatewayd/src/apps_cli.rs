//! `gatewayd apps …`: manage edge apps through the deployment directory.
//!
//! These commands work whether or not the daemon runs: `deploy` verifies a
//! bundle against the configured trust roots *before* placing it (so the
//! operator sees a refusal at once) and renames it into the deployment
//! directory, where the daemon picks it up within `scan_interval_ms`;
//! `remove` deletes it; `list` shows the deployment directory and the
//! registry the daemon keeps in `apps.db`.

use std::path::Path;

use anyhow::{bail, Context};
use gatewayd_artifact::{open_verified, BundleLimits};
use gatewayd_edge::db::AppsDb;
use gatewayd_edge::trust_store;

use crate::config::Config;

/// Verifies `bundle` and places it as `<deploy_dir>/<app>.gwapp`.
pub fn deploy(config: &Config, bundle: &Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
    let trust = trust_store(&config.edge_apps).context("edge_apps.trusted_keys")?;
    let v = open_verified(&bytes, &trust, &BundleLimits::default())
        .with_context(|| format!("{} refused", bundle.display()))?;
    let m = v.manifest();
    let dir = config.edge_paths().deploy_dir;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join(format!("{}.gwapp", m.app.name));
    gatewayd_artifact::write_atomic(&target, &bytes)
        .with_context(|| format!("cannot place {}", target.display()))?;
    Ok(format!(
        "{} {} placed in {} (signed by {})",
        m.app.name,
        m.app.version,
        target.display(),
        v.signed_by()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

pub fn remove(config: &Config, name: &str) -> anyhow::Result<String> {
    let dir = config.edge_paths().deploy_dir;
    let target = dir.join(format!("{name}.gwapp"));
    if !target.exists() {
        bail!("no bundle for app {name:?} in {}", dir.display());
    }
    std::fs::remove_file(&target).with_context(|| format!("cannot remove {}", target.display()))?;
    Ok(format!("{name}: bundle removed from {}", dir.display()))
}

pub fn list(config: &Config, json: bool) -> anyhow::Result<String> {
    let paths = config.edge_paths();
    let registry = if paths.db().exists() {
        AppsDb::open_read_only(&paths.db())
            .and_then(|db| db.registry())
            .with_context(|| format!("cannot read {}", paths.db().display()))?
    } else {
        Vec::new()
    };
    let mut files = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&paths.deploy_dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".gwapp") && !n.starts_with('.') {
                files.push(n);
            }
        }
    }
    files.sort();
    if json {
        let apps: Vec<_> = registry
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "version": r.version,
                    "bundle_sha256": r.bundle_sha256, "deployed_at_us": r.deployed_at_us,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&serde_json::json!({
            "deployed": apps, "deploy_dir": paths.deploy_dir, "files": files,
        }))?);
    }
    let mut out = format!("{:<24} {:<12} BUNDLE\n", "APP", "VERSION");
    for r in &registry {
        out.push_str(&format!(
            "{:<24} {:<12} {}\n",
            r.name,
            r.version,
            &r.bundle_sha256[..r.bundle_sha256.len().min(16)]
        ));
    }
    out.push_str(&format!(
        "deployment directory {}: {}",
        paths.deploy_dir.display(),
        if files.is_empty() {
            "empty".to_owned()
        } else {
            files.join(", ")
        }
    ));
    Ok(out)
}
