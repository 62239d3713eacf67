//! # gatewayd-devices: the registry of devices gatewayd has seen
//!
//! The writer task calls [`DeviceRegistry::observe`] after every committed
//! group; D-Bus `ListDevices` reads [`DeviceRegistry::list`], and the
//! `DeviceFirstSeen` / `DeviceLost` / `DeviceReturned` signals come from
//! [`DeviceRegistry::events`] (docs/dbus.md). [`DeviceRegistry::run`] marks
//! silent devices lost and persists the registry to `<data_dir>/devices.db`.
//!
//! ```text
//! writer ──observe(group, now)──▶ ┌──────────────────────┐ ──list()/get()──▶ ListDevices
//!                                 │ id → DeviceInfo      │
//! run ─────check_lost(now)──────▶ │ (memory: the truth)  │ ──events()──────▶ Device* signals
//!     ─────persist() ───────────▶ └──────────┬───────────┘
//!          (every persist_interval_secs,     │ dirty rows + evicted ids, one transaction
//!           and once on stop)                ▼
//!                                       devices.db (SQLite, WAL)
//! ```
//!
//! ## Invariants
//!
//! 1. **Memory is the truth; the file is a copy.** [`observe`], [`list`],
//!    [`get`] and [`check_lost`] never do I/O. They take one short
//!    `std::sync::Mutex` lock per call; [`persist`] holds it only to copy
//!    the changed entries, never while writing.
//! 2. **Bounded.** After every call the registry holds at most
//!    `max_devices` devices. A new device beyond the bound evicts the one
//!    with the oldest `last_seen` (ties: the smallest id), which makes
//!    lost devices go first. Evictions are counted ([`evicted`]) and
//!    logged at most once a minute. Eviction scans the map (O(n)), but
//!    only when a *new* device arrives at the bound; readings of known
//!    devices never scan. An evicted device that sends again is new:
//!    `FirstSeen`, a new `first_seen`, `readings` from 1.
//! 3. **Events follow state transitions, once each.** `FirstSeen` when an
//!    unknown device's reading is observed; `Lost` when [`check_lost`]
//!    finds it silent for `lost_after_secs` (`now - last_seen >=
//!    lost_after`); `Returned` when a lost device's reading is observed
//!    (`lost_for_ms = now - last_seen`), after which it is active. Events
//!    are sent under the lock, so they are in the order of the changes.
//!    The channel holds [`EVENTS_CAPACITY`] events: a receiver that falls
//!    further behind loses the oldest ones (`RecvError::Lagged`); the
//!    registry itself never waits for receivers.
//! 4. **Last known values.** `rssi`, `snr`, `battery`, `firmware` and
//!    `source` keep their last value: a reading without them does not
//!    clear them. Battery is `meta.battery`, else the reading's last
//!    `battery` measurement in `%EL` with a float value. Non-finite
//!    numbers are ignored (treated as absent).
//! 5. **What `persist` writes.** Every entry changed since the previous
//!    successful persist (observed, or marked lost) as a whole row, and a
//!    delete for every evicted device whose row may be in the file, in
//!    one transaction; it returns the number of rows changed (0 when
//!    nothing changed, so a second persist in a row returns 0). After it
//!    succeeds the file equals memory as of the moment it copied the
//!    changes, so the file never holds more than `max_devices` parsable
//!    rows. A failed persist rolls back and keeps the changes pending.
//! 6. **When.** [`run`] persists every `persist_interval_secs` and once
//!    more when stopped; nothing else writes the file.
//! 7. **Restart.** [`open`] loads every row: known devices are not
//!    announced again, `first_seen` is kept, a device lost before the
//!    restart is still lost, and [`check_lost`] after the restart works
//!    from the persisted `last_seen`.
//! 8. **What a crash loses.** A process crash loses the changes since the
//!    last persist (at most `persist_interval_secs` of them). The file is
//!    written with `synchronous = NORMAL` in WAL mode: a power loss can
//!    also roll back the last persists (never corrupt the file). Either
//!    way the file holds an older but consistent state, so after the
//!    restart: a device first seen since is announced again (`FirstSeen`);
//!    `last_seen` and `readings` are older (a device may be reported
//!    `Lost` earlier, or again); a device that returned since may be
//!    reported `Returned` again. This is accepted: the registry is
//!    informational, and readings themselves are in the buffer with its
//!    own guarantees.
//! 9. **Time is passed in** (`now_ms`, unix ms; [`now_ms()`] reads the
//!    system clock). `last_seen` is the commit time, not the reading's
//!    timestamp. Differences saturate, so a clock stepping back never
//!    underflows; `last_seen` simply follows the clock.
//! 10. **One owner.** The file is locked exclusively while a registry has
//!     it open; a second opener gets [`DevicesError::Locked`].
//! 11. **Fallback.** [`open`] fails with an error naming the file when it
//!     is not an SQLite database, damaged, another application's SQLite
//!     file, of a newer schema, or locked. The daemon logs it and uses
//!     [`DeviceRegistry::in_memory`], whose [`persist`] does nothing.
//!
//! `transport` is the device id's prefix (`coap`, `lora`, `ble`, `serial`,
//! `thread`, `matter`, `app`), as in `gatewayd_model::Transport`.
//!
//! ## Schema (version [`SCHEMA_VERSION`], in `PRAGMA user_version`)
//!
//! ```sql
//! CREATE TABLE devices(
//!     id TEXT PRIMARY KEY NOT NULL, source TEXT,
//!     first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
//!     readings INTEGER NOT NULL, lost INTEGER NOT NULL,
//!     rssi REAL, snr REAL, battery REAL, firmware TEXT
//! ) WITHOUT ROWID;
//! ```
//!
//! The file carries `PRAGMA application_id` [`APPLICATION_ID`]. Opening a
//! file of an older version migrates it in the opening transaction; a
//! newer one is refused ([`DevicesError::UnsupportedSchema`]), as is any
//! other non-empty SQLite file ([`DevicesError::NotARegistry`]). Rows with
//! ids this build cannot parse are ignored and left in place.
//!
//! [`observe`]: DeviceRegistry::observe
//! [`list`]: DeviceRegistry::list
//! [`get`]: DeviceRegistry::get
//! [`check_lost`]: DeviceRegistry::check_lost
//! [`persist`]: DeviceRegistry::persist
//! [`evicted`]: DeviceRegistry::evicted
//! [`run`]: DeviceRegistry::run
//! [`open`]: DeviceRegistry::open

#![forbid(unsafe_code)]

mod config;
mod db;
mod error;
mod registry;

pub use config::{DevicesConfig, MAX_MAX_DEVICES, MAX_PERSIST_INTERVAL_SECS};
pub use db::{APPLICATION_ID, SCHEMA_VERSION};
pub use error::DevicesError;
pub use registry::{now_ms, DeviceEvent, DeviceInfo, DeviceRegistry, EVENTS_CAPACITY};
