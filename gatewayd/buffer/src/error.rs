//! The buffer's error type.

use std::path::{Path, PathBuf};

/// Why a buffer operation failed. Every failed operation leaves the buffer
/// exactly as it was before the call (its transaction is rolled back).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// The file could not be opened or is not an SQLite database.
    #[error("buffer {}: cannot open: {error}", path.display())]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    /// SQLite refused WAL journal mode (e.g. a file system without the
    /// locking it needs).
    #[error("buffer {}: cannot use WAL journal mode (SQLite stays in {mode:?})", path.display())]
    NoWal { path: PathBuf, mode: String },
    /// Another process (or another `SqliteStore` in this one) holds the file.
    #[error("buffer {}: in use by another process (the file is locked)", path.display())]
    Locked { path: PathBuf },
    /// The file is an SQLite database but not a gatewayd buffer.
    #[error("buffer {}: not a gatewayd buffer: {reason}", path.display())]
    NotABuffer { path: PathBuf, reason: String },
    /// The file was written by a newer gatewayd.
    #[error(
        "buffer {}: schema version {found} is newer than this gatewayd supports ({supported}); \
         upgrade gatewayd or move the file away",
        path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The bookkeeping in the file contradicts itself (edited by hand, or
    /// damaged below SQLite).
    #[error("buffer {}: inconsistent: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The file system is full; nothing was stored.
    #[error("buffer {}: disk full while trying to {op}", path.display())]
    DiskFull { path: PathBuf, op: &'static str },
    /// Any other SQLite failure.
    #[error("buffer {}: cannot {op}: {error}", path.display())]
    Storage {
        path: PathBuf,
        op: &'static str,
        error: rusqlite::Error,
    },
    /// A reading cannot be carried by the wire format; nothing was stored.
    #[error("group {group}, reading {index}: {reason}")]
    InvalidReading {
        group: usize,
        index: usize,
        reason: String,
    },
    /// `ack_through` named a sequence number that was never assigned.
    #[error("cannot acknowledge through sequence number {seq}: the last one assigned is {last}")]
    AckBeyondEnd { seq: u64, last: u64 },
    /// The 63-bit sequence space is used up.
    #[error("sequence numbers exhausted: cannot assign {requested} more after {next_seq}")]
    SequenceExhausted { next_seq: u64, requested: u64 },
    /// `read_after` was asked for zero rows.
    #[error("read_after: max_count must be at least 1")]
    ZeroReadCount,
    /// The configuration cannot work.
    #[error("invalid buffer configuration: {0}")]
    InvalidConfig(String),
}

impl BufferError {
    /// Classifies an SQLite error raised while doing `op` on `path`.
    pub(crate) fn sqlite(path: &Path, op: &'static str, error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => BufferError::DiskFull {
                path: path.to_owned(),
                op,
            },
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                BufferError::Locked {
                    path: path.to_owned(),
                }
            }
            _ => BufferError::Storage {
                path: path.to_owned(),
                op,
                error,
            },
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        BufferError::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
