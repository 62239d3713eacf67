//! gatewayd: the daemon's wiring. See `docs/ARCHITECTURE.md`.

pub mod apps_cli;
pub mod config;
pub mod daemon;
pub mod pipeline;
