//! Shared test harness: a real CoAP source on loopback, a real
//! `ReadingSink` whose receiving end the test drives as the buffer writer,
//! and a raw UDP CoAP client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use gatewayd_adapter_coap::{CoapConfig, CoapSource, CoapStats};
use gatewayd_core::{
    ingest_channel, CancellationToken, HealthHandle, Ingest, ReadingSink, Source, SourceContext,
    SourceError, SourceState,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Guards against hangs only; no test asserts on elapsed time.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

pub struct Harness {
    pub addr: SocketAddr,
    pub ingest: mpsc::Receiver<Ingest>,
    pub shutdown: CancellationToken,
    pub stats: Arc<CoapStats>,
    pub health: watch::Receiver<SourceState>,
    pub task: JoinHandle<Result<(), SourceError>>,
}

pub fn config() -> CoapConfig {
    CoapConfig {
        bind: "127.0.0.1:0".into(),
        ..CoapConfig::default()
    }
}

pub async fn start(config: CoapConfig) -> Harness {
    start_with_queue(config, 16).await
}

pub async fn start_with_queue(config: CoapConfig, queue: usize) -> Harness {
    let source = CoapSource::build("sources.coap", config).expect("valid config");
    let bound = source.bind().await.expect("bind");
    let addr = bound.local_addr();
    assert_ne!(addr.port(), 0);
    let stats = bound.stats();
    let (tx, rx) = ingest_channel(queue);
    let (health, health_rx) = HealthHandle::new();
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        name: "coap".into(),
        sink: ReadingSink::new(tx, "coap"),
        shutdown: shutdown.clone(),
        health,
        status: gatewayd_core::StatusHandle::new().0,
        commands: gatewayd_core::command_channel(1).1,
    };
    let task = tokio::spawn(bound.run(ctx));
    let mut h = Harness {
        addr,
        ingest: rx,
        shutdown,
        stats,
        health: health_rx,
        task,
    };
    within(h.health.wait_for(|s| *s == SourceState::Running))
        .await
        .expect("health channel open");
    h
}

impl Harness {
    pub async fn next_ingest(&mut self) -> Ingest {
        within(self.ingest.recv())
            .await
            .expect("ingest channel open")
    }

    /// Asserts nothing was submitted (call after a sync point such as
    /// [`Client::sync`]).
    pub fn assert_no_ingest(&mut self) {
        assert!(
            matches!(
                self.ingest.try_recv(),
                Err(mpsc::error::TryRecvError::Empty)
            ),
            "something reached the sink"
        );
    }

    pub async fn stop(self) -> Result<(), SourceError> {
        self.shutdown.cancel();
        within(self.task).await.expect("source task panicked")
    }
}

pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .expect("test hang guard expired")
}

pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl Client {
    pub async fn new(server: SocketAddr) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Client { sock, server }
    }

    pub async fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).await.unwrap();
    }

    pub async fn recv(&self) -> Packet {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = within(self.sock.recv_from(&mut buf)).await.unwrap();
        assert_eq!(from, self.server);
        Packet::from_bytes(&buf[..n]).expect("server sent valid CoAP")
    }

    pub async fn recv_raw(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let (n, _) = within(self.sock.recv_from(&mut buf)).await.unwrap();
        buf.truncate(n);
        buf
    }

    /// Nothing has been received so far.
    pub fn assert_nothing_received(&self) {
        let mut buf = [0u8; 2048];
        match self.sock.try_recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("unexpected datagram: {other:?}"),
        }
    }

    /// Sends a CoAP ping and waits for its RST: the server has processed
    /// everything this client sent before.
    pub async fn sync(&self, mid: u16) {
        let m = mid.to_be_bytes();
        self.send(&[0x40, 0x00, m[0], m[1]]).await;
        let p = self.recv().await;
        assert_eq!(p.header.get_type(), MessageType::Reset);
        assert_eq!(p.header.message_id, mid);
    }
}

pub fn post(mid: u16, cf: Option<u16>, payload: &[u8]) -> Packet {
    request(mid, RequestType::Post, &["telemetry"], cf, payload)
}

pub fn request(
    mid: u16,
    method: RequestType,
    path: &[&str],
    cf: Option<u16>,
    payload: &[u8],
) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(vec![0x7A, (mid >> 8) as u8, mid as u8]);
    for seg in path {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    if let Some(cf) = cf {
        let v = if cf == 0 {
            vec![]
        } else if cf < 256 {
            vec![cf as u8]
        } else {
            cf.to_be_bytes().to_vec()
        };
        p.add_option(CoapOption::ContentFormat, v);
    }
    p.payload = payload.to_vec();
    p
}

pub fn bytes(p: &Packet) -> Vec<u8> {
    p.to_bytes_unlimited().unwrap()
}

pub fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

pub fn diagnostic(p: &Packet) -> String {
    String::from_utf8(p.payload.clone()).expect("UTF-8 diagnostic")
}

pub fn uint(p: &Packet, o: CoapOption) -> Option<u32> {
    p.get_first_option(o)
        .map(|v| v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
}

/// A buffer writer that commits everything, numbering from 1, and forwards
/// the readings.
pub fn committing_writer(
    mut rx: mpsc::Receiver<Ingest>,
) -> (mpsc::Receiver<Vec<gatewayd_model::Reading>>, JoinHandle<()>) {
    let (tx, out) = mpsc::channel(256);
    let task = tokio::spawn(async move {
        let mut seq = 1u64;
        while let Some(ingest) = rx.recv().await {
            let count = ingest.readings.len();
            let _ = tx.send(ingest.readings).await;
            if let Some(reply) = ingest.reply {
                let _ = reply.send(Ok(gatewayd_core::Committed {
                    first_seq: seq,
                    count,
                }));
            }
            seq += count as u64;
        }
    });
    (out, task)
}
