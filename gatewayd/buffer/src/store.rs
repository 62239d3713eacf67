//! The storage contract shared by [`SqliteStore`](crate::SqliteStore) and the
//! model used to test it.

use gatewayd_model::Reading;
use serde::Serialize;

use crate::BufferError;

/// Logical bytes charged per row on top of its device id and payload: an
/// estimate of SQLite's per-row cost (cell header and pointer, rowid and
/// record-header varints, b-tree slack). Fixed so that accounting is exact
/// and reproducible; see [`row_cost`].
pub const ROW_OVERHEAD: u64 = 32;

/// The logical size of one stored row: `ROW_OVERHEAD + device.len() +
/// payload_len` (UTF-8 bytes). [`BufferConfig::max_bytes`](crate::BufferConfig::max_bytes)
/// limits the sum over all rows.
///
/// This is not the file size: SQLite reuses freed pages but does not give
/// them back to the file system without `VACUUM`, and the `-wal` file comes
/// on top (bounded by the autocheckpoint and `journal_size_limit`). Expect
/// the files to stay near their high-water mark, roughly `max_bytes` plus
/// a few MiB.
pub fn row_cost(device: &str, payload_len: usize) -> u64 {
    ROW_OVERHEAD
        .saturating_add(device.len() as u64)
        .saturating_add(payload_len as u64)
}

/// One buffered reading, as read back for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReading {
    /// The gateway-wide sequence number (`q` on the wire).
    pub seq: u64,
    /// The device id, as text (`coap:…`).
    pub device: String,
    /// [`gatewayd_model::wire::encode_reading`] output.
    pub payload: Vec<u8>,
}

/// What happened to one group passed to [`Store::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored and committed: the group's readings have sequence numbers
    /// `first_seq..first_seq + count`, in the order given. An empty group is
    /// `Committed { first_seq: next_seq, count: 0 }` and uses no number.
    Committed { first_seq: u64, count: usize },
    /// Nothing stored: the buffer is full under
    /// [`FullPolicy::DropNewest`](crate::FullPolicy::DropNewest) (counted in
    /// [`BufferStats::dropped_newest`]), or the group alone is larger than
    /// `max_bytes` under any policy (counted in
    /// [`BufferStats::dropped_too_large`]: it could never fit, so blocking
    /// on it would deadlock and dropping older rows could not help).
    Refused,
    /// Nothing stored, nothing counted: the buffer is full under
    /// [`FullPolicy::Block`](crate::FullPolicy::Block). The caller waits for
    /// acknowledgements to free space and retries. Every later group of the
    /// same call is `WouldBlock` too, so retried groups keep their order.
    WouldBlock,
}

/// A snapshot of the buffer's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BufferStats {
    /// Rows stored (committed, not yet acknowledged or dropped).
    pub readings: u64,
    /// Logical bytes stored: the sum of [`row_cost`] over the rows.
    pub bytes: u64,
    /// The configured limit on `bytes`.
    pub max_bytes: u64,
    /// The sequence number the next stored reading gets (the first is 1).
    pub next_seq: u64,
    /// The highest sequence number acknowledged so far (0: none); no row
    /// at or below it exists.
    pub acked_through: u64,
    /// Readings deleted unacknowledged to make room (policy drop-oldest).
    pub dropped_oldest: u64,
    /// Readings refused because the buffer was full (policy drop-newest).
    pub dropped_newest: u64,
    /// Readings refused because their group alone exceeded `max_bytes`.
    pub dropped_too_large: u64,
}

/// The durable buffer's operations. See the crate documentation for the
/// invariants every implementation keeps.
pub trait Store {
    /// Appends `groups` in one transaction (one fsync with
    /// [`SyncMode::Full`](crate::SyncMode::Full)). Each group is stored
    /// whole or not at all; the outcomes are in the order of `groups`.
    /// Under [`FullPolicy::DropOldest`](crate::FullPolicy::DropOldest) the
    /// oldest rows (lowest seq) are deleted in the same transaction to make
    /// room, which can include rows of earlier groups of the same call.
    ///
    /// An `Err` means nothing of the call was stored (e.g. an invalid
    /// reading, or a storage failure).
    fn append(&mut self, groups: &[Vec<Reading>]) -> Result<Vec<AppendOutcome>, BufferError>;

    /// Rows with `seq > after`, ascending: at most `max_count` rows and at
    /// most `max_bytes` of payload in total, except that the first row is
    /// returned whatever its size (so a large reading cannot stall
    /// forwarding). Empty when no such row exists.
    fn read_after(
        &mut self,
        after: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredReading>, BufferError>;

    /// Deletes every row with `seq <= seq`: the broker acknowledged them.
    /// Idempotent (acknowledging an older point again deletes nothing).
    /// Returns the number of rows deleted. `seq` must have been assigned
    /// (`seq < next_seq`), otherwise [`BufferError::AckBeyondEnd`].
    fn ack_through(&mut self, seq: u64) -> Result<u64, BufferError>;

    /// The current bookkeeping (no I/O).
    fn stats(&self) -> BufferStats;
}
