//! The network server end to end: events in, actions out, with devices
//! simulated by the `lorawan` crate.

mod common;

use std::time::Duration;

use common::{join_request, rx, uplink, RawMac, Up};
use gatewayd_lorawan_proto::{
    Action, Activation, AesKey, DataRate, Decoded, DedupConfig, DevAddr, DeviceRecord, Downlink,
    EnqueueError, Eui64, Event, JoinError, MemoryStore, NetworkServer, QueueEvent, QueuedDownlink,
    Reading, Region, Reject, RxInfo, RxWindow, ServerConfig, UplinkError,
};
use lorawan::keys::{AppKey, AES128};
use lorawan::parser::{
    DataHeader, DecryptedJoinAcceptPayload, DevNonce, EncryptedDataPayload, FRMPayload,
};

const ABP_EUI: Eui64 = Eui64([0xA1, 0, 0, 0, 0, 0, 0, 1]);
const ABP_ADDR: u32 = 0x2601_1BDA;
const NWK: [u8; 16] = [0x11; 16];
const APP: [u8; 16] = [0x22; 16];
const OTAA_EUI: Eui64 = Eui64([0x00, 0x04, 0xA3, 0x0B, 0x00, 0x1C, 0x05, 0x30]);
const JOIN_EUI: Eui64 = Eui64([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 0x00]);
const APP_KEY: [u8; 16] = [0x5A; 16];
const CAYENNE: [u8; 8] = [0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xFF];

fn store() -> MemoryStore {
    let mut s = MemoryStore::new();
    s.insert(DeviceRecord {
        dev_eui: ABP_EUI,
        profile: "cayenne".into(),
        activation: Activation::Abp {
            dev_addr: DevAddr(ABP_ADDR),
            nwk_s_key: AesKey(NWK),
            app_s_key: AesKey(APP),
        },
        session: None,
    });
    s.insert(DeviceRecord {
        dev_eui: OTAA_EUI,
        profile: "raw".into(),
        activation: Activation::Otaa {
            join_eui: JOIN_EUI,
            app_key: AesKey(APP_KEY),
        },
        session: None,
    });
    s
}

fn server(region: Region) -> NetworkServer {
    NetworkServer::new(ServerConfig::new(region)).unwrap()
}

/// Feeds events, applying session changes as the I/O crate would.
fn run(ns: &mut NetworkServer, store: &mut MemoryStore, events: Vec<Event>) -> Vec<Action> {
    let mut all = Vec::new();
    for e in events {
        let actions = ns.handle(&*store, e);
        store.apply(&actions);
        all.extend(actions);
    }
    all
}

fn up_event(now_ms: u64, rx: RxInfo, phy: &[u8]) -> Event {
    Event::Uplink {
        now_ms,
        rx,
        phy: phy.to_vec(),
    }
}

/// One uplink from one gateway, window closed.
fn single(
    ns: &mut NetworkServer,
    store: &mut MemoryStore,
    now_ms: u64,
    rx: RxInfo,
    phy: &[u8],
) -> Vec<Action> {
    run(
        ns,
        store,
        vec![
            up_event(now_ms, rx, phy),
            Event::Tick {
                now_ms: now_ms + 200,
            },
        ],
    )
}

fn readings(a: &[Action]) -> Vec<&Reading> {
    a.iter()
        .filter_map(|a| match a {
            Action::Reading(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn downlinks(a: &[Action]) -> Vec<&Downlink> {
    a.iter()
        .filter_map(|a| match a {
            Action::Downlink(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn rejections(a: &[Action]) -> Vec<&Reject> {
    a.iter()
        .filter_map(|a| match a {
            Action::Rejected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// What the device sees in a downlink.
struct DeviceView {
    confirmed: bool,
    ack: bool,
    f_pending: bool,
    fopts: Vec<u8>,
    fport: Option<u8>,
    payload: Vec<u8>,
}

fn device_decrypt(phy: &[u8], nwk: [u8; 16], app: [u8; 16], fcnt: u32) -> DeviceView {
    let frame = EncryptedDataPayload::new(phy.to_vec()).unwrap();
    assert!(!frame.is_uplink());
    assert!(
        frame.validate_mic(&AES128(nwk), fcnt),
        "downlink MIC with FCntDown {fcnt}"
    );
    let fhdr = frame.fhdr();
    let (confirmed, ack, f_pending, fopts) = (
        frame.is_confirmed(),
        fhdr.fctrl().ack(),
        fhdr.fctrl().f_pending(),
        fhdr.data().to_vec(),
    );
    assert_eq!(fhdr.fcnt(), fcnt as u16);
    let dec = frame
        .decrypt(Some(&AES128(nwk)), Some(&AES128(app)), fcnt)
        .unwrap();
    let payload = match dec.frm_payload() {
        FRMPayload::Data(d) => d.to_vec(),
        FRMPayload::MACCommands(m) => m.data().to_vec(),
        FRMPayload::None => vec![],
    };
    DeviceView {
        confirmed,
        ack,
        f_pending,
        fopts,
        fport: dec.f_port(),
        payload,
    }
}

fn abp(fcnt: u32) -> Up<'static> {
    Up {
        dev_addr: ABP_ADDR,
        nwk: NWK,
        app: APP,
        fcnt,
        payload: &CAYENNE,
        ..Up::default()
    }
}

#[test]
fn abp_uplink_heard_by_three_gateways_gives_one_cayenne_reading_with_the_best_reception() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let phy = uplink(&abp(0));
    let a = run(
        &mut ns,
        &mut st,
        vec![
            up_event(1_000, rx(1, 100, -110, 2.0), &phy),
            up_event(1_050, rx(2, 200, -90, 7.5), &phy),
            up_event(1_100, rx(3, 300, -100, 9.0), &phy),
            Event::Tick { now_ms: 1_199 },
        ],
    );
    assert!(a.is_empty(), "window still open: {a:?}");
    assert_eq!(ns.next_deadline_ms(), Some(1_200));
    let a = run(&mut ns, &mut st, vec![Event::Tick { now_ms: 1_200 }]);
    let r = readings(&a);
    assert_eq!(r.len(), 1);
    let r = r[0];
    assert_eq!(
        (r.dev_eui, r.dev_addr, r.fcnt, r.fport),
        (ABP_EUI, DevAddr(ABP_ADDR), 0, 1)
    );
    assert_eq!(r.payload, CAYENNE);
    assert_eq!(r.gateways.len(), 3);
    assert_eq!(r.rx.gateway, Eui64::from(3), "highest SNR");
    match &r.decoded {
        Decoded::Cayenne(m) => {
            assert_eq!(m.len(), 2);
            assert_eq!(
                (m[0].name.as_str(), m[0].unit, m[0].value),
                ("temperature_3", Some("Cel"), 27.2)
            );
            assert_eq!((m[1].name.as_str(), m[1].value), ("temperature_5", 25.5));
        }
        other => panic!("{other:?}"),
    }
    assert!(downlinks(&a).is_empty(), "unconfirmed, no MAC: no downlink");
    assert_eq!(
        st.get(ABP_EUI).unwrap().session.as_ref().unwrap().fcnt_up,
        Some(0)
    );
}

#[test]
fn confirmed_uplink_is_acked_in_rx1_with_rx2_fallback_and_wrapping_tmst() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let phy = uplink(&Up {
        confirmed: true,
        ..abp(0)
    });
    let tmst = u32::MAX - 500_000;
    let a = single(&mut ns, &mut st, 0, rx(7, tmst, -80, 5.0), &phy);
    assert_eq!(readings(&a).len(), 1);
    let d = downlinks(&a);
    assert_eq!(d.len(), 1);
    let d = d[0];
    assert_eq!((d.dev_eui, d.gateway), (ABP_EUI, Eui64::from(7)));
    assert_eq!(d.slot.window, RxWindow::Rx1);
    assert_eq!(d.slot.tmst, tmst.wrapping_add(1_000_000));
    assert_eq!(d.slot.tmst, 499_999);
    assert_eq!(
        (d.slot.freq_hz, d.slot.dr, d.slot.power_dbm),
        (868_100_000, 5, 14)
    );
    assert_eq!(d.slot.data_rate, DataRate { sf: 7, bw_khz: 125 });
    let fb = d.fallback.unwrap();
    assert_eq!(fb.window, RxWindow::Rx2);
    assert_eq!(fb.tmst, tmst.wrapping_add(2_000_000));
    assert_eq!(
        (fb.freq_hz, fb.dr, fb.data_rate.to_string()),
        (869_525_000, 0, "SF12BW125".into())
    );
    let v = device_decrypt(&d.phy, NWK, APP, 0);
    assert!(v.ack && !v.confirmed && v.fopts.is_empty() && v.fport.is_none());
    let s = st.get(ABP_EUI).unwrap().session.clone().unwrap();
    assert_eq!((s.fcnt_up, s.fcnt_down), (Some(0), 1));
}

#[test]
fn link_check_req_is_answered_with_the_best_margin_and_gateway_count() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let phy = uplink(&Up {
        mac: vec![RawMac(0x02, vec![])],
        ..abp(0)
    });
    let a = run(
        &mut ns,
        &mut st,
        vec![
            up_event(0, rx(1, 10, -100, -3.0), &phy),
            up_event(20, rx(2, 20, -90, 5.0), &phy),
            Event::Tick { now_ms: 300 },
        ],
    );
    let d = downlinks(&a)[0];
    assert_eq!(d.gateway, Eui64::from(2));
    let v = device_decrypt(&d.phy, NWK, APP, 0);
    // SF7 floor -7.5 dB: 5.0 - (-7.5) = 12.5 -> 12; two gateways.
    assert_eq!(v.fopts, [0x02, 12, 2]);
    assert!(!v.ack);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::MacCommands { dev_eui, .. } if *dev_eui == ABP_EUI)));
}

#[test]
fn device_time_req_is_answered_from_the_reception_time() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let phy = uplink(&Up {
        mac: vec![RawMac(0x0D, vec![])],
        ..abp(0)
    });
    // rx time: UNIX 1_600_000_000.5 -> GPS 1_284_035_218 + 128/256
    let a = single(&mut ns, &mut st, 0, rx(1, 10, -100, 3.0), &phy);
    let v = device_decrypt(&downlinks(&a)[0].phy, NWK, APP, 0);
    assert_eq!(v.fopts, [0x0D, 0x92, 0xD2, 0x88, 0x4C, 0x80]);
    // Without a reception time there is nothing to answer with.
    let phy = uplink(&Up {
        mac: vec![RawMac(0x0D, vec![])],
        ..abp(1)
    });
    let a = single(
        &mut ns,
        &mut st,
        1_000,
        RxInfo {
            time: None,
            ..rx(1, 10, -100, 3.0)
        },
        &phy,
    );
    assert!(downlinks(&a).is_empty());
}

#[test]
fn otaa_join_then_uplink_with_the_derived_keys() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let jr = join_request(JOIN_EUI, OTAA_EUI, 0x0102, APP_KEY);
    let a = single(&mut ns, &mut st, 0, rx(9, 1_000, -70, 8.0), &jr);
    let dev_addr = match a.iter().find(|x| matches!(x, Action::Joined { .. })) {
        Some(Action::Joined { dev_eui, dev_addr }) => {
            assert_eq!(*dev_eui, OTAA_EUI);
            *dev_addr
        }
        _ => panic!("no Joined in {a:?}"),
    };
    assert_eq!(dev_addr.0 >> 25, 0, "NetID 0 -> NwkID 0");
    let d = downlinks(&a)[0];
    assert_eq!(
        (d.slot.window, d.slot.tmst, d.slot.freq_hz, d.slot.dr),
        (RxWindow::Rx1, 5_001_000, 868_100_000, 5)
    );
    let fb = d.fallback.unwrap();
    assert_eq!((fb.tmst, fb.freq_hz, fb.dr), (6_001_000, 869_525_000, 0));

    // The device decrypts the JoinAccept and derives its keys.
    let key = AppKey::from(APP_KEY);
    let ja = DecryptedJoinAcceptPayload::new(d.phy.clone(), &key).unwrap();
    let addr = u32::from_le_bytes(ja.dev_addr().as_ref().try_into().unwrap());
    assert_eq!(addr, dev_addr.0);
    let nonce = DevNonce::from(0x0102u16.to_le_bytes());
    let nwk: [u8; 16] = ja.derive_newskey(&nonce, &key).as_ref().try_into().unwrap();
    let app: [u8; 16] = ja.derive_appskey(&nonce, &key).as_ref().try_into().unwrap();

    let phy = uplink(&Up {
        dev_addr: addr,
        nwk,
        app,
        fcnt: 0,
        payload: b"hello",
        ..Up::default()
    });
    let a = single(&mut ns, &mut st, 10_000, rx(9, 2_000, -70, 8.0), &phy);
    let r = readings(&a);
    assert_eq!(r.len(), 1, "{a:?}");
    assert_eq!(
        (r[0].dev_eui, r[0].payload.as_slice()),
        (OTAA_EUI, &b"hello"[..])
    );
    assert_eq!(r[0].decoded, Decoded::Raw);

    // The same DevNonce again is refused; a new one gives a new session.
    let a = single(&mut ns, &mut st, 20_000, rx(9, 3_000, -70, 8.0), &jr);
    assert_eq!(
        rejections(&a),
        vec![&Reject::Join(JoinError::DevNonceReused {
            dev_nonce: 0x0102
        })]
    );
    let jr2 = join_request(JOIN_EUI, OTAA_EUI, 0x0103, APP_KEY);
    let a = single(&mut ns, &mut st, 30_000, rx(9, 4_000, -70, 8.0), &jr2);
    assert_eq!(downlinks(&a).len(), 1);
    let s = st.get(OTAA_EUI).unwrap().session.clone().unwrap();
    assert_eq!(s.join_nonce, 2);
    assert_eq!(s.used_dev_nonces.len(), 2);
    assert_eq!(s.fcnt_up, None);
}

#[test]
fn us915_join_accept_uses_the_rx1_channel_mapping_and_500khz_data_rates() {
    let (mut ns, mut st) = (server(Region::Us915), store());
    let jr = join_request(JOIN_EUI, OTAA_EUI, 7, APP_KEY);
    // Channel 8 (903.9 MHz), DR0 (SF10BW125).
    let r = RxInfo {
        freq_hz: 903_900_000,
        data_rate: DataRate {
            sf: 10,
            bw_khz: 125,
        },
        ..rx(1, 0, -100, 0.0)
    };
    let a = single(&mut ns, &mut st, 0, r, &jr);
    let d = downlinks(&a)[0];
    assert_eq!(
        (d.slot.freq_hz, d.slot.dr, d.slot.power_dbm),
        (923_300_000, 10, 20)
    );
    assert_eq!(d.slot.data_rate.to_string(), "SF10BW500");
    assert_eq!(d.slot.tmst, 5_000_000);
    let fb = d.fallback.unwrap();
    assert_eq!(
        (fb.freq_hz, fb.dr, fb.data_rate.to_string(), fb.tmst),
        (923_300_000, 8, "SF12BW500".into(), 6_000_000)
    );

    // A confirmed data uplink on 500 kHz channel 65 (904.6 MHz, DR4).
    let phy = uplink(&Up {
        confirmed: true,
        ..abp(0)
    });
    let r = RxInfo {
        freq_hz: 904_600_000,
        data_rate: DataRate { sf: 8, bw_khz: 500 },
        ..rx(1, 0, -100, 0.0)
    };
    let a = single(&mut ns, &mut st, 10_000, r, &phy);
    let d = downlinks(&a)[0];
    assert_eq!((d.slot.freq_hz, d.slot.dr), (923_900_000, 13));
    assert_eq!(d.slot.data_rate.to_string(), "SF7BW500");
}

#[test]
fn queued_confirmed_downlink_is_resent_until_acked() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    ns.enqueue(
        ABP_EUI,
        QueuedDownlink {
            id: 1,
            fport: 9,
            payload: b"cfg".to_vec(),
            confirmed: true,
        },
    )
    .unwrap();
    ns.enqueue(
        ABP_EUI,
        QueuedDownlink {
            id: 2,
            fport: 10,
            payload: b"next".to_vec(),
            confirmed: false,
        },
    )
    .unwrap();
    let a = single(&mut ns, &mut st, 0, rx(1, 0, -90, 5.0), &uplink(&abp(0)));
    let v = device_decrypt(&downlinks(&a)[0].phy, NWK, APP, 0);
    assert!(v.confirmed && v.f_pending);
    assert_eq!((v.fport, v.payload.as_slice()), (Some(9), &b"cfg"[..]));

    // No ACK in the next uplink: sent again with the next FCntDown.
    let a = single(
        &mut ns,
        &mut st,
        10_000,
        rx(1, 0, -90, 5.0),
        &uplink(&abp(1)),
    );
    let v = device_decrypt(&downlinks(&a)[0].phy, NWK, APP, 1);
    assert_eq!((v.fport, v.confirmed), (Some(9), true));
    assert_eq!(ns.queue_len(ABP_EUI), 2);

    // ACK: acknowledged, and the next item goes out.
    let a = single(
        &mut ns,
        &mut st,
        20_000,
        rx(1, 0, -90, 5.0),
        &uplink(&Up {
            fctrl: 0x20,
            ..abp(2)
        }),
    );
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Queue {
            event: QueueEvent::Acked { fcnt_down: 1, .. },
            ..
        }
    )));
    let v = device_decrypt(&downlinks(&a)[0].phy, NWK, APP, 2);
    assert_eq!(
        (v.fport, v.payload.as_slice(), v.confirmed, v.f_pending),
        (Some(10), &b"next"[..], false, false)
    );
    assert!(
        a.iter().any(|x| matches!(
            x,
            Action::Queue {
                event: QueueEvent::Sent { item, fcnt_down: 2 },
                ..
            } if item.id == 2
        )),
        "the unconfirmed item is reported gone once sent: {a:?}"
    );
    assert_eq!(ns.queue_len(ABP_EUI), 0);
    assert!(!ns.is_queued(ABP_EUI, 2));
}

#[test]
fn queued_confirmed_downlink_is_dropped_after_max_attempts() {
    let mut cfg = ServerConfig::new(Region::Eu868);
    cfg.max_confirmed_attempts = 2;
    let (mut ns, mut st) = (NetworkServer::new(cfg).unwrap(), store());
    ns.enqueue(
        ABP_EUI,
        QueuedDownlink {
            id: 1,
            fport: 9,
            payload: b"x".to_vec(),
            confirmed: true,
        },
    )
    .unwrap();
    single(&mut ns, &mut st, 0, rx(1, 0, -90, 5.0), &uplink(&abp(0)));
    single(
        &mut ns,
        &mut st,
        10_000,
        rx(1, 0, -90, 5.0),
        &uplink(&abp(1)),
    );
    let a = single(
        &mut ns,
        &mut st,
        20_000,
        rx(1, 0, -90, 5.0),
        &uplink(&abp(2)),
    );
    assert!(a.iter().any(|x| matches!(
        x,
        Action::Queue {
            event: QueueEvent::Dropped { attempts: 2, .. },
            ..
        }
    )));
    assert!(downlinks(&a).is_empty());
    assert_eq!(ns.queue_len(ABP_EUI), 0);
}

#[test]
fn queue_refuses_invalid_and_excess_items() {
    let mut cfg = ServerConfig::new(Region::Eu868);
    cfg.queue_capacity = 1;
    let mut ns = NetworkServer::new(cfg).unwrap();
    let item = |fport, len| QueuedDownlink {
        id: 1,
        fport,
        payload: vec![0; len],
        confirmed: false,
    };
    assert_eq!(
        ns.enqueue(ABP_EUI, item(0, 1)),
        Err(EnqueueError::InvalidFport(0))
    );
    assert_eq!(
        ns.enqueue(ABP_EUI, item(224, 1)),
        Err(EnqueueError::InvalidFport(224))
    );
    assert_eq!(
        ns.enqueue(ABP_EUI, item(1, 243)),
        Err(EnqueueError::TooLarge {
            size: 243,
            max: 242
        })
    );
    ns.enqueue(ABP_EUI, item(1, 242)).unwrap();
    assert!(matches!(
        ns.enqueue(ABP_EUI, item(1, 1)),
        Err(EnqueueError::Full(_))
    ));
}

#[test]
fn item_too_large_for_both_windows_waits_for_a_faster_data_rate() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    ns.enqueue(
        ABP_EUI,
        QueuedDownlink {
            id: 1,
            fport: 3,
            payload: vec![7; 100],
            confirmed: false,
        },
    )
    .unwrap();
    let sf12 = RxInfo {
        data_rate: DataRate {
            sf: 12,
            bw_khz: 125,
        },
        ..rx(1, 0, -120, -15.0)
    };
    let a = single(&mut ns, &mut st, 0, sf12.clone(), &uplink(&abp(0)));
    assert!(
        downlinks(&a).is_empty(),
        "DR0 carries 51 bytes: nothing sent"
    );
    // A confirmed uplink at DR0 still gets its ACK, with FPending set.
    let a = single(
        &mut ns,
        &mut st,
        10_000,
        sf12,
        &uplink(&Up {
            confirmed: true,
            ..abp(1)
        }),
    );
    let v = device_decrypt(&downlinks(&a)[0].phy, NWK, APP, 0);
    assert!(v.ack && v.f_pending && v.fport.is_none());
    assert_eq!(ns.queue_len(ABP_EUI), 1);
    // At SF7 it fits RX1.
    let a = single(
        &mut ns,
        &mut st,
        20_000,
        rx(1, 0, -90, 5.0),
        &uplink(&abp(2)),
    );
    let d = downlinks(&a)[0];
    assert_eq!(d.slot.window, RxWindow::Rx1);
    assert!(d.fallback.is_none(), "100 bytes do not fit RX2 (DR0)");
    assert_eq!(device_decrypt(&d.phy, NWK, APP, 1).payload, vec![7; 100]);
}

#[test]
fn rx2_is_primary_when_rx1_has_no_mapping() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    // 902.3 MHz is outside EU868: no RX1.
    let r = RxInfo {
        freq_hz: 902_300_000,
        ..rx(1, 100, -90, 5.0)
    };
    let a = single(
        &mut ns,
        &mut st,
        0,
        r,
        &uplink(&Up {
            confirmed: true,
            ..abp(0)
        }),
    );
    let d = downlinks(&a)[0];
    assert_eq!(
        (d.slot.window, d.slot.tmst, d.slot.freq_hz),
        (RxWindow::Rx2, 2_000_100, 869_525_000)
    );
    assert!(d.fallback.is_none());
}

#[test]
fn replay_is_rejected_and_identical_confirmed_retransmission_is_re_acked_without_a_reading() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let c = uplink(&Up {
        confirmed: true,
        ..abp(5)
    });
    let a = single(&mut ns, &mut st, 0, rx(1, 0, -90, 5.0), &c);
    assert_eq!(readings(&a).len(), 1);
    // The retransmission arrives after the dedup memory of 2 s.
    let a = single(&mut ns, &mut st, 10_000, rx(1, 0, -90, 5.0), &c);
    assert!(readings(&a).is_empty());
    let v = device_decrypt(&downlinks(&a)[0].phy, NWK, APP, 1);
    assert!(v.ack);
    // An older frame is a replay.
    let old = uplink(&abp(4));
    let a = single(&mut ns, &mut st, 20_000, rx(1, 0, -90, 5.0), &old);
    assert_eq!(
        rejections(&a),
        vec![&Reject::Uplink(UplinkError::Replay { last: 5, fcnt: 4 })]
    );
    assert!(readings(&a).is_empty() && downlinks(&a).is_empty());
    // A copy within the dedup memory is dropped silently.
    let late = uplink(&abp(6));
    let a = run(
        &mut ns,
        &mut st,
        vec![
            up_event(30_000, rx(1, 0, -90, 5.0), &late),
            Event::Tick { now_ms: 30_200 },
            up_event(30_500, rx(2, 0, -90, 5.0), &late),
            Event::Tick { now_ms: 31_000 },
        ],
    );
    assert_eq!(readings(&a).len(), 1);
    assert!(rejections(&a).is_empty());
}

#[test]
fn shared_dev_addr_is_resolved_by_the_mic() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let twin = Eui64::from(0xB2);
    st.insert(DeviceRecord {
        dev_eui: twin,
        profile: "raw".into(),
        activation: Activation::Abp {
            dev_addr: DevAddr(ABP_ADDR),
            nwk_s_key: AesKey([0x33; 16]),
            app_s_key: AesKey([0x44; 16]),
        },
        session: None,
    });
    let phy = uplink(&Up {
        nwk: [0x33; 16],
        app: [0x44; 16],
        payload: b"twin",
        ..abp(0)
    });
    let a = single(&mut ns, &mut st, 0, rx(1, 0, -90, 5.0), &phy);
    let r = readings(&a);
    assert_eq!(
        (r[0].dev_eui, r[0].payload.as_slice()),
        (twin, &b"twin"[..])
    );
    // A frame neither device's key verifies: rejected as MIC, device unknown.
    let bad = uplink(&Up {
        nwk: [0x55; 16],
        ..abp(1)
    });
    let a = single(&mut ns, &mut st, 10_000, rx(1, 0, -90, 5.0), &bad);
    assert!(matches!(
        a.as_slice(),
        [Action::Rejected {
            reason: Reject::Uplink(UplinkError::Mic),
            dev_eui: None,
            dev_addr: Some(DevAddr(ABP_ADDR))
        }]
    ));
}

#[test]
fn unknown_devices_and_abp_join_requests_are_rejected() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let phy = uplink(&Up {
        dev_addr: 0x0BAD_0BAD,
        ..abp(0)
    });
    let a = single(&mut ns, &mut st, 0, rx(1, 0, -90, 5.0), &phy);
    assert_eq!(rejections(&a), vec![&Reject::UnknownDevAddr]);
    let jr = join_request(JOIN_EUI, Eui64::from(0xDEAD), 1, APP_KEY);
    let a = single(&mut ns, &mut st, 10_000, rx(1, 0, -90, 5.0), &jr);
    assert_eq!(rejections(&a), vec![&Reject::UnknownDevEui]);
    let jr = join_request(JOIN_EUI, ABP_EUI, 1, APP_KEY);
    let a = single(&mut ns, &mut st, 20_000, rx(1, 0, -90, 5.0), &jr);
    assert_eq!(rejections(&a), vec![&Reject::NotOtaa]);
    // An OTAA device that never joined has no session for any DevAddr.
    assert!(st.get(OTAA_EUI).unwrap().session.is_none());
}

#[test]
fn garbage_is_rejected_at_decode_before_taking_a_dedup_slot() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    for phy in [&[][..], &[0x40; 5], &[0xE0; 20], &[0x60; 20], &[0x01; 23]] {
        let a = run(&mut ns, &mut st, vec![up_event(0, rx(1, 0, -90, 5.0), phy)]);
        assert!(
            matches!(
                a.as_slice(),
                [Action::Rejected {
                    reason: Reject::Decode(_),
                    ..
                }]
            ),
            "{phy:?}: {a:?}"
        );
    }
    assert_eq!(ns.next_deadline_ms(), None);
}

#[test]
fn dedup_overflow_is_reported() {
    let mut cfg = ServerConfig::new(Region::Eu868);
    cfg.dedup = DedupConfig {
        max_open: 1,
        ..DedupConfig::default()
    };
    let (mut ns, mut st) = (NetworkServer::new(cfg).unwrap(), store());
    let a = run(
        &mut ns,
        &mut st,
        vec![
            up_event(0, rx(1, 0, -90, 5.0), &uplink(&abp(0))),
            up_event(1, rx(1, 0, -90, 5.0), &uplink(&abp(1))),
        ],
    );
    assert!(matches!(
        a.as_slice(),
        [Action::Rejected {
            reason: Reject::DedupFull,
            dev_addr: Some(DevAddr(ABP_ADDR)),
            ..
        }]
    ));
}

#[test]
fn adr_ack_req_gets_an_empty_downlink_and_reserved_fports_no_reading() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let a = single(
        &mut ns,
        &mut st,
        0,
        rx(1, 0, -90, 5.0),
        &uplink(&Up {
            fctrl: 0xC0,
            ..abp(0)
        }),
    );
    let v = device_decrypt(&downlinks(&a)[0].phy, NWK, APP, 0);
    assert!(!v.ack && v.fopts.is_empty() && v.fport.is_none());
    let a = single(
        &mut ns,
        &mut st,
        10_000,
        rx(1, 0, -90, 5.0),
        &uplink(&Up {
            fport: Some(224),
            ..abp(1)
        }),
    );
    assert_eq!(rejections(&a), vec![&Reject::ReservedFport(224)]);
    assert!(readings(&a).is_empty());
    assert_eq!(
        st.get(ABP_EUI).unwrap().session.as_ref().unwrap().fcnt_up,
        Some(1),
        "counter still advances"
    );
}

#[test]
fn invalid_cayenne_payload_is_still_a_reading_with_the_error() {
    let (mut ns, mut st) = (server(Region::Eu868), store());
    let a = single(
        &mut ns,
        &mut st,
        0,
        rx(1, 0, -90, 5.0),
        &uplink(&Up {
            payload: &[1, 0x67, 0],
            ..abp(0)
        }),
    );
    assert!(matches!(readings(&a)[0].decoded, Decoded::Error(_)));
}

#[test]
fn configuration_is_checked() {
    let bad = |f: fn(&mut ServerConfig)| {
        let mut c = ServerConfig::new(Region::Us915);
        f(&mut c);
        NetworkServer::new(c).is_err()
    };
    assert!(bad(|c| c.net_id = 0x60_0000));
    assert!(bad(|c| c.rx1_dr_offset = 4));
    assert!(
        bad(|c| c.rx2_dr = Some(4)),
        "DR4 is an uplink rate in US915"
    );
    assert!(bad(|c| c.rx1_delay_s = 0));
    assert!(bad(|c| c.dedup.window_ms = 1_000));
    assert!(!bad(|c| c.rx2_dr = Some(10)));
    let _ = Duration::ZERO;
}
