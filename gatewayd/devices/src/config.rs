//! The `[devices]` section of gatewayd's config.

use serde::{Deserialize, Serialize};

/// Largest accepted `max_devices`.
pub const MAX_MAX_DEVICES: usize = 1_000_000;
/// Largest accepted `persist_interval_secs` (one hour).
pub const MAX_PERSIST_INTERVAL_SECS: u64 = 3600;

/// `[devices]` section of gatewayd's config.
///
/// ```toml
/// [devices]
/// lost_after_secs = 3600       # silence after which a device is "lost"
/// max_devices = 10000          # entries kept; the longest-silent is evicted
/// persist_interval_secs = 30   # at most this much last_seen is lost on a crash
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// A device from which nothing was committed for this long is marked
    /// lost (`DeviceLost`). At least 1.
    pub lost_after_secs: u64,
    /// Most devices remembered, 1..=1 000 000. A new device beyond it
    /// evicts the one silent the longest.
    pub max_devices: usize,
    /// How often changed entries are written to `devices.db`, 1..=3600 s.
    /// Also the most `last_seen`/`readings` progress a crash can lose.
    pub persist_interval_secs: u64,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            lost_after_secs: 3600,
            max_devices: 10_000,
            persist_interval_secs: 30,
        }
    }
}

impl DevicesConfig {
    /// Checks the values. The error is `(key, message)` with `key` relative
    /// to the section (e.g. `"max_devices"`); the caller prefixes
    /// `devices.`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.lost_after_secs < 1 {
            return Err(("lost_after_secs".into(), "must be at least 1".into()));
        }
        if !(1..=MAX_MAX_DEVICES).contains(&self.max_devices) {
            return Err((
                "max_devices".into(),
                format!("must be between 1 and {MAX_MAX_DEVICES}"),
            ));
        }
        if !(1..=MAX_PERSIST_INTERVAL_SECS).contains(&self.persist_interval_secs) {
            return Err((
                "persist_interval_secs".into(),
                format!("must be between 1 and {MAX_PERSIST_INTERVAL_SECS}"),
            ));
        }
        Ok(())
    }

    /// `lost_after_secs` in milliseconds (saturating).
    pub(crate) fn lost_after_ms(&self) -> u64 {
        self.lost_after_secs.saturating_mul(1000)
    }

    /// The values clamped into their valid ranges, for [`in_memory`]
    /// which cannot fail.
    ///
    /// [`in_memory`]: crate::DeviceRegistry::in_memory
    pub(crate) fn clamped(&self) -> DevicesConfig {
        DevicesConfig {
            lost_after_secs: self.lost_after_secs.max(1),
            max_devices: self.max_devices.clamp(1, MAX_MAX_DEVICES),
            persist_interval_secs: self
                .persist_interval_secs
                .clamp(1, MAX_PERSIST_INTERVAL_SECS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = DevicesConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.lost_after_secs, 3600);
        assert_eq!(c.max_devices, 10_000);
        assert_eq!(c.persist_interval_secs, 30);
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |c: DevicesConfig| c.validate().unwrap_err().0;
        let d = DevicesConfig::default;
        assert_eq!(
            bad(DevicesConfig {
                lost_after_secs: 0,
                ..d()
            }),
            "lost_after_secs"
        );
        assert_eq!(
            bad(DevicesConfig {
                max_devices: 0,
                ..d()
            }),
            "max_devices"
        );
        assert_eq!(
            bad(DevicesConfig {
                max_devices: MAX_MAX_DEVICES + 1,
                ..d()
            }),
            "max_devices"
        );
        assert_eq!(
            bad(DevicesConfig {
                persist_interval_secs: 0,
                ..d()
            }),
            "persist_interval_secs"
        );
        assert_eq!(
            bad(DevicesConfig {
                persist_interval_secs: 3601,
                ..d()
            }),
            "persist_interval_secs"
        );
        let edge = DevicesConfig {
            lost_after_secs: 1,
            max_devices: MAX_MAX_DEVICES,
            persist_interval_secs: 3600,
        };
        assert_eq!(edge.validate(), Ok(()));
        assert_eq!(edge.clamped(), edge);
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let c: DevicesConfig = serde_json::from_str(r#"{"max_devices": 5}"#).unwrap();
        assert_eq!(
            c,
            DevicesConfig {
                max_devices: 5,
                ..DevicesConfig::default()
            }
        );
        let e = serde_json::from_str::<DevicesConfig>(r#"{"max_device": 5}"#).unwrap_err();
        assert!(e.to_string().contains("max_device"), "{e}");
    }
}
