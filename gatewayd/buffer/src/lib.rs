//! # gatewayd-buffer: the durable store-and-forward buffer
//!
//! Readings are committed to an SQLite file (WAL mode) before anything is
//! forwarded; the forwarder reads them back in sequence order, and rows are
//! deleted once the broker acknowledged them (tracked by [`AckTracker`]).
//!
//! ```text
//! writer ──append(groups)──▶ [ readings(seq, device, payload) | meta ] ──read_after──▶ forwarder
//!                                      ▲                                                  │
//!                                      └──────── ack_through(seq) ◀── AckTracker ◀── PUBACKs
//! ```
//!
//! ## Invariants
//!
//! These hold after every operation, across restarts and crashes
//! ([`SqliteStore`] and the model in `tests/model.rs` keep the same ones):
//!
//! 1. **Commit before forward.** A row is visible to
//!    [`read_after`](Store::read_after) only once the transaction that
//!    inserted it committed; [`append`](Store::append) answers
//!    [`AppendOutcome::Committed`] only after that commit (with
//!    [`SyncMode::Full`], after the fsync).
//! 2. **One transaction per operation.** `append` (all groups of the call),
//!    `ack_through` and each drop are a single transaction, the bookkeeping
//!    in `meta` included. A crash leaves the state of before or after an
//!    operation, never between; SQLite rolls back an interrupted one when
//!    the file is next opened.
//! 3. **Groups are all-or-nothing**, and outcomes come back in group order.
//!    Under [`FullPolicy::Block`], once a group would block every later
//!    group of the same call would block too, so retried submissions keep
//!    their order.
//! 4. **Sequence numbers** start at 1, are assigned in append order,
//!    contiguously within a group, and never reused: `next_seq` is kept in
//!    `meta` and written in the transaction that uses the numbers, so it
//!    survives reopening even after every row was deleted. With
//!    [`SyncMode::Normal`] a power loss can roll back the last commits,
//!    `next_seq` included, so each open in that mode first moves `next_seq`
//!    up by [`SEQ_RESTART_GAP`] (fsynced): numbers issued after an open are
//!    above any a rollback could have lost; see [`SyncMode`].
//! 5. **Every row has `acked_through < seq < next_seq`.** `acked_through`
//!    only grows, and no row at or below it exists.
//! 6. **Order.** `read_after` returns rows in ascending `seq`; as numbers are
//!    assigned in submission order, each device's readings come back in the
//!    order they were submitted.
//! 7. **Accounting.** `meta.readings` is the number of rows and `meta.bytes`
//!    the sum of [`row_cost`] over them, both updated in the same
//!    transaction as the rows. These are logical bytes: the file does not
//!    shrink without `VACUUM`.
//! 8. **The limit.** An append never takes `bytes` above `max_bytes`. (It
//!    can be above only when a file is reopened with a smaller `max_bytes`;
//!    appends then drop, refuse or block until it is below again.)
//! 9. **Rows leave only two ways:** [`ack_through`](Store::ack_through)
//!    (the broker acknowledged them) or, under [`FullPolicy::DropOldest`],
//!    eviction of the lowest `seq`s to make room, counted in
//!    `dropped_oldest`.
//! 10. **Drops are counted and durable.** `dropped_oldest`, `dropped_newest`
//!     and `dropped_too_large` count readings, only grow, and are written in
//!     the transaction that dropped them.
//! 11. **One owner.** While a [`SqliteStore`] is open the file is locked
//!     exclusively; a second opener gets [`BufferError::Locked`]. The
//!     in-memory copy of the bookkeeping ([`Store::stats`]) is therefore
//!     exact.
//!
//! ## Oversized groups
//!
//! A group whose cost alone exceeds `max_bytes` can never fit. Whatever the
//! policy it is [`AppendOutcome::Refused`] and counted in
//! `dropped_too_large`: blocking on it would deadlock the writer, and
//! dropping older rows could not make room.
//!
//! ## Schema (version [`SCHEMA_VERSION`])
//!
//! ```sql
//! CREATE TABLE readings(seq INTEGER PRIMARY KEY, device TEXT NOT NULL, payload BLOB NOT NULL);
//! CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER);
//! -- meta keys: schema_version, next_seq, readings, bytes, acked_through,
//! --            dropped_oldest, dropped_newest, dropped_too_large
//! ```
//!
//! The file carries `PRAGMA application_id` [`APPLICATION_ID`]; a file of a
//! newer schema version is refused with [`BufferError::UnsupportedSchema`],
//! any other SQLite file with [`BufferError::NotABuffer`].

#![forbid(unsafe_code)]

mod ack;
mod config;
mod error;
mod sqlite;
mod store;

pub use ack::{AckError, AckTracker};
pub use config::{BufferConfig, FullPolicy, SyncMode, DEFAULT_MAX_BYTES};
pub use error::BufferError;
pub use sqlite::{SqliteStore, APPLICATION_ID, SCHEMA_VERSION, SEQ_RESTART_GAP};
pub use store::{row_cost, AppendOutcome, BufferStats, Store, StoredReading, ROW_OVERHEAD};
