//! gatewayd's configuration: one serde tree, every field defaulted, validated
//! once at start with errors that name the offending key.
//!
//! Sources are configured as `[sources.<name>]` tables with a `kind` key; the
//! rest of the table is handed to that adapter's own `Config` type, so each
//! adapter owns its section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gatewayd_buffer::{FullPolicy, SyncMode};
use gatewayd_devices::DevicesConfig;
use gatewayd_edge::{EdgeConfig, EdgePaths};
use gatewayd_uplink::UplinkConfig;
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub log: LogConfig,
    pub buffer: BufferSection,
    pub forwarder: ForwarderConfig,
    pub uplink: UplinkConfig,
    /// `[edge_apps]`: the WASM app runtime and anomaly detectors.
    pub edge_apps: EdgeConfig,
    /// `[dbus]`: the control interface (docs/dbus.md).
    pub dbus: DbusConfig,
    /// `[devices]`: the registry of devices seen (D-Bus `ListDevices`).
    pub devices: DevicesConfig,
    /// `[sources.<name>]` tables, each with a `kind`.
    pub sources: BTreeMap<String, toml::Table>,
}

impl Default for Config {
    fn default() -> Self {
        let mut sources = BTreeMap::new();
        let mut coap = toml::Table::new();
        coap.insert("kind".into(), toml::Value::String("coap".into()));
        sources.insert("coap".to_owned(), coap);
        Config {
            gateway: GatewayConfig::default(),
            log: LogConfig::default(),
            buffer: BufferSection::default(),
            forwarder: ForwarderConfig::default(),
            uplink: UplinkConfig::default(),
            edge_apps: EdgeConfig::default(),
            dbus: DbusConfig::default(),
            devices: DevicesConfig::default(),
            sources,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's id: one MQTT topic level, unique in the fleet.
    pub id: String,
    /// Where the buffer and other state live.
    pub data_dir: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: "gateway".into(),
            data_dir: PathBuf::from("/var/lib/gatewayd"),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `info,gatewayd_uplink=debug`;
    /// `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferSection {
    /// SQLite file; default `<data_dir>/buffer.db`.
    pub path: Option<PathBuf>,
    /// Logical size limit of buffered readings, in bytes.
    pub max_bytes: u64,
    /// What to do when full: `block`, `drop-oldest` or `drop-newest`.
    pub when_full: FullPolicy,
    /// `full` (fsync every commit: survives power loss) or `normal`
    /// (survives a crash of gatewayd, may lose the last commits on power loss).
    pub sync: SyncMode,
    /// Largest group commit, in readings.
    pub commit_max_readings: usize,
    /// How long the writer waits to fill a group once it has one reading.
    pub commit_max_delay_ms: u64,
    /// Submissions queued between the sources and the writer.
    pub queue_capacity: usize,
    /// D-Bus `BufferHighWater` is signalled when the buffer's fill crosses
    /// this percentage of `max_bytes` upwards (re-armed 10 points below).
    pub high_water_percent: u8,
}

impl Default for BufferSection {
    fn default() -> Self {
        BufferSection {
            path: None,
            max_bytes: 256 * 1024 * 1024,
            when_full: FullPolicy::default(),
            sync: SyncMode::default(),
            commit_max_readings: 4096,
            commit_max_delay_ms: 2,
            queue_capacity: 1024,
            high_water_percent: 80,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwarderConfig {
    /// Most readings in one MQTT publish.
    pub batch_max_readings: usize,
    /// Most payload bytes in one MQTT publish (must fit the broker's limit).
    pub batch_max_bytes: usize,
    /// How often acknowledged readings are deleted from the buffer.
    pub ack_flush_ms: u64,
    /// On shutdown, how long to keep forwarding before leaving the rest in
    /// the buffer for next time.
    pub drain_timeout_secs: u64,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            batch_max_readings: 500,
            batch_max_bytes: 64 * 1024,
            ack_flush_ms: 50,
            drain_timeout_secs: 5,
        }
    }
}

/// Which message bus the control interface is served on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    System,
    Session,
    /// A D-Bus address, e.g. `unix:path=/run/gatewayd-test/bus`.
    Address(String),
}

impl BusChoice {
    pub fn parse(s: &str) -> Result<BusChoice, String> {
        match s {
            "system" => Ok(BusChoice::System),
            "session" => Ok(BusChoice::Session),
            a if a.contains(':') && a.contains('=') => Ok(BusChoice::Address(a.to_owned())),
            other => Err(format!(
                "expected \"system\", \"session\" or a D-Bus address like \"unix:path=/run/x/bus\", got {other:?}"
            )),
        }
    }
}

/// `[dbus]`: the control interface (docs/dbus.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DbusConfig {
    /// Serve `io.gatewayd.Gateway1`. Without it gatewayd runs headless
    /// (config file and `gatewayd apps` only).
    pub enabled: bool,
    /// `"system"`, `"session"` (development) or a D-Bus address.
    /// `gatewayd --bus` overrides it.
    pub bus: String,
    /// Besides root and gatewayd's own user, members of this group may call
    /// the methods that change state (the policy file grants the same group
    /// on the bus; the daemon re-checks).
    pub write_group: String,
}

impl Default for DbusConfig {
    fn default() -> Self {
        DbusConfig {
            enabled: true,
            bus: "system".into(),
            write_group: "gatewayd".into(),
        }
    }
}

/// A validation failure naming the key.
pub fn key_error(key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{key}: {msg}")
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().to_owned();
            if path.is_empty() || path == "." {
                anyhow::anyhow!("{msg}")
            } else {
                anyhow::anyhow!("{path}: {msg}")
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        let id = &self.gateway.id;
        if id.is_empty() || id.len() > 64 {
            return Err(key_error("gateway.id", "must be 1 to 64 characters"));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(key_error(
                "gateway.id",
                format!("{c:?} not allowed: use A-Z a-z 0-9 - _ . (it is an MQTT topic level)"),
            ));
        }
        if self.gateway.data_dir.as_os_str().is_empty() {
            return Err(key_error("gateway.data_dir", "must not be empty"));
        }
        let b = &self.buffer;
        if b.max_bytes < 64 * 1024 {
            return Err(key_error("buffer.max_bytes", "must be at least 65536"));
        }
        if b.commit_max_readings == 0 {
            return Err(key_error(
                "buffer.commit_max_readings",
                "must be at least 1",
            ));
        }
        if b.commit_max_delay_ms > 1000 {
            return Err(key_error(
                "buffer.commit_max_delay_ms",
                "must be at most 1000 (it delays every acknowledgement)",
            ));
        }
        if b.queue_capacity == 0 {
            return Err(key_error("buffer.queue_capacity", "must be at least 1"));
        }
        if !(11..=100).contains(&b.high_water_percent) {
            return Err(key_error("buffer.high_water_percent", "must be 11 to 100"));
        }
        self.devices
            .validate()
            .map_err(|(k, m)| key_error(&format!("devices.{k}"), m))?;
        BusChoice::parse(&self.dbus.bus).map_err(|e| key_error("dbus.bus", e))?;
        if self.dbus.write_group.is_empty()
            || !self
                .dbus
                .write_group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(key_error(
                "dbus.write_group",
                "must be a group name (A-Z a-z 0-9 - _ .)",
            ));
        }
        let f = &self.forwarder;
        if f.batch_max_readings == 0 {
            return Err(key_error(
                "forwarder.batch_max_readings",
                "must be at least 1",
            ));
        }
        if f.batch_max_bytes < 1024 {
            return Err(key_error(
                "forwarder.batch_max_bytes",
                "must be at least 1024",
            ));
        }
        if f.batch_max_bytes > self.uplink.max_packet_bytes.saturating_sub(1024) {
            return Err(key_error(
                "forwarder.batch_max_bytes",
                format!(
                    "must be at most uplink.max_packet_bytes - 1024 ({})",
                    self.uplink.max_packet_bytes.saturating_sub(1024)
                ),
            ));
        }
        if f.ack_flush_ms == 0 || f.ack_flush_ms > 10_000 {
            return Err(key_error("forwarder.ack_flush_ms", "must be 1 to 10000"));
        }
        self.uplink
            .validate("uplink")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let e = &self.edge_apps;
        if e.epoch_tick_ms == 0 || e.epoch_tick_ms > 1000 {
            return Err(key_error("edge_apps.epoch_tick_ms", "must be 1 to 1000"));
        }
        if e.scan_interval_ms < 100 {
            return Err(key_error(
                "edge_apps.scan_interval_ms",
                "must be at least 100",
            ));
        }
        if e.max_apps == 0 {
            return Err(key_error("edge_apps.max_apps", "must be at least 1"));
        }
        if e.failures.max_consecutive == 0 {
            return Err(key_error(
                "edge_apps.failures.max_consecutive",
                "must be at least 1",
            ));
        }
        for (i, a) in e.anomaly.iter().enumerate() {
            if a.detector.window == 0 {
                return Err(key_error(
                    &format!("edge_apps.anomaly[{i}].window"),
                    "must be at least 1",
                ));
            }
        }
        if self.sources.is_empty() {
            bail!("sources: no sources configured; add e.g. [sources.coap] with kind = \"coap\"");
        }
        for (name, table) in &self.sources {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            {
                return Err(key_error(
                    &format!("sources.{name}"),
                    "source names use A-Z a-z 0-9 - _",
                ));
            }
            match table.get("kind") {
                Some(toml::Value::String(_)) => {}
                Some(_) => {
                    return Err(key_error(
                        &format!("sources.{name}.kind"),
                        "must be a string",
                    ))
                }
                None => {
                    return Err(key_error(
                        &format!("sources.{name}.kind"),
                        "missing (e.g. kind = \"coap\")",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Where the edge-app runtime keeps its state and deployment directory.
    pub fn edge_paths(&self) -> EdgePaths {
        EdgePaths::resolve(&self.edge_apps, &self.gateway.data_dir.join("apps"))
    }

    pub fn buffer_path(&self) -> PathBuf {
        self.buffer
            .path
            .clone()
            .unwrap_or_else(|| self.gateway.data_dir.join("buffer.db"))
    }
}

/// A commented example config; `gatewayd config example` prints it and a
/// test checks that it parses to the defaults.
pub const EXAMPLE: &str = include_str!("../gatewayd.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let c = Config::parse(EXAMPLE).unwrap();
        let d = Config::default();
        assert_eq!(c.gateway.id, d.gateway.id);
        assert_eq!(c.buffer.max_bytes, d.buffer.max_bytes);
        assert_eq!(
            c.forwarder.batch_max_readings,
            d.forwarder.batch_max_readings
        );
        assert_eq!(c.uplink.broker, d.uplink.broker);
        assert_eq!(c.edge_apps, d.edge_apps, "[edge_apps] example = defaults");
        assert_eq!(c.dbus, d.dbus, "[dbus] example = defaults");
        assert_eq!(c.devices, d.devices, "[devices] example = defaults");
        assert_eq!(c.buffer.high_water_percent, d.buffer.high_water_percent);
        assert!(c.sources.contains_key("coap"));
    }

    /// The example's commented block from the line `first` up to (not
    /// including) the next line starting with `stop`, or the end: its
    /// comments (`# # …`) dropped, the rest uncommented.
    fn uncommented_example_block(first: &str, stop: &str) -> String {
        let mut lines = EXAMPLE.lines().skip_while(|l| *l != first);
        let head = lines.next().unwrap_or_default();
        std::iter::once(head)
            .chain(lines.take_while(|l| !l.starts_with(stop)))
            .filter(|l| !l.starts_with("# # "))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect()
    }

    /// The commented `[sources.lora]` block of the example, uncommented
    /// (its device list left out: placeholders), is the adapter's defaults.
    #[test]
    fn example_lorawan_block_is_the_defaults() {
        let block = uncommented_example_block("# [sources.lora]", "# devices");
        assert!(block.starts_with("[sources.lora]"), "{block}");
        let c = Config::parse(&block).unwrap();
        let effective = crate::sources::check("lora", &c.sources["lora"]).unwrap();
        let mut defaults =
            serde_json::to_value(gatewayd_adapter_lorawan::LoraConfig::default()).unwrap();
        defaults["kind"] = "lorawan".into();
        assert_eq!(effective, defaults);
    }

    /// The commented `[sources.wired]` block of the example, uncommented,
    /// is the serial adapter's defaults (but for the port's path and name).
    #[test]
    fn example_serial_block_is_the_defaults() {
        let block = uncommented_example_block("# [sources.wired]", "# [sources.");
        assert!(block.starts_with("[sources.wired]"), "{block}");
        let c = Config::parse(&block).unwrap();
        let effective = crate::sources::check("wired", &c.sources["wired"]).unwrap();
        let mut defaults = gatewayd_adapter_serial::SerialConfig::default();
        defaults.ports.push(gatewayd_adapter_serial::PortConfig {
            path: "/dev/ttyUSB0".into(),
            name: Some("boiler-room".into()),
            ..Default::default()
        });
        let mut defaults = serde_json::to_value(defaults).unwrap();
        defaults["kind"] = "serial".into();
        assert_eq!(effective, defaults);
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.gateway.id, "gateway");
        assert_eq!(
            c.buffer_path(),
            PathBuf::from("/var/lib/gatewayd/buffer.db")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[gateway]\nid = \"a/b\"", "gateway.id"),
            ("[buffer]\nmax_bytes = \"lots\"", "buffer.max_bytes"),
            ("[buffer]\nwhen_full = \"explode\"", "buffer.when_full"),
            ("[buffer]\nmax_bytes = 10", "buffer.max_bytes"),
            ("[buffer]\nbogus = 1", "bogus"),
            (
                "[forwarder]\nbatch_max_readings = 0",
                "forwarder.batch_max_readings",
            ),
            ("[sources.x]\nbind = \"1\"", "sources.x.kind"),
            ("[uplink]\nbroker = \"http://x\"", "uplink"),
        ];
        for (text, key) in cases {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }
}
