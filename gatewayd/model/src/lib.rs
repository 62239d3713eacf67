//! # gatewayd-model
//!
//! The reading model every part of gatewayd agrees on, and its codecs. This
//! crate is pure: no I/O, no clocks (callers pass "now" in), no async.
//!
//! * [`DeviceId`]: a device identity namespaced by transport (`coap:…`,
//!   `ble:…`, `lora:<DevEUI>`, `serial:…`, `thread:…`, `app:…`).
//! * [`Reading`]: one device, one timestamp, one or more [`Measurement`]s with
//!   SenML names and units, plus transport [`Metadata`] (rssi, snr, battery,
//!   gateway EUI, …).
//! * [`senml`]: SenML (RFC 8428) JSON and CBOR packs: decode with base-field
//!   resolution and strict validation, encode readings back to packs.
//! * [`wire`]: the gateway → cloud batch envelope (see `docs/protocol.md`).
//! * [`glob_match`]: `*`/`?` globs over device ids and names (selectors).

pub mod glob;
mod id;
mod reading;
pub mod senml;
pub mod wire;

pub use glob::glob_match;
pub use id::{DeviceId, IdError, Transport};
pub use reading::{Measurement, Metadata, Reading, Timestamp, Value};
