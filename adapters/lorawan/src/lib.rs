//! # gatewayd-adapter-lorawan
//!
//! LoRaWAN support for gatewayd: a private LoRaWAN 1.0.x class A network
//! server for Semtech UDP packet forwarders, as the source `kind = "lorawan"`.
//!
//! | module | owns |
//! | --- | --- |
//! | [`registry`] | the device registry (keys, activation) in `lorawan.db`, shared with D-Bus |
//! | [`store`] | the `sessions` table of `lorawan.db` and the in-memory device table the server reads |
//! | [`downlinks`] | the application downlink queue (`downlinks` table of `lorawan.db`): queued by the control API, sent and deleted by the source |
//! | [`config`] | the `[sources.<name>]` section and its validation |
//! | [`forwarders`] | the packet forwarders: addresses, liveness, counters |
//! | [`source`] | [`LoraSource`]: the UDP socket and the loop driving the sans-IO server of `gatewayd-lorawan-proto` (see its docs for the steps of a datagram) |
//!
//! The rest of this page documents the **device registry**: which LoRaWAN
//! end devices the network server accepts, how they are activated, and their
//! keys.
//!
//! ## What is stored
//!
//! One record per device, keyed by its **DevEUI**:
//!
//! * `name` (display name, default the DevEUI) and `profile` (the payload
//!   codec, default `cayenne`);
//! * the activation mode and its keys, one of
//!   * **OTAA**: JoinEUI and AppKey (the root key the device joins with);
//!   * **ABP**: DevAddr, NwkSKey and AppSKey (fixed session);
//! * `created_ms`: when the DevEUI was first added (unix ms; a `replace`
//!   keeps it).
//!
//! Requests come from the D-Bus interface `io.gatewayd.Gateway1.LoRaWAN`
//! (`docs/dbus.md`): [`AddRequest::from_fields`] validates an `AddDevice`
//! dictionary exactly as documented there, [`LoraRegistry::add`],
//! [`LoraRegistry::remove`] and [`LoraRegistry::list`] implement the three
//! methods.
//!
//! ## Where, and how keys are protected
//!
//! The registry is the SQLite database `<data_dir>/lorawan.db` (schema
//! versioned with `PRAGMA user_version`, WAL journal, `synchronous = FULL`:
//! an `AddDevice` that returned survives a power loss).
//!
//! **Keys are stored unencrypted**, protected by file permissions only: the
//! database is created with mode **0600** and owned by the user gatewayd
//! runs as (`gatewayd`); an existing file, WAL or SHM file that group or
//! others can access is set back to 0600 at open, with a warning in the log.
//! Deleted and replaced keys are overwritten in the file (`secure_delete`)
//! and the WAL is checkpointed and truncated after every change. Keeping the
//! keys in a hardware secure element or a TPM-sealed store is future work.
//!
//! Keys are write-only from outside the process: no D-Bus method returns
//! them ([`DeviceSummary`], what `ListDevices` shows, has no key field), and
//! they are never logged or put in error messages — [`AesKey`] prints as
//! `AesKey(<redacted>)`, validation errors give lengths and positions, not
//! values, and [`FieldValue`]'s `Debug` hides string contents. Only
//! [`LoraRegistry::get`], [`LoraRegistry::by_dev_addr`] and
//! [`LoraRegistry::all`] return keys, for use inside gatewayd by the network
//! server. In memory, [`AesKey`] is zeroed when dropped.
//!
//! ## For the network server
//!
//! Lookups: [`LoraRegistry::get`] by DevEUI (join requests),
//! [`LoraRegistry::by_dev_addr`] by DevAddr (ABP uplinks), or
//! [`LoraRegistry::all`] to load everything. Changes:
//! [`LoraRegistry::generation`] is a `tokio::sync::watch` receiver bumped
//! after every committed add or remove. Subscribe first, load, keep the
//! devices in memory, and reload when the generation changes. All registry
//! calls block (SQLite, fsync): use `spawn_blocking` from async code.

pub mod config;
pub mod downlinks;
pub mod forwarders;
pub mod registry;
pub mod source;
pub mod store;

pub use config::{DeviceConfig, LoraConfig};
pub use registry::*;
pub use source::{BoundLoraSource, LoraSource, LoraStats};
