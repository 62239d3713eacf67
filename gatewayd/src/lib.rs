//! gatewayd as a library: the daemon's parts, so tests and benches can
//! drive them.

pub mod apps_cli;
pub mod config;
pub mod config_edit;
pub mod control;
pub mod daemon;
pub mod dbus;
pub mod pipeline;
pub mod sources;
