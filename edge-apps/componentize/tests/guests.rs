//! Runs the components built by `edge-apps/build-guests.sh` in wasmtime
//! against a minimal host (log -> Vec, kv -> HashMap, fixed clock, infer ->
//! echo) and checks what each example does.
//!
//! The directory comes from `GATEWAYD_GUEST_DIR`, by default
//! `${CARGO_TARGET_DIR:-<workspace>/target}/edge-apps/components`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

wasmtime::component::bindgen!({
    world: "edge-app",
    path: "../wit",
    additional_derives: [PartialEq],
});

use gatewayd::edge::types::{
    Alert, Level, Measurement, Metadata, Severity, Tensor, Value, Verdict,
};

const NOW_US: i64 = 1_764_000_000_000_000;
/// "A few MiB": every example must run within it.
const MEMORY_LIMIT: usize = 4 << 20;
const FUEL: u64 = 200_000_000;

#[derive(Clone, Copy, PartialEq)]
enum Infer {
    Echo,
    Zeros,
}

struct Host {
    logs: Vec<(Level, String)>,
    kv: HashMap<String, Vec<u8>>,
    infer: Infer,
    infer_calls: Vec<(String, Vec<u32>)>,
    limits: StoreLimits,
}

impl Host {
    fn new(kv: HashMap<String, Vec<u8>>) -> Self {
        Host {
            logs: Vec::new(),
            kv,
            infer: Infer::Echo,
            infer_calls: Vec::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .trap_on_grow_failure(true)
                .build(),
        }
    }
}

impl gatewayd::edge::types::Host for Host {}

impl gatewayd::edge::host::Host for Host {
    fn log(&mut self, level: Level, message: String) {
        self.logs.push((level, message));
    }
    fn now_us(&mut self) -> i64 {
        NOW_US
    }
    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv.get(&key).cloned()
    }
    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.kv.insert(key, value);
        Ok(())
    }
    fn kv_delete(&mut self, key: String) {
        self.kv.remove(&key);
    }
    fn infer(&mut self, model: String, input: Tensor) -> Result<Tensor, String> {
        self.infer_calls.push((model, input.shape.clone()));
        Ok(match self.infer {
            Infer::Echo => input,
            Infer::Zeros => Tensor {
                data: vec![0.0; input.data.len()],
                shape: input.shape,
            },
        })
    }
}

fn guest_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GATEWAYD_GUEST_DIR") {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("edge-apps/components")
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        Engine::new(&config).unwrap()
    })
}

fn component(name: &str) -> Component {
    let path = guest_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run edge-apps/build-guests.sh first (or set GATEWAYD_GUEST_DIR)",
        path.display()
    );
    Component::from_file(engine(), &path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

struct Instance {
    store: Store<Host>,
    app: EdgeApp,
}

impl Instance {
    fn start(name: &str, kv: HashMap<String, Vec<u8>>) -> Instance {
        let mut linker = Linker::<Host>::new(engine());
        EdgeApp::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h).unwrap();
        let mut store = Store::new(engine(), Host::new(kv));
        store.limiter(|h| &mut h.limits);
        store.set_fuel(FUEL).unwrap();
        let app = EdgeApp::instantiate(&mut store, &component(name), &linker)
            .unwrap_or_else(|e| panic!("{name}: instantiate: {e:#}"));
        Instance { store, app }
    }

    fn try_init(&mut self, config: &str) -> wasmtime::Result<Result<(), String>> {
        self.store.set_fuel(FUEL).unwrap();
        self.app.call_init(&mut self.store, config)
    }

    fn init(name: &str, config: &str) -> Instance {
        Self::init_with_kv(name, config, HashMap::new())
    }

    fn init_with_kv(name: &str, config: &str, kv: HashMap<String, Vec<u8>>) -> Instance {
        let mut i = Instance::start(name, kv);
        i.try_init(config).unwrap().unwrap();
        i
    }

    fn try_process(
        &mut self,
        readings: &[Reading],
        window: Option<Window>,
    ) -> wasmtime::Result<Result<Output, String>> {
        self.store.set_fuel(FUEL).unwrap();
        self.app.call_process(&mut self.store, readings, window)
    }

    fn process(&mut self, readings: &[Reading], window: Option<Window>) -> Output {
        self.try_process(readings, window).unwrap().unwrap()
    }
}

fn meta() -> Metadata {
    Metadata {
        rssi: Some(-87.0),
        snr: None,
        battery: None,
        gateway_eui: None,
        source: Some("coap".into()),
        extra: vec![("k".into(), "v".into())],
    }
}

fn m(name: &str, unit: Option<&str>, value: Value) -> Measurement {
    Measurement {
        name: name.into(),
        unit: unit.map(Into::into),
        value: Some(value),
        sum: None,
    }
}

fn reading(device: &str, time_us: i64, measurements: Vec<Measurement>) -> Reading {
    Reading {
        device: device.into(),
        time_us,
        measurements,
        meta: meta(),
    }
}

fn float(device: &str, time_us: i64, name: &str, unit: &str, v: f64) -> Reading {
    reading(device, time_us, vec![m(name, Some(unit), Value::Float(v))])
}

fn value(r: &Reading, name: &str) -> (Option<String>, f64) {
    let m = r
        .measurements
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} in {r:?}"));
    match m.value {
        Some(Value::Float(v)) => (m.unit.clone(), v),
        ref other => panic!("{name}: {other:?}"),
    }
}

fn codes(alerts: &[Alert]) -> Vec<(&str, &str, Severity)> {
    alerts
        .iter()
        .map(|a| (a.device.as_str(), a.code.as_str(), a.severity))
        .collect()
}

fn is_pass(v: &Verdict) -> bool {
    matches!(v, Verdict::Pass)
}

#[test]
fn threshold_alert_fires_once_on_the_edge() {
    let config =
        r#"{"measurement":"temperature","above":30.0,"hysteresis":1.0,"severity":"critical"}"#;
    let mut app = Instance::init("threshold-alert", config);
    let temps = [25.0, 31.0, 32.0, 29.5, 28.0, 33.0];
    let mut batch: Vec<Reading> = temps
        .iter()
        .enumerate()
        .map(|(i, t)| float("coap:a", i as i64, "temperature", "Cel", *t))
        .collect();
    batch.push(float("coap:b", 9, "temperature", "Cel", 35.0));
    batch.push(float("coap:c", 9, "humidity", "%RH", 99.0));
    let out = app.process(&batch, None);
    // 31 crosses; 32 and 29.5 (within the 1.0 hysteresis) stay; 28 clears
    // (no clear alert by default); 33 crosses again.
    assert_eq!(
        codes(&out.alerts),
        [
            ("coap:a", "above-threshold", Severity::Critical),
            ("coap:a", "above-threshold", Severity::Critical),
            ("coap:b", "above-threshold", Severity::Critical),
        ]
    );
    assert_eq!(out.alerts[0].time_us, 1);
    assert!(
        out.alerts[0].message.contains("31"),
        "{}",
        out.alerts[0].message
    );
    assert!(out.verdicts.iter().all(is_pass) && out.emit.is_empty());
    // Still above: no new alert.
    let out = app.process(&[float("coap:a", 10, "temperature", "Cel", 34.0)], None);
    assert!(out.alerts.is_empty());

    // The state is in the kv store: a restarted instance does not re-alert.
    let kv = app.store.data().kv.clone();
    assert_eq!(kv.get("state/coap:a"), Some(&vec![1]));
    let mut restarted = Instance::init_with_kv("threshold-alert", config, kv);
    let out = restarted.process(&[float("coap:a", 11, "temperature", "Cel", 34.0)], None);
    assert!(out.alerts.is_empty());

    // Below threshold and clear alerts.
    let mut app = Instance::init(
        "threshold-alert",
        r#"{"below":5,"clear_alert":true,"severity":"info"}"#,
    );
    let batch: Vec<Reading> = [6.0, 4.0, 3.0, 6.0]
        .iter()
        .map(|t| float("x", 0, "temperature", "Cel", *t))
        .collect();
    let out = app.process(&batch, None);
    assert_eq!(
        codes(&out.alerts),
        [
            ("x", "below-threshold", Severity::Info),
            ("x", "threshold-cleared", Severity::Info)
        ]
    );

    let mut bad = Instance::start("threshold-alert", HashMap::new());
    let err = bad.try_init(r#"{"measurement":"t"}"#).unwrap().unwrap_err();
    assert!(err.contains("above"), "{err}");
    let err = bad.try_init(r#"{"above":"hot"}"#).unwrap().unwrap_err();
    assert!(err.contains("`above` must be a number"), "{err}");
    let err = bad.try_init("{not json").unwrap().unwrap_err();
    assert!(err.starts_with("config: invalid JSON"), "{err}");
}

#[test]
fn unit_convert_replaces_converted_readings() {
    let mut app = Instance::init("unit-convert", r#"{"from":"Cel","to":"K","decimals":2}"#);
    let batch = [
        float("a", 1, "temperature", "Cel", 20.0),
        float("a", 1, "humidity", "%RH", 50.0),
        reading(
            "b",
            2,
            vec![
                m("temperature", Some("Cel"), Value::Float(-273.15)),
                m("label", None, Value::Text("x".into())),
            ],
        ),
        float("c", 3, "temperature", "K", 300.0),
    ];
    let out = app.process(&batch, None);
    assert_eq!(out.verdicts.len(), 3, "{:?}", out.verdicts);
    let Verdict::Replace(r) = &out.verdicts[0] else {
        panic!("{:?}", out.verdicts[0])
    };
    assert_eq!(value(r, "temperature"), (Some("K".into()), 293.15));
    assert_eq!((r.device.as_str(), r.time_us, &r.meta), ("a", 1, &meta()));
    assert!(is_pass(&out.verdicts[1]));
    let Verdict::Replace(r) = &out.verdicts[2] else {
        panic!("{:?}", out.verdicts[2])
    };
    assert_eq!(value(r, "temperature"), (Some("K".into()), 0.0));
    assert_eq!(r.measurements[1], batch[2].measurements[1]);

    let mut app = Instance::init("unit-convert", r#"{"from":"Cel","to":"degF"}"#);
    let out = app.process(&[float("a", 1, "t", "Cel", 100.0)], None);
    let Verdict::Replace(r) = &out.verdicts[0] else {
        panic!()
    };
    let (unit, v) = value(r, "t");
    assert_eq!(unit.as_deref(), Some("degF"));
    assert!((v - 212.0).abs() < 1e-9, "{v}");

    let mut app = Instance::init("unit-convert", r#"{"from":"Pa","to":"hPa"}"#);
    let mut p = float("a", 1, "pressure", "Pa", 101325.0);
    p.measurements[0].sum = Some(1000.0);
    let out = app.process(&[p], None);
    let Verdict::Replace(r) = &out.verdicts[0] else {
        panic!()
    };
    assert_eq!(value(r, "pressure"), (Some("hPa".into()), 1013.25));
    assert_eq!(r.measurements[0].sum, Some(10.0));

    let mut bad = Instance::start("unit-convert", HashMap::new());
    let err = bad
        .try_init(r#"{"from":"Cel","to":"hPa"}"#)
        .unwrap()
        .unwrap_err();
    assert!(err.contains("cannot convert Cel to hPa"), "{err}");
}

#[test]
fn lora_codec_decodes_payloads() {
    let mut app = Instance::init("lora-codec", "{}");
    let payload = |bytes: &[u8]| {
        reading(
            "lora:70b3d57ed0000001",
            5,
            vec![m("payload", None, Value::Data(bytes.to_vec()))],
        )
    };
    // 23.5 Cel (0x00eb), 55 %RH, 3300 mV; then -10.0 Cel (0xff9c), no
    // humidity (0xff), 2900 mV.
    let batch = [
        payload(&[0x00, 0xEB, 0x37, 0x0C, 0xE4]),
        payload(&[0x01, 0x02, 0x03]),
        float("coap:x", 1, "temperature", "Cel", 1.0),
        payload(&[0xFF, 0x9C, 0xFF, 0x0B, 0x54]),
    ];
    let out = app.process(&batch, None);
    assert_eq!(out.verdicts.len(), 4);
    let Verdict::Replace(r) = &out.verdicts[0] else {
        panic!("{:?}", out.verdicts[0])
    };
    assert_eq!(value(r, "temperature"), (Some("Cel".into()), 23.5));
    assert_eq!(value(r, "humidity"), (Some("%RH".into()), 55.0));
    assert_eq!(value(r, "battery"), (Some("V".into()), 3.3));
    assert!(r.measurements.iter().all(|m| m.name != "payload"));
    assert_eq!(
        (r.device.as_str(), r.time_us, &r.meta),
        ("lora:70b3d57ed0000001", 5, &meta())
    );
    assert!(is_pass(&out.verdicts[1]) && is_pass(&out.verdicts[2]));
    let Verdict::Replace(r) = &out.verdicts[3] else {
        panic!()
    };
    assert_eq!(value(r, "temperature").1, -10.0);
    assert!(r.measurements.iter().all(|m| m.name != "humidity"));
    assert_eq!(
        codes(&out.alerts),
        [("lora:70b3d57ed0000001", "codec-error", Severity::Warning)]
    );
    assert!(
        out.alerts[0].message.contains("010203"),
        "{}",
        out.alerts[0].message
    );
}

#[test]
fn downsample_emits_window_aggregates() {
    let mut app = Instance::init("downsample", "{}");
    let batch = [
        float("d1", 1_000_000, "temperature", "Cel", 20.0),
        float("d1", 2_000_000, "temperature", "Cel", 24.0),
        reading(
            "d1",
            3_000_000,
            vec![
                m("temperature", Some("Cel"), Value::Float(22.0)),
                m("humidity", Some("%RH"), Value::Float(50.0)),
                m("door", None, Value::Boolean(true)),
            ],
        ),
        float("d2", 4_000_000, "temperature", "Cel", 10.0),
    ];
    let window = Window {
        start_us: 0,
        end_us: 10_000_000,
    };
    let out = app.process(&batch, Some(window));
    assert!(out.verdicts.is_empty() && out.alerts.is_empty());
    assert_eq!(out.emit.len(), 2);
    let d1 = &out.emit[0];
    assert_eq!((d1.device.as_str(), d1.time_us), ("d1", 10_000_000));
    let cel = Some("Cel".to_string());
    assert_eq!(value(d1, "temperature_mean"), (cel.clone(), 22.0));
    assert_eq!(value(d1, "temperature_min"), (cel.clone(), 20.0));
    assert_eq!(value(d1, "temperature_max"), (cel.clone(), 24.0));
    assert_eq!(value(d1, "temperature_count"), (None, 3.0));
    assert_eq!(value(d1, "humidity_mean"), (Some("%RH".into()), 50.0));
    assert_eq!(value(d1, "humidity_count"), (None, 1.0));
    assert_eq!(d1.measurements.len(), 8, "door is not numeric");
    let d2 = &out.emit[1];
    assert_eq!(value(d2, "temperature_mean"), (cel, 10.0));
    // An empty window emits nothing.
    assert!(app.process(&[], Some(window)).emit.is_empty());
}

#[test]
fn vibration_anomaly_scores_blocks_of_32() {
    let mut app = Instance::init("vibration-anomaly", r#"{"threshold":0.05}"#);
    let samples = |device: &str, n: usize, v: f64| -> Vec<Reading> {
        (0..n)
            .map(|i| float(device, i as i64, "vibration", "m/s2", v))
            .collect()
    };
    // Echo model: reconstruction error 0. 40 samples: one block, 8 wait.
    let out = app.process(&samples("m1", 40, 1.0), None);
    assert_eq!(out.emit.len(), 1);
    assert_eq!(value(&out.emit[0], "anomaly_score"), (None, 0.0));
    assert_eq!(out.emit[0].time_us, 31);
    assert!(out.alerts.is_empty());
    assert_eq!(
        app.store.data().infer_calls,
        [("vibration-ae".to_string(), vec![1, 32])]
    );
    // Model returning zeros: error = mean(1.0^2) = 1.0 > 0.05. The 8 waiting
    // samples + 24 new ones make the second block.
    app.store.data_mut().infer = Infer::Zeros;
    let out = app.process(&samples("m1", 24, 1.0), None);
    assert_eq!(value(&out.emit[0], "anomaly_score"), (None, 1.0));
    assert_eq!(
        codes(&out.alerts),
        [("m1", "vibration-anomaly", Severity::Critical)]
    );
    // Too few samples: nothing yet.
    let out = app.process(&samples("m2", 31, 1.0), None);
    assert!(out.emit.is_empty());

    let mut bad = Instance::start("vibration-anomaly", HashMap::new());
    assert!(bad.try_init("{}").unwrap().is_err());
}

#[test]
fn sample_every_n_wat_passes_every_nth() {
    let mut app = Instance::init("sample-every-n", r#"{ "every" : 3 }"#);
    let batch: Vec<Reading> = (0..7)
        .map(|i| float("a", i, "temperature", "Cel", i as f64))
        .collect();
    let passed = |out: &Output| out.verdicts.iter().map(is_pass).collect::<Vec<_>>();
    let out = app.process(&batch, None);
    assert_eq!(passed(&out), [true, false, false, true, false, false, true]);
    assert!(out
        .verdicts
        .iter()
        .all(|v| matches!(v, Verdict::Pass | Verdict::Drop)));
    assert!(out.emit.is_empty() && out.alerts.is_empty());
    // The count carries over between calls.
    assert_eq!(
        passed(&app.process(&batch[..3], None)),
        [false, false, true]
    );
    assert!(app.process(&[], None).verdicts.is_empty());
    // Many calls: the bump heap is reset after each one.
    for _ in 0..200 {
        assert_eq!(app.process(&batch, None).verdicts.len(), 7);
    }

    // Default N = 10; "every" as a value (not a key) is ignored.
    let mut app = Instance::init("sample-every-n", r#"{"name":"every"}"#);
    let many: Vec<Reading> = (0..21).map(|i| float("a", i, "t", "Cel", 0.0)).collect();
    let out = app.process(&many, None);
    let passing: Vec<usize> = (0..21).filter(|i| is_pass(&out.verdicts[*i])).collect();
    assert_eq!(passing, [0, 10, 20]);

    let mut bad = Instance::start("sample-every-n", HashMap::new());
    for config in [r#"{"every":0}"#, r#"{"every":"x"}"#, r#"{"every":-1}"#] {
        let err = bad.try_init(config).unwrap().unwrap_err();
        assert_eq!(err, "`every` must be a positive integer", "{config}");
    }
    bad.try_init(r#"{"every":1}"#).unwrap().unwrap();
    assert!(bad.process(&batch, None).verdicts.iter().all(is_pass));
}

fn trap_of(e: &wasmtime::Error) -> Option<Trap> {
    e.downcast_ref::<Trap>().copied()
}

#[test]
fn hostile_guests_misbehave_as_designed() {
    let batch = [float("a", 1, "temperature", "Cel", 1.0)];

    let mut spin = Instance::init("hostile-spin", "{}");
    let e = spin.try_process(&batch, None).unwrap_err();
    assert_eq!(trap_of(&e), Some(Trap::OutOfFuel), "{e:?}");

    let mut bomb = Instance::init("hostile-membomb", "{}");
    let e = bomb.try_process(&batch, None).unwrap_err();
    assert!(format!("{e:?}").contains("memory"), "{e:?}");

    let mut trap = Instance::init("hostile-trap", "{}");
    let e = trap.try_process(&batch, None).unwrap_err();
    assert_eq!(trap_of(&e), Some(Trap::UnreachableCodeReached), "{e:?}");
    let logs = &trap.store.data().logs;
    assert!(
        logs.iter().any(|(l, m)| *l == Level::Error
            && m.starts_with("panic: hostile-trap: refusing 1 readings")),
        "{logs:?}"
    );

    let mut flood = Instance::init("hostile-flood", r#"{"count":5000}"#);
    assert_eq!(flood.process(&batch, None).emit.len(), 5000);
    let mut flood = Instance::init("hostile-flood", "{}");
    let e = flood.try_process(&batch, None).unwrap_err();
    assert!(format!("{e:?}").contains("memory"), "{e:?}");

    let mut initfail = Instance::start("hostile-initfail", HashMap::new());
    let err = initfail.try_init("{}").unwrap().unwrap_err();
    assert!(err.contains("never starts"), "{err}");
    let err = initfail.try_process(&batch, None).unwrap().unwrap_err();
    assert!(err.contains("before a successful init"), "{err}");
}

#[test]
fn every_component_starts_within_the_memory_limit() {
    for name in [
        "threshold-alert",
        "downsample",
        "unit-convert",
        "lora-codec",
        "vibration-anomaly",
        "sample-every-n",
        "hostile-spin",
        "hostile-membomb",
        "hostile-trap",
        "hostile-flood",
        "hostile-initfail",
    ] {
        let i = Instance::start(name, HashMap::new());
        drop(i);
        let manifest = guest_dir().join(format!("{name}.manifest.toml"));
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        assert!(text.contains(&format!("name = \"{name}\"")), "{name}");
    }
}
