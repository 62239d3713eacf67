//! Signing algorithms, key ids, signing and public keys, and their files.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::error::{toml_error, ArtifactError};

/// Domain separation prefix: what is signed is `SIGNING_DOMAIN` followed by
/// the exact bytes of `manifest.toml`.
pub const SIGNING_DOMAIN: &[u8] = b"gatewayd-app-manifest-v1\0";

/// ML-DSA context string (FIPS 204 `ctx`), the domain without its NUL.
const MLDSA_CONTEXT: &[u8] = b"gatewayd-app-manifest-v1";

const PRIVATE_FORMAT: &str = "gatewayd-signing-key-v1";
const PUBLIC_FORMAT: &str = "gatewayd-public-key-v1";

const ED25519_PUBLIC_LEN: usize = 32;
const ED25519_SIGNATURE_LEN: usize = 64;
const MLDSA65_PUBLIC_LEN: usize = 1952;
const MLDSA65_SIGNATURE_LEN: usize = 3309;

type MlDsa65 = ml_dsa::MlDsa65;

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032), strict verification.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ML-DSA-65 (FIPS 204), post-quantum.
    #[serde(rename = "ml-dsa-65")]
    MlDsa65,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 2] = [Algorithm::Ed25519, Algorithm::MlDsa65];

    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::MlDsa65 => "ml-dsa-65",
        }
    }

    fn public_len(self) -> usize {
        match self {
            Algorithm::Ed25519 => ED25519_PUBLIC_LEN,
            Algorithm::MlDsa65 => MLDSA65_PUBLIC_LEN,
        }
    }

    fn signature_len(self) -> usize {
        match self {
            Algorithm::Ed25519 => ED25519_SIGNATURE_LEN,
            Algorithm::MlDsa65 => MLDSA65_SIGNATURE_LEN,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ArtifactError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "ed25519" => Ok(Algorithm::Ed25519),
            "ml-dsa-65" => Ok(Algorithm::MlDsa65),
            other => Err(ArtifactError::Key(format!(
                "unknown algorithm {other:?} (known: ed25519, ml-dsa-65)"
            ))),
        }
    }
}

/// A key id: the first 8 bytes of sha256 over the public key bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of a public key given as its raw bytes.
    pub fn of(public_key_bytes: &[u8]) -> KeyId {
        let digest = Sha256::digest(public_key_bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = ArtifactError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).map_err(|_| {
            ArtifactError::Key(format!("key id {s:?} is not 16 hexadecimal digits"))
        })?;
        Ok(KeyId(id))
    }
}

/// One signature over a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Id of the key that made it.
    pub key_id: KeyId,
    /// The raw signature bytes (64 for ed25519, 3309 for ML-DSA-65).
    pub value: Vec<u8>,
}

fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + manifest_bytes.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(manifest_bytes);
    msg
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

// ---------------------------------------------------------------- public keys

#[derive(Clone)]
enum VerifyingInner {
    Ed25519(ed25519_dalek::VerifyingKey),
    // Boxed: the ML-DSA verifying key carries ~30 KiB of precomputed values.
    MlDsa65(Box<ml_dsa::VerifyingKey<MlDsa65>>),
}

/// A public (verifying) key, as found in a `*.pub` file.
#[derive(Clone)]
pub struct PublicKey {
    algorithm: Algorithm,
    key_id: KeyId,
    bytes: Vec<u8>,
    comment: Option<String>,
    inner: VerifyingInner,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("comment", &self.comment)
            .finish_non_exhaustive()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.algorithm == other.algorithm && self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    format: String,
    algorithm: Algorithm,
    key_id: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

impl PublicKey {
    /// A public key from its raw encoding (32 bytes for ed25519, the
    /// 1952-byte FIPS 204 encoding for ML-DSA-65).
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<PublicKey, ArtifactError> {
        if bytes.len() != algorithm.public_len() {
            return Err(ArtifactError::Key(format!(
                "{algorithm} public key must be {} bytes, not {}",
                algorithm.public_len(),
                bytes.len()
            )));
        }
        let inner = match algorithm {
            Algorithm::Ed25519 => {
                let arr: [u8; ED25519_PUBLIC_LEN] = bytes
                    .try_into()
                    .map_err(|_| ArtifactError::Key("ed25519 public key length".into()))?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| {
                    ArtifactError::Key("ed25519 public key is not a valid curve point".into())
                })?;
                VerifyingInner::Ed25519(vk)
            }
            Algorithm::MlDsa65 => {
                let enc = ml_dsa::EncodedVerifyingKey::<MlDsa65>::try_from(bytes)
                    .map_err(|_| ArtifactError::Key("ml-dsa-65 public key length".into()))?;
                VerifyingInner::MlDsa65(Box::new(ml_dsa::VerifyingKey::<MlDsa65>::decode(&enc)))
            }
        };
        Ok(PublicKey {
            algorithm,
            key_id: KeyId::of(bytes),
            bytes: bytes.to_vec(),
            comment: None,
            inner,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id (first 8 bytes of sha256 of [`as_bytes`](Self::as_bytes)).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The raw public key encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The optional free-text comment from the key file.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// Replace the comment.
    pub fn set_comment(&mut self, comment: Option<String>) {
        self.comment = comment;
    }

    /// Whether `signature` is a valid signature by this key over `manifest_bytes`.
    ///
    /// A signature with another algorithm or key id is not valid.
    pub fn verify(&self, manifest_bytes: &[u8], signature: &Signature) -> bool {
        if signature.algorithm != self.algorithm
            || signature.key_id != self.key_id
            || signature.value.len() != self.algorithm.signature_len()
        {
            return false;
        }
        let msg = signed_message(manifest_bytes);
        match &self.inner {
            VerifyingInner::Ed25519(vk) => {
                match ed25519_dalek::Signature::from_slice(&signature.value) {
                    Ok(sig) => vk.verify_strict(&msg, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            VerifyingInner::MlDsa65(vk) => {
                match ml_dsa::Signature::<MlDsa65>::try_from(signature.value.as_slice()) {
                    Ok(sig) => vk.verify_with_context(&msg, MLDSA_CONTEXT, &sig),
                    Err(_) => false,
                }
            }
        }
    }

    /// Parse a `*.pub` file's text. Refuses a `key_id` that does not match the key.
    pub fn from_toml_str(text: &str) -> Result<PublicKey, ArtifactError> {
        let file: PublicKeyFile =
            toml::from_str(text).map_err(|e| ArtifactError::Key(toml_error(text, &e)))?;
        if file.format != PUBLIC_FORMAT {
            return Err(ArtifactError::Key(format!(
                "format is {:?}, expected {PUBLIC_FORMAT:?}",
                file.format
            )));
        }
        let bytes = b64()
            .decode(file.public_key.trim())
            .map_err(|e| ArtifactError::Key(format!("public_key is not valid base64: {e}")))?;
        let mut key = PublicKey::from_bytes(file.algorithm, &bytes)?;
        check_key_id(&file.key_id, key.key_id)?;
        key.comment = file.comment;
        Ok(key)
    }

    /// The `*.pub` file text.
    pub fn to_toml_string(&self) -> String {
        let file = PublicKeyFile {
            format: PUBLIC_FORMAT.to_owned(),
            algorithm: self.algorithm,
            key_id: self.key_id.to_string(),
            public_key: b64().encode(&self.bytes),
            comment: self.comment.clone(),
        };
        toml::to_string(&file).unwrap_or_default()
    }

    /// Read a `*.pub` file. Errors name the file.
    pub fn load(path: &Path) -> Result<PublicKey, ArtifactError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ArtifactError::io(format!("reading public key {}", path.display()), e))?;
        PublicKey::from_toml_str(&text).map_err(|e| in_file(path, e))
    }

    /// Write a `*.pub` file; refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<(), ArtifactError> {
        write_new_file(path, self.to_toml_string().as_bytes(), 0o644)
    }
}

// --------------------------------------------------------------- signing keys

enum SigningInner {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    MlDsa65(Box<ml_dsa::ExpandedSigningKey<MlDsa65>>),
}

/// A private signing key. The key file stores only the 32-byte seed.
pub struct SigningKey {
    algorithm: Algorithm,
    seed: [u8; 32],
    inner: SigningInner,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateKeyFile {
    format: String,
    algorithm: Algorithm,
    key_id: String,
    seed: String,
}

impl Drop for PrivateKeyFile {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

impl SigningKey {
    /// A new random key (seed from the operating system's generator).
    pub fn generate(algorithm: Algorithm) -> Result<SigningKey, ArtifactError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| ArtifactError::Key(format!("the system random generator failed: {e}")))?;
        let key = SigningKey::from_seed(algorithm, &seed);
        seed.zeroize();
        key
    }

    /// The key for a 32-byte seed: the ed25519 secret key, or the ML-DSA
    /// key-generation seed ξ (FIPS 204 `ML-DSA.KeyGen_internal`).
    pub fn from_seed(algorithm: Algorithm, seed: &[u8; 32]) -> Result<SigningKey, ArtifactError> {
        let (inner, public_bytes) = match algorithm {
            Algorithm::Ed25519 => {
                let sk = ed25519_dalek::SigningKey::from_bytes(seed);
                let pk = sk.verifying_key().to_bytes().to_vec();
                (SigningInner::Ed25519(Box::new(sk)), pk)
            }
            Algorithm::MlDsa65 => {
                let xi = ml_dsa::Seed::from(*seed);
                let sk = ml_dsa::ExpandedSigningKey::<MlDsa65>::from_seed(&xi);
                let pk = sk.verifying_key().encode().to_vec();
                (SigningInner::MlDsa65(Box::new(sk)), pk)
            }
        };
        let public = PublicKey::from_bytes(algorithm, &public_bytes)?;
        Ok(SigningKey {
            algorithm,
            seed: *seed,
            inner,
            public,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// Sign manifest bytes (the domain prefix is added here). Ed25519 and
    /// ML-DSA (deterministic variant, with context) are both deterministic.
    ///
    /// Fails only if ML-DSA's rejection sampling gives up, which in practice
    /// does not happen.
    pub fn sign(&self, manifest_bytes: &[u8]) -> Result<Signature, ArtifactError> {
        let msg = signed_message(manifest_bytes);
        let value = match &self.inner {
            SigningInner::Ed25519(sk) => sk.sign(&msg).to_bytes().to_vec(),
            SigningInner::MlDsa65(sk) => sk
                .sign_deterministic(&msg, MLDSA_CONTEXT)
                .map_err(|_| ArtifactError::Key("ml-dsa-65 signing failed".into()))?
                .encode()
                .to_vec(),
        };
        Ok(Signature {
            algorithm: self.algorithm,
            key_id: self.public.key_id,
            value,
        })
    }

    /// Parse a `*.key` file's text. Refuses a `key_id` that does not match the key.
    pub fn from_toml_str(text: &str) -> Result<SigningKey, ArtifactError> {
        let file: PrivateKeyFile =
            toml::from_str(text).map_err(|e| ArtifactError::Key(toml_error(text, &e)))?;
        if file.format != PRIVATE_FORMAT {
            return Err(ArtifactError::Key(format!(
                "format is {:?}, expected {PRIVATE_FORMAT:?}",
                file.format
            )));
        }
        let mut bytes = b64()
            .decode(file.seed.trim())
            .map_err(|_| ArtifactError::Key("seed is not valid base64".into()))?;
        let seed: Result<[u8; 32], _> = bytes.as_slice().try_into();
        let len = bytes.len();
        bytes.zeroize();
        let Ok(mut seed) = seed else {
            return Err(ArtifactError::Key(format!(
                "seed must be 32 bytes, not {len}"
            )));
        };
        let key = SigningKey::from_seed(file.algorithm, &seed);
        seed.zeroize();
        let key = key?;
        check_key_id(&file.key_id, key.key_id())?;
        Ok(key)
    }

    /// The `*.key` file text (holds the secret seed).
    pub fn to_toml_string(&self) -> String {
        let file = PrivateKeyFile {
            format: PRIVATE_FORMAT.to_owned(),
            algorithm: self.algorithm,
            key_id: self.key_id().to_string(),
            seed: b64().encode(self.seed),
        };
        toml::to_string(&file).unwrap_or_default()
    }

    /// Read a `*.key` file. Errors name the file.
    pub fn load(path: &Path) -> Result<SigningKey, ArtifactError> {
        let mut text = std::fs::read_to_string(path)
            .map_err(|e| ArtifactError::io(format!("reading signing key {}", path.display()), e))?;
        let key = SigningKey::from_toml_str(&text).map_err(|e| in_file(path, e));
        text.zeroize();
        key
    }

    /// Write a `*.key` file with mode 0600 (on unix); refuses to overwrite
    /// an existing file.
    pub fn save(&self, path: &Path) -> Result<(), ArtifactError> {
        let mut text = self.to_toml_string();
        let result = write_new_file(path, text.as_bytes(), 0o600);
        text.zeroize();
        result
    }
}

// -------------------------------------------------------------------- helpers

fn check_key_id(written: &str, actual: KeyId) -> Result<(), ArtifactError> {
    let parsed: KeyId = written.parse()?;
    if parsed != actual {
        return Err(ArtifactError::Key(format!(
            "key_id {written} does not match the key (its id is {actual}); the file was altered"
        )));
    }
    Ok(())
}

fn in_file(path: &Path, e: ArtifactError) -> ArtifactError {
    match e {
        ArtifactError::Key(msg) => ArtifactError::Key(format!("{}: {msg}", path.display())),
        other => other,
    }
}

fn write_new_file(path: &Path, data: &[u8], mode: u32) -> Result<(), ArtifactError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let ctx = || format!("writing {}", path.display());
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            ArtifactError::io(
                format!("{} already exists, not overwriting it", path.display()),
                e,
            )
        } else {
            ArtifactError::io(ctx(), e)
        }
    })?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| ArtifactError::io(ctx(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.to_string().parse::<Algorithm>().unwrap(), alg);
        }
        assert!("rsa".parse::<Algorithm>().is_err());
        assert_eq!(Algorithm::MlDsa65.to_string(), "ml-dsa-65");
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        let id = KeyId::of(b"abc");
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(id.to_string(), "ba7816bf8f01cfea");
        assert_eq!("ba7816bf8f01cfea".parse::<KeyId>().unwrap(), id);
        assert!("ba7816bf".parse::<KeyId>().is_err());
        assert!("zz7816bf8f01cfea".parse::<KeyId>().is_err());
    }

    #[test]
    fn sign_and_verify_both_algorithms() {
        for alg in Algorithm::ALL {
            let key = SigningKey::from_seed(alg, &[7u8; 32]).unwrap();
            let public = key.public();
            assert_eq!(public.as_bytes().len(), alg.public_len());
            let sig = key.sign(b"manifest").unwrap();
            assert_eq!(sig.value.len(), alg.signature_len());
            assert_eq!(sig.key_id, key.key_id());
            assert!(public.verify(b"manifest", &sig));
            assert!(!public.verify(b"manifesT", &sig));
            // Deterministic.
            assert_eq!(key.sign(b"manifest").unwrap(), sig);
            let mut bad = sig.clone();
            bad.value[10] ^= 1;
            assert!(!public.verify(b"manifest", &bad));
            bad.value.truncate(5);
            assert!(!public.verify(b"manifest", &bad));
            let other = SigningKey::from_seed(alg, &[8u8; 32]).unwrap();
            assert_ne!(other.key_id(), key.key_id());
            assert!(!other.public().verify(b"manifest", &sig));
        }
    }

    #[test]
    fn signature_covers_the_domain_prefix() {
        // An ed25519 signature over the bare manifest (no domain) is refused.
        let key = SigningKey::from_seed(Algorithm::Ed25519, &[1u8; 32]).unwrap();
        let SigningInner::Ed25519(sk) = &key.inner else {
            unreachable!()
        };
        let raw = Signature {
            algorithm: Algorithm::Ed25519,
            key_id: key.key_id(),
            value: sk.sign(b"m").to_bytes().to_vec(),
        };
        assert!(!key.public().verify(b"m", &raw));
    }

    #[test]
    fn key_files_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg).unwrap();
            let kp = dir.path().join(format!("{alg}.key"));
            let pp = dir.path().join(format!("{alg}.pub"));
            key.save(&kp).unwrap();
            let mut public = key.public();
            public.set_comment(Some("ci key".into()));
            public.save(&pp).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&kp).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            let loaded = SigningKey::load(&kp).unwrap();
            assert_eq!(loaded.key_id(), key.key_id());
            assert_eq!(loaded.public(), key.public());
            let lp = PublicKey::load(&pp).unwrap();
            assert_eq!(lp, public);
            assert_eq!(lp.comment(), Some("ci key"));
            // No overwrite.
            let e = key.save(&kp).unwrap_err().to_string();
            assert!(e.contains("already exists"), "{e}");
            assert!(public.save(&pp).is_err());
        }
    }

    #[test]
    fn wrong_key_id_refused() {
        let dir = tempfile::tempdir().unwrap();
        for alg in Algorithm::ALL {
            let key = SigningKey::from_seed(alg, &[3u8; 32]).unwrap();
            let id = key.key_id().to_string();
            let forged = "0000000000000000";
            let pub_text = key.public().to_toml_string().replace(&id, forged);
            let e = PublicKey::from_toml_str(&pub_text).unwrap_err().to_string();
            assert!(e.contains("does not match"), "{e}");
            let key_text = key.to_toml_string().replace(&id, forged);
            let path = dir.path().join(format!("{alg}.key"));
            std::fs::write(&path, key_text).unwrap();
            let e = SigningKey::load(&path).unwrap_err().to_string();
            assert!(e.contains("does not match"), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn malformed_key_files_refused() {
        let key = SigningKey::from_seed(Algorithm::Ed25519, &[3u8; 32]).unwrap();
        let good = key.to_toml_string();
        let cases = [
            good.replace("gatewayd-signing-key-v1", "gatewayd-signing-key-v2"),
            good.replace("ed25519", "rsa"),
            good.replace("seed =", "sed ="),
            format!("{good}extra = 1\n"),
            good.replace("seed = \"", "seed = \"!!"),
            "seed = 1".to_owned(),
            String::new(),
        ];
        for text in cases {
            assert!(SigningKey::from_toml_str(&text).is_err(), "{text}");
        }
        // A public key file is not a private one and vice versa.
        assert!(SigningKey::from_toml_str(&key.public().to_toml_string()).is_err());
        assert!(PublicKey::from_toml_str(&good).is_err());
        // Wrong length public key.
        let short = key.public().to_toml_string().replace(
            &b64().encode(key.public().as_bytes()),
            &b64().encode([1u8; 16]),
        );
        let e = PublicKey::from_toml_str(&short).unwrap_err().to_string();
        assert!(e.contains("32 bytes"), "{e}");
        // Algorithm swapped: the key bytes do not fit.
        let swapped = key
            .public()
            .to_toml_string()
            .replace("ed25519", "ml-dsa-65");
        assert!(PublicKey::from_toml_str(&swapped).is_err());
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = PublicKey::load(Path::new("/nonexistent/k.pub"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/k.pub"), "{e}");
    }
}
