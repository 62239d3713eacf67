//! The `[sources.<name>]` section of a CoAP source, and its validation.

use std::net::SocketAddr;

use gatewayd_core::ConfigError;
use gatewayd_model::senml::Limits;
use gatewayd_model::{DeviceId, Transport};
use serde::{Deserialize, Serialize};

/// Default UDP port for CoAP (RFC 7252 §6.1).
pub const DEFAULT_PORT: u16 = 5683;
/// Largest UDP payload an IPv4 datagram can carry.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Most observed resources one source may list.
pub const MAX_OBSERVE_RESOURCES: usize = 64;

/// Configuration of a CoAP source. Every field has a working default.
///
/// ```toml
/// [sources.coap]
/// kind = "coap"
/// bind = "0.0.0.0:5683"
/// path = "telemetry"
/// max_payload_bytes = 65536
/// observe = [
///   { uri = "coap://192.0.2.10/sensors/temp", device = "greenhouse-1", name = "temperature", unit = "Cel" },
/// ]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// UDP address the server listens on.
    pub bind: String,
    /// Resource path that accepts SenML POSTs, without leading `/`
    /// (`telemetry` or `api/v1/telemetry`).
    pub path: String,
    /// Largest datagram read from the socket; bigger ones are answered
    /// 4.13 with a Block1 size hint. Default 1280 (IPv6 minimum MTU).
    pub max_datagram_bytes: usize,
    /// Largest request body, single datagram or reassembled from Block1
    /// blocks. Default 64 KiB.
    pub max_payload_bytes: usize,
    /// Requests waiting for their commit at once; beyond that 5.03.
    pub max_concurrent_requests: usize,
    /// Block1 uploads being reassembled at once (one per client).
    pub max_block_transfers: usize,
    /// Exchanges remembered for duplicate detection (RFC 7252 §4.5).
    pub dedup_capacity: usize,
    /// Bounds applied to SenML packs.
    pub limits: LimitsConfig,
    /// Resources the gateway observes as a CoAP client (RFC 7641).
    pub observe: Vec<ObserveConfig>,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            bind: format!("0.0.0.0:{DEFAULT_PORT}"),
            path: "telemetry".into(),
            max_datagram_bytes: 1280,
            max_payload_bytes: 64 * 1024,
            max_concurrent_requests: 256,
            max_block_transfers: 64,
            dedup_capacity: 32_768,
            limits: LimitsConfig::default(),
            observe: Vec::new(),
        }
    }
}

/// SenML decoding bounds (see [`gatewayd_model::senml::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_records: usize,
    pub max_name_len: usize,
    pub max_string_len: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            max_records: l.max_records,
            max_name_len: l.max_name_len,
            max_string_len: l.max_string_len,
        }
    }
}

impl From<LimitsConfig> for Limits {
    fn from(c: LimitsConfig) -> Self {
        Limits {
            max_records: c.max_records,
            max_name_len: c.max_name_len,
            max_string_len: c.max_string_len,
        }
    }
}

/// One resource to observe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveConfig {
    /// `coap://host[:port]/path[?query]`.
    pub uri: String,
    /// Native device id (within `coap:`) for readings whose payload names
    /// no device (text/plain, or SenML without a base name). Default: the
    /// URI's host.
    #[serde(default)]
    pub device: Option<String>,
    /// Measurement name for text/plain numeric payloads. Default `value`.
    #[serde(default)]
    pub name: Option<String>,
    /// SenML unit for text/plain numeric payloads.
    #[serde(default)]
    pub unit: Option<String>,
}

/// A parsed `coap://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapUri {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Decoded Uri-Path segments.
    pub path: Vec<String>,
    /// Decoded Uri-Query segments.
    pub query: Vec<String>,
}

impl CoapUri {
    /// Parses `coap://host[:port]/path[?query]` (RFC 7252 §6.1). `coaps`
    /// (DTLS) is not supported.
    pub fn parse(s: &str) -> Result<CoapUri, String> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!(
                "{s:?} is not an absolute URI (expected coap://host/path)"
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "coap" => {}
            "coaps" => return Err("coaps:// (DTLS) is not supported; use coap://".into()),
            other => return Err(format!("unsupported scheme {other:?}; expected coap://")),
        }
        if rest.contains('#') {
            return Err("a CoAP URI must not have a fragment".into());
        }
        let (authority, path_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => match rest.find('?') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            },
        };
        if authority.contains('@') {
            return Err("a CoAP URI must not carry user information".into());
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let Some((h, tail)) = after.split_once(']') else {
                return Err("unterminated IPv6 literal in host".into());
            };
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or("junk after IPv6 literal")?),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the URI has no host".into());
        }
        if host.contains(['/', '?', ' ']) {
            return Err(format!("invalid host {host:?}"));
        }
        let port = match port {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {p:?}"))?,
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        let mut segments = Vec::new();
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        if !trimmed.is_empty() {
            for seg in trimmed.split('/') {
                segments.push(percent_decode(seg)?);
            }
        }
        let mut queries = Vec::new();
        if let Some(q) = query {
            for seg in q.split('&').filter(|s| !s.is_empty()) {
                queries.push(percent_decode(seg)?);
            }
        }
        for seg in segments.iter().chain(&queries) {
            if seg.len() > 255 {
                return Err("a path or query segment is longer than 255 bytes".into());
            }
        }
        Ok(CoapUri {
            host: host.to_owned(),
            port,
            path: segments,
            query: queries,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// A config that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub bind: SocketAddr,
    pub path: Vec<String>,
    pub max_datagram_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_concurrent_requests: usize,
    pub max_block_transfers: usize,
    pub dedup_capacity: usize,
    pub limits: Limits,
    pub observe: Vec<ObserveTarget>,
}

/// A validated observe entry.
#[derive(Debug, Clone)]
pub(crate) struct ObserveTarget {
    /// Dotted config key, for logs.
    pub key: String,
    pub uri: CoapUri,
    pub uri_text: String,
    pub default_device: DeviceId,
    pub name: String,
    pub unit: Option<String>,
    pub limits: Limits,
}

fn positive(key: &str, field: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::new(
            format!("{key}.{field}"),
            "must be greater than 0",
        ))
    } else {
        Ok(())
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_'))
}

pub(crate) fn validate(key: &str, c: CoapConfig) -> Result<Validated, ConfigError> {
    let err = |field: &str, msg: String| ConfigError::new(format!("{key}.{field}"), msg);
    let bind: SocketAddr = c.bind.parse().map_err(|e| {
        err(
            "bind",
            format!(
                "{:?} is not a socket address like 0.0.0.0:5683 ({e})",
                c.bind
            ),
        )
    })?;
    let path: Vec<String> = c
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if path.is_empty() {
        return Err(err(
            "path",
            "must name a resource, e.g. \"telemetry\"".into(),
        ));
    }
    if path.iter().any(|s| s.len() > 255) {
        return Err(err("path", "a segment is longer than 255 bytes".into()));
    }
    positive(key, "max_datagram_bytes", c.max_datagram_bytes)?;
    if !(64..=MAX_UDP_PAYLOAD).contains(&c.max_datagram_bytes) {
        return Err(err(
            "max_datagram_bytes",
            format!("must be between 64 and {MAX_UDP_PAYLOAD}"),
        ));
    }
    positive(key, "max_payload_bytes", c.max_payload_bytes)?;
    if c.max_payload_bytes > 16 * 1024 * 1024 {
        return Err(err("max_payload_bytes", "must be at most 16 MiB".into()));
    }
    positive(key, "max_concurrent_requests", c.max_concurrent_requests)?;
    positive(key, "max_block_transfers", c.max_block_transfers)?;
    positive(key, "dedup_capacity", c.dedup_capacity)?;
    positive(key, "limits.max_records", c.limits.max_records)?;
    positive(key, "limits.max_name_len", c.limits.max_name_len)?;
    positive(key, "limits.max_string_len", c.limits.max_string_len)?;
    if c.observe.len() > MAX_OBSERVE_RESOURCES {
        return Err(err(
            "observe",
            format!("at most {MAX_OBSERVE_RESOURCES} resources can be observed"),
        ));
    }
    let limits: Limits = c.limits.into();
    let mut observe = Vec::with_capacity(c.observe.len());
    for (i, o) in c.observe.into_iter().enumerate() {
        let okey = format!("{key}.observe[{i}]");
        let uri = CoapUri::parse(&o.uri).map_err(|m| ConfigError::new(format!("{okey}.uri"), m))?;
        let default_device = match &o.device {
            Some(d) => DeviceId::new(Transport::Coap, d)
                .map_err(|e| ConfigError::new(format!("{okey}.device"), e.to_string()))?,
            None => DeviceId::sanitized(Transport::Coap, &uri.host),
        };
        let name = o.name.unwrap_or_else(|| "value".to_owned());
        if !valid_name(&name) || name.len() > limits.max_name_len {
            return Err(ConfigError::new(
                format!("{okey}.name"),
                format!("{name:?} is not a valid SenML name (A-Z a-z 0-9 then - : . / _)"),
            ));
        }
        if let Some(u) = &o.unit {
            if u.is_empty() || u.len() > limits.max_name_len {
                return Err(ConfigError::new(
                    format!("{okey}.unit"),
                    "must be a non-empty SenML unit such as \"Cel\"",
                ));
            }
        }
        observe.push(ObserveTarget {
            key: okey,
            uri,
            uri_text: o.uri,
            default_device,
            name,
            unit: o.unit,
            limits,
        });
    }
    Ok(Validated {
        bind,
        path,
        max_datagram_bytes: c.max_datagram_bytes,
        max_payload_bytes: c.max_payload_bytes,
        max_concurrent_requests: c.max_concurrent_requests,
        max_block_transfers: c.max_block_transfers,
        dedup_capacity: c.dedup_capacity,
        limits,
        observe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_with_port_path_and_query_is_parsed() {
        let u = CoapUri::parse("coap://127.0.0.1:5684/sensors/temp?x=1&y").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 5684);
        assert_eq!(u.path, vec!["sensors", "temp"]);
        assert_eq!(u.query, vec!["x=1", "y"]);
    }

    #[test]
    fn uri_defaults_port_and_accepts_ipv6_literals() {
        let u = CoapUri::parse("coap://[::1]/a%20b").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, DEFAULT_PORT);
        assert_eq!(u.path, vec!["a b"]);
        let u = CoapUri::parse("coap://sensor.local").unwrap();
        assert!(u.path.is_empty());
    }

    #[test]
    fn uri_with_wrong_scheme_or_port_is_rejected() {
        assert!(CoapUri::parse("http://x/y").unwrap_err().contains("scheme"));
        assert!(CoapUri::parse("coaps://x/y").unwrap_err().contains("DTLS"));
        assert!(CoapUri::parse("coap://x:0/y").unwrap_err().contains("port"));
        assert!(CoapUri::parse("coap://x:99999/y").is_err());
        assert!(CoapUri::parse("coap:///y").is_err());
        assert!(CoapUri::parse("sensors/temp").is_err());
        assert!(CoapUri::parse("coap://x/%zz").is_err());
        assert!(CoapUri::parse("coap://[::1/x").is_err());
    }

    #[test]
    fn defaults_validate() {
        let v = validate("sources.coap", CoapConfig::default()).unwrap();
        assert_eq!(v.bind.port(), 5683);
        assert_eq!(v.path, vec!["telemetry"]);
        assert_eq!(v.max_concurrent_requests, 256);
    }

    #[test]
    fn errors_name_the_dotted_key() {
        let c = CoapConfig {
            bind: "nope".into(),
            ..CoapConfig::default()
        };
        assert_eq!(
            validate("sources.coap", c).unwrap_err().key,
            "sources.coap.bind"
        );

        let c = CoapConfig {
            observe: vec![
                ObserveConfig {
                    uri: "coap://127.0.0.1/ok".into(),
                    device: None,
                    name: None,
                    unit: None,
                },
                ObserveConfig {
                    uri: "http://127.0.0.1/x".into(),
                    device: None,
                    name: None,
                    unit: None,
                },
            ],
            ..CoapConfig::default()
        };
        assert_eq!(
            validate("sources.coap", c).unwrap_err().key,
            "sources.coap.observe[1].uri"
        );

        let mut c = CoapConfig::default();
        c.limits.max_records = 0;
        assert_eq!(
            validate("sources.coap", c).unwrap_err().key,
            "sources.coap.limits.max_records"
        );

        let c = CoapConfig {
            max_concurrent_requests: 0,
            ..CoapConfig::default()
        };
        assert_eq!(
            validate("sources.coap", c).unwrap_err().key,
            "sources.coap.max_concurrent_requests"
        );
    }

    #[test]
    fn observe_device_and_name_are_validated() {
        let mk = |device: Option<&str>, name: Option<&str>| CoapConfig {
            observe: vec![ObserveConfig {
                uri: "coap://127.0.0.1/t".into(),
                device: device.map(str::to_owned),
                name: name.map(str::to_owned),
                unit: None,
            }],
            ..CoapConfig::default()
        };
        let e = validate("s", mk(Some("bad id"), None)).unwrap_err();
        assert_eq!(e.key, "s.observe[0].device");
        let e = validate("s", mk(None, Some("-x"))).unwrap_err();
        assert_eq!(e.key, "s.observe[0].name");
        let v = validate("s", mk(None, None)).unwrap();
        assert_eq!(v.observe[0].default_device.as_str(), "coap:127.0.0.1");
        assert_eq!(v.observe[0].name, "value");
    }

    #[test]
    fn toml_section_with_observe_list_parses_and_unknown_keys_are_refused() {
        let c: CoapConfig = toml::from_str(
            r#"
            bind = "127.0.0.1:5683"
            max_payload_bytes = 4096
            limits = { max_records = 16 }
            observe = [
              { uri = "coap://127.0.0.1:5684/sensors/temp", device = "greenhouse-1", name = "temperature", unit = "Cel" },
              { uri = "coap://[::1]/h" },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(c.path, "telemetry");
        assert_eq!(c.limits.max_records, 16);
        assert_eq!(c.limits.max_name_len, 255);
        assert_eq!(c.observe[0].unit.as_deref(), Some("Cel"));
        let v = validate("sources.coap", c).unwrap();
        assert_eq!(v.observe[0].uri.port, 5684);
        assert_eq!(v.observe[1].default_device.as_str(), "coap:::1");

        assert!(toml::from_str::<CoapConfig>("bnid = \"x\"").is_err());
        assert!(
            toml::from_str::<CoapConfig>("observe = [{ uri = \"coap://x\", colour = 1 }]").is_err()
        );
        assert!(toml::from_str::<CoapConfig>("observe = [{ device = \"x\" }]").is_err());
    }

    #[test]
    fn empty_path_is_rejected() {
        let c = CoapConfig {
            path: "/".into(),
            ..CoapConfig::default()
        };
        assert_eq!(validate("s", c).unwrap_err().key, "s.path");
    }
}
