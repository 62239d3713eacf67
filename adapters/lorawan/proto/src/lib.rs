//! LoRaWAN 1.0.x class A network-server logic without I/O.
//!
//! Everything here is *sans-IO*: no sockets, no threads, no clocks, no
//! storage. Bytes and time come in as arguments; bytes, decisions and state
//! changes come out as values. The I/O crate (`gatewayd-adapter-lorawan`)
//! owns the UDP socket, the SQLite registry and the clock, and converts its
//! registry types into the ones defined in [`types`].
//!
//! Frames are parsed, built, authenticated and encrypted with the
//! [`lorawan`] crate (0.9, `default-crypto`); this crate adds the network
//! server's decisions around it.
//!
//! # Modules
//!
//! | module | what |
//! | --- | --- |
//! | [`region`] | EU868 and US915: data rates, RX1/RX2 parameters, payload limits, delays, TX power |
//! | [`session`] | [`Session`] (keys redacted in `Debug`), 32-bit FCnt reconstruction ([`fcnt32`]) |
//! | [`mac`] | MAC commands: uplink parsing (FOpts / FPort 0), downlink answers |
//! | [`uplink`] | [`process_data_uplink`]: MIC, FCnt, decryption, MAC commands |
//! | [`cayenne`] | Cayenne LPP decoder into SenML-unit [`Measurement`]s |
//! | [`join`] | [`handle_join_request`]: MIC, DevNonce reuse, keys, encrypted JoinAccept |
//! | [`downlink`] | [`build_data_downlink`], [`DownlinkQueue`], LinkCheckAns margin, GPS time |
//! | [`dedup`] | [`Deduplicator`]: one uplink heard by several forwarders |
//! | [`server`] | [`NetworkServer`]: events in, actions out |
//!
//! # Handling an uplink: the steps, in order
//!
//! [`NetworkServer`] runs these named steps for every PHYPayload (ChirpStack
//! style; each step either passes the frame on or ends with one
//! `Action::Rejected` naming the step's reason):
//!
//! 1. **decode** — MHDR, major version, length and FHDR layout are checked
//!    ([`uplink::classify`]); JoinRequest and data uplinks go on, anything
//!    else (downlink types, proprietary, RFU, short frames) is rejected.
//! 2. **dedup** — the copies of the same PHYPayload heard by several
//!    forwarders within the window (200 ms by default) are collected
//!    ([`Deduplicator`]); when the window closes the frame goes on once, with
//!    every reception and the best one (highest SNR, then RSSI).
//! 3. **identify** — JoinRequest: the device by DevEUI (must be OTAA, JoinEUI
//!    must match). Data: every session with the frame's DevAddr.
//! 4. **MIC** — with the NwkSKey and the reconstructed 32-bit FCnt (data),
//!    or the AppKey (join). For a shared DevAddr each candidate session is
//!    tried; the first whose MIC verifies is the device.
//! 5. **fcnt** — the 32-bit FCnt must be above the last accepted one and at
//!    most [`MAX_FCNT_GAP`] ahead; the same FCnt again is a retransmission
//!    (re-acknowledged if confirmed and identical, otherwise dropped). For a
//!    JoinRequest: the DevNonce must never have been used by this device.
//! 6. **decrypt** — FRMPayload with the AppSKey (FPort 1..=255) or the
//!    NwkSKey (FPort 0). Join: keys derived, JoinAccept built and encrypted.
//! 7. **MAC** — FOpts (or the FPort 0 payload) parsed; LinkCheckReq and
//!    DeviceTimeReq answered; an unknown command stops the parsing.
//! 8. **reading** — the application payload (FPort 1..=223) goes out as an
//!    `Action::Reading`, Cayenne-decoded when the device profile is
//!    `cayenne`.
//! 9. **downlink** — when an ACK, MAC answers, an ADRACKReq answer or a
//!    queued payload is due: one class-A downlink in RX1 (RX2 as fallback,
//!    or as the only window if RX1 cannot carry it), through the gateway
//!    with the best reception. The session (FCnt up/down) goes out as
//!    `Action::SessionChanged` for the caller to persist.
//!
//! # Invariants
//!
//! * **No panics on input.** Any byte string, any metadata and any event
//!   sequence gives `Ok`/`Err` values or actions, never a panic (property
//!   tests and the `phypayload` fuzz target check this).
//! * **Authenticate before acting.** Session state (FCntUp, DevNonces,
//!   keys) changes only after the MIC verified with the key it is about.
//!   An unauthenticated frame never moves a counter, never consumes a
//!   DevNonce, never produces a reading or a downlink.
//! * **Counters only go forward.** FCntUp accepted values strictly increase
//!   (an identical confirmed retransmission is re-acknowledged without a new
//!   reading). FCntDown is incremented for every downlink built and never
//!   reused; a counter that would wrap past `u32::MAX` is refused.
//! * **A DevNonce is used once per device** (LoRaWAN 1.0.x: any nonce seen
//!   in an accepted JoinRequest is refused afterwards).
//! * **Keys never printed.** `Debug` of [`Session`], [`AesKey`] and
//!   [`Activation`] redacts key material; errors never quote keys or
//!   payloads.
//! * **Bounded memory.** Open dedup windows, receptions per window,
//!   downlink queue length and MAC commands per frame all have fixed caps;
//!   input beyond them is refused and reported, not buffered.
//! * **Time is an argument.** Monotonic milliseconds (`now_ms`) for windows,
//!   the concentrator's `tmst` (µs, wrapping `u32`) for downlink timing, and
//!   the reception's UNIX time for DeviceTimeAns; nothing here reads a clock.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cayenne;
pub mod dedup;
pub mod downlink;
pub mod join;
pub mod mac;
pub mod region;
pub mod server;
pub mod session;
pub mod types;
pub mod uplink;

pub use cayenne::{decode as decode_cayenne, CayenneError, Measurement};
pub use dedup::{DedupConfig, Deduplicated, Deduplicator, PushOutcome, RxInfo};
pub use downlink::{
    build_data_downlink, device_time_ans, gps_time_from_unix, link_check_margin, DataDown,
    DownlinkError, DownlinkQueue, QueueEvent, QueueFull, QueuedDownlink, GPS_EPOCH_UNIX_SECS,
    GPS_UTC_LEAP_SECONDS,
};
pub use join::{
    handle_join_request, parse_join_request, JoinError, JoinParams, JoinRequest, Joined,
};
pub use mac::{parse_uplink_mac, MacDown, MacParseStop, MacUp};
pub use region::{DataRate, Direction, MaxPayload, ParseDataRateError, Region};
pub use server::{
    Action, ConfigError, Decoded, DeviceRecord, DeviceStore, Downlink, EnqueueError, Event,
    MemoryStore, NetworkServer, Reading, Reject, RxWindow, ServerConfig, TxSlot, CAYENNE_PROFILE,
};
pub use session::{fcnt32, FcntError, Session, MAX_FCNT_GAP};
pub use types::{decode_hex_into, Activation, AesKey, DevAddr, Eui64, ParseHexError};
pub use uplink::{classify, process_data_uplink, Frame, Uplink, UplinkError};
