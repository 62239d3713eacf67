//! The `.gwapp` archive: reading, writing, and the verified form.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{toml_error, ArtifactError};
use crate::keys::{Algorithm, KeyId, Signature, SigningKey};
use crate::manifest::{file_name_problem, Manifest};
use crate::trust::TrustStore;
use crate::{MANIFEST_FILE, SIGNATURES_FILE};

const MIB: u64 = 1024 * 1024;

/// Size limits applied when reading a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// The whole archive (default 64 MiB).
    pub max_bundle_bytes: u64,
    /// Any one file in it (default 48 MiB).
    pub max_file_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_bundle_bytes: 64 * MIB,
            max_file_bytes: 48 * MIB,
        }
    }
}

impl BundleLimits {
    /// No limits (for tools working on bundles they already hold in memory).
    pub const UNLIMITED: BundleLimits = BundleLimits {
        max_bundle_bytes: u64::MAX,
        max_file_bytes: u64::MAX,
    };
}

/// A structurally valid bundle whose file digests match its manifest.
/// Its signatures have NOT been checked: see [`TrustStore::verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The exact bytes of `manifest.toml` (what the signatures cover).
    pub manifest_bytes: Vec<u8>,
    /// The WebAssembly component.
    pub module: Vec<u8>,
    /// Model bytes by model name.
    pub models: BTreeMap<String, Vec<u8>>,
    /// The signatures from `signatures.toml`.
    pub signatures: Vec<Signature>,
    /// sha256 of the whole archive.
    pub sha256: [u8; 32],
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn archive_err(e: impl std::fmt::Display) -> ArtifactError {
    ArtifactError::Archive(e.to_string())
}

fn check_digest(file: &str, expected: Option<&str>, data: &[u8]) -> Result<(), ArtifactError> {
    let actual = sha256_hex(data);
    match expected {
        Some(expected) if expected == actual => Ok(()),
        Some(expected) => Err(ArtifactError::DigestMismatch {
            file: file.to_owned(),
            expected: expected.to_owned(),
            actual,
        }),
        None => Err(ArtifactError::Manifest(format!(
            "no sha256 for {file:?} (a bundle's manifest must carry the digest of every file; \
             `gatewayd-app pack` writes them)"
        ))),
    }
}

impl Bundle {
    /// Read an archive: structure, manifest, and file digests. Does NOT
    /// check signatures.
    pub fn parse(archive: &[u8], limits: &BundleLimits) -> Result<Bundle, ArtifactError> {
        let total = archive.len() as u64;
        if total > limits.max_bundle_bytes {
            return Err(ArtifactError::TooLarge {
                what: "bundle".to_owned(),
                size: total,
                limit: limits.max_bundle_bytes,
            });
        }
        let mut files = read_entries(archive, limits)?;

        let manifest_bytes = files
            .remove(MANIFEST_FILE)
            .ok_or_else(|| ArtifactError::MissingFile(MANIFEST_FILE.to_owned()))?;
        let manifest = Manifest::parse(&manifest_bytes)?;
        let signatures_bytes = files
            .remove(SIGNATURES_FILE)
            .ok_or_else(|| ArtifactError::MissingFile(SIGNATURES_FILE.to_owned()))?;

        let expected: BTreeSet<&str> = manifest.file_names().collect();
        if let Some(extra) = files.keys().find(|name| !expected.contains(name.as_str())) {
            return Err(ArtifactError::UnexpectedFile(extra.clone()));
        }
        let signatures = parse_signatures(&signatures_bytes)?;

        let module = files
            .remove(&manifest.app.module)
            .ok_or_else(|| ArtifactError::MissingFile(manifest.app.module.clone()))?;
        check_digest(
            &manifest.app.module,
            manifest.app.module_sha256.as_deref(),
            &module,
        )?;
        let mut models = BTreeMap::new();
        for m in &manifest.models {
            let data = files
                .remove(&m.file)
                .ok_or_else(|| ArtifactError::MissingFile(m.file.clone()))?;
            check_digest(&m.file, m.sha256.as_deref(), &data)?;
            models.insert(m.name.clone(), data);
        }

        Ok(Bundle {
            manifest,
            manifest_bytes,
            module,
            models,
            signatures,
            sha256: Sha256::digest(archive).into(),
        })
    }

    /// Re-derive the manifest from `manifest_bytes` and re-check every
    /// digest, so that a `Bundle` assembled by hand cannot carry a module
    /// or manifest other than the one the signatures cover.
    pub(crate) fn check_consistency(&mut self) -> Result<(), ArtifactError> {
        let manifest = Manifest::parse(&self.manifest_bytes)?;
        check_digest(
            &manifest.app.module,
            manifest.app.module_sha256.as_deref(),
            &self.module,
        )?;
        let names: BTreeSet<&str> = manifest.models.iter().map(|m| m.name.as_str()).collect();
        if let Some(extra) = self.models.keys().find(|n| !names.contains(n.as_str())) {
            return Err(ArtifactError::UnexpectedFile(format!("model {extra}")));
        }
        for m in &manifest.models {
            let data = self
                .models
                .get(&m.name)
                .ok_or_else(|| ArtifactError::MissingFile(m.file.clone()))?;
            check_digest(&m.file, m.sha256.as_deref(), data)?;
        }
        self.manifest = manifest;
        Ok(())
    }

    /// The files of the bundle other than the manifest and signatures, as
    /// (file name, bytes), module first.
    pub fn payload_files(&self) -> Vec<(&str, &[u8])> {
        let mut out = vec![(self.manifest.app.module.as_str(), self.module.as_slice())];
        for m in &self.manifest.models {
            if let Some(data) = self.models.get(&m.name) {
                out.push((m.file.as_str(), data.as_slice()));
            }
        }
        out
    }
}

fn read_entries(
    archive: &[u8],
    limits: &BundleLimits,
) -> Result<BTreeMap<String, Vec<u8>>, ArtifactError> {
    let mut files = BTreeMap::new();
    let mut reader = tar::Archive::new(archive);
    for entry in reader.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| ArtifactError::Archive("an entry name is not UTF-8".to_owned()))?;
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(ArtifactError::Archive(format!(
                "entry {name:?} is not a regular file ({kind:?}); a bundle holds only plain files"
            )));
        }
        if let Some(problem) = file_name_problem(&name) {
            return Err(ArtifactError::Archive(format!(
                "entry name {name:?} {problem}"
            )));
        }
        let size = entry.size();
        if size > limits.max_file_bytes {
            return Err(ArtifactError::TooLarge {
                what: name,
                size,
                limit: limits.max_file_bytes,
            });
        }
        let mut data = Vec::new();
        (&mut entry)
            .take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| ArtifactError::Archive(format!("entry {name:?}: {e}")))?;
        if data.len() as u64 != size {
            return Err(ArtifactError::Archive(format!(
                "entry {name:?} is truncated ({} of {size} bytes)",
                data.len()
            )));
        }
        if files.contains_key(&name) {
            return Err(ArtifactError::Archive(format!(
                "entry {name:?} appears twice"
            )));
        }
        files.insert(name, data);
    }
    Ok(files)
}

// ------------------------------------------------------------ signatures.toml

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SignaturesFile {
    #[serde(default, rename = "signature")]
    signatures: Vec<SignatureEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureEntry {
    algorithm: Algorithm,
    key_id: String,
    value: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, ArtifactError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ArtifactError::Signatures("not UTF-8 text".to_owned()))?;
    let file: SignaturesFile =
        toml::from_str(text).map_err(|e| ArtifactError::Signatures(toml_error(text, &e)))?;
    file.signatures
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let key_id: KeyId = s.key_id.parse().map_err(|_| {
                ArtifactError::Signatures(format!(
                    "signature[{i}].key_id {:?} is not 16 hexadecimal digits",
                    s.key_id
                ))
            })?;
            let value = b64().decode(s.value.trim()).map_err(|e| {
                ArtifactError::Signatures(format!("signature[{i}].value is not base64: {e}"))
            })?;
            Ok(Signature {
                algorithm: s.algorithm,
                key_id,
                value,
            })
        })
        .collect()
}

fn signatures_toml(signatures: &[Signature]) -> Result<String, ArtifactError> {
    let file = SignaturesFile {
        signatures: signatures
            .iter()
            .map(|s| SignatureEntry {
                algorithm: s.algorithm,
                key_id: s.key_id.to_string(),
                value: b64().encode(&s.value),
            })
            .collect(),
    };
    toml::to_string(&file).map_err(|e| ArtifactError::Signatures(e.to_string()))
}

// ------------------------------------------------------------------- writing

/// Write an archive: `manifest.toml`, `signatures.toml`, then `files`
/// sorted by name; mtime 0, mode 0644, uid/gid 0.
pub(crate) fn write_archive(
    manifest_bytes: &[u8],
    signatures: &[Signature],
    files: &[(&str, &[u8])],
) -> Result<Vec<u8>, ArtifactError> {
    let sig_text = signatures_toml(signatures)?;
    let mut sorted: Vec<(&str, &[u8])> = files.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut builder = tar::Builder::new(Vec::new());
    let all = [
        (MANIFEST_FILE, manifest_bytes),
        (SIGNATURES_FILE, sig_text.as_bytes()),
    ];
    for (name, data) in all.iter().chain(sorted.iter()) {
        append(&mut builder, name, data)?;
    }
    builder.into_inner().map_err(archive_err)
}

pub(crate) fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    data: &[u8],
) -> Result<(), ArtifactError> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder
        .append_data(&mut header, name, data)
        .map_err(|e| ArtifactError::Archive(format!("writing {name:?}: {e}")))
}

fn set_digest(slot: &mut Option<String>, file: &str, data: &[u8]) -> Result<(), ArtifactError> {
    let actual = sha256_hex(data);
    match slot {
        Some(expected) if *expected != actual => Err(ArtifactError::DigestMismatch {
            file: file.to_owned(),
            expected: expected.clone(),
            actual,
        }),
        _ => {
            *slot = Some(actual);
            Ok(())
        }
    }
}

fn sign_all(manifest_bytes: &[u8], keys: &[SigningKey]) -> Result<Vec<Signature>, ArtifactError> {
    let mut out: Vec<Signature> = Vec::with_capacity(keys.len());
    for key in keys {
        if out
            .iter()
            .any(|s| s.key_id == key.key_id() && s.algorithm == key.algorithm())
        {
            continue;
        }
        out.push(key.sign(manifest_bytes)?);
    }
    Ok(out)
}

/// Build a bundle: parse and validate the manifest, fill in the sha256 of
/// the module and of every model (refusing a digest the author wrote that
/// does not match), re-serialise the manifest, sign it with every key and
/// write a deterministic archive. `models` are (model name, bytes) and must
/// match the manifest's `[[model]]` entries exactly. With no keys the bundle
/// is unsigned (sign it later with [`add_signature`]).
pub fn pack(
    manifest_toml: &str,
    module: &[u8],
    models: &[(String, Vec<u8>)],
    keys: &[SigningKey],
) -> Result<Vec<u8>, ArtifactError> {
    let mut manifest = Manifest::parse(manifest_toml.as_bytes())?;
    set_digest(
        &mut manifest.app.module_sha256,
        &manifest.app.module,
        module,
    )?;

    let mut given: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (name, data) in models {
        if given.insert(name.as_str(), data.as_slice()).is_some() {
            return Err(ArtifactError::Manifest(format!(
                "model {name:?} is given twice"
            )));
        }
        if !manifest.models.iter().any(|m| m.name == *name) {
            return Err(ArtifactError::Manifest(format!(
                "model {name:?} is given but the manifest has no [[model]] named so"
            )));
        }
    }
    let mut files: Vec<(&str, &[u8])> = vec![(manifest.app.module.as_str(), module)];
    for m in &mut manifest.models {
        let data = given
            .get(m.name.as_str())
            .copied()
            .ok_or_else(|| ArtifactError::MissingFile(format!("{} (model {})", m.file, m.name)))?;
        set_digest(&mut m.sha256, &m.file, data)?;
    }
    for m in &manifest.models {
        if let Some(data) = given.get(m.name.as_str()) {
            files.push((m.file.as_str(), data));
        }
    }

    let manifest_text = toml::to_string_pretty(&manifest)
        .map_err(|e| ArtifactError::Manifest(format!("cannot write the manifest: {e}")))?;
    // What we sign must be what a gateway will read back.
    Manifest::parse(manifest_text.as_bytes())?;
    let manifest_bytes = manifest_text.into_bytes();
    let signatures = sign_all(&manifest_bytes, keys)?;
    write_archive(&manifest_bytes, &signatures, &files)
}

/// Add a signature by `key` to an existing bundle. The manifest bytes stay
/// exactly as they are; a signature by the same key is replaced.
pub fn add_signature(archive: &[u8], key: &SigningKey) -> Result<Vec<u8>, ArtifactError> {
    let bundle = Bundle::parse(archive, &BundleLimits::UNLIMITED)?;
    let new = key.sign(&bundle.manifest_bytes)?;
    let mut signatures: Vec<Signature> = bundle
        .signatures
        .iter()
        .filter(|s| !(s.key_id == new.key_id && s.algorithm == new.algorithm))
        .cloned()
        .collect();
    signatures.push(new);
    write_archive(&bundle.manifest_bytes, &signatures, &bundle.payload_files())
}

// ------------------------------------------------------------------ verified

/// A bundle whose manifest carries a valid signature by a trusted key (and
/// meets the trust store's algorithm policy). Only [`TrustStore::verify`]
/// and [`open_verified`] make one.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    bundle: Bundle,
    signed_by: Vec<KeyId>,
    verified: Vec<(KeyId, Algorithm)>,
}

impl VerifiedBundle {
    pub(crate) fn new(bundle: Bundle, verified: Vec<(KeyId, Algorithm)>) -> VerifiedBundle {
        VerifiedBundle {
            signed_by: verified.iter().map(|(k, _)| *k).collect(),
            bundle,
            verified,
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.bundle.manifest
    }

    /// The exact signed manifest bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.bundle.manifest_bytes
    }

    /// The WebAssembly component.
    pub fn module(&self) -> &[u8] {
        &self.bundle.module
    }

    /// Model bytes by model name.
    pub fn models(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.bundle.models
    }

    /// sha256 of the whole archive.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.bundle.sha256
    }

    /// The trusted keys whose signatures verified.
    pub fn signed_by(&self) -> &[KeyId] {
        &self.signed_by
    }

    /// The verified signatures as (key id, algorithm).
    pub fn verified_signatures(&self) -> &[(KeyId, Algorithm)] {
        &self.verified
    }

    /// Take the bundle apart (e.g. to move the module out without a copy).
    pub fn into_bundle(self) -> Bundle {
        self.bundle
    }
}

/// Parse `archive` and verify it against `trust`.
pub fn open_verified(
    archive: &[u8],
    trust: &TrustStore,
    limits: &BundleLimits,
) -> Result<VerifiedBundle, ArtifactError> {
    trust.verify(Bundle::parse(archive, limits)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;

    const MANIFEST: &str = r#"
schema = 1
[app]
name = "threshold-alert"
version = "1.0.0"
description = "original description"
module = "app.wasm"

[[select]]
device = "coap:*"

[[model]]
name = "vibration-ae"
file = "model.onnx"

[[model]]
name = "second"
file = "second.onnx"

[config]
threshold = 30.0
"#;

    const MODULE: &[u8] = b"\0asm fake component";

    fn models() -> Vec<(String, Vec<u8>)> {
        vec![
            ("vibration-ae".to_owned(), b"onnx model one".to_vec()),
            ("second".to_owned(), vec![0u8; 3000]),
        ]
    }

    fn ed() -> SigningKey {
        SigningKey::from_seed(Algorithm::Ed25519, &[1u8; 32]).unwrap()
    }
    fn pq() -> SigningKey {
        SigningKey::from_seed(Algorithm::MlDsa65, &[2u8; 32]).unwrap()
    }
    fn stranger() -> SigningKey {
        SigningKey::from_seed(Algorithm::Ed25519, &[9u8; 32]).unwrap()
    }

    fn trust(keys: &[&SigningKey], required: &[Algorithm]) -> TrustStore {
        TrustStore::new(
            keys.iter().map(|k| k.public()).collect::<Vec<PublicKey>>(),
            required.to_vec(),
        )
    }

    fn packed(keys: &[SigningKey]) -> Vec<u8> {
        pack(MANIFEST, MODULE, &models(), keys).unwrap()
    }

    fn parse(archive: &[u8]) -> Result<Bundle, ArtifactError> {
        Bundle::parse(archive, &BundleLimits::default())
    }

    /// Rebuild an archive from raw (name, bytes) entries, in order.
    fn raw_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            append(&mut b, name, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// The entries of a valid archive, in order.
    fn entries_of(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut a = tar::Archive::new(archive);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((name, data));
        }
        out
    }

    fn rebuild(archive: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
        let entries: Vec<(String, Vec<u8>)> = entries_of(archive)
            .into_iter()
            .filter_map(|(n, d)| f(&n, d).map(|d| (n, d)))
            .collect();
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        raw_archive(&refs)
    }

    #[test]
    fn roundtrip_ed25519() {
        let archive = packed(&[ed()]);
        let bundle = parse(&archive).unwrap();
        assert_eq!(bundle.module, MODULE);
        assert_eq!(bundle.models["vibration-ae"], b"onnx model one");
        assert_eq!(bundle.models["second"].len(), 3000);
        assert_eq!(bundle.signatures.len(), 1);
        assert_eq!(bundle.sha256, <[u8; 32]>::from(Sha256::digest(&archive)));
        let v = trust(&[&ed()], &[]).verify(bundle).unwrap();
        assert_eq!(v.signed_by(), &[ed().key_id()]);
        assert_eq!(v.manifest().app.name, "threshold-alert");
        assert_eq!(v.module(), MODULE);
        assert_eq!(v.models().len(), 2);
        assert_eq!(v.manifest().config_json(), r#"{"threshold":30.0}"#);
        assert_eq!(
            v.manifest().app.module_sha256.as_deref(),
            Some(sha256_hex(MODULE).as_str())
        );
    }

    #[test]
    fn roundtrip_ml_dsa() {
        let archive = packed(&[pq()]);
        let v = open_verified(&archive, &trust(&[&pq()], &[]), &BundleLimits::default()).unwrap();
        assert_eq!(
            v.verified_signatures(),
            &[(pq().key_id(), Algorithm::MlDsa65)]
        );
        // An ed25519-only trust store does not accept it.
        let e =
            open_verified(&archive, &trust(&[&ed()], &[]), &BundleLimits::default()).unwrap_err();
        assert!(matches!(e, ArtifactError::NoTrustedSignature { .. }), "{e}");
    }

    #[test]
    fn roundtrip_both_and_required_algorithms() {
        let archive = packed(&[ed(), pq()]);
        let both = [Algorithm::Ed25519, Algorithm::MlDsa65];
        let v = open_verified(
            &archive,
            &trust(&[&ed(), &pq()], &both),
            &BundleLimits::default(),
        )
        .unwrap();
        assert_eq!(v.signed_by(), &[ed().key_id(), pq().key_id()]);
        // Trusting only one of them is enough without a requirement...
        open_verified(&archive, &trust(&[&pq()], &[]), &BundleLimits::default()).unwrap();
        // ...but not when the other algorithm is required.
        let e = open_verified(
            &archive,
            &trust(&[&pq()], &[Algorithm::Ed25519]),
            &BundleLimits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, ArtifactError::MissingAlgorithm(Algorithm::Ed25519)),
            "{e}"
        );

        // A bundle signed with ed25519 only, on a fleet requiring ML-DSA.
        let ed_only = packed(&[ed()]);
        let e = open_verified(
            &ed_only,
            &trust(&[&ed(), &pq()], &[Algorithm::MlDsa65]),
            &BundleLimits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, ArtifactError::MissingAlgorithm(Algorithm::MlDsa65)),
            "{e}"
        );
        assert!(e.to_string().contains("ml-dsa-65"), "{e}");
    }

    #[test]
    fn add_signature_keeps_manifest_bytes() {
        let archive = packed(&[ed()]);
        let before = parse(&archive).unwrap();
        let signed = add_signature(&archive, &pq()).unwrap();
        let after = parse(&signed).unwrap();
        assert_eq!(before.manifest_bytes, after.manifest_bytes);
        assert_eq!(after.signatures.len(), 2);
        let both = [Algorithm::Ed25519, Algorithm::MlDsa65];
        trust(&[&ed(), &pq()], &both).verify(after).unwrap();
        // Signing again with the same key replaces, not duplicates.
        let again = add_signature(&signed, &pq()).unwrap();
        assert_eq!(parse(&again).unwrap().signatures.len(), 2);
        assert_eq!(again, signed);
        // Adding to an unsigned bundle.
        let unsigned = packed(&[]);
        let signed = add_signature(&unsigned, &ed()).unwrap();
        open_verified(&signed, &trust(&[&ed()], &[]), &BundleLimits::default()).unwrap();
    }

    #[test]
    fn pack_is_deterministic() {
        assert_eq!(packed(&[ed(), pq()]), packed(&[ed(), pq()]));
        // Duplicate keys are signed once.
        assert_eq!(parse(&packed(&[ed(), ed()])).unwrap().signatures.len(), 1);
        // Entry order: manifest, signatures, then files by name.
        let names: Vec<String> = entries_of(&packed(&[ed()]))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            names,
            [
                "manifest.toml",
                "signatures.toml",
                "app.wasm",
                "model.onnx",
                "second.onnx"
            ]
        );
    }

    #[test]
    fn pack_refuses_wrong_author_digest_and_model_mismatches() {
        let wrong = MANIFEST.replace(
            "module = \"app.wasm\"",
            &format!(
                "module = \"app.wasm\"\nmodule_sha256 = \"{}\"",
                "0".repeat(64)
            ),
        );
        let e = pack(&wrong, MODULE, &models(), &[ed()]).unwrap_err();
        assert!(
            matches!(&e, ArtifactError::DigestMismatch { file, .. } if file == "app.wasm"),
            "{e}"
        );
        let right = MANIFEST.replace(
            "module = \"app.wasm\"",
            &format!(
                "module = \"app.wasm\"\nmodule_sha256 = \"{}\"",
                sha256_hex(MODULE)
            ),
        );
        pack(&right, MODULE, &models(), &[ed()]).unwrap();

        let e = pack(MANIFEST, MODULE, &models()[..1], &[ed()]).unwrap_err();
        assert!(
            matches!(&e, ArtifactError::MissingFile(f) if f.contains("second.onnx")),
            "{e}"
        );
        let mut extra = models();
        extra.push(("nope".into(), vec![1]));
        assert!(pack(MANIFEST, MODULE, &extra, &[ed()]).is_err());
        let mut twice = models();
        twice.push(("second".into(), vec![1]));
        assert!(pack(MANIFEST, MODULE, &twice, &[ed()]).is_err());
        assert!(pack("schema = 1", MODULE, &[], &[ed()]).is_err());
    }

    #[test]
    fn tampered_manifest_is_bad_signature() {
        for key in [ed(), pq()] {
            let archive = packed(std::slice::from_ref(&key));
            let store = trust(&[&key], &[]);
            // Rebuild with modified manifest bytes and the old signatures.
            let tampered = rebuild(&archive, |name, data| {
                Some(if name == MANIFEST_FILE {
                    String::from_utf8(data)
                        .unwrap()
                        .replace("version = \"1.0.0\"", "version = \"6.6.6\"")
                        .into_bytes()
                } else {
                    data
                })
            });
            let e = open_verified(&tampered, &store, &BundleLimits::default()).unwrap_err();
            match &e {
                ArtifactError::BadSignature { key_id, algorithm } => {
                    assert_eq!(*key_id, key.key_id());
                    assert_eq!(*algorithm, key.algorithm());
                }
                other => panic!("{other}"),
            }
            assert!(e.to_string().contains(&key.key_id().to_string()), "{e}");
            assert!(e.to_string().contains(key.algorithm().as_str()), "{e}");

            // Flip one byte of the manifest inside the archive itself.
            let pos = archive
                .windows(b"original".len())
                .position(|w| w == b"original")
                .unwrap();
            let mut flipped = archive.clone();
            flipped[pos] = b'O';
            let e = open_verified(&flipped, &store, &BundleLimits::default()).unwrap_err();
            assert!(matches!(e, ArtifactError::BadSignature { .. }), "{e}");
        }
    }

    #[test]
    fn tampered_signature_is_bad_signature() {
        let archive = packed(&[ed()]);
        let mut bundle = parse(&archive).unwrap();
        bundle.signatures[0].value[0] ^= 0x80;
        let e = trust(&[&ed()], &[]).verify(bundle).unwrap_err();
        assert!(matches!(e, ArtifactError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn tampered_module_is_digest_mismatch() {
        let archive = packed(&[ed()]);
        let tampered = rebuild(&archive, |name, data| {
            Some(if name == "app.wasm" {
                b"\0asm evil".to_vec()
            } else {
                data
            })
        });
        let e = parse(&tampered).unwrap_err();
        match &e {
            ArtifactError::DigestMismatch {
                file,
                expected,
                actual,
            } => {
                assert_eq!(file, "app.wasm");
                assert_eq!(*expected, sha256_hex(MODULE));
                assert_eq!(*actual, sha256_hex(b"\0asm evil"));
            }
            other => panic!("{other}"),
        }
        let tampered = rebuild(&archive, |name, data| {
            Some(if name == "second.onnx" {
                vec![1u8; 3000]
            } else {
                data
            })
        });
        let e = parse(&tampered).unwrap_err();
        assert!(matches!(&e, ArtifactError::DigestMismatch { file, .. } if file == "second.onnx"));
    }

    #[test]
    fn hand_built_bundle_cannot_smuggle_a_module() {
        let archive = packed(&[ed()]);
        let mut bundle = parse(&archive).unwrap();
        bundle.module = b"other".to_vec();
        let e = trust(&[&ed()], &[]).verify(bundle).unwrap_err();
        assert!(matches!(e, ArtifactError::DigestMismatch { .. }), "{e}");
        let mut bundle = parse(&archive).unwrap();
        bundle.manifest.app.name = "other-app".into();
        let v = trust(&[&ed()], &[]).verify(bundle).unwrap();
        assert_eq!(v.manifest().app.name, "threshold-alert");
    }

    #[test]
    fn extra_file_is_unexpected() {
        let archive = packed(&[ed()]);
        let mut entries = entries_of(&archive);
        entries.push(("evil.sh".into(), b"rm -rf /".to_vec()));
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let e = parse(&raw_archive(&refs)).unwrap_err();
        assert!(
            matches!(&e, ArtifactError::UnexpectedFile(f) if f == "evil.sh"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_entry_refused() {
        let archive = packed(&[ed()]);
        let mut entries = entries_of(&archive);
        let module = entries[2].clone();
        entries.push(module);
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let e = parse(&raw_archive(&refs)).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn missing_files() {
        let archive = packed(&[ed()]);
        for (drop, expect) in [
            ("app.wasm", "app.wasm"),
            ("model.onnx", "model.onnx"),
            (MANIFEST_FILE, MANIFEST_FILE),
            (SIGNATURES_FILE, SIGNATURES_FILE),
        ] {
            let without = rebuild(&archive, |name, data| (name != drop).then_some(data));
            let e = parse(&without).unwrap_err();
            assert!(
                matches!(&e, ArtifactError::MissingFile(f) if f == expect),
                "{drop}: {e}"
            );
        }
    }

    #[test]
    fn unsigned_and_untrusted() {
        let unsigned = packed(&[]);
        let bundle = parse(&unsigned).unwrap();
        assert!(bundle.signatures.is_empty());
        let e = trust(&[&ed()], &[]).verify(bundle).unwrap_err();
        assert!(matches!(e, ArtifactError::Unsigned), "{e}");
        assert_eq!(
            e.to_string(),
            "bundle is not signed (signatures.toml has no signature)"
        );

        let archive = packed(&[stranger()]);
        let e = open_verified(
            &archive,
            &trust(&[&ed(), &pq()], &[]),
            &BundleLimits::default(),
        )
        .unwrap_err();
        let ArtifactError::NoTrustedSignature { key_ids, trusted } = &e else {
            panic!("{e}")
        };
        assert_eq!(key_ids, &[format!("{} (ed25519)", stranger().key_id())]);
        assert_eq!(trusted.len(), 2);
        let msg = e.to_string();
        assert!(msg.starts_with("signed only by untrusted keys: "), "{msg}");
        assert!(msg.contains(&ed().key_id().to_string()), "{msg}");

        // An untrusted signature next to a trusted one is ignored.
        let archive = packed(&[stranger(), ed()]);
        let v = open_verified(&archive, &trust(&[&ed()], &[]), &BundleLimits::default()).unwrap();
        assert_eq!(v.signed_by(), &[ed().key_id()]);

        // An empty trust store refuses everything.
        let e = TrustStore::default()
            .verify(parse(&archive).unwrap())
            .unwrap_err();
        assert!(matches!(e, ArtifactError::NoTrustedKeys), "{e}");
        assert!(e.to_string().contains("no trusted keys configured"), "{e}");
    }

    #[test]
    fn trust_store_load() {
        let dir = tempfile::tempdir().unwrap();
        let ed_pub = dir.path().join("ed.pub");
        ed().public().save(&ed_pub).unwrap();
        let store = TrustStore::load(std::slice::from_ref(&ed_pub), &[]).unwrap();
        assert_eq!(store.keys.len(), 1);
        let e = TrustStore::load(std::slice::from_ref(&ed_pub), &[Algorithm::MlDsa65]).unwrap_err();
        assert!(e.to_string().contains("no ml-dsa-65 key is trusted"), "{e}");
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, "format = 1").unwrap();
        let e = TrustStore::load(&[ed_pub, bad.clone()], &[]).unwrap_err();
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(parse(&[]).is_err());
        assert!(parse(b"not a tar archive at all").is_err());
        assert!(parse(&[0u8; 1024]).is_err()); // empty archive: no manifest
        let archive = packed(&[ed(), pq()]);
        let full = parse(&archive).unwrap();
        // The archive ends in two zero blocks (1024 bytes); cutting into
        // them (or the last entry's padding) loses no content, and tar
        // readers accept that. Any cut into content is an error.
        let content_end = archive.len() - 1024;
        for len in (0..archive.len()).step_by(37) {
            match parse(&archive[..len]) {
                Ok(b) => {
                    assert!(len > content_end - 512, "truncated at {len} accepted");
                    assert_eq!(b.manifest_bytes, full.manifest_bytes);
                    assert_eq!(b.models, full.models);
                }
                Err(_) => assert!(len < archive.len()),
            }
        }
    }

    fn archive_with_raw_name(name: &[u8], kind: tar::EntryType) -> Vec<u8> {
        let archive = packed(&[ed()]);
        let mut b = tar::Builder::new(Vec::new());
        for (n, d) in entries_of(&archive) {
            append(&mut b, &n, &d).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn path_traversal_and_non_files_refused() {
        for name in [
            &b"../evil"[..],
            b"/etc/passwd",
            b"dir/app.wasm",
            b"..",
            b"a\\b",
        ] {
            let archive = archive_with_raw_name(name, tar::EntryType::Regular);
            let e = parse(&archive).unwrap_err();
            assert!(matches!(e, ArtifactError::Archive(_)), "{name:?}: {e}");
        }
        for kind in [
            tar::EntryType::Directory,
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Fifo,
        ] {
            let archive = archive_with_raw_name(b"x", kind);
            let e = parse(&archive).unwrap_err();
            assert!(
                e.to_string().contains("not a regular file"),
                "{kind:?}: {e}"
            );
        }
        let archive = archive_with_raw_name(b"caf\xe9", tar::EntryType::Regular);
        assert!(parse(&archive).is_err());
    }

    #[test]
    fn oversized_refused() {
        let archive = packed(&[ed()]);
        let small = BundleLimits {
            max_bundle_bytes: archive.len() as u64 - 1,
            max_file_bytes: 1 << 20,
        };
        let e = Bundle::parse(&archive, &small).unwrap_err();
        assert!(
            matches!(&e, ArtifactError::TooLarge { what, .. } if what == "bundle"),
            "{e}"
        );
        let small = BundleLimits {
            max_bundle_bytes: 1 << 20,
            max_file_bytes: 2999,
        };
        let e = Bundle::parse(&archive, &small).unwrap_err();
        assert!(
            matches!(&e, ArtifactError::TooLarge { what, size: 3000, limit: 2999 } if what == "second.onnx"),
            "{e}"
        );
        let exact = BundleLimits {
            max_bundle_bytes: archive.len() as u64,
            max_file_bytes: 3000,
        };
        Bundle::parse(&archive, &exact).unwrap();
    }

    #[test]
    fn long_file_names_roundtrip() {
        let long = "m".repeat(128);
        let manifest = MANIFEST.replace("second.onnx", &long);
        let archive = pack(&manifest, MODULE, &models(), &[ed()]).unwrap();
        let v = open_verified(&archive, &trust(&[&ed()], &[]), &BundleLimits::default()).unwrap();
        assert_eq!(v.models()["second"].len(), 3000);
    }

    #[test]
    fn malformed_signatures_file() {
        let archive = packed(&[ed()]);
        for bad in [
            "[[signature]]\nalgorithm = \"rsa\"\nkey_id = \"0011223344556677\"\nvalue = \"\"\n",
            "[[signature]]\nalgorithm = \"ed25519\"\nkey_id = \"xyz\"\nvalue = \"\"\n",
            "[[signature]]\nalgorithm = \"ed25519\"\nkey_id = \"0011223344556677\"\nvalue = \"!!\"\n",
            "[[signature]]\nalgorithm = \"ed25519\"\nkey_id = \"0011223344556677\"\nvalue = \"\"\nextra = 1\n",
            "garbage = [",
        ] {
            let rebuilt = rebuild(&archive, |name, data| {
                Some(if name == SIGNATURES_FILE { bad.as_bytes().to_vec() } else { data })
            });
            let e = parse(&rebuilt).unwrap_err();
            assert!(matches!(e, ArtifactError::Signatures(_)), "{bad}: {e}");
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        fn valid() -> &'static [u8] {
            static V: OnceLock<Vec<u8>> = OnceLock::new();
            V.get_or_init(|| packed(&[ed(), pq()]))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let _ = parse(&bytes);
            }

            #[test]
            fn mutated_bundles_never_panic(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut bytes = valid().to_vec();
                for (i, b) in edits {
                    let at = i.index(bytes.len());
                    bytes[at] = b;
                }
                if truncate {
                    bytes.truncate(cut.index(bytes.len()));
                }
                if let Ok(bundle) = parse(&bytes) {
                    let _ = trust(&[&ed(), &pq()], &[]).verify(bundle);
                }
            }

            #[test]
            fn random_manifests_never_panic(text in "\\PC{0,300}") {
                let _ = Manifest::parse(text.as_bytes());
            }
        }
    }
}
