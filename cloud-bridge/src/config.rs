//! The configuration tree (`cloud-bridge --config FILE`, TOML).
//!
//! Every section and key is optional (`#[serde(default)]`); unknown keys
//! are errors. [`Config::validate`] checks what serde cannot and names the
//! offending key in its error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Environment variable overriding `mqtt.client_id`.
pub const CLIENT_ID_ENV: &str = "CLOUD_BRIDGE_CLIENT_ID";

/// Longest accepted MQTT client id / shared group / topic prefix.
const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub broker: BrokerConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`. Defaults to the
    /// embedded broker's `broker.listen` when `broker.embedded = true`.
    pub url: Option<String>,
    /// Fixed per replica: the broker keeps this client's persistent session
    /// (unacknowledged batches) under it. Overridden by `--client-id` and
    /// `CLOUD_BRIDGE_CLIENT_ID`; defaults to `cloud-bridge-<hostname>`.
    pub client_id: Option<String>,
    /// Shared-subscription group; replicas with the same group split the
    /// telemetry. Empty disables the shared subscription.
    pub shared_group: String,
    pub topic_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive_secs: u64,
    /// Telemetry payloads larger than this are rejected (and acknowledged).
    pub max_payload_bytes: usize,
    pub tls: TlsFiles,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: None,
            shared_group: "cloud-bridge".into(),
            topic_prefix: "gatewayd/v1".into(),
            username: None,
            password: None,
            keep_alive_secs: 30,
            max_payload_bytes: 1024 * 1024,
            tls: TlsFiles::default(),
        }
    }
}

/// PEM files for `mqtts://`. Without `ca` the system roots are used;
/// `cert` and `key` (client authentication) go together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Run an MQTT broker (rumqttd) inside this process.
    pub embedded: bool,
    /// MQTT 3.1.1 listener of the embedded broker.
    pub listen: SocketAddr,
    /// Optional MQTT 5 listener of the embedded broker.
    pub listen_v5: Option<SocketAddr>,
    pub max_connections: usize,
    /// username → password; empty means no authentication.
    pub users: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            embedded: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            listen_v5: None,
            max_connections: 1000,
            users: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Sqlite,
    Postgres,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Sqlite => "sqlite",
            StorageKind::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: StorageKind,
    pub sqlite_path: PathBuf,
    /// `postgres://user:pass@host:port/db` or a libpq key=value string.
    pub postgres_url: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Sqlite,
            sqlite_path: PathBuf::from("cloud-bridge-data/cloud-bridge.sqlite3"),
            postgres_url: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// A configuration error naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Where the MQTT client connects: the same URL type as the gateway's
/// uplink, so both accept exactly the same `mqtt://` / `mqtts://` forms.
pub type Endpoint = gatewayd_uplink::BrokerUrl;

/// Parses `mqtt://host[:port]` / `mqtts://host[:port]` (also `tcp://`,
/// `ssl://`; IPv6 hosts in brackets).
pub fn parse_mqtt_url(url: &str) -> Result<Endpoint, String> {
    gatewayd_uplink::BrokerUrl::parse(url)
}

fn check_id(key: &str, value: &str, allow_slash: bool) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(err(key, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(err(key, format!("longer than {MAX_ID_LEN} bytes")));
    }
    let bad = |c: char| c.is_control() || c == '+' || c == '#' || (!allow_slash && c == '/');
    if let Some(c) = value.chars().find(|c| bad(*c)) {
        return Err(err(key, format!("contains {c:?}, which is not allowed")));
    }
    Ok(())
}

/// `cloud-bridge-<hostname>`, or `None` when the hostname cannot be read.
pub fn hostname_client_id() -> Option<String> {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    let host = from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_ID_LEN - "cloud-bridge-".len())
        .collect();
    (!host.is_empty()).then(|| format!("cloud-bridge-{host}"))
}

impl Config {
    /// Parses TOML text (errors carry serde's key path and line).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| err("config", e.to_string()))
    }

    /// Applies the client-id precedence: `--client-id` flag, then
    /// `CLOUD_BRIDGE_CLIENT_ID`, then `mqtt.client_id`, then
    /// `cloud-bridge-<hostname>`.
    pub fn resolve_client_id(&mut self, flag: Option<String>, env: Option<String>) {
        if let Some(id) = flag.or(env).filter(|s| !s.is_empty()) {
            self.mqtt.client_id = Some(id);
        } else if self.mqtt.client_id.is_none() {
            self.mqtt.client_id = hostname_client_id();
        }
    }

    /// The MQTT endpoint the service connects to.
    pub fn mqtt_endpoint(&self) -> Result<Endpoint, ConfigError> {
        match &self.mqtt.url {
            Some(url) => parse_mqtt_url(url).map_err(|m| err("mqtt.url", m)),
            None if self.broker.embedded => {
                let l = self.broker.listen;
                let host = if l.ip().is_unspecified() {
                    if l.is_ipv4() {
                        "127.0.0.1".to_owned()
                    } else {
                        "::1".to_owned()
                    }
                } else {
                    l.ip().to_string()
                };
                Ok(Endpoint {
                    host,
                    port: l.port(),
                    tls: false,
                })
            }
            None => Err(err("mqtt.url", "required when broker.embedded = false")),
        }
    }

    /// The telemetry subscription filter. The embedded broker (rumqttd
    /// 0.20) panics when a persistent-session member of a shared group
    /// disconnects with messages in flight, so against it the plain filter
    /// is used (there is only one consumer of an in-process broker anyway).
    pub fn telemetry_filter(&self) -> String {
        let plain = format!("{}/+/telemetry", self.mqtt.topic_prefix);
        if self.mqtt.shared_group.is_empty() || self.uses_embedded_broker() {
            plain
        } else {
            format!("$share/{}/{plain}", self.mqtt.shared_group)
        }
    }

    pub fn status_filter(&self) -> String {
        format!("{}/+/status", self.mqtt.topic_prefix)
    }

    /// True when the MQTT client talks to the in-process broker.
    pub fn uses_embedded_broker(&self) -> bool {
        if !self.broker.embedded {
            return false;
        }
        match &self.mqtt.url {
            None => true,
            // An explicit URL naming the embedded listener is still the
            // embedded broker.
            Some(url) => url
                .strip_prefix("mqtt://")
                .and_then(|hostport| hostport.trim_end_matches('/').parse::<SocketAddr>().ok())
                .is_some_and(|addr| addr == self.broker.listen),
        }
    }

    /// Checks everything serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let endpoint = self.mqtt_endpoint()?;
        match &self.mqtt.client_id {
            None => {
                return Err(err(
                    "mqtt.client_id",
                    format!(
                        "required (no hostname to derive it from); set it, pass --client-id or {CLIENT_ID_ENV}"
                    ),
                ))
            }
            Some(id) => check_id("mqtt.client_id", id, true)?,
        }
        if !self.mqtt.shared_group.is_empty() {
            check_id("mqtt.shared_group", &self.mqtt.shared_group, false)?;
        }
        check_id("mqtt.topic_prefix", &self.mqtt.topic_prefix, true)?;
        if self.mqtt.topic_prefix.starts_with('/')
            || self.mqtt.topic_prefix.ends_with('/')
            || self.mqtt.topic_prefix.starts_with('$')
        {
            return Err(err(
                "mqtt.topic_prefix",
                "must not start or end with '/' or start with '$'",
            ));
        }
        if self.mqtt.password.is_some() && self.mqtt.username.is_none() {
            return Err(err("mqtt.password", "set but mqtt.username is not"));
        }
        if !(5..=3600).contains(&self.mqtt.keep_alive_secs) {
            return Err(err("mqtt.keep_alive_secs", "must be between 5 and 3600"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.mqtt.max_payload_bytes) {
            return Err(err(
                "mqtt.max_payload_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if !endpoint.tls && !self.mqtt.tls.is_empty() {
            return Err(err(
                "mqtt.tls",
                "TLS files are set but mqtt.url is not mqtts://",
            ));
        }
        if self.mqtt.tls.cert.is_some() != self.mqtt.tls.key.is_some() {
            return Err(err(
                "mqtt.tls.key",
                "mqtt.tls.cert and mqtt.tls.key must be set together",
            ));
        }
        for (key, path) in [
            ("mqtt.tls.ca", &self.mqtt.tls.ca),
            ("mqtt.tls.cert", &self.mqtt.tls.cert),
            ("mqtt.tls.key", &self.mqtt.tls.key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    return Err(err(key, format!("{} is not a readable file", p.display())));
                }
            }
        }
        if self.broker.embedded {
            if self.broker.listen.port() == 0 {
                return Err(err("broker.listen", "needs a fixed port"));
            }
            if let Some(v5) = self.broker.listen_v5 {
                if v5.port() == 0 || v5 == self.broker.listen {
                    return Err(err(
                        "broker.listen_v5",
                        "needs a fixed port different from broker.listen",
                    ));
                }
            }
            if self.broker.max_connections == 0 || self.broker.max_connections > 100_000 {
                return Err(err(
                    "broker.max_connections",
                    "must be between 1 and 100000",
                ));
            }
        }
        match self.storage.kind {
            StorageKind::Sqlite => {
                if self.storage.sqlite_path.as_os_str().is_empty() {
                    return Err(err("storage.sqlite_path", "must not be empty"));
                }
            }
            StorageKind::Postgres => {
                let url = self.storage.postgres_url.as_deref().ok_or_else(|| {
                    err(
                        "storage.postgres_url",
                        "required when storage.kind = \"postgres\"",
                    )
                })?;
                url.parse::<tokio_postgres::Config>()
                    .map_err(|e| err("storage.postgres_url", e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// A commented example configuration (`cloud-bridge config example`).
pub const EXAMPLE: &str = r#"# cloud-bridge configuration (TOML). Every key is optional; the values
# shown are the defaults unless marked "example".

[mqtt]
# Broker to consume from: mqtt://host[:port] or mqtts://host[:port].
# Default: the embedded broker at broker.listen when broker.embedded = true.
# url = "mqtts://broker.example.com:8883"        # example
# Fixed per replica: the broker keeps this client's persistent session (the
# batches it has not acknowledged yet) under this id. Precedence: the
# --client-id flag, then CLOUD_BRIDGE_CLIENT_ID, then this key, then
# "cloud-bridge-<hostname>".
# client_id = "cloud-bridge-0"                   # example
# Replicas in the same group split the telemetry ($share/<group>/...).
# "" disables the shared subscription. Ignored with the embedded broker.
shared_group = "cloud-bridge"
topic_prefix = "gatewayd/v1"
# username = "cloud-bridge"                      # example
# password = "secret"                            # example
keep_alive_secs = 30
# Telemetry payloads above this size are rejected (recorded, acknowledged).
max_payload_bytes = 1048576

[mqtt.tls]
# Only with mqtts://. Without ca the system roots are used; cert and key
# enable client-certificate authentication.
# ca = "/etc/cloud-bridge/ca.pem"                # example
# cert = "/etc/cloud-bridge/client.pem"          # example
# key = "/etc/cloud-bridge/client.key"           # example

[broker]
# Run an MQTT broker (rumqttd) in this process so one machine needs nothing
# else. Gateways publish to it; cloud-bridge consumes from it.
embedded = true
# MQTT 3.1.1 listener. Use 0.0.0.0:1883 to accept remote gateways.
listen = "127.0.0.1:1883"
# Optional MQTT 5 listener.
# listen_v5 = "127.0.0.1:1884"                   # example
max_connections = 1000

[broker.users]
# username = "password" pairs; none means no authentication.
# gw-01 = "secret"                               # example

[storage]
# "sqlite" (default) or "postgres".
kind = "sqlite"
sqlite_path = "cloud-bridge-data/cloud-bridge.sqlite3"
# Required when kind = "postgres".
# postgres_url = "postgres://cloud:secret@localhost:5432/telemetry"   # example

[http]
listen = "127.0.0.1:8080"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        let mut c = Config::default();
        c.mqtt.client_id = Some("cb-test".into());
        c
    }

    #[test]
    fn example_config_parses_to_the_defaults() {
        let parsed = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn defaults_use_the_embedded_broker_and_sqlite() {
        let c = valid();
        c.validate().unwrap();
        assert_eq!(
            c.mqtt_endpoint().unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(c.storage.kind, StorageKind::Sqlite);
        assert_eq!(c.telemetry_filter(), "gatewayd/v1/+/telemetry");
    }

    #[test]
    fn explicit_url_of_the_embedded_listener_is_the_embedded_broker() {
        let mut c = Config::default();
        c.mqtt.url = Some("mqtt://127.0.0.1:1883".into());
        assert!(c.uses_embedded_broker());
        c.mqtt.url = Some("mqtt://127.0.0.1:1884".into());
        assert!(!c.uses_embedded_broker());
    }

    #[test]
    fn external_broker_gets_a_shared_subscription() {
        let mut c = valid();
        c.broker.embedded = false;
        c.mqtt.url = Some("mqtt://broker:1883".into());
        assert_eq!(
            c.telemetry_filter(),
            "$share/cloud-bridge/gatewayd/v1/+/telemetry"
        );
        c.mqtt.shared_group = String::new();
        assert_eq!(c.telemetry_filter(), "gatewayd/v1/+/telemetry");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = Config::from_toml("[mqtt]\nurl = \"mqtt://x\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn postgres_needs_a_url() {
        let mut c = valid();
        c.storage.kind = StorageKind::Postgres;
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "storage.postgres_url: required when storage.kind = \"postgres\""
        );
        c.storage.postgres_url = Some("postgres://u@localhost/db".into());
        c.validate().unwrap();
    }

    #[test]
    fn external_broker_needs_a_url() {
        let mut c = valid();
        c.broker.embedded = false;
        assert_eq!(c.validate().unwrap_err().key, "mqtt.url");
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = valid();
        c.mqtt.shared_group = "a/b".into();
        assert_eq!(c.validate().unwrap_err().key, "mqtt.shared_group");
        let mut c = valid();
        c.mqtt.url = Some("http://x".into());
        assert_eq!(c.validate().unwrap_err().key, "mqtt.url");
        let mut c = valid();
        c.mqtt.tls.ca = Some("/nonexistent".into());
        assert_eq!(c.validate().unwrap_err().key, "mqtt.tls");
        let mut c = valid();
        c.mqtt.client_id = Some(String::new());
        assert_eq!(c.validate().unwrap_err().key, "mqtt.client_id");
        let mut c = valid();
        c.mqtt.topic_prefix = "gatewayd/v1/".into();
        assert_eq!(c.validate().unwrap_err().key, "mqtt.topic_prefix");
    }

    #[test]
    fn parses_mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtts://example.com").unwrap(),
            Endpoint {
                host: "example.com".into(),
                port: 8883,
                tls: true
            }
        );
        assert_eq!(parse_mqtt_url("mqtt://[::1]:1884/").unwrap().port, 1884);
        assert_eq!(parse_mqtt_url("tcp://10.0.0.1:1").unwrap().host, "10.0.0.1");
        for bad in [
            "example.com",
            "http://x",
            "mqtt://",
            "mqtt://x:port",
            "mqtt://u:p@x",
            "mqtt://x/topic",
            "mqtt://x:0",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_id_precedence_is_flag_env_config_hostname() {
        let mut c = Config::default();
        c.mqtt.client_id = Some("from-config".into());
        c.resolve_client_id(Some("from-flag".into()), Some("from-env".into()));
        assert_eq!(c.mqtt.client_id.as_deref(), Some("from-flag"));
        c.resolve_client_id(None, Some("from-env".into()));
        assert_eq!(c.mqtt.client_id.as_deref(), Some("from-env"));
        let mut c = Config::default();
        c.mqtt.client_id = Some("from-config".into());
        c.resolve_client_id(None, None);
        assert_eq!(c.mqtt.client_id.as_deref(), Some("from-config"));
    }
}
