//! `gatewayd-app`: make keys, pack, sign, verify and inspect edge-app bundles.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gatewayd_artifact::{
    add_signature, open_verified, pack, Algorithm, Bundle, BundleLimits, DeliveryMode,
    FailurePolicy, Manifest, SigningKey, TrustStore,
};
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(
    name = "gatewayd-app",
    version,
    about = "Make signing keys, and pack, sign, verify and inspect gatewayd edge-app bundles (.gwapp)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a signing key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.
    Keygen {
        /// ed25519 or ml-dsa-65.
        #[arg(long, value_parser = parse_algorithm)]
        algorithm: Algorithm,
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Free-text comment stored in the .pub file.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Build a signed bundle from a manifest, a module and models.
    Pack {
        /// The manifest (TOML).
        #[arg(long)]
        manifest: PathBuf,
        /// The WebAssembly component.
        #[arg(long)]
        module: PathBuf,
        /// A model file as NAME=PATH; models not given are read next to the
        /// manifest under their `file` name.
        #[arg(long = "model", value_name = "NAME=PATH", value_parser = parse_model)]
        models: Vec<(String, PathBuf)>,
        /// Signing key (.key); repeat to sign with several.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        /// Output bundle.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a signature to a bundle (in place).
    Sign {
        /// Signing key (.key).
        #[arg(long)]
        key: PathBuf,
        /// The bundle.
        bundle: PathBuf,
    },
    /// Verify a bundle against trusted public keys, as a gateway does.
    Verify {
        /// Trusted public key (.pub); repeat for several.
        #[arg(long = "trust", value_name = "PUB", required = true)]
        trust: Vec<PathBuf>,
        /// Algorithms a valid trusted signature is required of (comma-separated).
        #[arg(long, value_delimiter = ',', value_parser = parse_algorithm)]
        require: Vec<Algorithm>,
        /// The bundle.
        bundle: PathBuf,
    },
    /// Show a bundle's manifest, files and signatures (without verifying them).
    Inspect {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The bundle.
        bundle: PathBuf,
    },
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm {s:?} (known: ed25519, ml-dsa-65)"))
}

fn parse_model(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!("{s:?} is not NAME=PATH")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewayd-app: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen {
            algorithm,
            out,
            comment,
        } => keygen(algorithm, &out, comment),
        Command::Pack {
            manifest,
            module,
            models,
            keys,
            out,
        } => pack_cmd(&manifest, &module, &models, &keys, &out),
        Command::Sign { key, bundle } => sign_cmd(&key, &bundle),
        Command::Verify {
            trust,
            require,
            bundle,
        } => verify_cmd(&trust, &require, &bundle),
        Command::Inspect { json, bundle } => inspect_cmd(&bundle, json),
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn keygen(algorithm: Algorithm, prefix: &Path, comment: Option<String>) -> Result<()> {
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    for p in [&key_path, &pub_path] {
        if p.exists() || p.is_symlink() {
            bail!("{} already exists, not overwriting it", p.display());
        }
    }
    let key = SigningKey::generate(algorithm).context("generating the key")?;
    let mut public = key.public();
    public.set_comment(comment);
    key.save(&key_path)?;
    public.save(&pub_path)?;
    println!(
        "wrote {} (private: keep it secret) and {}; key id {} ({algorithm})",
        key_path.display(),
        pub_path.display(),
        key.key_id()
    );
    Ok(())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>> {
    paths
        .iter()
        .map(|p| {
            SigningKey::load(p).with_context(|| format!("loading signing key {}", p.display()))
        })
        .collect()
}

fn pack_cmd(
    manifest_path: &Path,
    module_path: &Path,
    given: &[(String, PathBuf)],
    key_paths: &[PathBuf],
    out: &Path,
) -> Result<()> {
    let manifest_bytes = read(manifest_path, "manifest")?;
    let manifest = Manifest::parse(&manifest_bytes)
        .with_context(|| format!("in {}", manifest_path.display()))?;
    let manifest_text = String::from_utf8(manifest_bytes).context("manifest is not UTF-8")?;
    let module = read(module_path, "module")?;
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let mut models: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, path) in given {
        models.push((name.clone(), read(path, &format!("model {name}"))?));
    }
    for m in &manifest.models {
        if !given.iter().any(|(n, _)| *n == m.name) {
            let path = base.join(&m.file);
            models.push((m.name.clone(), read(&path, &format!("model {}", m.name))?));
        }
    }
    let keys = load_keys(key_paths)?;
    let archive = pack(&manifest_text, &module, &models, &keys)
        .with_context(|| format!("packing {}", manifest_path.display()))?;
    Bundle::parse(&archive, &BundleLimits::default())
        .context("the bundle would be refused by gateways with default limits")?;
    write_atomically(out, &archive)?;
    println!(
        "wrote {} ({} bytes, sha256 {}): {} {} signed by {}",
        out.display(),
        archive.len(),
        hex::encode(Sha256::digest(&archive)),
        manifest.app.name,
        manifest.app.version,
        describe_signers(keys.iter().map(|k| (k.key_id().to_string(), k.algorithm())))
    );
    Ok(())
}

fn describe_signers(signers: impl Iterator<Item = (String, Algorithm)>) -> String {
    let list: Vec<String> = signers.map(|(id, alg)| format!("{id} ({alg})")).collect();
    if list.is_empty() {
        "nobody (unsigned)".to_owned()
    } else {
        list.join(", ")
    }
}

fn sign_cmd(key_path: &Path, bundle_path: &Path) -> Result<()> {
    let key = SigningKey::load(key_path)
        .with_context(|| format!("loading signing key {}", key_path.display()))?;
    let archive = read(bundle_path, "bundle")?;
    let signed = add_signature(&archive, &key)
        .with_context(|| format!("signing {}", bundle_path.display()))?;
    write_atomically(bundle_path, &signed)?;
    println!(
        "signed {} with {} ({})",
        bundle_path.display(),
        key.key_id(),
        key.algorithm()
    );
    Ok(())
}

fn verify_cmd(trust: &[PathBuf], require: &[Algorithm], bundle_path: &Path) -> Result<()> {
    let store = TrustStore::load(trust, require).context("loading trusted keys")?;
    let archive = read(bundle_path, "bundle")?;
    let verified = open_verified(&archive, &store, &BundleLimits::default())
        .with_context(|| format!("{} refused", bundle_path.display()))?;
    let m = verified.manifest();
    println!(
        "ok: {} {} signed by {}",
        m.app.name,
        m.app.version,
        describe_signers(
            verified
                .verified_signatures()
                .iter()
                .map(|(k, a)| (k.to_string(), *a))
        )
    );
    Ok(())
}

fn inspect_cmd(bundle_path: &Path, json: bool) -> Result<()> {
    let archive = read(bundle_path, "bundle")?;
    let bundle = Bundle::parse(&archive, &BundleLimits::UNLIMITED)
        .with_context(|| format!("reading {}", bundle_path.display()))?;
    let m = &bundle.manifest;
    let mut files = vec![(
        "manifest.toml".to_owned(),
        bundle.manifest_bytes.len(),
        hex::encode(Sha256::digest(&bundle.manifest_bytes)),
        "manifest".to_owned(),
    )];
    files.push((
        m.app.module.clone(),
        bundle.module.len(),
        hex::encode(Sha256::digest(&bundle.module)),
        "module".to_owned(),
    ));
    for model in &m.models {
        if let Some(data) = bundle.models.get(&model.name) {
            files.push((
                model.file.clone(),
                data.len(),
                hex::encode(Sha256::digest(data)),
                format!("model {}", model.name),
            ));
        }
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    if json {
        let value = serde_json::json!({
            "bundle": bundle_path.display().to_string(),
            "size": archive.len(),
            "sha256": hex::encode(bundle.sha256),
            "verified": false,
            "manifest": m,
            "files": files.iter().map(|(name, size, digest, role)| serde_json::json!({
                "name": name, "size": size, "sha256": digest, "role": role,
            })).collect::<Vec<_>>(),
            "signatures": bundle.signatures.iter().map(|s| serde_json::json!({
                "algorithm": s.algorithm.to_string(),
                "key_id": s.key_id.to_string(),
                "bytes": s.value.len(),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "bundle {} ({} bytes, sha256 {})",
        bundle_path.display(),
        archive.len(),
        hex::encode(bundle.sha256)
    )?;
    writeln!(out, "app: {} {}", m.app.name, m.app.version)?;
    if let Some(d) = &m.app.description {
        writeln!(out, "  description: {d}")?;
    }
    let on_failure = match m.on_failure {
        FailurePolicy::Pass => "pass",
        FailurePolicy::Hold => "hold",
    };
    writeln!(out, "  order {}, on_failure {on_failure}", m.order)?;
    match m.delivery.mode {
        DeliveryMode::Stream => writeln!(out, "  delivery: stream")?,
        DeliveryMode::Window => writeln!(
            out,
            "  delivery: window (seconds {}, readings {}, keep_originals {})",
            m.delivery.window_seconds, m.delivery.window_readings, m.delivery.keep_originals
        )?,
    }
    if m.select.is_empty() {
        writeln!(out, "  select: (none)")?;
    }
    for s in &m.select {
        let meas = if s.measurements.is_empty() {
            "any measurement".to_owned()
        } else {
            s.measurements.join(", ")
        };
        writeln!(out, "  select: device {:?}: {meas}", s.device)?;
    }
    let l = &m.limits;
    writeln!(
        out,
        "  limits: fuel_per_call {}, time_ms_per_call {}, memory_bytes {}, max_output_readings {}, kv_max_bytes {}",
        opt(l.fuel_per_call),
        opt(l.time_ms_per_call),
        opt(l.memory_bytes),
        opt(l.max_output_readings),
        opt(l.kv_max_bytes)
    )?;
    if !m.config.is_empty() {
        writeln!(out, "  config: {}", m.config_json())?;
    }
    writeln!(out, "files:")?;
    for (name, size, digest, role) in &files {
        writeln!(
            out,
            "  {name:<24} {size:>10} bytes  sha256 {digest}  ({role})"
        )?;
    }
    writeln!(
        out,
        "signatures (NOT verified here; use `gatewayd-app verify --trust KEY.pub`):"
    )?;
    if bundle.signatures.is_empty() {
        writeln!(out, "  (none: the bundle is unsigned)")?;
    }
    for s in &bundle.signatures {
        writeln!(
            out,
            "  {} ({}, {} bytes)",
            s.key_id,
            s.algorithm,
            s.value.len()
        )?;
    }
    Ok(())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "default".to_owned(), |v| v.to_string())
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    gatewayd_artifact::write_atomic(path, data)
        .with_context(|| format!("writing {}", path.display()))
}
