//! Decoding PUSH_DATA datagrams shaped like `lora_pkt_fwd` output.
//!
//! `cargo bench -p gatewayd-semtech-udp --bench decode`

use std::hint::black_box;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewayd_semtech_udp::{decode, Packet};

/// One rxpk as `lora_pkt_fwd` (SX1301, v4.0.1) writes it, with a 23-byte
/// payload (a join-request's size) varied by `i`.
fn rxpk(i: usize) -> String {
    let payload: Vec<u8> = (0..23).map(|b| (b * 7 + i) as u8).collect();
    let data = base64::engine::general_purpose::STANDARD.encode(&payload);
    format!(
        concat!(
            r#"{{"tmst":{},"time":"2024-05-01T10:00:00.{:06}Z","tmms":1398506418528,"chan":{},"rfch":0,"#,
            r#""freq":{:.6},"stat":1,"modu":"LORA","datr":"SF{}BW125","codr":"4/5","lsnr":-11.8,"#,
            r#""rssi":-119,"size":23,"data":"{}"}}"#
        ),
        3_512_348_611u32.wrapping_add(i as u32 * 1000),
        i * 1000,
        i % 8,
        867.1 + 0.2 * (i % 8) as f64,
        7 + i % 6,
        data
    )
}

fn push_data(n: usize, bad_at: Option<usize>) -> Vec<u8> {
    let entries: Vec<String> = (0..n)
        .map(|i| {
            let r = rxpk(i);
            if Some(i) == bad_at {
                // A type error: the whole body is parsed again, per entry.
                r.replace(r#""rfch":0"#, r#""rfch":"0""#)
            } else {
                r
            }
        })
        .collect();
    let json = format!(
        concat!(
            r#"{{"rxpk":[{}],"stat":{{"time":"2024-05-01 10:00:00 GMT","lati":46.24000,"#,
            r#""long":3.25230,"alti":145,"rxnb":{},"rxok":{},"rxfw":{},"ackr":100.0,"dwnb":0,"txnb":0}}}}"#
        ),
        entries.join(","),
        n,
        n,
        n
    );
    let mut d = vec![2, 0x5a, 0x3c, 0, 0xaa, 0x55, 0x5a, 0, 0, 0, 1, 1];
    d.extend_from_slice(json.as_bytes());
    d
}

fn rxpk_count(d: &[u8]) -> (usize, usize) {
    match decode(d).expect("bench datagram decodes") {
        Packet::PushData { body, .. } => (body.packets().count(), body.rxpk_errors().count()),
        other => panic!("{other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_push_data");
    for (name, n, bad) in [
        ("1_rxpk", 1, None),
        ("8_rxpk", 8, None),
        ("8_rxpk_one_malformed", 8, Some(3)),
    ] {
        let d = push_data(n, bad);
        assert_eq!(
            rxpk_count(&d),
            (n - usize::from(bad.is_some()), usize::from(bad.is_some()))
        );
        g.throughput(Throughput::Bytes(d.len() as u64));
        g.bench_function(name, |b| b.iter(|| decode(black_box(&d))));
    }
    g.finish();

    let d = push_data(8, None);
    let packet = decode(&d).unwrap();
    let mut out = Vec::with_capacity(d.len());
    c.bench_function("encode_push_data/8_rxpk", |b| {
        b.iter(|| {
            out.clear();
            black_box(&packet).encode(&mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
