//! One MQTT connection attempt over rumqttc, for either protocol version,
//! behind one small interface: build, poll, hand over a publish, re-send a
//! publish with its original packet id, disconnect. Also turns rumqttc's
//! errors into sentences an operator can act on.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use rustls::{AlertDescription, CertificateError, ClientConfig};

use crate::config::BrokerUrl;

/// The protocol version of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// Everything needed to open a connection; built once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: BrokerUrl,
    pub client_id: String,
    pub keep_alive: Duration,
    pub credentials: Option<(String, String)>,
    pub tls: Option<Arc<ClientConfig>>,
    pub status_topic: String,
    /// rumqttc's in-flight limit (and packet id range 1..=this).
    pub rumqttc_inflight: u16,
    /// Request channel capacity; never reached (the tracker bounds what we
    /// hand over).
    pub channel_cap: usize,
    pub max_packet_bytes: usize,
    pub session_expiry_secs: u32,
}

/// What the run loop needs to know about one rumqttc event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    ConnAck {
        session_present: bool,
        /// MQTT 5: the broker's Maximum Packet Size.
        max_packet: Option<u32>,
        /// MQTT 5: the broker's Receive Maximum.
        receive_max: Option<u16>,
    },
    /// A QoS 1 publish was written with this packet id.
    Written(u16),
    /// A PUBACK. `refused` is the reason when an MQTT 5 broker acknowledged
    /// with an error reason code (the message was not accepted).
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
    /// Our DISCONNECT was written and flushed.
    DisconnectSent,
    Other,
}

/// A failed connection or connection attempt, described.
#[derive(Debug, Clone)]
pub struct ConnFailure {
    pub message: String,
    /// The failure looks like the broker not speaking this protocol version
    /// (relevant before the first CONNACK of an MQTT 5 attempt).
    pub protocol_rejected: bool,
}

pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub enum Loop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// The retained status payload, e.g. `{"state":"online","version":"0.1.0","ts":1732460000}`.
pub fn status_payload(state: &str) -> Vec<u8> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    serde_json::to_vec(&serde_json::json!({
        "state": state,
        "version": env!("CARGO_PKG_VERSION"),
        "ts": ts,
    }))
    .expect("serializing a JSON value cannot fail")
}

fn transport(settings: &Settings) -> Transport {
    match &settings.tls {
        Some(cfg) => Transport::tls_with_config(TlsConfiguration::Rustls(cfg.clone())),
        None => Transport::tcp(),
    }
}

/// Builds a fresh client and event loop (nothing connects until polled).
pub fn open(version: Version, s: &Settings) -> (Client, Loop) {
    let will = status_payload("offline");
    match version {
        Version::V311 => {
            let mut o = rumqttc::MqttOptions::new(&s.client_id, &s.url.host, s.url.port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_session(false)
                .set_inflight(s.rumqttc_inflight)
                .set_max_packet_size(s.max_packet_bytes, s.max_packet_bytes)
                .set_last_will(rumqttc::LastWill::new(
                    &s.status_topic,
                    will,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ))
                .set_transport(transport(s));
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            let (c, l) = rumqttc::AsyncClient::new(o, s.channel_cap);
            (Client::V4(c), Loop::V4(Box::new(l)))
        }
        Version::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(&s.client_id, &s.url.host, s.url.port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(s.session_expiry_secs))
                .set_outgoing_inflight_upper_limit(s.rumqttc_inflight)
                .set_max_packet_size(Some(u32::try_from(s.max_packet_bytes).unwrap_or(u32::MAX)))
                .set_last_will(p5::LastWill::new(
                    &s.status_topic,
                    will,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ))
                .set_transport(transport(s));
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, s.channel_cap);
            (Client::V5(c), Loop::V5(Box::new(l)))
        }
    }
}

/// Size of a QoS 1 PUBLISH packet on the wire.
pub fn publish_packet_size(version: Version, topic: &str, payload: usize) -> usize {
    // topic length prefix + topic + packet id + payload (+ empty properties)
    let mut len = 2 + topic.len() + 2 + payload;
    if version == Version::V5 {
        len += 1;
    }
    let len_len = match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + len
}

impl Client {
    /// Hands a QoS 1 publish to rumqttc, which assigns its packet id.
    pub fn publish(&self, topic: &str, retain: bool, payload: Bytes) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    payload,
                )
                .map_err(|e| e.to_string()),
        }
    }

    pub fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

impl Loop {
    pub async fn poll(&mut self) -> Result<NetEvent, ConnFailure> {
        match self {
            Loop::V4(l) => l.poll().await.map(map_v4).map_err(|e| describe_v4(&e)),
            Loop::V5(l) => l.poll().await.map(map_v5).map_err(|e| describe_v5(&e)),
        }
    }

    /// Events rumqttc buffered but never returned because the connection
    /// failed first (e.g. several PUBACKs read in one go). They happened;
    /// the run loop applies them before re-queuing.
    pub fn take_buffered(&mut self) -> Vec<NetEvent> {
        match self {
            Loop::V4(l) => l.state.events.drain(..).map(map_v4).collect(),
            Loop::V5(l) => l.state.events.drain(..).map(map_v5).collect(),
        }
    }

    /// Queues a session resend: same packet id, DUP set. rumqttc sends its
    /// pending queue before anything from the request channel and keeps a
    /// preset (non-zero) packet id.
    pub fn push_resend(&mut self, topic: &str, pkid: u16, payload: Bytes) {
        match self {
            Loop::V4(l) => {
                let mut p = rumqttc::Publish::from_bytes(topic, rumqttc::QoS::AtLeastOnce, payload);
                p.pkid = pkid;
                p.dup = true;
                l.pending.push_back(rumqttc::Request::Publish(p));
            }
            Loop::V5(l) => {
                let mut p = p5::Publish::new(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    payload,
                    None,
                );
                p.pkid = pkid;
                p.dup = true;
                l.pending.push_back(rumqttc::v5::Request::Publish(p));
            }
        }
    }
}

fn map_outgoing(o: Outgoing) -> NetEvent {
    match o {
        Outgoing::Publish(pkid) if pkid != 0 => NetEvent::Written(pkid),
        Outgoing::Disconnect => NetEvent::DisconnectSent,
        _ => NetEvent::Other,
    }
}

fn map_v4(e: rumqttc::Event) -> NetEvent {
    use rumqttc::{Event, Packet};
    match e {
        Event::Incoming(Packet::ConnAck(c)) => NetEvent::ConnAck {
            session_present: c.session_present,
            max_packet: None,
            receive_max: None,
        },
        Event::Incoming(Packet::PubAck(a)) => NetEvent::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Event::Incoming(_) => NetEvent::Other,
        Event::Outgoing(o) => map_outgoing(o),
    }
}

fn map_v5(e: rumqttc::v5::Event) -> NetEvent {
    use rumqttc::v5::Event;
    use rumqttc::v5::Incoming;
    match e {
        Event::Incoming(Incoming::ConnAck(c)) => {
            let props = c.properties.as_ref();
            NetEvent::ConnAck {
                session_present: c.session_present,
                max_packet: props.and_then(|p| p.max_packet_size),
                receive_max: props.and_then(|p| p.receive_max),
            }
        }
        Event::Incoming(Incoming::PubAck(a)) => {
            let refused = match a.reason {
                p5::PubAckReason::Success | p5::PubAckReason::NoMatchingSubscribers => None,
                reason => {
                    let mut s = format!("{reason:?}");
                    if let Some(r) = a.properties.as_ref().and_then(|p| p.reason_string.as_ref()) {
                        let _ = write!(s, " ({r})");
                    }
                    Some(s)
                }
            };
            NetEvent::PubAck {
                pkid: a.pkid,
                refused,
            }
        }
        Event::Incoming(_) => NetEvent::Other,
        Event::Outgoing(o) => map_outgoing(o),
    }
}

fn describe_v4(e: &rumqttc::ConnectionError) -> ConnFailure {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E, StateError as S};
    let (message, protocol_rejected) = match e {
        E::ConnectionRefused(code) => {
            let why = match code {
                C::Success => "success (unexpected)".to_owned(),
                C::RefusedProtocolVersion => return ConnFailure {
                    message:
                        "the broker refused the connection: unacceptable protocol version (3.1.1)"
                            .into(),
                    protocol_rejected: true,
                },
                C::BadClientId => "client identifier rejected (uplink.client_id)".into(),
                C::ServiceUnavailable => "service unavailable".into(),
                C::BadUserNamePassword => {
                    "bad user name or password (uplink.username / uplink.password)".into()
                }
                C::NotAuthorized => "not authorized".into(),
            };
            (format!("the broker refused the connection: {why}"), false)
        }
        E::NetworkTimeout => (
            "timed out connecting (no TCP/TLS connection or CONNACK within 5 s)".into(),
            false,
        ),
        E::FlushTimeout => ("timed out writing to the broker".into(), false),
        E::MqttState(S::AwaitPingResp) => (
            "the broker did not answer PINGREQ within the keep alive interval".into(),
            false,
        ),
        E::MqttState(S::ConnectionAborted) => ("the broker closed the connection".into(), true),
        E::NotConnAck(p) => (format!("expected CONNACK, the broker sent {p:?}"), true),
        // A read error surfaces as a codec error; only a genuine parse
        // failure hints at a protocol mismatch.
        E::MqttState(S::Deserialization(rumqttc::Error::Io(io))) => {
            (chain_message(io), is_peer_close(io))
        }
        E::MqttState(S::Deserialization(_)) => (chain_message(e), true),
        _ => (chain_message(e), is_peer_close(e)),
    };
    ConnFailure {
        message,
        protocol_rejected,
    }
}

fn describe_v5(e: &rumqttc::v5::ConnectionError) -> ConnFailure {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    use rumqttc::v5::{ConnectionError as E, StateError as S};
    let refused = |code: &C| -> (String, bool) {
        let unsupported = matches!(
            code,
            C::UnsupportedProtocolVersion | C::RefusedProtocolVersion
        );
        let why = match code {
            C::BadUserNamePassword => {
                "bad user name or password (uplink.username / uplink.password)".to_owned()
            }
            C::NotAuthorized => "not authorized".into(),
            C::ClientIdentifierNotValid | C::BadClientId => {
                "client identifier rejected (uplink.client_id)".into()
            }
            C::UnsupportedProtocolVersion | C::RefusedProtocolVersion => {
                "unsupported protocol version (5)".into()
            }
            other => format!("{other:?}"),
        };
        (
            format!("the broker refused the connection: {why}"),
            unsupported,
        )
    };
    let (message, protocol_rejected) = match e {
        E::ConnectionRefused(code) => refused(code),
        E::MqttState(S::ConnFail { reason }) => refused(reason),
        E::Timeout(_) => (
            "timed out connecting (no TCP/TLS connection or CONNACK within 5 s)".into(),
            false,
        ),
        E::MqttState(S::AwaitPingResp) => (
            "the broker did not answer PINGREQ within the keep alive interval".into(),
            false,
        ),
        E::MqttState(S::ConnectionAborted) => ("the broker closed the connection".into(), true),
        E::MqttState(S::ServerDisconnect {
            reason_code,
            reason_string,
        }) => (
            format!(
                "the broker disconnected us: {reason_code:?}{}",
                reason_string
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            false,
        ),
        E::MqttState(S::OutgoingPacketTooLarge { pkt_size, max }) => (
            format!(
                "a {pkt_size}-byte packet exceeds the broker's maximum packet size of {max} bytes"
            ),
            false,
        ),
        E::NotConnAck(p) => (format!("expected CONNACK, the broker sent {p:?}"), true),
        // rumqttc's v5 `StateError::Deserialization` has no `source()`:
        // look inside by hand.
        E::MqttState(S::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io))) => {
            (chain_message(io), is_peer_close(io))
        }
        E::MqttState(S::Deserialization(inner)) => (format!("{e}: {}", chain_message(inner)), true),
        _ => (chain_message(e), is_peer_close(e)),
    };
    ConnFailure {
        message,
        protocol_rejected,
    }
}

/// Whether the error chain ends in the peer closing the connection (and not
/// in TLS).
fn is_peer_close(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if find_rustls(err).is_some() {
            return false;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) && io
                .get_ref()
                .is_none_or(|inner| inner.downcast_ref::<rustls::Error>().is_none());
        }
        cur = err.source();
    }
    false
}

fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = err.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    err.downcast_ref::<io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Describes the most specific cause in the chain: a TLS problem, a refused
/// TCP connection, or else the whole chain.
fn chain_message(top: &(dyn StdError + 'static)) -> String {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(top);
    while let Some(err) = cur {
        if let Some(tls) = find_rustls(err) {
            return describe_tls(tls);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => {
                    return "connection refused (is the broker running and listening on that port?)"
                        .into()
                }
                io::ErrorKind::TimedOut => return "timed out connecting".into(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                    return format!("the broker closed the connection ({io})")
                }
                _ => {}
            }
        }
        cur = err.source();
    }
    // Nothing specific: the chain, deduplicated.
    let mut out = top.to_string();
    let mut cur = top.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            let _ = write!(out, ": {s}");
        }
        cur = err.source();
    }
    out
}

fn describe_tls(e: &rustls::Error) -> String {
    use rustls::Error as R;
    match e {
        R::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "TLS handshake failed: the broker's certificate is not signed by the CA in uplink.tls.ca (bad CA?)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "TLS handshake failed: the broker's certificate is not valid for the expected name ({c:?}); set uplink.tls.server_name"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "TLS handshake failed: the broker's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "TLS handshake failed: the broker's certificate is not valid yet (check the clock)".into()
            }
            other => format!("TLS handshake failed: the broker's certificate was rejected: {other:?}"),
        },
        R::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => {
                "TLS: the broker requires a client certificate (set uplink.tls.cert and uplink.tls.key)".into()
            }
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied => format!(
                "TLS: the broker rejected our client certificate (alert {alert:?}); is uplink.tls.cert signed by a CA the broker trusts?"
            ),
            AlertDescription::HandshakeFailure => {
                "TLS handshake failed (alert HandshakeFailure): no common parameters, or the broker requires a client certificate".into()
            }
            other => format!("TLS: the broker sent alert {other:?}"),
        },
        other => format!("TLS error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_size_matches_rumqttc() {
        for (topic, len) in [
            ("a/b", 0usize),
            ("gatewayd/v1/gw/telemetry", 200),
            ("t", 20_000),
            ("t", 3_000_000),
        ] {
            let mut p = rumqttc::Publish::new(topic, rumqttc::QoS::AtLeastOnce, vec![0u8; len]);
            p.pkid = 1;
            assert_eq!(
                publish_packet_size(Version::V311, topic, len),
                p.size(),
                "{topic} {len}"
            );
            let mut p5 = p5::Publish::new(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                vec![0u8; len],
                None,
            );
            p5.pkid = 1;
            assert_eq!(
                publish_packet_size(Version::V5, topic, len),
                p5.size(),
                "{topic} {len}"
            );
        }
    }

    #[test]
    fn refused_tcp_connection_is_described() {
        let e = rumqttc::ConnectionError::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        let f = describe_v4(&e);
        assert!(f.message.contains("connection refused"), "{}", f.message);
        assert!(!f.protocol_rejected);
    }

    #[test]
    fn rejected_client_certificate_is_described() {
        let tls = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let e = rumqttc::v5::ConnectionError::Io(io::Error::new(io::ErrorKind::InvalidData, tls));
        let f = describe_v5(&e);
        assert!(
            f.message.contains("requires a client certificate"),
            "{}",
            f.message
        );
        assert!(!f.protocol_rejected);
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let e = rumqttc::ConnectionError::Tls(rumqttc::TlsError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            tls,
        )));
        assert!(describe_v4(&e).message.contains("uplink.tls.ca"));
    }

    #[test]
    fn tls_alert_read_as_codec_error_is_not_a_protocol_mismatch() {
        // How a post-handshake TLS 1.3 alert reaches us from rumqttc's v5
        // event loop: wrapped in a codec error without `source()`.
        let alert = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        let io = io::Error::new(io::ErrorKind::InvalidData, alert);
        let e = rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::Io(io),
        ));
        let f = describe_v5(&e);
        assert!(
            f.message.contains("rejected our client certificate"),
            "{}",
            f.message
        );
        assert!(!f.protocol_rejected);
        let e = rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::MalformedPacket,
        ));
        assert!(describe_v5(&e).protocol_rejected);
    }

    #[test]
    fn v5_refusals_for_protocol_version_trigger_fallback() {
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
        let e = rumqttc::v5::ConnectionError::ConnectionRefused(C::UnsupportedProtocolVersion);
        assert!(describe_v5(&e).protocol_rejected);
        let e = rumqttc::v5::ConnectionError::ConnectionRefused(C::NotAuthorized);
        let f = describe_v5(&e);
        assert!(!f.protocol_rejected);
        assert!(f.message.contains("not authorized"));
        let e = rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ConnectionAborted);
        assert!(describe_v5(&e).protocol_rejected);
    }
}
