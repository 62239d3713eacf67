//! `cargo bench -p gatewayd-ml`: the example model (edge-apps/models/vibration-ae).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatewayd_ml::{AnomalyConfig, AnomalyStage, Model, Tensor};
use gatewayd_model::{Measurement, Reading, Timestamp};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/vibration-ae");

fn model_bytes() -> Vec<u8> {
    std::fs::read(format!("{DIR}/model.onnx")).expect("model.onnx")
}

/// A healthy-looking window: the model's normal tones, no noise.
fn window() -> Vec<f32> {
    (0..32)
        .map(|i| {
            let t = i as f32 / 1000.0;
            let tau = std::f32::consts::TAU;
            0.9 * (tau * 25.0 * t).sin()
                + 0.6 * (tau * 50.0 * t + 1.0).sin()
                + 0.35 * (tau * 120.0 * t + 2.0).sin()
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let bytes = model_bytes();
    c.bench_function("model_load_optimize", |b| {
        b.iter(|| Model::load("vibration-ae", black_box(&bytes)).unwrap())
    });

    let model = Arc::new(Model::load("vibration-ae", &bytes).unwrap());
    let x = Tensor::new(vec![1, 32], window()).unwrap();
    let mut g = c.benchmark_group("inference");
    g.throughput(Throughput::Elements(1));
    g.bench_function("model_run", |b| {
        b.iter(|| model.run(black_box(&x)).unwrap())
    });

    // One window = 32 readings into observe, the last of which runs the model.
    let readings: Vec<Reading> = window()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            Reading::new(
                "coap:pump-1".parse().unwrap(),
                Timestamp(i as i64 * 1000),
                vec![
                    Measurement::float("temperature", Some("Cel"), 40.0),
                    Measurement::float("vibration", Some("m/s2"), v.into()),
                ],
            )
        })
        .collect();
    let cfg = AnomalyConfig {
        device: "coap:pump-*".into(),
        ..AnomalyConfig::new("pump", "vibration", 32, 0.0016)
    };
    let mut stage = AnomalyStage::new(cfg, Arc::clone(&model)).unwrap();
    g.bench_function("anomaly_observe_window", |b| {
        b.iter(|| {
            let mut emitted = 0;
            for r in &readings {
                emitted += stage.observe(black_box(r)).unwrap().len();
            }
            assert_eq!(emitted, 1);
        })
    });
    g.finish();
}

criterion_group!(inference, benches);
criterion_main!(inference);
