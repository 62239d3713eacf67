//! Signed edge-app bundles (`.gwapp`).
//!
//! A bundle is a ustar archive holding `manifest.toml`, `signatures.toml`,
//! the WebAssembly component and optional ONNX models. The manifest carries
//! the sha256 of every other file, and the signatures cover the manifest
//! bytes, so one signature covers the whole bundle. Signatures are ed25519
//! or ML-DSA-65 (FIPS 204); a bundle may carry several, which lets a fleet
//! move from one algorithm to the other without a format change.
//!
//! * [`Manifest`]: the app's declaration (what it reads, how, its limits).
//! * [`Bundle::parse`]: structure and digests, no signature check.
//! * [`TrustStore::verify`] / [`open_verified`]: the only way to a
//!   [`VerifiedBundle`], which is what a gateway may run.
//! * [`pack`] / [`add_signature`]: writing bundles.
//! * [`SigningKey`] / [`PublicKey`]: key files.
//!
//! The format is described in the crate's README.md.

#![forbid(unsafe_code)]

mod bundle;
mod error;
mod keys;
mod manifest;
mod trust;

pub use bundle::{add_signature, open_verified, pack, Bundle, BundleLimits, VerifiedBundle};
pub use error::ArtifactError;
pub use gatewayd_model::glob_match;
pub use keys::{Algorithm, KeyId, PublicKey, Signature, SigningKey, SIGNING_DOMAIN};
pub use manifest::{
    AppInfo, Delivery, DeliveryMode, FailurePolicy, Limits, Manifest, ModelRef, Selector,
};
pub use trust::TrustStore;

/// Name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// Name of the signature list inside a bundle.
pub const SIGNATURES_FILE: &str = "signatures.toml";

/// The fuzzed entry point: `data` as a bundle archive (parsed, then
/// verified against an empty and a one-key trust store), as a manifest,
/// and as public and signing key files. Everything must end in `Ok` or a
/// clear error; a panic is a bug. Used by `fuzz/` and the seed-corpus test.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    let limits = BundleLimits::default();
    if let Ok(b) = Bundle::parse(data, &limits) {
        let _ = TrustStore::new(Vec::new(), Vec::new()).verify(b.clone());
        if let Ok(key) = SigningKey::from_seed(Algorithm::Ed25519, &[7; 32]) {
            let _ = TrustStore::new(vec![key.public()], Vec::new()).verify(b);
        }
    }
    let _ = Manifest::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PublicKey::from_toml_str(text);
        let _ = SigningKey::from_toml_str(text);
    }
}

/// Writes `data` to `path` through a temporary file in the same directory
/// (`.<name>.tmp-<pid>`, ignored by the deployment-directory scanner), an
/// fsync and a rename, so a reader sees the old file or the whole new one.
/// Used for bundles, the runtime's installed bundles and compiled cache.
pub fn write_atomic(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
