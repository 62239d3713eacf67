//! Runs the built `gatewayd-app` binary through a full key → pack → verify
//! → sign → inspect cycle.

use std::path::Path;
use std::process::{Command, Output};

fn app(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatewayd-app"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run gatewayd-app")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[track_caller]
fn fails(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

const MANIFEST: &str = r#"
schema = 1

[app]
name = "threshold-alert"
version = "1.2.3"
description = "alerts above a threshold"
module = "app.wasm"

[[select]]
device = "coap:*"
measurements = ["temperature"]

[[model]]
name = "vibration-ae"
file = "model.onnx"

[[model]]
name = "other"
file = "other.onnx"

[config]
threshold = 30.0
"#;

#[test]
fn keygen_pack_verify_sign_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("manifest.toml"), MANIFEST).unwrap();
    std::fs::write(d.join("app.wasm"), b"\0asm component").unwrap();
    // model.onnx is found next to the manifest; other.onnx is given by --model.
    std::fs::write(d.join("model.onnx"), b"onnx one").unwrap();
    std::fs::create_dir(d.join("elsewhere")).unwrap();
    std::fs::write(d.join("elsewhere/o.onnx"), b"onnx two").unwrap();

    let out = ok(&app(
        d,
        &[
            "keygen",
            "--algorithm",
            "ed25519",
            "--out",
            "ed",
            "--comment",
            "ci",
        ],
    ));
    assert!(out.contains("ed.key"), "{out}");
    ok(&app(
        d,
        &["keygen", "--algorithm", "ml-dsa-65", "--out", "pq"],
    ));
    ok(&app(
        d,
        &["keygen", "--algorithm", "ed25519", "--out", "stranger"],
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ed.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Refuses to overwrite.
    let before = std::fs::read(d.join("ed.key")).unwrap();
    let err = fails(
        &app(d, &["keygen", "--algorithm", "ed25519", "--out", "ed"]),
        1,
    );
    assert!(err.starts_with("gatewayd-app: error: "), "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(d.join("ed.key")).unwrap(), before);
    // Usage error.
    fails(&app(d, &["keygen", "--algorithm", "rsa", "--out", "x"]), 2);

    ok(&app(
        d,
        &[
            "pack",
            "--manifest",
            "manifest.toml",
            "--module",
            "app.wasm",
            "--model",
            "other=elsewhere/o.onnx",
            "--key",
            "ed.key",
            "--out",
            "app.gwapp",
        ],
    ));

    let out = ok(&app(d, &["verify", "--trust", "ed.pub", "app.gwapp"]));
    assert!(
        out.starts_with("ok: threshold-alert 1.2.3 signed by "),
        "{out}"
    );
    assert!(out.contains("(ed25519)"), "{out}");

    let err = fails(
        &app(d, &["verify", "--trust", "stranger.pub", "app.gwapp"]),
        1,
    );
    assert!(err.starts_with("gatewayd-app: error: "), "{err}");
    assert!(err.contains("untrusted"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Require ML-DSA: refused until the bundle is also signed with it.
    let require = [
        "verify",
        "--trust",
        "ed.pub",
        "--trust",
        "pq.pub",
        "--require",
        "ed25519,ml-dsa-65",
        "app.gwapp",
    ];
    let err = fails(&app(d, &require), 1);
    assert!(err.contains("ml-dsa-65"), "{err}");
    ok(&app(d, &["sign", "--key", "pq.key", "app.gwapp"]));
    let out = ok(&app(d, &require));
    assert!(
        out.contains("(ml-dsa-65)") && out.contains("(ed25519)"),
        "{out}"
    );
    // No temporary file left behind.
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());

    let out = ok(&app(d, &["inspect", "app.gwapp"]));
    for needle in [
        "threshold-alert 1.2.3",
        "app.wasm",
        "model.onnx",
        "other.onnx",
        "ml-dsa-65",
        "ed25519",
        "NOT verified",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let out = ok(&app(d, &["inspect", "--json", "app.gwapp"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["manifest"]["app"]["name"], "threshold-alert");
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(v["files"].as_array().unwrap().len(), 4);

    // A corrupted bundle is refused with exit 1.
    let mut bytes = std::fs::read(d.join("app.gwapp")).unwrap();
    bytes.truncate(700);
    std::fs::write(d.join("bad.gwapp"), bytes).unwrap();
    let err = fails(&app(d, &["verify", "--trust", "ed.pub", "bad.gwapp"]), 1);
    assert!(err.starts_with("gatewayd-app: error: "), "{err}");
}
