//! `[uplink]` validation: every error names the dotted key.

use std::path::{Path, PathBuf};
use std::process::Command;

use gatewayd_tests::certs::Pki;
use gatewayd_uplink::{Protocol, TlsConfig, Uplink, UplinkConfig, UplinkError};

fn err_key(cfg: &UplinkConfig) -> String {
    let e = cfg
        .validate("uplink")
        .expect_err("config should be invalid");
    assert!(e.to_string().starts_with(&e.key), "{e}");
    e.key
}

fn tls_config(pki: &Pki) -> UplinkConfig {
    UplinkConfig {
        broker: "mqtts://127.0.0.1:8883".into(),
        tls: TlsConfig {
            ca: Some(pki.ca_cert.clone()),
            ..TlsConfig::default()
        },
        ..UplinkConfig::default()
    }
}

#[test]
fn default_config_is_valid() {
    UplinkConfig::default().validate("uplink").unwrap();
}

#[test]
fn parses_with_serde_names() {
    let cfg: UplinkConfig = serde_json::from_value(serde_json::json!({
        "broker": "mqtts://broker.example.com",
        "protocol": "3.1.1",
        "tls": { "ca": "/etc/ca.pem" }
    }))
    .unwrap();
    assert_eq!(cfg.protocol, Protocol::V311);
    assert_eq!(cfg.max_inflight, 32);
    let p: Protocol = serde_json::from_str("\"5\"").unwrap();
    assert_eq!(p, Protocol::V5);
    let bad = serde_json::from_value::<UplinkConfig>(serde_json::json!({ "brokr": "x" }));
    assert!(bad.unwrap_err().to_string().contains("brokr"));
}

#[test]
fn bad_broker_url_names_the_key() {
    for url in [
        "http://127.0.0.1:1883",
        "mqtt://",
        "mqtt://host:0",
        "mqtt://host:99999",
        "mqtt://host:1883/path",
        "mqtt://user@host",
        "mqtt://[::1",
        "mqtt://bad host",
        "127.0.0.1:1883",
    ] {
        let cfg = UplinkConfig {
            broker: url.into(),
            ..UplinkConfig::default()
        };
        assert_eq!(err_key(&cfg), "uplink.broker", "{url}");
    }
    for url in [
        "mqtt://[::1]:1883",
        "mqtt://localhost",
        "mqtt://broker-1.example.com:1884",
    ] {
        let cfg = UplinkConfig {
            broker: url.into(),
            ..UplinkConfig::default()
        };
        cfg.validate("uplink").unwrap();
    }
}

#[test]
fn numeric_ranges_name_the_key() {
    type Edit = fn(&mut UplinkConfig);
    let cases: [(Edit, &str); 7] = [
        (|c| c.max_inflight = 0, "uplink.max_inflight"),
        (|c| c.max_packet_bytes = 10, "uplink.max_packet_bytes"),
        (|c| c.keep_alive_secs = 70_000, "uplink.keep_alive_secs"),
        (|c| c.reconnect_min_ms = 0, "uplink.reconnect_min_ms"),
        (|c| c.reconnect_max_ms = 1, "uplink.reconnect_max_ms"),
        (|c| c.topic_prefix = "a/#".into(), "uplink.topic_prefix"),
        (|c| c.password = Some("x".into()), "uplink.password"),
    ];
    for (f, key) in cases {
        let mut cfg = UplinkConfig::default();
        f(&mut cfg);
        assert_eq!(err_key(&cfg), key);
    }
}

#[test]
fn mqtts_requires_ca() {
    let cfg = UplinkConfig {
        broker: "mqtts://127.0.0.1:8883".into(),
        ..UplinkConfig::default()
    };
    assert_eq!(err_key(&cfg), "uplink.tls.ca");
}

#[test]
fn tls_settings_without_mqtts_are_refused() {
    let cfg = UplinkConfig {
        tls: TlsConfig {
            ca: Some("/etc/ca.pem".into()),
            ..TlsConfig::default()
        },
        ..UplinkConfig::default()
    };
    assert_eq!(err_key(&cfg), "uplink.tls.ca");
}

#[test]
fn cert_without_key_names_the_key() {
    let pki = Pki::new().unwrap();
    let client = pki.client("gw").unwrap();
    let mut cfg = tls_config(&pki);
    cfg.tls.cert = Some(client.cert.clone());
    assert_eq!(err_key(&cfg), "uplink.tls.key");
    cfg.tls.cert = None;
    cfg.tls.key = Some(client.key.clone());
    assert_eq!(err_key(&cfg), "uplink.tls.cert");
}

#[test]
fn unreadable_or_garbage_files_name_the_key() {
    let pki = Pki::new().unwrap();
    let client = pki.client("gw").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let missing = dir.path().join("missing.pem");

    let mut cfg = tls_config(&pki);
    cfg.tls.ca = Some(missing.clone());
    assert_eq!(err_key(&cfg), "uplink.tls.ca");
    cfg.tls.ca = Some(garbage.clone());
    assert_eq!(err_key(&cfg), "uplink.tls.ca");
    cfg.tls.ca = Some(dir.path().to_path_buf());
    assert_eq!(err_key(&cfg), "uplink.tls.ca");

    let mut cfg = tls_config(&pki);
    cfg.tls.cert = Some(garbage.clone());
    cfg.tls.key = Some(client.key.clone());
    assert_eq!(err_key(&cfg), "uplink.tls.cert");
    cfg.tls.cert = Some(client.cert.clone());
    cfg.tls.key = Some(missing);
    assert_eq!(err_key(&cfg), "uplink.tls.key");
    // A certificate is not a key.
    cfg.tls.key = Some(client.cert.clone());
    assert_eq!(err_key(&cfg), "uplink.tls.key");
}

#[test]
fn key_not_matching_cert_is_refused() {
    let pki = Pki::new().unwrap();
    let a = pki.client("a").unwrap();
    let b = pki.client("b").unwrap();
    let mut cfg = tls_config(&pki);
    cfg.tls.cert = Some(a.cert.clone());
    cfg.tls.key = Some(b.key.clone());
    assert_eq!(err_key(&cfg), "uplink.tls.key");
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `key` (any format), via the openssl CLI.
fn self_signed(dir: &Path, key: &Path, name: &str) -> PathBuf {
    let cert = dir.join(format!("{name}.crt"));
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-days",
        "30",
        "-subj",
        "/CN=gw",
    ]);
    cert
}

#[test]
fn client_keys_in_pkcs8_sec1_and_rsa_formats_load() {
    gatewayd_tests::require::command("openssl");
    let pki = Pki::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // PKCS#8 (what the test PKI writes).
    let client = pki.client("gw").unwrap();
    let pem = std::fs::read_to_string(&client.key).unwrap();
    assert!(pem.contains("BEGIN PRIVATE KEY"));
    let mut cfg = tls_config(&pki);
    cfg.tls.cert = Some(client.cert.clone());
    cfg.tls.key = Some(client.key.clone());
    cfg.validate("uplink").unwrap();

    // SEC1 EC key.
    let sec1 = d.join("sec1.key");
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        sec1.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    cfg.tls.cert = Some(self_signed(d, &sec1, "sec1"));
    cfg.tls.key = Some(sec1);
    cfg.validate("uplink").unwrap();

    // PKCS#1 RSA key.
    let rsa = d.join("rsa.key");
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        rsa.to_str().unwrap(),
        "2048",
    ]);
    assert!(std::fs::read_to_string(&rsa)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    cfg.tls.cert = Some(self_signed(d, &rsa, "rsa"));
    cfg.tls.key = Some(rsa);
    cfg.validate("uplink").unwrap();
}

#[test]
fn invalid_gateway_id_is_refused() {
    for id in ["", "a/b", "a+", "#"] {
        assert!(matches!(
            Uplink::new(UplinkConfig::default(), id),
            Err(UplinkError::GatewayId(_))
        ));
    }
    let up = Uplink::new(UplinkConfig::default(), "gw-01").unwrap();
    assert_eq!(up.telemetry_topic(), "gatewayd/v1/gw-01/telemetry");
    assert_eq!(up.status_topic(), "gatewayd/v1/gw-01/status");
}

#[test]
fn new_reports_config_errors_with_the_key() {
    let cfg = UplinkConfig {
        broker: "ftp://x".into(),
        ..UplinkConfig::default()
    };
    let e = Uplink::new(cfg, "gw").unwrap_err();
    assert!(e.to_string().starts_with("uplink.broker:"), "{e}");
}
