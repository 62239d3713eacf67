//! Interoperability with the real libcoap client (`coap-client`, Debian
//! package libcoap3-bin). These tests fail, not skip, when it is missing.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::*;
use gatewayd_model::Value;

fn coap_client() -> PathBuf {
    if let Some(p) = std::env::var_os("COAP_CLIENT") {
        return PathBuf::from(p);
    }
    // libcoap3-bin installs coap-client (via alternatives) and its
    // TLS-flavoured variants; any of them speaks plain coap://.
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let names = [
        "coap-client",
        "coap-client-notls",
        "coap-client-gnutls",
        "coap-client-openssl",
    ];
    for name in names {
        for dir in dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([std::path::Path::new("/usr/bin")])
        {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "coap-client (libcoap3-bin) is not installed: run `make deps` \
         (or set COAP_CLIENT to its path)"
    );
}

async fn run_client(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(coap_client());
    // -B: libcoap's own give-up time; the hang guard is the outer bound.
    cmd.args(["-B", "20"]).args(args).kill_on_drop(true);
    within(cmd.output()).await.expect("coap-client runs")
}

/// The first CoAP error code (`4.xx` / `5.xx`) coap-client printed, if any.
/// (coap-client exits 0 on error responses; it prints the code instead.)
fn error_code(all: &str) -> Option<&str> {
    let b = all.as_bytes();
    (0..b.len().saturating_sub(3)).find_map(|i| {
        let w = &b[i..i + 4];
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        (boundary
            && matches!(w[0], b'4' | b'5')
            && w[1] == b'.'
            && w[2].is_ascii_digit()
            && w[3].is_ascii_digit())
        .then(|| &all[i..i + 4])
    })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn libcoap_client_post_is_ingested_and_answered_2_04() {
    let h = start(config()).await;
    let (mut readings, _writer) = committing_writer(h.ingest);
    let uri = format!("coap://127.0.0.1:{}/telemetry", h.addr.port());
    let out = run_client(&[
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        r#"[{"bn":"libcoap-1/","n":"t","u":"Cel","v":1.25}]"#,
        &uri,
    ])
    .await;
    let all = text(&out);
    assert!(out.status.success(), "coap-client failed: {all}");
    assert_eq!(error_code(&all), None, "{all}");
    let r = within(readings.recv()).await.unwrap();
    assert_eq!(r[0].device.as_str(), "coap:libcoap-1");
    assert_eq!(r[0].measurements[0].value, Some(Value::Float(1.25)));
    assert_eq!(h.stats.snapshot().accepted_requests, 1);
    h.shutdown.cancel();
    within(h.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn libcoap_client_cbor_post_from_file_is_ingested() {
    let h = start(config()).await;
    let (mut readings, _writer) = committing_writer(h.ingest);
    let dir = std::env::temp_dir().join(format!("gatewayd-coap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pack.cbor");
    // [{-2: "cbor-1/", 0: "t", 2: 2}]
    let mut cbor = vec![0x81, 0xA3, 0x21, 0x67];
    cbor.extend_from_slice(b"cbor-1/");
    cbor.extend_from_slice(&[0x00, 0x61, b't', 0x02, 0x02]);
    std::fs::write(&file, &cbor).unwrap();
    let uri = format!("coap://127.0.0.1:{}/telemetry", h.addr.port());
    let out = run_client(&[
        "-m",
        "post",
        "-t",
        "112",
        "-f",
        file.to_str().unwrap(),
        &uri,
    ])
    .await;
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "coap-client failed: {}", text(&out));
    assert_eq!(error_code(&text(&out)), None, "{}", text(&out));
    let r = within(readings.recv()).await.unwrap();
    assert_eq!(r[0].device.as_str(), "coap:cbor-1");
    assert_eq!(r[0].measurements[0].value, Some(Value::Float(2.0)));
    h.shutdown.cancel();
    within(h.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn libcoap_client_block_wise_post_is_reassembled() {
    let h = start(config()).await;
    let (mut readings, _writer) = committing_writer(h.ingest);
    let records: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"n":"m{i}","v":{i}}}"#))
        .collect();
    let body = format!(r#"[{{"bn":"blocky/"}},{}]"#, records.join(","));
    let uri = format!("coap://127.0.0.1:{}/telemetry", h.addr.port());
    let out = run_client(&["-m", "post", "-t", "110", "-b", "64", "-e", &body, &uri]).await;
    assert!(out.status.success(), "coap-client failed: {}", text(&out));
    assert_eq!(error_code(&text(&out)), None, "{}", text(&out));
    let r = within(readings.recv()).await.unwrap();
    assert_eq!(r[0].device.as_str(), "coap:blocky");
    assert_eq!(r[0].measurements.len(), 30);
    assert!(h.stats.snapshot().blocks_continued > 0);
    h.shutdown.cancel();
    within(h.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn libcoap_client_malformed_post_gets_4_00_with_the_diagnostic() {
    let mut h = start(config()).await;
    let uri = format!("coap://127.0.0.1:{}/telemetry", h.addr.port());
    let out = run_client(&[
        "-m",
        "post",
        "-t",
        "110",
        "-e",
        r#"[{"n":"t","v":"warm"}]"#,
        &uri,
    ])
    .await;
    let all = text(&out);
    assert_eq!(error_code(&all), Some("4.00"), "coap-client output: {all}");
    assert!(
        all.contains(r#"record 0: field "v" must be a number"#),
        "expected the diagnostic in coap-client output: {all}"
    );
    h.assert_no_ingest();
    assert_eq!(h.stats.snapshot().rejected_bad_request, 1);
    h.stop().await.unwrap();
}
