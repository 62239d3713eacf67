//! One data uplink through decode + MIC + decrypt + Cayenne, and through
//! the whole network server (dedup window, reading, session change).
//!
//! `cargo bench -p gatewayd-lorawan-proto --bench uplink`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatewayd_lorawan_proto::{
    classify, decode_cayenne, process_data_uplink, Action, Activation, AesKey, DataRate, DevAddr,
    DeviceRecord, Eui64, Event, MemoryStore, NetworkServer, Region, RxInfo, ServerConfig, Session,
};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::parser::FCtrl;

const NWK: [u8; 16] = [0x11; 16];
const APP: [u8; 16] = [0x22; 16];
const ADDR: u32 = 0x2601_1BDA;
/// Temperature, humidity, barometer, voltage, GPS: 26 bytes, a typical
/// multi-sensor frame (8 measurements).
const PAYLOAD: [u8; 26] = [
    0x01, 0x67, 0x01, 0x10, 0x02, 0x68, 0x61, 0x03, 0x73, 0x27, 0x7F, 0x04, 0x74, 0x01, 0x4A, 0x05,
    0x88, 0x06, 0x76, 0x5F, 0xF2, 0x96, 0x0A, 0x00, 0x03, 0xE8,
];

fn frame(fcnt: u32) -> Vec<u8> {
    let mut c = DataPayloadCreator::new();
    c.set_confirmed(false)
        .set_uplink(true)
        .set_dev_addr(&ADDR.to_le_bytes())
        .set_fctrl(&FCtrl::new(0x80, true))
        .set_fcnt(fcnt)
        .set_f_port(1);
    c.build(&PAYLOAD, &[], &NewSKey::from(NWK), &AppSKey::from(APP))
        .unwrap()
        .to_vec()
}

fn bench(c: &mut Criterion) {
    let phy = frame(1);
    let session = Session::abp(DevAddr(ADDR), NWK, APP, Region::Eu868);

    c.bench_function("classify", |b| b.iter(|| classify(black_box(&phy))));
    c.bench_function("cayenne_decode_26_bytes", |b| {
        b.iter(|| decode_cayenne(black_box(&PAYLOAD)))
    });
    c.bench_function("uplink_decode_mic_decrypt_cayenne", |b| {
        b.iter(|| {
            let mut s = session.clone();
            let up = process_data_uplink(&mut s, black_box(&phy)).unwrap();
            decode_cayenne(&up.payload).unwrap()
        })
    });

    // The whole server path: Uplink event, window closed by a Tick, one
    // Reading and one SessionChanged out. A fresh FCnt every iteration.
    let mut store = MemoryStore::new();
    store.insert(DeviceRecord {
        dev_eui: Eui64::from(1),
        profile: "cayenne".into(),
        activation: Activation::Abp {
            dev_addr: DevAddr(ADDR),
            nwk_s_key: AesKey(NWK),
            app_s_key: AesKey(APP),
        },
        session: None,
    });
    let mut ns = NetworkServer::new(ServerConfig::new(Region::Eu868)).unwrap();
    let frames: Vec<Vec<u8>> = (0..10_000).map(frame).collect();
    let rx = RxInfo {
        gateway: Eui64::from(7),
        tmst: 0,
        freq_hz: 868_100_000,
        data_rate: DataRate { sf: 7, bw_khz: 125 },
        rssi: -90,
        snr: 5.0,
        time: Some(Duration::from_secs(1_600_000_000)),
    };
    let mut i = 0usize;
    let mut now = 0u64;
    c.bench_function("server_uplink_to_reading", |b| {
        b.iter(|| {
            if i == frames.len() {
                // Start the counter over with a fresh session.
                i = 0;
                store.apply(&[Action::SessionChanged {
                    dev_eui: Eui64::from(1),
                    session: Session::abp(DevAddr(ADDR), NWK, APP, Region::Eu868),
                }]);
            }
            now += 10_000;
            let mut a = ns.handle(
                &store,
                Event::Uplink {
                    now_ms: now,
                    rx: rx.clone(),
                    phy: frames[i].clone(),
                },
            );
            a.extend(ns.handle(&store, Event::Tick { now_ms: now + 300 }));
            store.apply(&a);
            i += 1;
            // Self-check: the path measured is the accepted one.
            assert!(matches!(a.first(), Some(Action::Reading(_))));
            a
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
