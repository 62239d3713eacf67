//! The Observe client against a small CoAP server written here with raw
//! coap-lite packets over a real UDP socket.

mod common;

use std::net::SocketAddr;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::*;
use gatewayd_adapter_coap::{CoapConfig, ObserveConfig};
use gatewayd_model::{Measurement, Reading};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

struct SensorServer {
    sock: UdpSocket,
}

impl SensorServer {
    async fn new() -> SensorServer {
        SensorServer {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    async fn recv(&self) -> (Packet, SocketAddr) {
        let mut buf = vec![0u8; 4096];
        let (n, from) = within(self.sock.recv_from(&mut buf)).await.unwrap();
        (
            Packet::from_bytes(&buf[..n]).expect("client sent valid CoAP"),
            from,
        )
    }

    async fn send(&self, p: &Packet, to: SocketAddr) {
        self.sock
            .send_to(&p.to_bytes_unlimited().unwrap(), to)
            .await
            .unwrap();
    }
}

fn uint_bytes(v: u32) -> Vec<u8> {
    v.to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect()
}

fn observe_value(p: &Packet) -> Option<u32> {
    uint(p, CoapOption::Observe)
}

fn notification(
    ty: MessageType,
    mid: u16,
    token: &[u8],
    seq: Option<u32>,
    max_age: u32,
    payload: &str,
) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(ty);
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    if let Some(s) = seq {
        p.add_option(CoapOption::Observe, uint_bytes(s));
    }
    p.add_option(CoapOption::ContentFormat, vec![]); // text/plain
    p.add_option(CoapOption::MaxAge, uint_bytes(max_age));
    p.payload = payload.as_bytes().to_vec();
    p
}

fn assert_registration(p: &Packet) {
    assert_eq!(p.header.get_type(), MessageType::Confirmable);
    assert_eq!(p.header.code, MessageClass::Request(RequestType::Get));
    assert_eq!(observe_value(p), Some(0), "Observe=0 registers");
    let path: Vec<Vec<u8>> = p
        .get_option(CoapOption::UriPath)
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(path, vec![b"sensors".to_vec(), b"temp".to_vec()]);
    assert!(!p.get_token().is_empty());
}

async fn next_reading(rx: &mut mpsc::Receiver<Vec<Reading>>) -> Reading {
    let mut r = within(rx.recv()).await.unwrap();
    assert_eq!(r.len(), 1);
    r.remove(0)
}

fn temperature(v: f64) -> Measurement {
    Measurement::float("temperature", Some("Cel"), v)
}

#[tokio::test]
async fn observe_client_registers_ingests_notifications_reregisters_after_silence_and_deregisters()
{
    let server = SensorServer::new().await;
    let h = start(CoapConfig {
        observe: vec![ObserveConfig {
            uri: format!("coap://127.0.0.1:{}/sensors/temp", server.port()),
            device: Some("greenhouse-1".into()),
            name: Some("temperature".into()),
            unit: Some("Cel".into()),
        }],
        ..config()
    })
    .await;
    let stats = h.stats.clone();
    let (mut readings, _writer) = committing_writer(h.ingest);

    // Registration, answered with the current value (notification 1).
    let (reg, client) = server.recv().await;
    assert_registration(&reg);
    let token1 = reg.get_token().to_vec();
    server
        .send(
            &notification(
                MessageType::Acknowledgement,
                reg.header.message_id,
                &token1,
                Some(1),
                1,
                "21.5",
            ),
            client,
        )
        .await;
    let r = next_reading(&mut readings).await;
    assert_eq!(r.device.as_str(), "coap:greenhouse-1");
    assert_eq!(r.measurements, vec![temperature(21.5)]);
    assert_eq!(r.meta.source.as_deref(), Some("coap"));

    // Notification 2, confirmable: ACKed once committed.
    let n2 = notification(
        MessageType::Confirmable,
        0x0900,
        &token1,
        Some(2),
        1,
        "22.0",
    );
    server.send(&n2, client).await;
    let (ack, _) = server.recv().await;
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x0900);
    assert_eq!(
        next_reading(&mut readings).await.measurements,
        vec![temperature(22.0)]
    );

    // Its retransmission is ACKed again but not ingested twice, and a
    // notification for an unknown token is reset.
    server.send(&n2, client).await;
    let stray = notification(
        MessageType::Confirmable,
        0x0901,
        &[9, 9, 9],
        Some(3),
        1,
        "99",
    );
    server.send(&stray, client).await;
    let mut saw_ack = false;
    let mut saw_rst = false;
    let mut early_reregistration = None;
    while !(saw_ack && saw_rst) {
        let (p, from) = server.recv().await;
        match (p.header.get_type(), p.header.message_id) {
            (MessageType::Acknowledgement, 0x0900) => saw_ack = true,
            (MessageType::Reset, 0x0901) => saw_rst = true,
            (MessageType::Confirmable, _) => early_reregistration = Some((p, from)),
            other => panic!("unexpected {other:?}"),
        }
    }

    // The server goes silent past Max-Age: the client re-registers with a
    // new token (from a new socket).
    let (reg2, client) = match early_reregistration {
        Some(x) => x,
        None => server.recv().await,
    };
    assert_registration(&reg2);
    let token2 = reg2.get_token().to_vec();
    assert_ne!(token2, token1);
    server
        .send(
            &notification(
                MessageType::Acknowledgement,
                reg2.header.message_id,
                &token2,
                Some(7),
                60,
                "23",
            ),
            client,
        )
        .await;
    // The next reading is 23: the retransmitted 22.0 and the stray 99 were
    // not ingested.
    assert_eq!(
        next_reading(&mut readings).await.measurements,
        vec![temperature(23.0)]
    );
    let s = stats.snapshot();
    assert_eq!(s.observe_registrations, 2);
    assert_eq!(s.observe_readings, 3);

    // Shutdown deregisters (GET, Observe=1, same token).
    h.shutdown.cancel();
    let (dereg, _) = server.recv().await;
    assert_eq!(dereg.header.code, MessageClass::Request(RequestType::Get));
    assert_eq!(observe_value(&dereg), Some(1));
    assert_eq!(dereg.get_token(), token2.as_slice());
    server
        .send(
            &notification(
                MessageType::Acknowledgement,
                dereg.header.message_id,
                &token2,
                None,
                60,
                "23",
            ),
            client,
        )
        .await;
    within(h.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn observe_client_reregisters_after_a_reset() {
    let server = SensorServer::new().await;
    let h = start(CoapConfig {
        observe: vec![ObserveConfig {
            uri: format!("coap://127.0.0.1:{}/sensors/temp", server.port()),
            device: None,
            name: Some("temperature".into()),
            unit: Some("Cel".into()),
        }],
        ..config()
    })
    .await;
    let (mut readings, _writer) = committing_writer(h.ingest);
    let (reg, client) = server.recv().await;
    assert_registration(&reg);
    // Refuse the registration with RST.
    let mut rst = Packet::new();
    rst.header.set_type(MessageType::Reset);
    rst.header.code = MessageClass::Empty;
    rst.header.message_id = reg.header.message_id;
    server.send(&rst, client).await;

    let (reg2, client) = server.recv().await;
    assert_registration(&reg2);
    assert_ne!(reg2.get_token(), reg.get_token());
    server
        .send(
            &notification(
                MessageType::Acknowledgement,
                reg2.header.message_id,
                reg2.get_token(),
                Some(1),
                60,
                "-3.5",
            ),
            client,
        )
        .await;
    let r = next_reading(&mut readings).await;
    // Without a configured device the URI host names it.
    assert_eq!(r.device.as_str(), "coap:127.0.0.1");
    assert_eq!(r.measurements, vec![temperature(-3.5)]);
    h.shutdown.cancel();
    // Answer the deregistration so shutdown does not wait for its timeout.
    let (dereg, _) = server.recv().await;
    assert_eq!(observe_value(&dereg), Some(1));
    server
        .send(
            &notification(
                MessageType::Acknowledgement,
                dereg.header.message_id,
                dereg.get_token(),
                None,
                60,
                "-3.5",
            ),
            client,
        )
        .await;
    within(h.task).await.unwrap().unwrap();
}
