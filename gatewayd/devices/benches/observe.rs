//! `observe()` of one committed group of 100 readings, all from devices the
//! registry already knows: spread over 1000 devices, and all from one.
//!
//! `CARGO_TARGET_DIR=/tmp/tgt-dev cargo bench -p gatewayd-devices -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewayd_devices::{DeviceRegistry, DevicesConfig};
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Transport};

const GROUP: usize = 100;
const T0: u64 = 1_700_000_000_000;

/// A typical LoRaWAN-ish reading: two measurements, radio metadata, a
/// source, a firmware version.
fn reading(n: usize) -> Reading {
    let device = DeviceId::new(Transport::Lora, &format!("70B3D57ED{n:07X}")).unwrap();
    let mut r = Reading::new(
        device,
        Timestamp(0),
        vec![
            Measurement::float("temperature", Some("Cel"), 21.5),
            Measurement::float("humidity", Some("%RH"), 40.0),
        ],
    );
    r.meta.rssi = Some(-97.0);
    r.meta.snr = Some(6.5);
    r.meta.battery = Some(80.0);
    r.meta.source = Some("lorawan".into());
    r.meta.extra.insert("firmware".into(), "1.4.2".into());
    r
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("observe");
    g.throughput(Throughput::Elements(GROUP as u64));

    // 1000 known devices; each call observes the next 100 of them.
    let reg = DeviceRegistry::in_memory(DevicesConfig::default());
    let all: Vec<Reading> = (0..1000).map(reading).collect();
    reg.observe(&all, T0);
    let groups: Vec<&[Reading]> = all.chunks(GROUP).collect();
    let mut i = 0usize;
    let mut now = T0;
    g.bench_function("100 readings, 1000 known devices", |b| {
        b.iter(|| {
            now += 1;
            i = (i + 1) % groups.len();
            reg.observe(black_box(groups[i]), now);
        })
    });

    // One known device, 100 readings.
    let reg = DeviceRegistry::in_memory(DevicesConfig::default());
    let one: Vec<Reading> = (0..GROUP).map(|_| reading(7)).collect();
    reg.observe(&one[..1], T0);
    let mut now = T0;
    g.bench_function("100 readings, 1 known device", |b| {
        b.iter(|| {
            now += 1;
            reg.observe(black_box(&one), now);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
