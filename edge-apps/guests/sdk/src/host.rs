//! What the gateway offers an app: logging, time, a key-value store and
//! model inference. Everything is scoped to the calling app.

use crate::bindings::gatewayd::edge::host as imports;
pub use crate::Level;

/// Writes to the gateway's log (tagged with the app's name and version;
/// rate-limited and truncated by the host). See also [`info!`](crate::info)
/// and friends.
pub fn log(level: Level, message: &str) {
    imports::log(level, message);
}

/// Wall-clock time, microseconds since the UNIX epoch.
pub fn now_us() -> i64 {
    imports::now_us()
}

/// `format!`-style logging: `gatewayd_edge_sdk::info!("x = {}", x)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::host::log($level, &$crate::__private::format(::core::format_args!($($arg)+)))
    };
}

#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::log!($crate::Level::Trace, $($arg)+) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::log!($crate::Level::Debug, $($arg)+) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::log!($crate::Level::Info, $($arg)+) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::log!($crate::Level::Warn, $($arg)+) }; }
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::log!($crate::Level::Error, $($arg)+) }; }

/// The app's persistent key-value store (survives restarts and upgrades).
/// Writes become durable with the output of the call that made them.
pub mod kv {
    use super::imports;
    use alloc::{string::String, vec::Vec};

    pub fn get(key: &str) -> Option<Vec<u8>> {
        imports::kv_get(key)
    }

    /// Fails when the key or value is too large or the app's quota is used.
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        imports::kv_set(key, value)
    }

    pub fn delete(key: &str) {
        imports::kv_delete(key)
    }

    /// A value stored with [`set_f64`] (8 bytes, little-endian).
    pub fn get_f64(key: &str) -> Option<f64> {
        let bytes: [u8; 8] = get(key)?.try_into().ok()?;
        Some(f64::from_le_bytes(bytes))
    }

    pub fn set_f64(key: &str, value: f64) -> Result<(), String> {
        set(key, &value.to_le_bytes())
    }

    /// A UTF-8 value.
    pub fn get_str(key: &str) -> Option<String> {
        String::from_utf8(get(key)?).ok()
    }

    pub fn set_str(key: &str, value: &str) -> Result<(), String> {
        set(key, value.as_bytes())
    }
}

/// Model inference on the gateway (ONNX via tract).
pub mod ml {
    use super::imports;
    use crate::Tensor;
    use alloc::string::String;

    /// Runs `model` (a name the app's manifest references) on `input`.
    pub fn infer(model: &str, input: &Tensor) -> Result<Tensor, String> {
        imports::infer(model, input)
    }
}
