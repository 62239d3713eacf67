//! `[uplink]` configuration, its validation, and the TLS client
//! configuration built from it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

/// Which MQTT protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    /// MQTT 5 when the broker supports it, else 3.1.1.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// MQTT 5 only.
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1 only.
    #[serde(rename = "3.1.1")]
    V311,
}

/// `[uplink.tls]`: trust anchor for the broker and this gateway's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's
    /// certificate. Required for `mqtts://`.
    pub ca: Option<PathBuf>,
    /// PEM file with this gateway's certificate (chain), for mutual TLS.
    pub cert: Option<PathBuf>,
    /// PEM file with this gateway's private key (PKCS#8, SEC1 or RSA).
    pub key: Option<PathBuf>,
    /// Name to verify the broker's certificate against (default: the URL
    /// host).
    pub server_name: Option<String>,
}

/// `[uplink]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS). Default port 1883 /
    /// 8883.
    pub broker: String,
    /// MQTT client id; default: the gateway id.
    pub client_id: Option<String>,
    /// Topics are `{topic_prefix}/{gateway}/telemetry` and `.../status`.
    pub topic_prefix: String,
    /// MQTT keep alive; 0 disables it.
    pub keep_alive_secs: u64,
    pub protocol: Protocol,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: TlsConfig,
    /// Batches awaiting PUBACK at once.
    pub max_inflight: u16,
    /// Largest MQTT packet we send (and accept). With MQTT 5 the broker's
    /// own Maximum Packet Size, if smaller, applies.
    pub max_packet_bytes: usize,
    /// Reconnect backoff bounds: exponential with full jitter.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// MQTT 5 Session Expiry Interval: how long the broker keeps our
    /// session after a disconnect. (3.1.1 sessions live until the broker's
    /// `persistent_client_expiration`.)
    pub session_expiry_secs: u32,
    /// On shutdown, how long to wait for outstanding PUBACKs (and the
    /// offline status's) before disconnecting.
    pub shutdown_grace_ms: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            broker: "mqtt://127.0.0.1:1883".into(),
            client_id: None,
            topic_prefix: "gatewayd/v1".into(),
            keep_alive_secs: 30,
            protocol: Protocol::Auto,
            username: None,
            password: None,
            tls: TlsConfig::default(),
            max_inflight: 32,
            max_packet_bytes: 256 * 1024,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            session_expiry_secs: 86_400,
            shutdown_grace_ms: 2_000,
        }
    }
}

/// A configuration error naming the offending dotted key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(prefix: &str, key: &str, message: impl Into<String>) -> Self {
        let key = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        ConfigError {
            key,
            message: message.into(),
        }
    }
}

/// Largest value MQTT's remaining-length field can express, plus the fixed
/// header: the protocol's packet size limit.
pub const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// A parsed `broker` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` / `mqtts://host[:port]` (also the
    /// common aliases `tcp://` and `ssl://`); IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(rest) = url
            .strip_prefix("mqtts://")
            .or_else(|| url.strip_prefix("ssl://"))
        {
            (true, rest)
        } else if let Some(rest) = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
        {
            (false, rest)
        } else {
            return Err(format!(
                "{url:?}: expected mqtt://host:port or mqtts://host:port"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(format!(
                "{url:?}: only scheme, host and port are supported (no path, user info or query)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(format!("{url:?}: unterminated [IPv6] host"));
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{url:?}: {host:?} is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{url:?}: expected :port after the IPv6 host"))?,
                ),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: missing host"));
        }
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!("{url:?}: {host:?} is not a valid host name"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "{url:?}: port {p:?} is not a number from 1 to 65535"
                    ))
                }
                Ok(p) => p,
            },
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl UplinkConfig {
    /// Checks everything the types cannot: the URL, the TLS files (they must
    /// exist and parse), numeric ranges. Errors name the dotted key, prefixed
    /// with `key` (e.g. `uplink.tls.cert`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err = |k: &str, m: String| ConfigError::new(key, k, m);
        let url = BrokerUrl::parse(&self.broker).map_err(|m| err("broker", m))?;
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 65_535 {
                return Err(err(
                    "client_id",
                    "must be 1 to 65535 bytes (a persistent session needs a client id)".into(),
                ));
            }
        }
        if self.topic_prefix.is_empty()
            || self.topic_prefix.starts_with('/')
            || self.topic_prefix.ends_with('/')
            || self.topic_prefix.contains(['+', '#', '\0'])
        {
            return Err(err(
                "topic_prefix",
                format!(
                    "{:?}: must be non-empty, without leading/trailing '/', '+', '#' or NUL",
                    self.topic_prefix
                ),
            ));
        }
        if self.keep_alive_secs > u64::from(u16::MAX) {
            return Err(err(
                "keep_alive_secs",
                "must be at most 65535 (0 disables keep alive)".into(),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(err(
                "password",
                "set without uplink.username; MQTT sends a password only with a user name".into(),
            ));
        }
        if self.max_inflight == 0 || self.max_inflight > 1024 {
            return Err(err("max_inflight", "must be 1 to 1024".into()));
        }
        if self.max_packet_bytes < 1024 || self.max_packet_bytes > MQTT_MAX_PACKET {
            return Err(err(
                "max_packet_bytes",
                format!("must be 1024 to {MQTT_MAX_PACKET}"),
            ));
        }
        if self.reconnect_min_ms == 0 {
            return Err(err("reconnect_min_ms", "must be at least 1".into()));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms || self.reconnect_max_ms > 3_600_000 {
            return Err(err(
                "reconnect_max_ms",
                "must be at least reconnect_min_ms and at most 3600000".into(),
            ));
        }
        if self.session_expiry_secs == 0 {
            return Err(err(
                "session_expiry_secs",
                "must be at least 1 (0 would end the session at every disconnect)".into(),
            ));
        }
        if self.shutdown_grace_ms > 60_000 {
            return Err(err("shutdown_grace_ms", "must be at most 60000".into()));
        }
        let tls = &self.tls;
        if !url.tls {
            for (k, set) in [
                ("tls.ca", tls.ca.is_some()),
                ("tls.cert", tls.cert.is_some()),
                ("tls.key", tls.key.is_some()),
                ("tls.server_name", tls.server_name.is_some()),
            ] {
                if set {
                    return Err(err(
                        k,
                        format!(
                            "set but uplink.broker {:?} is not mqtts://; TLS settings would be ignored",
                            self.broker
                        ),
                    ));
                }
            }
            return Ok(());
        }
        build_tls(tls, &url.host).map_err(|e| ConfigError::new(key, &e.key, e.message))?;
        Ok(())
    }
}

/// Loads CA, client certificate and key, and builds the rustls client
/// configuration (ring provider). Errors carry the key relative to
/// `uplink` (e.g. `tls.cert`). `tls.ca` is required.
pub(crate) fn build_tls(tls: &TlsConfig, host: &str) -> Result<Arc<ClientConfig>, ConfigError> {
    client_tls_config(tls, host, None)
}

/// The one place MQTT clients of this project (the uplink, cloud-bridge)
/// turn PEM files into a rustls client configuration (ring provider).
/// Without `tls.ca`, `fallback_roots` (e.g. the system's) are used, or the
/// CA is required when there are none. Errors carry keys relative to the
/// section (`tls.ca`, `tls.cert`, `tls.key`, `tls.server_name`).
pub fn client_tls_config(
    tls: &TlsConfig,
    host: &str,
    fallback_roots: Option<RootCertStore>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let err = |k: &str, m: String| ConfigError::new("", k, m);
    let roots = match (&tls.ca, fallback_roots) {
        (Some(ca_path), _) => {
            let ca_pem = read_file(ca_path).map_err(|m| err("tls.ca", m))?;
            let mut roots = RootCertStore::empty();
            let cas = parse_certs(&ca_pem)
                .map_err(|m| err("tls.ca", format!("{}: {m}", ca_path.display())))?;
            for ca in cas {
                roots.add(ca).map_err(|e| {
                    err(
                        "tls.ca",
                        format!("{}: not a usable CA certificate: {e}", ca_path.display()),
                    )
                })?;
            }
            roots
        }
        (None, Some(roots)) if !roots.is_empty() => roots,
        (None, Some(_)) => {
            return Err(err(
                "tls.ca",
                "no usable system root certificates; set it to the CA that signed the broker's certificate"
                    .into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "tls.ca",
                "required for mqtts://: the PEM file of the CA that signed the broker's certificate"
                    .into(),
            ))
        }
    };

    let identity = match (&tls.cert, &tls.key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                "tls.key",
                "missing: tls.cert is set, mutual TLS needs the matching private key".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "tls.cert",
                "missing: tls.key is set, mutual TLS needs the matching certificate".into(),
            ))
        }
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read_file(cert_path).map_err(|m| err("tls.cert", m))?;
            let chain = parse_certs(&cert_pem)
                .map_err(|m| err("tls.cert", format!("{}: {m}", cert_path.display())))?;
            let key_pem = read_file(key_path).map_err(|m| err("tls.key", m))?;
            let key = parse_key(&key_pem)
                .map_err(|m| err("tls.key", format!("{}: {m}", key_path.display())))?;
            Some((chain, key))
        }
    };

    let server_name = match &tls.server_name {
        Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
            err(
                "tls.server_name",
                format!("{name:?} is not a valid DNS name or IP address"),
            )
        })?),
        None => {
            ServerName::try_from(host.to_owned()).map_err(|_| {
                err(
                    "broker",
                    format!(
                        "{host:?} cannot be verified as a TLS server name; set tls.server_name"
                    ),
                )
            })?;
            None
        }
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls", format!("TLS setup failed: {e}")))?;
    let roots = Arc::new(roots);
    let builder = match server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| err("tls.ca", e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedNameVerifier { inner, name }))
        }
    };
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            err(
                "tls.key",
                format!("does not match tls.cert or is unsupported: {e}"),
            )
        })?,
    };
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    // TLS material is small; refuse anything absurd rather than read it.
    const MAX: u64 = 1024 * 1024;
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if meta.len() > MAX {
        return Err(format!(
            "{}: {} bytes is too large for a PEM file (limit {MAX})",
            path.display(),
            meta.len()
        ));
    }
    fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// Accepts PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) and PKCS#1
/// (`RSA PRIVATE KEY`).
fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(
            "no private key found (expected PEM PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY; encrypted keys are not supported)"
                .into(),
        ),
        Err(e) => Err(format!("invalid PEM: {e}")),
    }
}

/// Verifies the broker's certificate against `uplink.tls.server_name`
/// instead of the host we connect to (rumqttc uses the URL host for both).
#[derive(Debug)]
struct FixedNameVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
