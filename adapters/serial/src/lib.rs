//! # gatewayd-adapter-serial
//!
//! The `serial` source: Cortex-M sensors on UARTs (USB serial adapters,
//! on-board UARTs) speaking `gatewayd-sensor-proto` (COBS + CRC-32 frames,
//! versioned postcard messages). See `README.md` for the configuration,
//! the commands, the status and the reconnect rules.
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | the `[sources.<name>]` section ([`SerialConfig`]) and its validation |
//! | [`session`] | [`Session`]: the sans-IO state machine of one port (frames, identity, held readings, commands, counters) |
//! | [`request`] | the command requests (`{"command": "reboot", "device": "…"}`) |
//! | [`source`] | [`SerialSource`]: one tokio-serial task per port driving its session |

pub mod config;
pub mod request;
pub mod session;
pub mod source;

pub use config::{FlowControl, Parity, PortConfig, SerialConfig};
pub use session::{Counters, DeviceStatus, LinkState, PortStatus, Session, SessionConfig};
pub use source::{SerialSource, SerialStats};
