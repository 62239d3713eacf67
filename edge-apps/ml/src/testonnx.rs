//! Test-only: a minimal ONNX (protobuf) writer, to build tiny models with
//! particular properties (symbolic dims, two inputs, int inputs, one-value
//! outputs) without Python.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    key(out, field, 0);
    varint(out, v as u64);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes(out, field, s.as_bytes());
}

pub const FLOAT: i64 = 1;
pub const INT64: i64 = 7;

/// A dimension of a graph input or output.
#[derive(Clone, Copy)]
pub enum Dim<'a> {
    Value(i64),
    Param(&'a str),
}

/// ValueInfoProto { name, type: TypeProto { tensor_type { elem_type, shape } } }
pub fn value_info(name: &str, elem_type: i64, dims: &[Dim]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Dim::Value(v) => int(&mut dim, 1, *v),
            Dim::Param(p) => string(&mut dim, 2, p),
        }
        bytes(&mut shape, 1, &dim);
    }
    let mut tensor_type = Vec::new();
    int(&mut tensor_type, 1, elem_type);
    bytes(&mut tensor_type, 2, &shape);
    let mut ty = Vec::new();
    bytes(&mut ty, 1, &tensor_type);
    let mut vi = Vec::new();
    string(&mut vi, 1, name);
    bytes(&mut vi, 2, &ty);
    vi
}

/// TensorProto (float initializer) { dims, data_type, raw_data, name }
pub fn initializer(name: &str, dims: &[i64], data: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dims {
        int(&mut t, 1, *d);
    }
    int(&mut t, 2, FLOAT);
    string(&mut t, 8, name);
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes(&mut t, 9, &raw);
    t
}

/// NodeProto { input, output, name, op_type }
pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        string(&mut n, 1, i);
    }
    for o in outputs {
        string(&mut n, 2, o);
    }
    string(&mut n, 3, op);
    string(&mut n, 4, op);
    n
}

/// ModelProto { ir_version 7, opset 13, graph }
pub fn model(
    nodes: &[Vec<u8>],
    inits: &[Vec<u8>],
    inputs: &[Vec<u8>],
    outputs: &[Vec<u8>],
) -> Vec<u8> {
    let mut g = Vec::new();
    for n in nodes {
        bytes(&mut g, 1, n);
    }
    string(&mut g, 2, "test");
    for i in inits {
        bytes(&mut g, 5, i);
    }
    for i in inputs {
        bytes(&mut g, 11, i);
    }
    for o in outputs {
        bytes(&mut g, 12, o);
    }
    let mut opset = Vec::new();
    string(&mut opset, 1, "");
    int(&mut opset, 2, 13);
    let mut m = Vec::new();
    int(&mut m, 1, 7);
    string(&mut m, 2, "gatewayd-ml-tests");
    bytes(&mut m, 7, &g);
    bytes(&mut m, 8, &opset);
    m
}

/// `y = x` with the given input dims.
pub fn identity(dims: &[Dim]) -> Vec<u8> {
    model(
        &[node("Identity", &["x"], &["y"])],
        &[],
        &[value_info("x", FLOAT, dims)],
        &[value_info("y", FLOAT, dims)],
    )
}

/// `y[1,1] = x[1,n] · w`, w an `[n,1]` column: with w = 1/n, the mean.
pub fn dot(w: &[f32]) -> Vec<u8> {
    let n = w.len() as i64;
    model(
        &[node("MatMul", &["x", "w"], &["y"])],
        &[initializer("w", &[n, 1], w)],
        &[value_info("x", FLOAT, &[Dim::Value(1), Dim::Value(n)])],
        &[value_info("y", FLOAT, &[Dim::Value(1), Dim::Value(1)])],
    )
}

/// `y = a + b`: two inputs.
pub fn add_two() -> Vec<u8> {
    let d = [Dim::Value(1), Dim::Value(4)];
    model(
        &[node("Add", &["a", "b"], &["y"])],
        &[],
        &[value_info("a", FLOAT, &d), value_info("b", FLOAT, &d)],
        &[value_info("y", FLOAT, &d)],
    )
}

/// The committed example model and its fixtures, `edge-apps/models/vibration-ae/`.
pub mod vibration_ae {
    use std::path::PathBuf;

    pub fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/vibration-ae")
    }

    pub fn bytes() -> Vec<u8> {
        std::fs::read(dir().join("model.onnx")).expect("read model.onnx")
    }

    pub struct Window {
        pub kind: String,
        pub x: Vec<f32>,
        pub mse: f64,
    }

    /// `healthy.json` or `anomalous.json`: (threshold, windows).
    pub fn windows(file: &str) -> (f64, Vec<Window>) {
        let text = std::fs::read_to_string(dir().join(file)).expect("read fixture");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("fixture json");
        let threshold = doc["threshold"].as_f64().expect("threshold");
        let windows = doc["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .map(|w| Window {
                kind: w["kind"].as_str().expect("kind").to_owned(),
                x: w["x"]
                    .as_array()
                    .expect("x")
                    .iter()
                    .map(|v| v.as_f64().expect("number") as f32)
                    .collect(),
                mse: w["mse"].as_f64().expect("mse"),
            })
            .collect();
        (threshold, windows)
    }

    /// The threshold the README states.
    pub fn readme_threshold() -> f64 {
        let readme = std::fs::read_to_string(dir().join("README.md")).expect("README");
        let line = readme
            .lines()
            .find(|l| l.starts_with("Threshold:"))
            .expect("a `Threshold:` line in the README");
        line.trim_start_matches("Threshold:")
            .trim()
            .trim_matches('*')
            .trim_matches('`')
            .parse()
            .expect("threshold number")
    }
}
