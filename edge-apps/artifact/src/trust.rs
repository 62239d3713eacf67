//! Which keys a gateway trusts, and the verification policy.

use std::path::PathBuf;

use crate::bundle::{Bundle, VerifiedBundle};
use crate::error::ArtifactError;
use crate::keys::{Algorithm, PublicKey};

/// Trusted public keys and the algorithms a bundle must be signed with.
///
/// A bundle is accepted when at least one signature verifies against a
/// trusted key, and for each algorithm in `required_algorithms` a valid
/// signature of that algorithm by a trusted key is present. Signatures by
/// unknown keys are ignored; a signature naming a trusted key that does not
/// verify is refused as tampering.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    /// Trusted keys.
    pub keys: Vec<PublicKey>,
    /// Algorithms of which a valid trusted signature is required (default none).
    pub required_algorithms: Vec<Algorithm>,
}

impl TrustStore {
    /// A trust store from keys in memory.
    pub fn new(keys: Vec<PublicKey>, required_algorithms: Vec<Algorithm>) -> TrustStore {
        TrustStore {
            keys,
            required_algorithms,
        }
    }

    /// Load `*.pub` files. Errors name the file. Refuses a policy that
    /// requires an algorithm none of the keys has (it could accept nothing).
    pub fn load(
        paths: &[PathBuf],
        required_algorithms: &[Algorithm],
    ) -> Result<TrustStore, ArtifactError> {
        let keys = paths
            .iter()
            .map(|p| PublicKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        for alg in required_algorithms {
            if !keys.is_empty() && !keys.iter().any(|k| k.algorithm() == *alg) {
                return Err(ArtifactError::Key(format!(
                    "{alg} signatures are required but no {alg} key is trusted"
                )));
            }
        }
        let mut required = required_algorithms.to_vec();
        required.sort();
        required.dedup();
        Ok(TrustStore::new(keys, required))
    }

    /// The trusted keys as `KEYID (algorithm)`.
    pub fn describe_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{} ({})", k.key_id(), k.algorithm()))
            .collect()
    }

    /// Check a bundle's signatures against this store.
    pub fn verify(&self, mut bundle: Bundle) -> Result<VerifiedBundle, ArtifactError> {
        if self.keys.is_empty() {
            return Err(ArtifactError::NoTrustedKeys);
        }
        bundle.check_consistency()?;
        if bundle.signatures.is_empty() {
            return Err(ArtifactError::Unsigned);
        }
        let mut verified = Vec::new();
        let mut untrusted = Vec::new();
        for sig in &bundle.signatures {
            let mut candidates = self
                .keys
                .iter()
                .filter(|k| k.key_id() == sig.key_id && k.algorithm() == sig.algorithm)
                .peekable();
            if candidates.peek().is_none() {
                untrusted.push(format!("{} ({})", sig.key_id, sig.algorithm));
                continue;
            }
            if !candidates.any(|k| k.verify(&bundle.manifest_bytes, sig)) {
                return Err(ArtifactError::BadSignature {
                    key_id: sig.key_id,
                    algorithm: sig.algorithm,
                });
            }
            if !verified.contains(&(sig.key_id, sig.algorithm)) {
                verified.push((sig.key_id, sig.algorithm));
            }
        }
        if verified.is_empty() {
            return Err(ArtifactError::NoTrustedSignature {
                key_ids: untrusted,
                trusted: self.describe_keys(),
            });
        }
        for alg in &self.required_algorithms {
            if !verified.iter().any(|(_, a)| a == alg) {
                return Err(ArtifactError::MissingAlgorithm(*alg));
            }
        }
        Ok(VerifiedBundle::new(bundle, verified))
    }
}
