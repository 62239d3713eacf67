//! Edge apps (`gatewayd-edge`): what running WASM apps between the sources
//! and the buffer costs.
//!
//! * `edge_process/<app>/<n>`: `EdgeHandle::process` over one group of n
//!   temperature readings (n = 1, 10, 100, 1000) with no app deployed
//!   (`none`: the channel hop to the runtime thread and back, which the
//!   daemon skips when nothing is deployed), with
//!   `sample-every-n` (hand-written WAT, `every = 1`: passes everything),
//!   `unit-convert` (Rust guest, replaces every reading) and
//!   `threshold-alert` (Rust guest, per-device state through the key-value
//!   store; values stay in range, so no alerts and no kv writes after the
//!   first sight of a device). Throughput is in readings, so criterion
//!   prints the per-reading rate; per-reading app overhead = (app − none) / n.
//! * `edge_anomaly/*`: one window of 32 vibration readings: through the
//!   `vibration-anomaly` app (window delivery, one `infer` on the committed
//!   ONNX model, window persisted in `apps.db` and confirmed with
//!   `committed`), the same app with stream delivery (it keeps its block of
//!   32 in memory: no `apps.db` writes), through the runtime's declarative
//!   detector (`[[edge_apps.anomaly]]`), `AnomalyStage::observe` alone, and
//!   the bare model run.
//! * `edge_start/*`: `deploy` of a bundle into a fresh state directory
//!   (empty compiled cache) until the app is installed, vs `EdgeRuntime::start`
//!   over a state directory that already has the app (restored from the
//!   compiled cache), vs `start` with no app.
//!
//! Needs the guest components: `bash edge-apps/build-guests.sh`. They are
//! read from `$GATEWAYD_GUEST_DIR`, else
//! `${CARGO_TARGET_DIR:-<workspace>/target}/edge-apps/components`.
//!
//! `cargo bench -p gatewayd-bench --bench edge`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use gatewayd_artifact::{pack, Algorithm, SigningKey};
use gatewayd_edge::{AnomalySection, EdgeConfig, EdgePaths, EdgeRuntime};
use gatewayd_ml::AnomalyConfig;
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Transport};

const WINDOW: usize = 32;
const THRESHOLD: f64 = 0.0016;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `edge-apps/build-guests.sh` puts the components.
fn guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GATEWAYD_GUEST_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace().join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace().join("target"));
    target.join("edge-apps/components")
}

fn model_path() -> PathBuf {
    workspace().join("edge-apps/models/vibration-ae/model.onnx")
}

fn model_bytes() -> Vec<u8> {
    let p = model_path();
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The example's manifest (as a table) and component.
fn guest(name: &str) -> (toml::Table, Vec<u8>) {
    let dir = guest_dir();
    let wasm_path = dir.join(format!("{name}.wasm"));
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nbuild the edge-app guests first: bash edge-apps/build-guests.sh \
             (or point GATEWAYD_GUEST_DIR at the components)",
            wasm_path.display()
        )
    });
    let manifest_path = dir.join(format!("{name}.manifest.toml"));
    let manifest = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
    (manifest.parse().expect("guest manifest"), wasm)
}

/// Signs example `name`, after letting `edit` change its manifest. Models
/// named in the manifest get the committed vibration-ae model.
fn bundle(name: &str, key: &SigningKey, edit: impl FnOnce(&mut toml::Table)) -> Vec<u8> {
    let (mut manifest, wasm) = guest(name);
    edit(&mut manifest);
    let models: Vec<(String, Vec<u8>)> = match manifest.get("model") {
        Some(toml::Value::Array(ms)) => ms
            .iter()
            .map(|m| {
                let n = m["name"].as_str().expect("model name").to_owned();
                (n, model_bytes())
            })
            .collect(),
        _ => Vec::new(),
    };
    pack(
        &toml::to_string(&manifest).unwrap(),
        &wasm,
        &models,
        std::slice::from_ref(key),
    )
    .expect("pack")
}

/// A signing key, its trusted public key and runtime configs over temp dirs.
struct Env {
    dir: tempfile::TempDir,
    key: SigningKey,
    cfg: EdgeConfig,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = SigningKey::generate(Algorithm::Ed25519).expect("key");
        let pubpath = dir.path().join("trusted.pub");
        key.public().save(&pubpath).expect("save public key");
        let cfg = EdgeConfig {
            trusted_keys: vec![pubpath],
            ..EdgeConfig::default()
        };
        Env { dir, key, cfg }
    }

    fn paths(&self, state: &Path) -> EdgePaths {
        EdgePaths::resolve(&self.cfg, state)
    }

    fn start(&self, state: &Path) -> EdgeRuntime {
        EdgeRuntime::start(self.cfg.clone(), &self.paths(state)).expect("runtime starts")
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Stops a runtime and waits for its thread (not measured).
fn stop(rt: EdgeRuntime) {
    let EdgeRuntime {
        handle,
        derived,
        thread,
    } = rt;
    drop(handle);
    drop(derived);
    thread.join();
}

/// The app statuses once `n` apps are listed (bounded wait: `deploy`
/// may return before the status list shows the new app).
fn statuses(rt: &EdgeRuntime, n: usize) -> Vec<gatewayd_edge::AppStatus> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = rt.handle.list();
        if st.len() >= n || Instant::now() > deadline {
            assert_eq!(st.len(), n, "{st:?}");
            return st;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A reading as a CoAP sensor sends it: one temperature, in range.
fn temperature(i: usize) -> Reading {
    Reading::new(
        DeviceId::new(Transport::Coap, &format!("greenhouse-{:03}", i % 64)).unwrap(),
        Timestamp(1_732_460_000_000_000 + i as i64 * 1000),
        vec![Measurement::float(
            "temperature",
            Some("Cel"),
            18.0 + (i % 80) as f64 / 10.0,
        )],
    )
}

/// A healthy window of the model's normal tones (no noise).
fn window_values() -> Vec<f32> {
    (0..WINDOW)
        .map(|i| {
            let t = i as f32 / 1000.0;
            let tau = std::f32::consts::TAU;
            0.9 * (tau * 25.0 * t).sin()
                + 0.6 * (tau * 50.0 * t + 1.0).sin()
                + 0.35 * (tau * 120.0 * t + 2.0).sin()
        })
        .collect()
}

/// 32 vibration readings of one pump, starting at sample `start`.
fn vibration_window(start: i64) -> Vec<Reading> {
    window_values()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            Reading::new(
                DeviceId::new(Transport::Coap, "pump-07").unwrap(),
                Timestamp(1_732_460_000_000_000 + (start + i as i64) * 1000),
                vec![Measurement::float("vibration", Some("m/s2"), v.into())],
            )
        })
        .collect()
}

fn process(c: &mut Criterion) {
    let trt = tokio_rt();
    let env = Env::new();
    let apps: [(&str, Option<&str>); 4] = [
        ("none", None),
        ("sample-every-n", Some("sample-every-n")),
        ("unit-convert", Some("unit-convert")),
        ("threshold-alert", Some("threshold-alert")),
    ];
    let mut group = c.benchmark_group("edge_process");
    group.measurement_time(Duration::from_secs(4));
    for (label, app) in apps {
        let state = env.dir.path().join(format!("process-{label}"));
        let rt = {
            let _enter = trt.enter();
            env.start(&state)
        };
        if let Some(app) = app {
            let b = bundle(app, &env.key, |t| {
                if app == "sample-every-n" {
                    // Pass every reading: the minimal call.
                    t["config"]
                        .as_table_mut()
                        .unwrap()
                        .insert("every".into(), 1.into());
                }
            });
            trt.block_on(rt.handle.deploy(b)).expect("deploy");
        }
        for n in [1usize, 10, 100, 1000] {
            let batch: Vec<Reading> = (0..n).map(temperature).collect();
            // Warm up: the app has seen every device (threshold-alert's kv
            // reads happen once per device).
            let p = trt
                .block_on(rt.handle.process(vec![batch.clone()]))
                .unwrap();
            assert_eq!(p.groups[0].len(), n, "{label}: every reading passes");
            assert!(p.derived.is_empty(), "{label}: no alerts expected");
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(label, n), |b| {
                b.iter_batched(
                    || vec![batch.clone()],
                    |groups| trt.block_on(rt.handle.process(groups)).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
        if app.is_some() {
            let st = statuses(&rt, 1);
            assert_eq!(st[0].failures, 0, "{label}: {:?}", st[0].last_error);
        }
        stop(rt);
    }
    group.finish();
}

fn anomaly(c: &mut Criterion) {
    let trt = tokio_rt();
    let mut group = c.benchmark_group("edge_anomaly");
    group.throughput(Throughput::Elements(1)); // windows
    group.measurement_time(Duration::from_secs(4));

    // The vibration-anomaly app: 32 readings fill its window, which is
    // persisted in apps.db (one transaction, synchronous = FULL), closed,
    // handed to the app (one infer call) and, once "committed", deleted.
    let env = Env::new();
    let rt = {
        let _enter = trt.enter();
        env.start(&env.dir.path().join("app"))
    };
    trt.block_on(
        rt.handle
            .deploy(bundle("vibration-anomaly", &env.key, |_| {})),
    )
    .expect("deploy vibration-anomaly");
    let mut start = 0i64;
    let run_window = |start: &mut i64| {
        let w = vibration_window(*start);
        *start += WINDOW as i64;
        trt.block_on(async {
            let p = rt.handle.process(vec![w]).await.unwrap();
            if let Some(t) = p.token {
                rt.handle.committed(t).await;
            }
            p
        })
    };
    let p = run_window(&mut start);
    assert_eq!(p.groups[0].len(), WINDOW, "keep_originals: readings pass");
    assert!(
        p.derived
            .iter()
            .any(|r| r.measurements.iter().any(|m| m.name == "anomaly_score")),
        "one anomaly_score per window: {:?}",
        p.derived
    );
    group.bench_function("app_vibration_anomaly", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(run_window(&mut start));
            }
            t0.elapsed()
        })
    });
    let st = statuses(&rt, 1);
    assert_eq!(st[0].failures, 0, "{:?}", st[0].last_error);
    stop(rt);

    // The same app with stream delivery: it keeps its own per-device block
    // of 32 in memory, so this is the WASM call + inference without the
    // window's persistence in apps.db.
    let env = Env::new();
    let rt = {
        let _enter = trt.enter();
        env.start(&env.dir.path().join("app-stream"))
    };
    let b = bundle("vibration-anomaly", &env.key, |t| {
        let mut d = toml::Table::new();
        d.insert("mode".into(), "stream".into());
        t.insert("delivery".into(), d.into());
    });
    trt.block_on(rt.handle.deploy(b))
        .expect("deploy vibration-anomaly (stream)");
    let mut start = 0i64;
    let p = trt
        .block_on(rt.handle.process(vec![vibration_window(start)]))
        .unwrap();
    assert_eq!(
        p.derived.len(),
        1,
        "one score per 32 samples: {:?}",
        p.derived
    );
    assert!(p.token.is_none());
    group.bench_function("app_vibration_anomaly_stream", |b| {
        b.iter_batched(
            || {
                start += WINDOW as i64;
                vec![vibration_window(start)]
            },
            |groups| trt.block_on(rt.handle.process(groups)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let st = statuses(&rt, 1);
    assert_eq!(st[0].failures, 0, "{:?}", st[0].last_error);
    stop(rt);

    // The declarative detector inside the runtime (no app, no apps.db).
    let mut env = Env::new();
    env.cfg.anomaly = vec![AnomalySection {
        model: model_path(),
        detector: AnomalyConfig {
            device: "coap:pump-*".into(),
            ..AnomalyConfig::new("pump", "vibration", WINDOW, THRESHOLD)
        },
    }];
    let rt = {
        let _enter = trt.enter();
        env.start(&env.dir.path().join("declarative"))
    };
    let mut start = 0i64;
    let p = trt
        .block_on(rt.handle.process(vec![vibration_window(start)]))
        .unwrap();
    assert_eq!(p.derived.len(), 1, "one score per window: {:?}", p.derived);
    group.bench_function("runtime_declarative", |b| {
        b.iter_batched(
            || {
                start += WINDOW as i64;
                vec![vibration_window(start)]
            },
            |groups| trt.block_on(rt.handle.process(groups)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    stop(rt);

    // The bare model and `AnomalyStage::observe` alone are measured by the
    // ml crate's own bench (`cargo bench -p gatewayd-ml`).
    group.finish();
}

fn start(c: &mut Criterion) {
    let trt = tokio_rt();
    let env = Env::new();
    let mut group = c.benchmark_group("edge_start");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    let fresh = std::sync::atomic::AtomicU64::new(0);
    let fresh_state = || {
        let n = fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        env.dir.path().join(format!("fresh-{n}"))
    };

    for app in ["threshold-alert", "vibration-anomaly"] {
        let b = bundle(app, &env.key, |_| {});

        // Cold: a fresh state directory, so nothing is cached; measured
        // from deploy to the app installed and ready.
        group.bench_function(BenchmarkId::new("cold_deploy", app), |bch| {
            bch.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let state = fresh_state();
                    let rt = {
                        let _enter = trt.enter();
                        env.start(&state)
                    };
                    let t0 = Instant::now();
                    trt.block_on(rt.handle.deploy(b.clone())).expect("deploy");
                    spent += t0.elapsed();
                    let st = statuses(&rt, 1);
                    assert!(!st[0].compiled_from_cache, "{st:?}");
                    stop(rt);
                    std::fs::remove_dir_all(&state).ok();
                }
                spent
            })
        });

        // Cached: a state directory with the app deployed; each iteration
        // starts a fresh runtime over it, which restores the app from the
        // compiled cache.
        let state = fresh_state();
        {
            let rt = {
                let _enter = trt.enter();
                env.start(&state)
            };
            trt.block_on(rt.handle.deploy(b.clone())).expect("deploy");
            stop(rt);
        }
        group.bench_function(BenchmarkId::new("cached_start", app), |bch| {
            bch.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let _enter = trt.enter();
                    let t0 = Instant::now();
                    let rt = env.start(&state);
                    spent += t0.elapsed();
                    let st = rt.handle.list();
                    assert!(st.len() == 1 && st[0].compiled_from_cache, "{st:?}");
                    stop(rt);
                }
                spent
            })
        });
    }

    // Baseline: start with no app at all.
    let state = fresh_state();
    group.bench_function("start_no_apps", |bch| {
        bch.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let _enter = trt.enter();
                let t0 = Instant::now();
                let rt = env.start(&state);
                spent += t0.elapsed();
                stop(rt);
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(edge, process, anomaly, start);
criterion_main!(edge);
