//! The registry's error type.

use std::path::{Path, PathBuf};

/// Why opening or writing the device registry's file failed. Every message
/// names the file.
///
/// A failed [`persist`](crate::DeviceRegistry::persist) changes nothing in
/// the file (its transaction is rolled back) and nothing in memory: the
/// entries it tried to write stay pending and are retried by the next call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevicesError {
    /// The file could not be opened, or is not an SQLite database (or is
    /// damaged).
    #[error("device registry {}: cannot open: {error}", path.display())]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    /// Another process (or another registry in this one) holds the file.
    #[error("device registry {}: in use by another process (the file is locked)", path.display())]
    Locked { path: PathBuf },
    /// An SQLite database that is not a gatewayd device registry.
    #[error("device registry {}: not a gatewayd device registry: {reason}", path.display())]
    NotARegistry { path: PathBuf, reason: String },
    /// The file was written by a newer gatewayd.
    #[error(
        "device registry {}: schema version {found} is newer than this gatewayd supports \
         ({supported}); upgrade gatewayd or move the file away",
        path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// Any other SQLite failure while doing `op` (creating or migrating the
    /// schema, loading, writing).
    #[error("device registry {}: cannot {op}: {error}", path.display())]
    Storage {
        path: PathBuf,
        op: &'static str,
        error: rusqlite::Error,
    },
    /// The configuration is outside the ranges
    /// [`DevicesConfig::validate`](crate::DevicesConfig::validate) accepts.
    #[error("device registry {}: invalid configuration: devices.{key}: {message}", path.display())]
    InvalidConfig {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl DevicesError {
    /// Classifies an SQLite error raised while doing `op` on `path`.
    pub(crate) fn sqlite(path: &Path, op: &'static str, error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                DevicesError::Locked {
                    path: path.to_owned(),
                }
            }
            _ => DevicesError::Storage {
                path: path.to_owned(),
                op,
                error,
            },
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DevicesError::Open { path, .. }
            | DevicesError::Locked { path }
            | DevicesError::NotARegistry { path, .. }
            | DevicesError::UnsupportedSchema { path, .. }
            | DevicesError::Storage { path, .. }
            | DevicesError::InvalidConfig { path, .. } => path,
        }
    }
}
