//! The one error type of the library.

use crate::keys::{Algorithm, KeyId};

/// Everything that can go wrong reading, writing or verifying a bundle.
///
/// Messages are meant for a human operator: they name the file, key or
/// manifest key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// `signatures.toml` holds no signature.
    #[error("bundle is not signed (signatures.toml has no signature)")]
    Unsigned,
    /// The trust store is empty: nothing can be accepted.
    #[error("no trusted keys configured: every bundle is refused")]
    NoTrustedKeys,
    /// Every signature comes from a key the trust store does not hold.
    #[error(
        "signed only by untrusted keys: {}; trusted: {}",
        list_or_none(key_ids),
        list_or_none(trusted)
    )]
    NoTrustedSignature {
        /// The signers, as `KEYID (algorithm)`.
        key_ids: Vec<String>,
        /// The trusted keys, as `KEYID (algorithm)`.
        trusted: Vec<String>,
    },
    /// A signature claims to come from a trusted key but does not verify.
    #[error(
        "signature by trusted key {key_id} ({algorithm}) does not verify: \
         the manifest was modified or signed with another key"
    )]
    BadSignature {
        /// The trusted key the signature names.
        key_id: KeyId,
        /// Its algorithm.
        algorithm: Algorithm,
    },
    /// The trust policy requires an algorithm the bundle has no valid signature of.
    #[error("bundle has no valid {0} signature from a trusted key, and this gateway requires one")]
    MissingAlgorithm(Algorithm),
    /// A file's sha256 differs from the one in the manifest.
    #[error("{file}: sha256 is {actual} but the manifest says {expected}")]
    DigestMismatch {
        /// The file inside the bundle.
        file: String,
        /// Hex digest written in the manifest.
        expected: String,
        /// Hex digest of the bytes present.
        actual: String,
    },
    /// A file the format or the manifest requires is absent.
    #[error("bundle lacks {0}")]
    MissingFile(String),
    /// The archive holds a file the manifest does not name.
    #[error("bundle holds unexpected file {0:?} (not named in the manifest)")]
    UnexpectedFile(String),
    /// A size limit was exceeded.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large (`bundle`, a file name).
        what: String,
        /// Its size (or at least this much).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The archive is malformed or breaks the structure rules.
    #[error("bundle archive: {0}")]
    Archive(String),
    /// The manifest is malformed or invalid.
    #[error("manifest: {0}")]
    Manifest(String),
    /// `signatures.toml` is malformed.
    #[error("signatures.toml: {0}")]
    Signatures(String),
    /// A key or key file is malformed or inconsistent.
    #[error("key: {0}")]
    Key(String),
    /// Reading or writing a file failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The underlying error.
        error: std::io::Error,
    },
}

impl ArtifactError {
    pub(crate) fn io(context: impl Into<String>, error: std::io::Error) -> Self {
        ArtifactError::Io {
            context: context.into(),
            error,
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// A toml parse error as one line: `line N: message`.
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}
