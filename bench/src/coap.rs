//! CoAP client side of the load: a pool of UDP sockets, each with a task
//! that routes incoming messages to the waiting exchange (by token; empty
//! ACK and RST by message id), and confirmable retransmission per RFC 7252
//! §4.2 (ACK_TIMEOUT × random factor, doubling, MAX_RETRANSMIT).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use coap_lite::{CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How an exchange ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A response with this code (`2.04`, `5.03`, …) after this long
    /// (from the first transmission).
    Response {
        code: MessageClass,
        latency: Duration,
        retransmits: u32,
    },
    /// The server reset the message.
    Reset,
    /// No response in time.
    Timeout { retransmits: u32 },
    /// Could not even send.
    SendError(String),
}

#[derive(Debug)]
enum Event {
    Response(MessageClass),
    EmptyAck,
    Reset,
}

struct Pending {
    tx: mpsc::Sender<Event>,
    mid: u16,
}

struct Sock {
    socket: UdpSocket,
    next_mid: AtomicU16,
    by_token: Mutex<HashMap<u64, Pending>>,
    by_mid: Mutex<HashMap<u16, u64>>,
}

/// Retransmission parameters.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub ack_timeout: Duration,
    pub max_retransmit: u32,
    /// Overall limit for one exchange (first send → response).
    pub exchange_timeout: Duration,
}

/// A pool of client sockets towards one target.
pub struct Client {
    socks: Vec<Arc<Sock>>,
    next_sock: AtomicUsize,
    next_token: AtomicU64,
    timing: Timing,
    rng: Mutex<crate::senml::Rng>,
    /// Datagrams received that matched nothing (late duplicates, …).
    pub unmatched: Arc<AtomicU64>,
}

impl Client {
    pub async fn new(
        target: SocketAddr,
        sockets: usize,
        timing: Timing,
    ) -> anyhow::Result<Arc<Client>> {
        let unmatched = Arc::new(AtomicU64::new(0));
        let mut socks = Vec::with_capacity(sockets);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let mut rng = crate::senml::Rng::new(seed);
        for i in 0..sockets {
            let bind: SocketAddr = if target.is_ipv4() {
                "127.0.0.1:0".parse()?
            } else {
                "[::1]:0".parse()?
            };
            let socket = UdpSocket::bind(bind).await.with_context(|| {
                format!(
                    "binding UDP socket {} of {sockets} (raise `ulimit -n` or lower --sockets)",
                    i + 1
                )
            })?;
            socket
                .connect(target)
                .await
                .with_context(|| format!("connecting to {target}"))?;
            let sock = Arc::new(Sock {
                socket,
                next_mid: AtomicU16::new(rng.next_u64() as u16),
                by_token: Mutex::new(HashMap::new()),
                by_mid: Mutex::new(HashMap::new()),
            });
            tokio::spawn(receive(sock.clone(), unmatched.clone()));
            socks.push(sock);
        }
        Ok(Arc::new(Client {
            socks,
            next_sock: AtomicUsize::new(0),
            next_token: AtomicU64::new(rng.next_u64()),
            timing,
            rng: Mutex::new(rng),
            unmatched,
        }))
    }

    pub fn sockets(&self) -> usize {
        self.socks.len()
    }

    /// Builds the POST /telemetry request for `payload` (SenML JSON).
    pub fn request(confirmable: bool, payload: Vec<u8>) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        p.header.code = MessageClass::Request(RequestType::Post);
        p.add_option(CoapOption::UriPath, b"telemetry".to_vec());
        p.set_content_format(ContentFormat::ApplicationSenmlJSON);
        p.payload = payload;
        p
    }

    /// Encoded size of a request (for checking against the datagram limit).
    pub fn encoded_len(p: &Packet) -> usize {
        let mut p = p.clone();
        p.set_token(vec![0; 8]);
        p.to_bytes_unlimited()
            .map(|b| b.len())
            .unwrap_or(usize::MAX)
    }

    /// Sends `req` on the next socket of the pool and waits for its
    /// response, retransmitting a confirmable request until acknowledged.
    pub async fn exchange(&self, mut req: Packet) -> Outcome {
        let sock =
            self.socks[self.next_sock.fetch_add(1, Ordering::Relaxed) % self.socks.len()].clone();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mid = sock.next_mid.fetch_add(1, Ordering::Relaxed);
        req.header.message_id = mid;
        req.set_token(token.to_be_bytes().to_vec());
        let confirmable = req.header.get_type() == MessageType::Confirmable;
        let bytes = match req.to_bytes_unlimited() {
            Ok(b) => b,
            Err(e) => return Outcome::SendError(format!("encoding: {e}")),
        };
        let (tx, mut rx) = mpsc::channel(4);
        sock.by_token
            .lock()
            .unwrap()
            .insert(token, Pending { tx, mid });
        sock.by_mid.lock().unwrap().insert(mid, token);
        let _cleanup = Cleanup {
            sock: &sock,
            token,
            mid,
        };

        let start = Instant::now();
        let deadline = start + self.timing.exchange_timeout;
        let mut retransmits = 0;
        let mut timeout = {
            let f = 1.0 + 0.5 * self.rng.lock().unwrap().unit();
            self.timing.ack_timeout.mul_f64(f)
        };
        // Retransmit until an (empty or piggybacked) ACK, for CON only.
        let mut next_retransmit = confirmable.then(|| start + timeout);
        if let Err(e) = sock.socket.send(&bytes).await {
            return Outcome::SendError(e.to_string());
        }
        loop {
            let wake = match next_retransmit {
                Some(t) if t < deadline => t,
                _ => deadline,
            };
            match tokio::time::timeout_at(wake.into(), rx.recv()).await {
                Ok(Some(Event::Response(code))) => {
                    return Outcome::Response {
                        code,
                        latency: start.elapsed(),
                        retransmits,
                    }
                }
                Ok(Some(Event::EmptyAck)) => next_retransmit = None,
                Ok(Some(Event::Reset)) => return Outcome::Reset,
                Ok(None) => return Outcome::SendError("receiver task ended".into()),
                Err(_) => {
                    if Instant::now() >= deadline {
                        return Outcome::Timeout { retransmits };
                    }
                    if retransmits >= self.timing.max_retransmit {
                        // RFC 7252: the timeout after the last retransmission
                        // has expired too; give up.
                        return Outcome::Timeout { retransmits };
                    }
                    retransmits += 1;
                    timeout *= 2;
                    next_retransmit = Some(Instant::now() + timeout);
                    if let Err(e) = sock.socket.send(&bytes).await {
                        return Outcome::SendError(e.to_string());
                    }
                }
            }
        }
    }
}

struct Cleanup<'a> {
    sock: &'a Sock,
    token: u64,
    mid: u16,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.sock.by_token.lock().unwrap().remove(&self.token);
        let mut by_mid = self.sock.by_mid.lock().unwrap();
        if by_mid.get(&self.mid) == Some(&self.token) {
            by_mid.remove(&self.mid);
        }
    }
}

async fn receive(sock: Arc<Sock>, unmatched: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match sock.socket.recv(&mut buf).await {
            Ok(n) => n,
            // ICMP port unreachable shows up as ECONNREFUSED on a connected
            // UDP socket: the exchange will time out; keep receiving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(p) = Packet::from_bytes(&buf[..n]) else {
            unmatched.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mid = p.header.message_id;
        let ty = p.header.get_type();
        // A separate confirmable response must be acknowledged.
        if ty == MessageType::Confirmable {
            let mut ack = Packet::new();
            ack.header.set_type(MessageType::Acknowledgement);
            ack.header.code = MessageClass::Empty;
            ack.header.message_id = mid;
            if let Ok(b) = ack.to_bytes() {
                let _ = sock.socket.send(&b).await;
            }
        }
        let event_and_token = match (ty, p.header.code) {
            (MessageType::Reset, _) => sock
                .by_mid
                .lock()
                .unwrap()
                .get(&mid)
                .map(|t| (Event::Reset, *t)),
            (MessageType::Acknowledgement, MessageClass::Empty) => sock
                .by_mid
                .lock()
                .unwrap()
                .get(&mid)
                .map(|t| (Event::EmptyAck, *t)),
            (_, code @ MessageClass::Response(_)) => {
                let tok = p.get_token();
                (tok.len() == 8).then(|| {
                    (
                        Event::Response(code),
                        u64::from_be_bytes(tok.try_into().unwrap()),
                    )
                })
            }
            _ => None,
        };
        let Some((event, token)) = event_and_token else {
            unmatched.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let tx = sock
            .by_token
            .lock()
            .unwrap()
            .get(&token)
            .map(|p| (p.tx.clone(), p.mid));
        match tx {
            Some((tx, pmid)) => {
                // A piggybacked response must carry our message id.
                if ty == MessageType::Acknowledgement && pmid != mid {
                    unmatched.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = tx.try_send(event);
            }
            None => {
                unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whether a response code counts as success (2.xx).
pub fn is_success(code: MessageClass) -> bool {
    matches!(code, MessageClass::Response(r) if !r.is_error())
}
