//! Codec costs on the hot path: SenML decode (what every CoAP POST pays),
//! wire encoding (what every reading pays once, at commit) and batch
//! assembly (what the forwarder pays per publish).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gatewayd_model::senml::{self, DeviceNaming, Limits};
use gatewayd_model::wire::{self, BatchWriter};
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Transport};

fn readings(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| {
            Reading::new(
                DeviceId::new(Transport::Coap, &format!("sim-{}", i % 64)).unwrap(),
                Timestamp(1_732_476_000_000_000 + i as i64 * 1000),
                vec![
                    Measurement::float("temperature", Some("Cel"), 20.0 + i as f64 * 0.01),
                    Measurement::float("humidity", Some("%RH"), 40.0 + (i % 10) as f64),
                ],
            )
        })
        .collect()
}

fn senml_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("senml_decode");
    let dev = DeviceId::new(Transport::Coap, "127.0.0.1").unwrap();
    let naming = DeviceNaming::Namespaced {
        transport: Transport::Coap,
        default: &dev,
    };
    for n in [1usize, 10, 100] {
        let rs = readings(n);
        let json = senml::encode_json(&rs);
        let cbor = senml::encode_cbor(&rs);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("json", n), &json, |b, json| {
            b.iter(|| {
                senml::readings_from_json(
                    black_box(json),
                    &Limits::default(),
                    Timestamp(0),
                    &naming,
                )
                .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("cbor", n), &cbor, |b, cbor| {
            b.iter(|| {
                senml::readings_from_cbor(
                    black_box(cbor),
                    &Limits::default(),
                    Timestamp(0),
                    &naming,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

fn wire_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let rs = readings(500);
    g.throughput(Throughput::Elements(500));
    g.bench_function("encode_reading_x500", |b| {
        b.iter(|| {
            for r in &rs {
                black_box(wire::encode_reading(r));
            }
        })
    });
    let encoded: Vec<Vec<u8>> = rs.iter().map(wire::encode_reading).collect();
    g.bench_function("batch_writer_x500", |b| {
        b.iter(|| {
            let mut w = BatchWriter::new("gw-01");
            for (i, e) in encoded.iter().enumerate() {
                w.push(i as u64, e);
            }
            black_box(w.finish())
        })
    });
    let mut w = BatchWriter::new("gw-01");
    for (i, e) in encoded.iter().enumerate() {
        w.push(i as u64, e);
    }
    let payload = w.finish();
    g.bench_function("decode_batch_x500", |b| {
        b.iter(|| wire::decode_batch(black_box(&payload)).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = senml_decode, wire_encode
}
criterion_main!(benches);
