//! The gateway as CoAP client: observes resources (RFC 7641) and turns
//! notifications into readings.
//!
//! Per configured resource one task with its own UDP socket (connected to
//! the server) runs:
//!
//! 1. **register**: CON `GET` with Observe=0 and a fresh 8-byte token,
//!    retransmitted per RFC 7252 §4.2 (ACK_TIMEOUT 2 s, random factor 1.5,
//!    4 retransmissions);
//! 2. **notifications**: every response carrying the token is decoded
//!    (SenML JSON 110 / CBOR 112, or a text/plain number named by the
//!    config), submitted, and once committed a CON notification is ACKed.
//!    A CON notification whose readings the pipeline refuses is *not*
//!    ACKed, so the server retransmits it. Stale or duplicate notifications
//!    (Observe sequence not newer, RFC 7641 §3.4) are ACKed and dropped.
//!    Unknown tokens are answered with RST, which cancels stale
//!    observations on the server;
//! 3. **re-register** with a new token when no notification arrived within
//!    Max-Age (default 60 s) + 2 s, when the server sends RST, an error
//!    code, or a response without Observe; retries back off exponentially
//!    (1 s doubling to 60 s, with jitter), reset after each successful
//!    registration;
//! 4. **deregister** at shutdown: CON `GET` with Observe=1 and the same
//!    token, waiting at most ACK_TIMEOUT for the answer.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use gatewayd_core::{CancellationToken, ReadingSink};
use gatewayd_model::senml::{self, DeviceNaming, CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON};
use gatewayd_model::{wire, DeviceId, Measurement, Reading, Timestamp, Transport};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{CoapUri, ObserveTarget};
use crate::protocol::{empty_ack, read_uint, reset, uint_option};
use crate::stats::{bump, CoapStats};
use crate::wall_clock;

/// RFC 7252 §4.8 transmission parameters.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
pub const MAX_RETRANSMIT: u32 = 4;
/// Max-Age when a notification carries none (RFC 7252 §5.10.5).
pub const DEFAULT_MAX_AGE: u32 = 60;
/// Added to Max-Age before a silent observation counts as lost.
pub const REREGISTER_MARGIN: Duration = Duration::from_secs(2);
/// How long to wait for a separate response after an empty ACK.
pub const SEPARATE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Largest notification read; bigger ones are truncated and fail to decode.
const MAX_NOTIFICATION_BYTES: usize = 16 * 1024;
/// Content-format of `text/plain; charset=utf-8`.
pub const CONTENT_FORMAT_TEXT: u16 = 0;

/// Builds a CON GET for `uri`; `observe`: `Some(0)` registers, `Some(1)`
/// deregisters.
pub fn build_get(uri: &CoapUri, token: &[u8], mid: u16, observe: Option<u32>) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    if uri.host.parse::<std::net::IpAddr>().is_err() {
        p.add_option(CoapOption::UriHost, uri.host.as_bytes().to_vec());
    }
    if let Some(o) = observe {
        p.add_option(CoapOption::Observe, uint_option(o));
    }
    for seg in &uri.path {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for q in &uri.query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    // Segments are bounded by config validation; nothing here can exceed
    // the unlimited encoder.
    p.to_bytes_unlimited().unwrap_or_default()
}

/// RFC 7641 §3.4: is sequence number `new` (received `elapsed` after
/// `old`) fresher than `old`?
pub fn is_fresher(old: u32, new: u32, elapsed: Duration) -> bool {
    const HALF: u32 = 1 << 23;
    (old < new && new - old < HALF)
        || (old > new && old - new > HALF)
        || elapsed > Duration::from_secs(128)
}

/// Decodes a notification payload into readings.
pub(crate) fn decode_notification(
    p: &Packet,
    target: &ObserveTarget,
    now: Timestamp,
) -> Result<Vec<Reading>, String> {
    let cf = match p.get_first_option(CoapOption::ContentFormat) {
        None => CONTENT_FORMAT_TEXT,
        Some(v) => read_uint(v, 2).ok_or("Content-Format option is longer than 2 bytes")? as u16,
    };
    let naming = DeviceNaming::Namespaced {
        transport: Transport::Coap,
        default: &target.default_device,
    };
    let readings = match cf {
        CONTENT_FORMAT_JSON => senml::readings_from_json(&p.payload, &target.limits, now, &naming)
            .map_err(|e| e.to_string())?,
        CONTENT_FORMAT_CBOR => senml::readings_from_cbor(&p.payload, &target.limits, now, &naming)
            .map_err(|e| e.to_string())?,
        CONTENT_FORMAT_TEXT => {
            let text = std::str::from_utf8(&p.payload)
                .map_err(|_| "text/plain payload is not UTF-8".to_string())?
                .trim();
            let v: f64 = text
                .parse()
                .map_err(|_| format!("text/plain payload {:?} is not a number", truncate(text)))?;
            vec![Reading::new(
                target.default_device.clone(),
                now,
                vec![Measurement::float(target.name.clone(), target.unit.as_deref(), v)],
            )]
        }
        other => {
            return Err(format!(
                "unsupported Content-Format {other} (expected {CONTENT_FORMAT_JSON}, {CONTENT_FORMAT_CBOR} or {CONTENT_FORMAT_TEXT})"
            ))
        }
    };
    for r in &readings {
        wire::validate(r).map_err(|e| e.to_string())?;
    }
    Ok(readings)
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Fuzz helper: a packet parsed from `data` decoded as a notification.
pub(crate) fn fuzz_notification(data: &[u8], wall: Timestamp) {
    let Ok(p) = Packet::from_bytes(data) else {
        return;
    };
    let target = ObserveTarget {
        key: "fuzz".into(),
        uri: CoapUri {
            host: "192.0.2.1".into(),
            port: 5683,
            path: vec!["x".into()],
            query: Vec::new(),
        },
        uri_text: "coap://192.0.2.1/x".into(),
        default_device: DeviceId::sanitized(Transport::Coap, "192.0.2.1"),
        name: "value".into(),
        unit: None,
        limits: Default::default(),
    };
    let _ = decode_notification(&p, &target, wall);
}

/// How one observation ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Lost { registered: bool, reason: String },
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random::<f64>() * 0.5 + 1.0)
}

/// Observes `target` until `shutdown`, re-registering as needed.
pub(crate) async fn run(
    target: ObserveTarget,
    sink: ReadingSink,
    shutdown: CancellationToken,
    stats: Arc<CoapStats>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match observe_once(&target, &sink, &shutdown, &stats).await {
            Ok(Ended::Shutdown) => return,
            Ok(Ended::Lost { registered, reason }) => {
                if registered {
                    backoff = BACKOFF_MIN;
                }
                info!(resource = %target.uri_text, config = %target.key, %reason, "observation lost; re-registering");
            }
            Err(e) => {
                warn!(resource = %target.uri_text, config = %target.key, error = %e, "observe failed; retrying");
            }
        }
        let delay = jittered(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

enum Event {
    Shutdown,
    Timer,
    Datagram(usize),
}

struct Observation {
    token: [u8; 8],
    request_mid: u16,
    next_mid: u16,
    registered: bool,
    acked: bool,
    last_seq: Option<(u32, Instant)>,
}

impl Observation {
    fn fresh_mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }
}

async fn observe_once(
    t: &ObserveTarget,
    sink: &ReadingSink,
    shutdown: &CancellationToken,
    stats: &CoapStats,
) -> Result<Ended, String> {
    let lookup = tokio::net::lookup_host((t.uri.host.as_str(), t.uri.port));
    let resolved = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
        r = lookup => r,
    };
    let addr = resolved
        .map_err(|e| format!("resolving {}: {e}", t.uri.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", t.uri.host))?;
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("binding client socket: {e}"))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;

    let first_mid: u16 = rand::random();
    let mut o = Observation {
        token: rand::random(),
        request_mid: first_mid,
        next_mid: first_mid,
        registered: false,
        acked: false,
        last_seq: None,
    };
    let request = build_get(&t.uri, &o.token, o.request_mid, Some(0));
    send(&sock, &request).await?;
    debug!(resource = %t.uri_text, %addr, "observe registration sent");
    let mut timeout = jittered(ACK_TIMEOUT);
    let mut retransmits = 0;
    let mut deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_NOTIFICATION_BYTES];
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = tokio::time::sleep_until(deadline) => Event::Timer,
            r = sock.recv(&mut buf) => Event::Datagram(r.map_err(|e| format!("receiving: {e}"))?),
        };
        match event {
            Event::Shutdown => {
                if o.registered || o.acked {
                    deregister(&sock, t, &mut o, &mut buf).await;
                }
                return Ok(Ended::Shutdown);
            }
            Event::Timer => {
                if !o.registered && !o.acked && retransmits < MAX_RETRANSMIT {
                    retransmits += 1;
                    timeout *= 2;
                    deadline = Instant::now() + timeout;
                    send(&sock, &request).await?;
                    continue;
                }
                let reason = if o.registered {
                    "no notification within Max-Age".to_owned()
                } else {
                    "no response to the registration".to_owned()
                };
                return Ok(Ended::Lost {
                    registered: o.registered,
                    reason,
                });
            }
            Event::Datagram(n) => {
                let Ok(p) = Packet::from_bytes(&buf[..n]) else {
                    continue;
                };
                let ty = p.header.get_type();
                let mid = p.header.message_id;
                match (ty, p.header.code) {
                    (MessageType::Acknowledgement, MessageClass::Empty) if mid == o.request_mid => {
                        o.acked = true;
                        deadline = Instant::now() + SEPARATE_RESPONSE_TIMEOUT;
                    }
                    (MessageType::Reset, _) => {
                        return Ok(Ended::Lost {
                            registered: o.registered,
                            reason: "the server reset the exchange".into(),
                        })
                    }
                    (_, MessageClass::Response(code)) if p.get_token() == o.token => {
                        if let Some(next) =
                            on_notification(&sock, t, sink, stats, &mut o, &p, code).await?
                        {
                            deadline = next;
                        } else {
                            return Ok(Ended::Lost {
                                registered: o.registered,
                                reason: format!(
                                    "the server ended the observation ({})",
                                    p.header.code
                                ),
                            });
                        }
                    }
                    (
                        MessageType::Confirmable | MessageType::NonConfirmable,
                        MessageClass::Response(_),
                    ) => {
                        // A notification for a token we no longer use.
                        send(&sock, &reset(mid)).await?;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Handles a response carrying our token. Returns the new silence deadline,
/// or `None` when the observation is over.
async fn on_notification(
    sock: &UdpSocket,
    t: &ObserveTarget,
    sink: &ReadingSink,
    stats: &CoapStats,
    o: &mut Observation,
    p: &Packet,
    code: ResponseType,
) -> Result<Option<Instant>, String> {
    let con = p.header.get_type() == MessageType::Confirmable;
    let mid = p.header.message_id;
    if code != ResponseType::Content {
        if con {
            send(sock, &empty_ack(mid)).await?;
        }
        warn!(resource = %t.uri_text, code = %p.header.code, "observe request refused");
        return Ok(None);
    }
    let now = Instant::now();
    let seq = p
        .get_first_option(CoapOption::Observe)
        .and_then(|v| read_uint(v, 3));
    if seq.is_some() && !o.registered {
        o.registered = true;
        bump(&stats.observe_registrations, 1);
        info!(resource = %t.uri_text, "observing");
    }
    let stale = match (o.last_seq, seq) {
        (Some((old, at)), Some(new)) => !is_fresher(old, new, now - at),
        _ => false,
    };
    let max_age = p
        .get_first_option(CoapOption::MaxAge)
        .and_then(|v| read_uint(v, 4))
        .unwrap_or(DEFAULT_MAX_AGE);
    let next_deadline = now + Duration::from_secs(u64::from(max_age)) + REREGISTER_MARGIN;
    if stale {
        if con {
            send(sock, &empty_ack(mid)).await?;
        }
        return Ok(Some(next_deadline));
    }
    bump(&stats.observe_notifications, 1);
    let mut ack = true;
    match decode_notification(p, t, wall_clock()) {
        Ok(readings) => {
            let count = readings.len() as u64;
            let committed = match sink.submit(readings).await {
                Ok(ticket) => ticket.committed().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match committed {
                Ok(_) => bump(&stats.observe_readings, count),
                Err(e) => {
                    bump(&stats.observe_rejected, 1);
                    warn!(resource = %t.uri_text, error = %e, "notification not committed");
                    // Let the server retransmit a CON notification.
                    ack = false;
                }
            }
        }
        Err(e) => {
            bump(&stats.observe_rejected, 1);
            warn!(resource = %t.uri_text, error = %e, "undecodable notification");
        }
    }
    if ack {
        if let Some(s) = seq {
            o.last_seq = Some((s, now));
        }
        if con {
            send(sock, &empty_ack(mid)).await?;
        }
    }
    Ok(seq.map(|_| next_deadline))
}

async fn deregister(sock: &UdpSocket, t: &ObserveTarget, o: &mut Observation, buf: &mut [u8]) {
    let mid = o.fresh_mid();
    let request = build_get(&t.uri, &o.token, mid, Some(1));
    if send(sock, &request).await.is_err() {
        return;
    }
    let deadline = Instant::now() + ACK_TIMEOUT;
    loop {
        let r = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            r = sock.recv(buf) => r,
        };
        let Ok(n) = r else { return };
        let Ok(p) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        let ours = p.get_token() == o.token || p.header.message_id == mid;
        if p.header.get_type() == MessageType::Confirmable {
            let _ = send(sock, &empty_ack(p.header.message_id)).await;
        }
        if ours && matches!(p.header.code, MessageClass::Response(_)) {
            debug!(resource = %t.uri_text, "deregistered");
            return;
        }
    }
}

async fn send(sock: &UdpSocket, bytes: &[u8]) -> Result<(), String> {
    sock.send(bytes)
        .await
        .map(|_| ())
        .map_err(|e| format!("sending: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CoapUri;

    fn target(unit: Option<&str>) -> ObserveTarget {
        ObserveTarget {
            key: "k".into(),
            uri: CoapUri::parse("coap://127.0.0.1/t").unwrap(),
            uri_text: "coap://127.0.0.1/t".into(),
            default_device: DeviceId::new(Transport::Coap, "greenhouse-1").unwrap(),
            name: "temperature".into(),
            unit: unit.map(str::to_owned),
            limits: Default::default(),
        }
    }

    fn notification(cf: Option<u16>, payload: &[u8]) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Response(ResponseType::Content);
        if let Some(cf) = cf {
            p.add_option(CoapOption::ContentFormat, uint_option(cf.into()));
        }
        p.payload = payload.to_vec();
        p
    }

    #[test]
    fn text_plain_number_becomes_a_named_reading_of_the_configured_device() {
        let r = decode_notification(
            &notification(Some(0), b" 21.5\n"),
            &target(Some("Cel")),
            Timestamp(5),
        )
        .unwrap();
        assert_eq!(r[0].device.as_str(), "coap:greenhouse-1");
        assert_eq!(
            r[0].measurements[0],
            Measurement::float("temperature", Some("Cel"), 21.5)
        );
        assert_eq!(r[0].time, Timestamp(5));
    }

    #[test]
    fn senml_notification_uses_the_base_name_or_the_configured_device() {
        let r = decode_notification(
            &notification(Some(110), br#"[{"n":"h","v":3}]"#),
            &target(None),
            Timestamp(5),
        )
        .unwrap();
        assert_eq!(r[0].device.as_str(), "coap:greenhouse-1");
        let r = decode_notification(
            &notification(Some(110), br#"[{"bn":"other/","n":"h","v":3}]"#),
            &target(None),
            Timestamp(5),
        )
        .unwrap();
        assert_eq!(r[0].device.as_str(), "coap:other");
    }

    #[test]
    fn non_numeric_or_non_finite_text_and_unknown_formats_are_errors() {
        for (cf, body) in [
            (Some(0), &b"warm"[..]),
            (None, b"NaN"),
            (None, b"inf"),
            (Some(0), b"\xFF\xFE"),
            (Some(50), b"{}"),
            (Some(110), b"[{"),
        ] {
            assert!(
                decode_notification(&notification(cf, body), &target(None), Timestamp(0)).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn sequence_freshness_follows_rfc7641() {
        let s = Duration::from_secs(1);
        assert!(is_fresher(1, 2, s));
        assert!(!is_fresher(2, 2, s));
        assert!(!is_fresher(3, 2, s));
        assert!(is_fresher((1 << 24) - 1, 1, s)); // wrap-around
        assert!(is_fresher(3, 2, Duration::from_secs(129)));
    }

    #[test]
    fn registration_request_carries_token_observe_and_path() {
        let uri = CoapUri::parse("coap://sensor.local:5684/sensors/temp?u=c").unwrap();
        let bytes = build_get(&uri, &[1, 2, 3], 42, Some(0));
        let p = Packet::from_bytes(&bytes).unwrap();
        assert_eq!(p.header.get_type(), MessageType::Confirmable);
        assert_eq!(p.header.message_id, 42);
        assert_eq!(p.get_token(), &[1, 2, 3]);
        assert_eq!(
            p.get_first_option(CoapOption::Observe).unwrap(),
            &Vec::<u8>::new()
        );
        assert_eq!(
            p.get_first_option(CoapOption::UriHost).unwrap(),
            b"sensor.local"
        );
        let path: Vec<_> = p
            .get_option(CoapOption::UriPath)
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert_eq!(path, vec![b"sensors".to_vec(), b"temp".to_vec()]);
        let p = Packet::from_bytes(&build_get(&uri, &[1], 1, Some(1))).unwrap();
        assert_eq!(p.get_first_option(CoapOption::Observe).unwrap(), &vec![1u8]);
    }
}
