//! The LoRaWAN source over real UDP on loopback: the test plays the packet
//! forwarders (Semtech datagrams from `gatewayd-semtech-udp`, frames built
//! with the `lorawan` crate as a device would) and the buffer writer (it
//! answers the `Ingest` replies itself).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gatewayd_adapter_lorawan::{DeviceConfig, LoraConfig, LoraSource, LoraStats};
use gatewayd_core::{
    ingest_channel, CancellationToken, Committed, HealthHandle, Ingest, ReadingSink, Source,
    SourceContext, SourceError, SourceState,
};
use gatewayd_model::{Reading, Value};
use gatewayd_semtech_udp::{
    CodingRate, CrcStatus, DataRate, Datagram, Eui, Packet, PushBody, RxPk, Token, TxAckBody,
    TxAckStatus, TxPk,
};
use lorawan::creator::{DataPayloadCreator, JoinRequestCreator};
use lorawan::keys::{AppKey, AppSKey, NewSKey};
use lorawan::parser::FCtrl;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const HANG_GUARD: Duration = Duration::from_secs(30);

const ABP_EUI: &str = "70B3D57ED0000001";
const ABP_ADDR: u32 = 0x2601_1BDA;
const NWK: [u8; 16] = [0x11; 16];
const APP: [u8; 16] = [0x22; 16];
const OTAA_EUI: &str = "70B3D57ED0000002";
const JOIN_EUI: &str = "0000000000000001";
const APP_KEY: [u8; 16] = [0x5A; 16];
/// Cayenne LPP: temperature on channel 3, 27.2 °C.
const CAYENNE: [u8; 4] = [0x03, 0x67, 0x01, 0x10];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn config(state_dir: &Path) -> LoraConfig {
    LoraConfig {
        bind: "127.0.0.1:0".into(),
        state_dir: Some(state_dir.to_owned()),
        dedup_window_ms: 30,
        devices: vec![
            DeviceConfig {
                dev_eui: ABP_EUI.into(),
                dev_addr: Some(format!("{ABP_ADDR:08X}")),
                nwk_s_key: Some(hex(&NWK)),
                app_s_key: Some(hex(&APP)),
                ..DeviceConfig::default()
            },
            DeviceConfig {
                dev_eui: OTAA_EUI.into(),
                profile: Some("raw".into()),
                join_eui: Some(JOIN_EUI.into()),
                app_key: Some(hex(&APP_KEY)),
                ..DeviceConfig::default()
            },
        ],
        ..LoraConfig::default()
    }
}

struct Harness {
    addr: SocketAddr,
    ingest: mpsc::Receiver<Ingest>,
    shutdown: CancellationToken,
    stats: Arc<LoraStats>,
    _health: watch::Receiver<SourceState>,
    status: watch::Receiver<serde_json::Value>,
    task: JoinHandle<Result<(), SourceError>>,
    pending: std::collections::VecDeque<Reading>,
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .expect("test hang guard expired")
}

async fn start(config: LoraConfig) -> Harness {
    let source = LoraSource::build("sources.lora", config).expect("valid config");
    let stats = source.stats();
    let bound = source.bind().await.expect("bind");
    let addr = bound.local_addr();
    let (tx, rx) = ingest_channel(16);
    let (health, mut health_rx) = HealthHandle::new();
    let (status_handle, status) = gatewayd_core::StatusHandle::new();
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        name: "lora".into(),
        sink: ReadingSink::new(tx, "lora"),
        shutdown: shutdown.clone(),
        health,
        status: status_handle,
        commands: gatewayd_core::command_channel(1).1,
    };
    let task = tokio::spawn(bound.run(ctx));
    within(health_rx.wait_for(|s| *s == SourceState::Running))
        .await
        .expect("health channel open");
    Harness {
        addr,
        ingest: rx,
        shutdown,
        stats,
        _health: health_rx,
        status,
        task,
        pending: Default::default(),
    }
}

impl Harness {
    /// The next submitted reading; answers the commit like the buffer.
    /// (Readings released together arrive in one submission.)
    async fn next_reading(&mut self) -> Reading {
        if let Some(r) = self.pending.pop_front() {
            return r;
        }
        let Ingest { readings, reply } = within(self.ingest.recv()).await.expect("ingest open");
        assert!(!readings.is_empty());
        if let Some(reply) = reply {
            let _ = reply.send(Ok(Committed {
                first_seq: 0,
                count: readings.len(),
            }));
        }
        self.pending.extend(readings);
        self.pending.pop_front().expect("one reading")
    }

    fn assert_no_reading(&mut self) {
        assert!(
            self.pending.is_empty() && self.ingest.try_recv().is_err(),
            "a reading reached the sink"
        );
    }

    /// Waits until a counter reaches a value.
    async fn wait(&self, what: &str, f: impl Fn(&LoraStats) -> u64, want: u64) {
        within(async {
            while f(&self.stats) < want {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(f(&self.stats), want, "{what}");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        within(self.task)
            .await
            .expect("source task panicked")
            .expect("source ran");
    }
}

/// A packet forwarder: an upstream socket (PUSH_DATA) and a downstream one
/// (PULL_DATA, PULL_RESP, TX_ACK), like `lora_pkt_fwd`.
struct Forwarder {
    eui: Eui,
    up: UdpSocket,
    down: UdpSocket,
    server: SocketAddr,
    token: u16,
}

impl Forwarder {
    async fn new(eui: u64, server: SocketAddr) -> Forwarder {
        Forwarder {
            eui: Eui::from(eui),
            up: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            down: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            token: 100,
        }
    }

    fn token(&mut self) -> Token {
        self.token += 1;
        Token(self.token)
    }

    async fn recv(sock: &UdpSocket) -> Packet {
        let mut buf = vec![0u8; 70_000];
        let (n, _) = within(sock.recv_from(&mut buf)).await.unwrap();
        Datagram::decode(&buf[..n]).expect("server datagram").packet
    }

    /// PULL_DATA, answered by PULL_ACK with the same token.
    async fn pull(&mut self) {
        let token = self.token();
        let p = Packet::PullData {
            token,
            gateway: self.eui,
        };
        self.down.send_to(&p.to_bytes(), self.server).await.unwrap();
        assert_eq!(Self::recv(&self.down).await, Packet::PullAck { token });
    }

    /// PUSH_DATA with one rxpk, answered by PUSH_ACK with the same token.
    async fn push(&mut self, phy: &[u8], tmst: u32, rssi: i16, snr: f64) {
        let token = self.token();
        let p = Packet::PushData {
            token,
            gateway: self.eui,
            body: PushBody::from_rxpk([rxpk(phy, tmst, rssi, snr)]),
        };
        self.up.send_to(&p.to_bytes(), self.server).await.unwrap();
        assert_eq!(Self::recv(&self.up).await, Packet::PushAck { token });
    }

    async fn pull_resp(&self) -> (Token, TxPk) {
        match Self::recv(&self.down).await {
            Packet::PullResp { token, body } => (token, body.txpk),
            other => panic!("expected PULL_RESP, got {other:?}"),
        }
    }

    async fn tx_ack(&self, token: Token, error: Option<TxAckStatus>) {
        let p = Packet::TxAck {
            token,
            gateway: self.eui,
            body: error.map(TxAckBody::error),
        };
        self.down.send_to(&p.to_bytes(), self.server).await.unwrap();
    }
}

fn rxpk(phy: &[u8], tmst: u32, rssi: i16, snr: f64) -> RxPk {
    RxPk {
        time: None,
        tmms: None,
        tmst,
        freq: 868.1,
        chan: 0,
        rfch: 0,
        stat: CrcStatus::CrcOk,
        datr: DataRate::Lora { sf: 7, bw_khz: 125 },
        codr: Some(CodingRate::Cr45),
        rssi: Some(rssi),
        lsnr: Some(snr),
        data: phy.to_vec(),
        rsig: Vec::new(),
    }
}

fn uplink(dev_addr: u32, nwk: [u8; 16], fcnt: u32, confirmed: bool, payload: &[u8]) -> Vec<u8> {
    let mut c = DataPayloadCreator::new();
    c.set_confirmed(confirmed)
        .set_uplink(true)
        .set_dev_addr(&dev_addr.to_le_bytes())
        .set_fctrl(&FCtrl::new(0, true))
        .set_fcnt(fcnt)
        .set_f_port(1);
    c.build(payload, &[], &NewSKey::from(nwk), &AppSKey::from(APP))
        .unwrap()
        .to_vec()
}

fn abp_up(fcnt: u32) -> Vec<u8> {
    uplink(ABP_ADDR, NWK, fcnt, false, &CAYENNE)
}

fn eui_le(s: &str) -> [u8; 8] {
    let mut b = u64::from_str_radix(s, 16).unwrap().to_be_bytes();
    b.reverse();
    b
}

fn join_request(dev_nonce: u16) -> Vec<u8> {
    let mut c = JoinRequestCreator::new();
    c.set_app_eui(&eui_le(JOIN_EUI))
        .set_dev_eui(&eui_le(OTAA_EUI))
        .set_dev_nonce(&dev_nonce.to_le_bytes());
    c.build(&AppKey::from(APP_KEY)).to_vec()
}

#[tokio::test]
async fn abp_uplink_is_acknowledged_and_becomes_a_cayenne_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(0xAA55_0000_0000_0001, h.addr).await;
    gw.pull().await;
    gw.push(&abp_up(1), 1_000, -80, 7.5).await;
    let r = h.next_reading().await;
    assert_eq!(r.device.to_string(), format!("lora:{ABP_EUI}"));
    assert_eq!(r.measurements.len(), 1);
    assert_eq!(r.measurements[0].name, "temperature_3");
    assert_eq!(r.measurements[0].value, Some(Value::Float(27.2)));
    assert_eq!(r.meta.rssi, Some(-80.0));
    assert_eq!(r.meta.snr, Some(7.5));
    assert_eq!(r.meta.gateway_eui.as_deref(), Some("AA55000000000001"));
    assert_eq!(r.meta.source.as_deref(), Some("lora"));
    let x = &r.meta.extra;
    assert_eq!(x["fcnt"], "1");
    assert_eq!(x["fport"], "1");
    assert_eq!(x["dr"], "SF7BW125");
    assert_eq!(x["freq_hz"], "868100000");
    assert_eq!(x["forwarders"], "AA55000000000001");
    assert_eq!(
        h.stats.readings.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn otaa_join_request_gets_a_join_accept_at_plus_5_s_on_the_pull_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    gw.push(&join_request(0x1234), 4_000_000, -90, 5.0).await;
    let (_, txpk) = gw.pull_resp().await;
    assert_eq!(txpk.tmst, Some(4_000_000 + 5_000_000));
    assert_eq!(txpk.data[0], 0x20, "JoinAccept MHDR");
    assert_eq!(txpk.data.len(), 17);
    assert_eq!(txpk.freq_hz(), 868_100_000);
    assert!(txpk.ipol);
    h.wait(
        "joins",
        |s| s.joins.load(std::sync::atomic::Ordering::Relaxed),
        1,
    )
    .await;
    // The same DevNonce again is refused (after the dedup's 2 s memory of
    // closed windows, which would drop it as a late copy).
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    gw.push(&join_request(0x1234), 9_000_000, -90, 5.0).await;
    h.wait("reused", |s| s.rejected("dev_nonce_reused"), 1)
        .await;
    h.assert_no_reading();
    h.stop().await;
}

#[tokio::test]
async fn confirmed_uplink_is_acked_and_a_refused_rx1_falls_back_to_rx2() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    gw.push(
        &uplink(ABP_ADDR, NWK, 3, true, &CAYENNE),
        10_000_000,
        -70,
        9.0,
    )
    .await;
    let r = h.next_reading().await;
    assert_eq!(r.meta.extra["confirmed"], "true");
    let (token, txpk) = gw.pull_resp().await;
    assert_eq!(txpk.tmst, Some(11_000_000), "RX1");
    assert_eq!(txpk.data[0] >> 5, 0b011, "unconfirmed data down");
    assert_eq!(
        u32::from_le_bytes(txpk.data[1..5].try_into().unwrap()),
        ABP_ADDR
    );
    assert_ne!(txpk.data[5] & 0x20, 0, "ACK bit");
    gw.tx_ack(token, Some(TxAckStatus::TooLate)).await;
    let (token2, rx2) = gw.pull_resp().await;
    assert_ne!(token2, token);
    assert_eq!(rx2.tmst, Some(12_000_000), "RX2");
    assert_eq!(rx2.freq_hz(), 869_525_000);
    assert_eq!(rx2.data, txpk.data);
    gw.tx_ack(token2, None).await;
    h.wait(
        "tx_ack_ok",
        |s| s.tx_ack_ok.load(std::sync::atomic::Ordering::Relaxed),
        1,
    )
    .await;
    assert_eq!(
        h.stats
            .fallbacks_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    h.stop().await;
}

#[tokio::test]
async fn the_same_frame_from_three_forwarders_gives_one_reading_with_the_best_reception() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let phy = abp_up(7);
    let mut gws = Vec::new();
    for (i, (rssi, snr)) in [(-110, 1.0), (-60, 9.5), (-95, 4.0)]
        .into_iter()
        .enumerate()
    {
        let mut gw = Forwarder::new(0x10 + i as u64, h.addr).await;
        gw.pull().await;
        gw.push(&phy, 500 + i as u32, rssi, snr).await;
        gws.push(gw);
    }
    let r = h.next_reading().await;
    assert_eq!(r.meta.rssi, Some(-60.0));
    assert_eq!(r.meta.gateway_eui.as_deref(), Some("0000000000000011"));
    let mut fw: Vec<&str> = r.meta.extra["forwarders"].split(',').collect();
    fw.sort();
    assert_eq!(
        fw,
        ["0000000000000010", "0000000000000011", "0000000000000012"]
    );
    // A sync point: the next frame's reading is the next thing submitted.
    gws[0].push(&abp_up(8), 900, -100, 3.0).await;
    assert_eq!(h.next_reading().await.meta.extra["fcnt"], "8");
    h.assert_no_reading();
    h.stop().await;
}

#[tokio::test]
async fn replay_wrong_mic_unknown_device_and_garbage_are_counted_without_readings() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    gw.push(&abp_up(5), 1, -80, 5.0).await;
    h.next_reading().await;

    gw.push(&abp_up(4), 2, -80, 5.0).await;
    h.wait("replay", |s| s.rejected("replay"), 1).await;
    gw.push(
        &uplink(ABP_ADDR, [0x99; 16], 6, false, &CAYENNE),
        3,
        -80,
        5.0,
    )
    .await;
    h.wait("mic", |s| s.rejected("mic"), 1).await;
    for fcnt in 0..3 {
        gw.push(
            &uplink(0x0102_0304, NWK, fcnt, false, &CAYENNE),
            4,
            -80,
            5.0,
        )
        .await;
    }
    h.wait("unknown", |s| s.rejected("unknown_dev_addr"), 3)
        .await;

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: [&[u8]; 6] = [
        b"",
        b"\x02",
        b"\x07\x00\x00\x00",
        b"\x02\x00\x01\x00AAAAAAAA{not json",
        b"\x02\x00\x01\x00\x01\x02\x03\x04\x05\x06\x07\x08{\"rxpk\":[{\"data\":1}]}",
        &[0xFF; 2000],
    ];
    for g in garbage {
        sock.send_to(g, h.addr).await.unwrap();
    }
    h.wait(
        "malformed",
        |s| s.malformed.load(std::sync::atomic::Ordering::Relaxed),
        5,
    )
    .await;
    // Still serving, and nothing was submitted in between.
    gw.push(&abp_up(6), 5, -80, 5.0).await;
    assert_eq!(h.next_reading().await.meta.extra["fcnt"], "6");
    h.assert_no_reading();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&h.stats.malformed), 5);
    assert_eq!(
        load(&h.stats.rxpk_invalid),
        1,
        "the bad rxpk of a valid datagram"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_the_session_and_its_frame_counter() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    gw.push(&abp_up(20), 1, -80, 5.0).await;
    h.next_reading().await;
    h.stop().await;

    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    gw.push(&abp_up(20), 2, -80, 5.0).await;
    h.wait("repeated", |s| s.rejected("repeated"), 1).await;
    gw.push(&abp_up(19), 3, -80, 5.0).await;
    h.wait("replay", |s| s.rejected("replay"), 1).await;
    h.assert_no_reading();
    gw.push(&abp_up(21), 4, -80, 5.0).await;
    assert_eq!(h.next_reading().await.meta.extra["fcnt"], "21");
    h.stop().await;
}

#[tokio::test]
async fn a_device_added_through_another_connection_is_picked_up() {
    use gatewayd_adapter_lorawan::{
        Activation, AddRequest, AesKey, DevAddr as RegAddr, DeviceSpec, LoraRegistry,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    let addr = 0x2602_0001;
    gw.push(&uplink(addr, NWK, 1, false, &CAYENNE), 1, -80, 5.0)
        .await;
    h.wait("unknown", |s| s.rejected("unknown_dev_addr"), 1)
        .await;

    // What the D-Bus interface does, through its own connection.
    let path = dir.path().join("lorawan.db");
    tokio::task::spawn_blocking(move || {
        let reg = LoraRegistry::open(&path).unwrap();
        reg.add(AddRequest {
            spec: DeviceSpec {
                dev_eui: "70B3D57ED0000003".parse().unwrap(),
                name: "late".into(),
                profile: "cayenne".into(),
                activation: Activation::Abp {
                    dev_addr: RegAddr(addr),
                    nwk_s_key: AesKey(NWK),
                    app_s_key: AesKey(APP),
                },
            },
            replace: false,
        })
        .unwrap();
    })
    .await
    .unwrap();
    h.wait(
        "reloads",
        |s| s.reloads.load(std::sync::atomic::Ordering::Relaxed),
        1,
    )
    .await;
    gw.push(&uplink(addr, NWK, 2, false, &CAYENNE), 2, -80, 5.0)
        .await;
    let r = h.next_reading().await;
    assert_eq!(r.device.to_string(), "lora:70B3D57ED0000003");
    h.stop().await;
}

/// What a device sees of a downlink: FCnt, confirmed, FPending, FPort and
/// the decrypted FRMPayload (checked MIC).
struct DownView {
    confirmed: bool,
    ack: bool,
    f_pending: bool,
    fport: Option<u8>,
    payload: Vec<u8>,
}

fn device_view(phy: &[u8]) -> DownView {
    use lorawan::keys::AES128;
    use lorawan::parser::{DataHeader, EncryptedDataPayload, FRMPayload};
    let frame = EncryptedDataPayload::new(phy.to_vec()).expect("a data frame");
    assert!(!frame.is_uplink());
    let fcnt = u32::from(frame.fhdr().fcnt());
    assert!(frame.validate_mic(&AES128(NWK), fcnt), "downlink MIC");
    let (confirmed, ack, f_pending) = (
        frame.is_confirmed(),
        frame.fhdr().fctrl().ack(),
        frame.fhdr().fctrl().f_pending(),
    );
    let dec = frame
        .decrypt(Some(&AES128(NWK)), Some(&AES128(APP)), fcnt)
        .unwrap();
    let payload = match dec.frm_payload() {
        FRMPayload::Data(d) => d.to_vec(),
        FRMPayload::MACCommands(m) => m.data().to_vec(),
        FRMPayload::None => vec![],
    };
    DownView {
        confirmed,
        ack,
        f_pending,
        fport: dec.f_port(),
        payload,
    }
}

/// An ABP uplink with the ACK bit set (acknowledging a confirmed downlink).
fn abp_up_acking(fcnt: u32) -> Vec<u8> {
    let mut c = DataPayloadCreator::new();
    c.set_confirmed(false)
        .set_uplink(true)
        .set_dev_addr(&ABP_ADDR.to_le_bytes())
        .set_fctrl(&FCtrl::new(0x20, true))
        .set_fcnt(fcnt)
        .set_f_port(1);
    c.build(&CAYENNE, &[], &NewSKey::from(NWK), &AppSKey::from(APP))
        .unwrap()
        .to_vec()
}

/// The registry through its own connection, as the D-Bus interface has.
async fn registry<T: Send + 'static>(
    dir: &Path,
    f: impl FnOnce(&gatewayd_adapter_lorawan::LoraRegistry) -> T + Send + 'static,
) -> T {
    let path = dir.join("lorawan.db");
    tokio::task::spawn_blocking(move || {
        let reg = gatewayd_adapter_lorawan::LoraRegistry::open(&path).unwrap();
        f(&reg)
    })
    .await
    .unwrap()
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn queued_downlinks_go_out_one_per_uplink_and_leave_the_table_when_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    let (plain, confirmed) = registry(dir.path(), |r| {
        (
            r.enqueue_downlink(ABP_EUI, 5, b"on", false).unwrap(),
            r.enqueue_downlink(ABP_EUI, 6, b"cfg", true).unwrap(),
        )
    })
    .await;
    assert!(confirmed > plain, "ids grow");
    h.wait("queued", |s| counter(&s.app_downlinks_queued), 2)
        .await;

    // Uplink 1 carries the unconfirmed item; FPending says more is queued.
    gw.push(&abp_up(1), 1_000_000, -80, 5.0).await;
    h.next_reading().await;
    let (_, tx) = gw.pull_resp().await;
    assert_eq!(tx.tmst, Some(2_000_000), "RX1");
    let v = device_view(&tx.data);
    assert_eq!((v.fport, v.payload.as_slice()), (Some(5), &b"on"[..]));
    assert!(!v.confirmed && v.f_pending);
    let left = registry(dir.path(), |r| r.downlinks(None, 0).unwrap()).await;
    assert_eq!(
        left.iter().map(|d| d.id).collect::<Vec<_>>(),
        [confirmed],
        "the sent unconfirmed item was deleted with its session write"
    );

    // Uplinks 2 and 3 without the ACK bit: the confirmed item, twice.
    for (fcnt, tmst) in [(2, 3_000_000), (3, 5_000_000)] {
        gw.push(&abp_up(fcnt), tmst, -80, 5.0).await;
        h.next_reading().await;
        let v = device_view(&gw.pull_resp().await.1.data);
        assert_eq!((v.fport, v.payload.as_slice()), (Some(6), &b"cfg"[..]));
        assert!(v.confirmed && !v.f_pending);
    }
    // Uplink 4 acknowledges it: gone from memory and disk, nothing to send.
    gw.push(&abp_up_acking(4), 7_000_000, -80, 5.0).await;
    h.next_reading().await;
    h.wait("acked", |s| counter(&s.app_downlinks_acked), 1)
        .await;
    let left = registry(dir.path(), |r| r.downlinks(None, 0).unwrap()).await;
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(counter(&h.stats.app_downlinks_sent), 1);
    assert_eq!(counter(&h.stats.downlinks_sent), 3);
    h.stop().await;
}

#[tokio::test]
async fn a_queued_downlink_survives_a_restart_and_a_cleared_one_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(config(dir.path())).await;
    h.stop().await;
    let (keep, drop_me) = registry(dir.path(), |r| {
        (
            r.enqueue_downlink(ABP_EUI, 7, b"kept", false).unwrap(),
            r.enqueue_downlink(ABP_EUI, 8, b"cleared", false).unwrap(),
        )
    })
    .await;

    // Loaded at start, while gatewayd was down when they were queued.
    let mut h = start(config(dir.path())).await;
    assert_eq!(counter(&h.stats.app_downlinks_queued), 2);
    let n = registry(dir.path(), move |r| {
        r.clear_downlinks(ABP_EUI, Some(drop_me)).unwrap()
    })
    .await;
    assert_eq!(n, 1);
    h.wait("reloads", |s| counter(&s.reloads), 1).await;

    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    gw.push(&abp_up(1), 1_000_000, -80, 5.0).await;
    h.next_reading().await;
    let v = device_view(&gw.pull_resp().await.1.data);
    assert_eq!((v.fport, v.payload.as_slice()), (Some(7), &b"kept"[..]));
    assert!(!v.f_pending, "the cleared item is not counted either");
    // A confirmed uplink now gets a bare ACK: the cleared item never goes.
    gw.push(
        &uplink(ABP_ADDR, NWK, 2, true, &CAYENNE),
        3_000_000,
        -80,
        5.0,
    )
    .await;
    h.next_reading().await;
    let v = device_view(&gw.pull_resp().await.1.data);
    assert!(v.ack);
    assert_eq!((v.fport, v.payload.len()), (None, 0));
    let left = registry(dir.path(), |r| r.downlinks(None, 0).unwrap()).await;
    assert!(left.is_empty(), "{left:?} (kept was {keep})");
    h.stop().await;
}

#[tokio::test]
async fn a_reading_is_submitted_only_once_its_frame_counter_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(1, h.addr).await;
    gw.pull().await;
    for fcnt in [5u32, 6, 9] {
        gw.push(&abp_up(fcnt), fcnt, -80, 5.0).await;
        let r = h.next_reading().await;
        assert_eq!(r.meta.extra["fcnt"], fcnt.to_string());
        // Read through another connection the moment the reading arrives.
        let path = dir.path().join("lorawan.db");
        let stored: i64 = tokio::task::spawn_blocking(move || {
            let c = rusqlite::Connection::open(path).unwrap();
            c.query_row(
                "SELECT fcnt_up FROM sessions WHERE dev_eui = ?1",
                [ABP_EUI],
                |r| r.get(0),
            )
            .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(stored, i64::from(fcnt));
    }
    h.stop().await;
}

#[tokio::test]
async fn the_published_status_lists_forwarders_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(config(dir.path())).await;
    let mut gw = Forwarder::new(0xAA55_0000_0000_0009, h.addr).await;
    gw.pull().await;
    gw.push(&abp_up(1), 1, -80, 5.0).await;
    h.next_reading().await;
    let status = within(h.status.wait_for(|s| s["counters"]["readings"] == 1))
        .await
        .unwrap()
        .clone();
    assert_eq!(status["kind"], "lorawan");
    assert_eq!(status["devices"], 2);
    assert_eq!(status["forwarders_alive"], 1);
    let f = &status["forwarders"][0];
    assert_eq!(f["eui"], "AA55000000000009");
    assert_eq!(f["alive"], true);
    assert_eq!(f["protocol"], 2);
    assert_eq!(f["counters"]["rxpk"], 1);
    assert_eq!(
        f["pull_addr"],
        gw.down.local_addr().unwrap().to_string(),
        "downlinks go where PULL_DATA came from"
    );
    h.stop().await;
}
