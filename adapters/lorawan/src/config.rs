//! The `[sources.<name>]` section of a LoRaWAN source (`kind = "lorawan"`)
//! and its validation.
//!
//! ```toml
//! [sources.lora]
//! kind = "lorawan"
//! bind = "0.0.0.0:1700"
//! region = "EU868"
//! net_id = "000000"
//! devices = [
//!   { dev_eui = "70B3D57ED0000001", name = "meter", join_eui = "0000000000000000", app_key = "…" },
//! ]
//! ```
//!
//! Devices normally come from the registry (`gatewayctl lora devices add`);
//! the ones listed here are written into it at start (replacing). Their keys
//! are never logged: [`DeviceConfig`]'s `Debug` redacts them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatewayd_core::ConfigError;
use gatewayd_lorawan_proto::{DedupConfig, Region, ServerConfig};
use serde::{Deserialize, Serialize};

use crate::registry::{AddRequest, FieldValue};

/// Semtech UDP packet-forwarder default port.
pub const DEFAULT_PORT: u16 = 1700;
/// Most devices a config may list.
pub const MAX_CONFIG_DEVICES: usize = 1024;
/// Name of the database file in `state_dir`.
pub const DB_FILE: &str = "lorawan.db";

/// Configuration of a LoRaWAN source. Every field has a working default
/// except `state_dir`, which the daemon fills in with its data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// UDP address the packet forwarders send to.
    pub bind: String,
    /// `EU868` or `US915`.
    pub region: String,
    /// NetID, 6 hex digits (type 0).
    pub net_id: String,
    /// Directory holding `lorawan.db` (registry and sessions). Unset: the
    /// daemon fills in `gateway.data_dir` when it starts the source; a
    /// source started without it fails at bind.
    pub state_dir: Option<PathBuf>,
    /// How long copies of one uplink from several forwarders are collected.
    pub dedup_window_ms: u64,
    /// A forwarder with no PULL_DATA for this long is offline.
    pub forwarder_timeout_secs: u64,
    /// RX1DROffset given to joining devices.
    pub rx1_dr_offset: u8,
    /// RxDelay (s) given to joining devices.
    pub rx1_delay_secs: u8,
    /// Forwarders tracked at once; datagrams from more are dropped.
    pub max_forwarders: usize,
    /// Uplinks being deduplicated at once; one beyond is dropped
    /// (`dedup_full`). Sustained ceiling: this / `dedup_window_ms`.
    pub max_uplinks_in_flight: usize,
    /// Receive buffer asked of the kernel for the UDP socket (SO_RCVBUF),
    /// bytes. Packet forwarders do not resend a PUSH_DATA: a burst beyond
    /// the buffer is lost. The kernel caps it at `net.core.rmem_max`; the
    /// size obtained is logged at start.
    pub recv_buffer_bytes: usize,
    /// Devices inserted into the registry at start (replace).
    pub devices: Vec<DeviceConfig>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            bind: format!("0.0.0.0:{DEFAULT_PORT}"),
            region: "EU868".into(),
            net_id: "000000".into(),
            state_dir: None,
            dedup_window_ms: 200,
            forwarder_timeout_secs: 60,
            rx1_dr_offset: 0,
            rx1_delay_secs: 1,
            max_forwarders: 64,
            max_uplinks_in_flight: 4096,
            recv_buffer_bytes: 4 << 20,
            devices: Vec::new(),
        }
    }
}

/// A device listed in the config. OTAA: `join_eui` + `app_key`; ABP:
/// `dev_addr` + `nwk_s_key` + `app_s_key`. `Debug` never shows keys.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    pub dev_eui: String,
    pub name: Option<String>,
    pub profile: Option<String>,
    pub join_eui: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub app_key: Option<String>,
    pub dev_addr: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub nwk_s_key: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub app_s_key: Option<String>,
}

/// Keys show as `"<redacted>"` in the effective configuration
/// (`gatewayctl config get`), never their value.
fn redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

impl fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("dev_eui", &self.dev_eui)
            .field("name", &self.name)
            .field("profile", &self.profile)
            .field("join_eui", &self.join_eui)
            .field("dev_addr", &self.dev_addr)
            .finish_non_exhaustive()
    }
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Validated {
    pub bind: SocketAddr,
    pub server: ServerConfig,
    /// `<state_dir>/lorawan.db`; `None` until the daemon sets `state_dir`.
    pub db_path: Option<PathBuf>,
    pub forwarder_timeout: Duration,
    pub max_forwarders: usize,
    pub recv_buffer_bytes: usize,
    pub devices: Vec<AddRequest>,
}

/// Checks a config; errors name the dotted key (`<key>.<field>`).
pub fn validate(key: &str, c: LoraConfig) -> Result<Validated, ConfigError> {
    let k = |f: &str| format!("{key}.{f}");
    let bind: SocketAddr = c
        .bind
        .parse()
        .map_err(|_| ConfigError::new(k("bind"), "expected host:port, e.g. 0.0.0.0:1700"))?;
    let region = match c.region.to_ascii_uppercase().as_str() {
        "EU868" => Region::Eu868,
        "US915" => Region::Us915,
        _ => return Err(ConfigError::new(k("region"), "expected EU868 or US915")),
    };
    let net_id = (c.net_id.len() == 6)
        .then(|| u32::from_str_radix(&c.net_id, 16).ok())
        .flatten()
        .ok_or_else(|| ConfigError::new(k("net_id"), "expected 6 hex digits"))?;
    if c.state_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        return Err(ConfigError::new(k("state_dir"), "must not be empty"));
    }
    if !(1..1000).contains(&c.dedup_window_ms) {
        return Err(ConfigError::new(k("dedup_window_ms"), "must be 1..=999"));
    }
    if !(1..=86_400).contains(&c.forwarder_timeout_secs) {
        return Err(ConfigError::new(
            k("forwarder_timeout_secs"),
            "must be 1..=86400",
        ));
    }
    if !(1..=4096).contains(&c.max_forwarders) {
        return Err(ConfigError::new(k("max_forwarders"), "must be 1..=4096"));
    }
    if !(65_536..=(256 << 20)).contains(&c.recv_buffer_bytes) {
        return Err(ConfigError::new(
            k("recv_buffer_bytes"),
            "must be 65536..=268435456",
        ));
    }
    if !(1..=65_536).contains(&c.max_uplinks_in_flight) {
        return Err(ConfigError::new(
            k("max_uplinks_in_flight"),
            "must be 1..=65536",
        ));
    }
    if c.devices.len() > MAX_CONFIG_DEVICES {
        return Err(ConfigError::new(
            k("devices"),
            format!("at most {MAX_CONFIG_DEVICES} devices"),
        ));
    }
    let mut server = ServerConfig::new(region);
    server.net_id = net_id;
    server.rx1_dr_offset = c.rx1_dr_offset;
    server.rx1_delay_s = c.rx1_delay_secs;
    // The database refuses more: the in-memory queue holds all it accepts.
    server.queue_capacity = crate::downlinks::MAX_QUEUED;
    server.dedup = DedupConfig {
        window_ms: c.dedup_window_ms,
        max_open: c.max_uplinks_in_flight,
        ..DedupConfig::default()
    };
    // The server's own checks (NetID type, RX1DROffset for the region…).
    if let Err(e) = gatewayd_lorawan_proto::NetworkServer::new(server.clone()) {
        let field = if e.0.contains("net_id") {
            "net_id"
        } else if e.0.contains("rx1_dr_offset") {
            "rx1_dr_offset"
        } else if e.0.contains("rx1_delay") {
            "rx1_delay_secs"
        } else {
            "dedup_window_ms"
        };
        return Err(ConfigError::new(k(field), e.0));
    }
    let mut devices = Vec::with_capacity(c.devices.len());
    for (i, d) in c.devices.iter().enumerate() {
        let mut fields = BTreeMap::new();
        let mut put = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                fields.insert(name.to_owned(), FieldValue::Str(v.clone()));
            }
        };
        put("dev_eui", &Some(d.dev_eui.clone()));
        put("name", &d.name);
        put("profile", &d.profile);
        put("join_eui", &d.join_eui);
        put("app_key", &d.app_key);
        put("dev_addr", &d.dev_addr);
        put("nwk_s_key", &d.nwk_s_key);
        put("app_s_key", &d.app_s_key);
        fields.insert("replace".into(), FieldValue::Bool(true));
        // Registry errors name the field and never quote key values.
        let req = AddRequest::from_fields(&fields)
            .map_err(|e| ConfigError::new(format!("{}[{i}]", k("devices")), e.to_string()))?;
        devices.push(req);
    }
    Ok(Validated {
        bind,
        server,
        db_path: c.state_dir.map(|d| d.join(DB_FILE)),
        forwarder_timeout: Duration::from_secs(c.forwarder_timeout_secs),
        max_forwarders: c.max_forwarders,
        recv_buffer_bytes: c.recv_buffer_bytes,
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> LoraConfig {
        LoraConfig {
            state_dir: Some("/tmp".into()),
            ..LoraConfig::default()
        }
    }

    #[test]
    fn defaults_validate_once_state_dir_is_set() {
        let v = validate("sources.lora", base()).unwrap();
        assert_eq!(v.bind.port(), DEFAULT_PORT);
        assert_eq!(v.server.region, Region::Eu868);
        assert_eq!(v.db_path, Some(PathBuf::from("/tmp/lorawan.db")));
        let v = validate("sources.lora", LoraConfig::default()).unwrap();
        assert_eq!(v.db_path, None, "filled in by the daemon");
    }

    #[test]
    fn errors_name_the_key() {
        for (c, key) in [
            (
                LoraConfig {
                    bind: "x".into(),
                    ..base()
                },
                "bind",
            ),
            (
                LoraConfig {
                    region: "AS923".into(),
                    ..base()
                },
                "region",
            ),
            (
                LoraConfig {
                    net_id: "zz".into(),
                    ..base()
                },
                "net_id",
            ),
            (
                LoraConfig {
                    net_id: "E00000".into(),
                    ..base()
                },
                "net_id",
            ),
            (
                LoraConfig {
                    dedup_window_ms: 0,
                    ..base()
                },
                "dedup_window_ms",
            ),
            (
                LoraConfig {
                    max_forwarders: 0,
                    ..base()
                },
                "max_forwarders",
            ),
            (
                LoraConfig {
                    rx1_dr_offset: 9,
                    ..base()
                },
                "rx1_dr_offset",
            ),
        ] {
            let e = validate("s", c).unwrap_err();
            assert_eq!(e.key, format!("s.{key}"), "{e}");
        }
    }

    #[test]
    fn config_devices_become_replace_requests_and_keys_are_not_printed() {
        let d = DeviceConfig {
            dev_eui: "70B3D57ED0000001".into(),
            dev_addr: Some("26011BDA".into()),
            nwk_s_key: Some("A1".repeat(16)),
            app_s_key: Some("B2".repeat(16)),
            ..DeviceConfig::default()
        };
        assert!(!format!("{d:?}").contains("A1A1"));
        let shown = serde_json::to_string(&d).unwrap();
        assert!(
            !shown.contains("A1A1") && shown.contains("<redacted>"),
            "{shown}"
        );
        let v = validate(
            "s",
            LoraConfig {
                devices: vec![d.clone()],
                ..base()
            },
        )
        .unwrap();
        assert!(v.devices[0].replace);
        let bad = DeviceConfig {
            nwk_s_key: Some("C3".repeat(15)),
            ..d
        };
        let e = validate(
            "s",
            LoraConfig {
                devices: vec![bad],
                ..base()
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "s.devices[0]");
        assert!(!e.to_string().contains("C3C3"));
    }
}
