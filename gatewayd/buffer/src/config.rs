//! Buffer configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default logical size limit: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// What [`Store::append`](crate::Store::append) does with a group that does
/// not fit in the remaining space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Store nothing and answer [`AppendOutcome::WouldBlock`](crate::AppendOutcome::WouldBlock):
    /// the caller holds the submission (back-pressure to the sources) and
    /// retries once acknowledgements have freed space. Nothing is lost and
    /// nothing is counted.
    Block,
    /// Delete the oldest rows (lowest sequence numbers, forwarded or not) in
    /// the same transaction until the group fits; counted in
    /// [`BufferStats::dropped_oldest`](crate::BufferStats::dropped_oldest).
    #[default]
    DropOldest,
    /// Refuse the group ([`AppendOutcome::Refused`](crate::AppendOutcome::Refused));
    /// counted in [`BufferStats::dropped_newest`](crate::BufferStats::dropped_newest).
    DropNewest,
}

/// `PRAGMA synchronous` for the WAL.
///
/// | mode     | fsync                         | survives gatewayd crash | survives power loss / kernel crash |
/// |----------|-------------------------------|-------------------------|------------------------------------|
/// | `full`   | the WAL, on every commit      | yes                     | yes                                |
/// | `normal` | only at checkpoints           | yes                     | the last commits may roll back     |
///
/// With `normal`, a commit that a sensor was told about can be lost on
/// power loss, and `next_seq` rolls back with it. So that the sequence
/// numbers of lost readings that were already forwarded are never handed out
/// again (the cloud, which deduplicates on `(gateway, seq)`, would drop the
/// new readings as duplicates), every open in this mode makes `next_seq`
/// jump by `SEQ_RESTART_GAP` (2^32) with one forced fsync. The database
/// itself is never corrupted in either mode. `normal` costs no fsync per group commit and is several
/// times faster on SD cards and eMMC; choose it only when losing the last
/// fraction of a second of data on power loss is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// `PRAGMA synchronous=FULL`: every commit is on stable storage before
    /// `append` returns. The default.
    #[default]
    Full,
    /// `PRAGMA synchronous=NORMAL`: commits survive a crash of the process,
    /// not necessarily a power loss.
    Normal,
}

/// Where the buffer lives and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    /// The SQLite file. Its directory must exist; the file is created if
    /// missing. SQLite keeps a `-wal` file next to it.
    pub path: PathBuf,
    /// Logical size limit in bytes (see [`row_cost`](crate::row_cost)); must
    /// be at least 1. Default 256 MiB.
    pub max_bytes: u64,
    pub when_full: FullPolicy,
    pub sync: SyncMode,
}

impl BufferConfig {
    /// A configuration with default limit and policies for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        BufferConfig {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            when_full: FullPolicy::default(),
            sync: SyncMode::default(),
        }
    }
}
