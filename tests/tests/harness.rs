//! Self-tests of the shared harness against the real tools.

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use gatewayd_tests::certs::{foreign_client, ClientCert, Pki};
use gatewayd_tests::mosquitto::{Mosquitto, MosquittoOptions};
use gatewayd_tests::ports::{free_tcp_port, free_udp_port, wait_for_tcp};
use gatewayd_tests::postgres::Postgres;
use gatewayd_tests::process::spawn;
use gatewayd_tests::require;

const WAIT: Duration = Duration::from_secs(30);

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `mosquitto_sub` for one message on `topic` (with a 20 s broker-side
/// timeout), started in the background; `mosquitto_pub` then publishes.
fn pub_sub(
    port: u16,
    tls: Option<(&Pki, Option<&ClientCert>)>,
    topic: &str,
    msg: &str,
) -> Result<String, String> {
    let args = |cmd: &mut Command| {
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-q",
            "1",
        ]);
        if let Some((pki, client)) = tls {
            cmd.arg("--cafile").arg(&pki.ca_cert);
            if let Some(c) = client {
                cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
            }
        }
    };
    let mut sub = Command::new(require::path("mosquitto_sub"));
    args(&mut sub);
    sub.args(["-C", "1", "-W", "20", "-i", &format!("sub-{topic}")]);
    let sub = spawn(sub).map_err(|e| e.to_string())?;
    // Publish until the subscriber got it (it may not be subscribed yet) or failed.
    for _ in 0..100 {
        let mut p = Command::new(require::path("mosquitto_pub"));
        args(&mut p);
        p.args(["-m", msg]);
        let out = run(&mut p);
        if !out.status.success() {
            return Err(format!("mosquitto_pub failed: {}", show(&out)));
        }
        if let Ok(status) = sub.wait_exit(Duration::from_millis(200)) {
            return if status.success() {
                Ok(sub.log().trim().to_owned())
            } else {
                Err(format!("mosquitto_sub failed ({status}): {}", sub.log()))
            };
        }
    }
    Err(format!("mosquitto_sub received nothing: {}", sub.log()))
}

#[test]
fn ports_are_distinct_and_free() {
    let tcp: Vec<u16> = (0..50).map(|_| free_tcp_port()).collect();
    let udp: Vec<u16> = (0..50).map(|_| free_udp_port()).collect();
    let mut all_tcp = tcp.clone();
    all_tcp.sort();
    all_tcp.dedup();
    assert_eq!(
        all_tcp.len(),
        tcp.len(),
        "a TCP port handed out twice: {tcp:?}"
    );
    for p in &tcp {
        std::net::TcpListener::bind(("127.0.0.1", *p)).expect("free TCP port is bindable");
    }
    for p in &udp {
        std::net::UdpSocket::bind(("127.0.0.1", *p)).expect("free UDP port is bindable");
    }
    let p = free_tcp_port();
    assert!(wait_for_tcp(p, Duration::from_millis(300)).is_err());
    let _l = std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
    wait_for_tcp(p, WAIT).unwrap();
}

#[test]
fn child_guard_captures_output_and_terminates() {
    let mut cmd = Command::new("sh");
    // "trapped" is printed once the TERM trap is installed: terminating
    // before that would kill the shell by the signal (no exit code).
    cmd.args(["-c", "echo hello-out; echo hello-err >&2; trap 'echo got-term; exit 3' TERM; echo trapped; while :; do sleep 0.05; done"]);
    let mut child = spawn(cmd).unwrap();
    child.wait_for_log("hello-out", WAIT).unwrap();
    child.wait_for_log("hello-err", WAIT).unwrap();
    child.wait_for_log("trapped", WAIT).unwrap();
    assert!(child.is_running());
    let status = child.terminate_within(WAIT).unwrap();
    assert_eq!(status.code(), Some(3), "{}", child.log());
    assert!(child.log().contains("got-term"));
    // Exited processes: clear error with the log.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo bye; exit 7"]);
    let child = spawn(cmd).unwrap();
    let err = child
        .wait_for_log("never printed", WAIT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited") && err.contains("bye"), "{err}");
}

#[test]
fn child_guard_kill9_and_drop_kill() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"]);
    let mut child = spawn(cmd).unwrap();
    child.wait_for_log("up", WAIT).unwrap();
    let pid = child.pid();
    child.kill9();
    assert!(!child.is_running());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || proc_is_gone_or_other(pid));

    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    let child = spawn(cmd).unwrap();
    let pid = child.pid();
    drop(child);
    assert!(
        proc_is_gone_or_other(pid),
        "child {pid} survived the drop of its guard"
    );
}

/// The pid is gone, or has been reused by something that is not our child.
fn proc_is_gone_or_other(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // Field 4 is the parent pid.
            let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
            let ppid: u32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            ppid != std::process::id()
        }
    }
}

#[test]
#[should_panic(expected = "`definitely-not-a-tool-xyz` not found: run `make deps`")]
fn require_panics_with_instructions() {
    require::command("definitely-not-a-tool-xyz");
}

#[test]
fn require_finds_sbin_tools() {
    require::command("mosquitto");
    require::command("mosquitto_pub");
    require::command("coap-client");
    require::command("psql");
}

#[test]
fn mosquitto_starts_stops_restarts_and_keeps_sessions() {
    let mut m = Mosquitto::start(MosquittoOptions::default()).unwrap();
    assert!(m.url().starts_with("mqtt://127.0.0.1:"));
    assert_eq!(m.tls_url(), None);
    assert_eq!(pub_sub(m.port, None, "t/1", "one").unwrap(), "one");

    // A persistent session with a QoS 1 subscription, then a message while
    // the subscriber is away, then a broker restart: the message survives.
    let port = m.port.to_string();
    let sub_args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "t/persist",
        "-q",
        "1",
        "-i",
        "persist-sub",
        "-c",
    ];
    let out = run(Command::new(require::path("mosquitto_sub"))
        .args(sub_args)
        .args(["-E"]));
    assert!(out.status.success(), "{}", show(&out));
    let out = run(Command::new(require::path("mosquitto_pub")).args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "t/persist",
        "-q",
        "1",
        "-m",
        "kept",
    ]));
    assert!(out.status.success(), "{}", show(&out));

    m.stop();
    assert!(!m.is_running());
    assert!(wait_for_tcp(m.port, Duration::from_millis(200)).is_err());
    m.restart().unwrap();
    assert!(m.is_running());
    let out = run(Command::new(require::path("mosquitto_sub"))
        .args(sub_args)
        .args(["-C", "1", "-W", "20"]));
    assert!(out.status.success(), "{}\n{}", show(&out), m.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kept");

    // kill + restart works too.
    m.kill();
    assert!(!m.is_running());
    m.restart().unwrap();
    assert_eq!(pub_sub(m.port, None, "t/2", "two").unwrap(), "two");
    assert!(m.log().contains("mosquitto version"), "{}", m.log());
}

#[test]
fn mosquitto_mutual_tls_accepts_our_client_and_rejects_foreign_and_missing() {
    let pki = Arc::new(Pki::new().unwrap());
    let m = Mosquitto::start(MosquittoOptions {
        tls: Some(pki.clone()),
        require_certificate: true,
        ..MosquittoOptions::default()
    })
    .unwrap();
    let tls_port = m.tls_port.unwrap();
    assert_eq!(
        m.tls_url().unwrap(),
        format!("mqtts://127.0.0.1:{tls_port}")
    );

    let ours = pki.client("gw-harness").unwrap();
    let got = pub_sub(tls_port, Some((&pki, Some(&ours))), "tls/ok", "secret");
    assert_eq!(got.as_deref(), Ok("secret"), "mosquitto log:\n{}", m.log());
    // The certificate's common name became the user name.
    assert!(m.log().contains("u'gw-harness'"), "{}", m.log());

    let foreign = foreign_client("gw-harness").unwrap();
    let mut p = Command::new(require::path("mosquitto_pub"));
    p.args([
        "-h",
        "127.0.0.1",
        "-p",
        &tls_port.to_string(),
        "-t",
        "tls/no",
        "-m",
        "x",
    ])
    .arg("--cafile")
    .arg(&pki.ca_cert)
    .arg("--cert")
    .arg(&foreign.cert)
    .arg("--key")
    .arg(&foreign.key);
    let out = run(&mut p);
    assert!(
        !out.status.success(),
        "foreign certificate accepted: {}",
        show(&out)
    );

    let mut p = Command::new(require::path("mosquitto_pub"));
    p.args([
        "-h",
        "127.0.0.1",
        "-p",
        &tls_port.to_string(),
        "-t",
        "tls/no",
        "-m",
        "x",
    ])
    .arg("--cafile")
    .arg(&pki.ca_cert);
    let out = run(&mut p);
    assert!(
        !out.status.success(),
        "missing certificate accepted: {}",
        show(&out)
    );

    // The plain listener is still there and works.
    assert_eq!(pub_sub(m.port, None, "plain/ok", "p").unwrap(), "p");
    assert!(
        m.log().contains("OpenSSL Error") || m.log().contains("certificate"),
        "{}",
        m.log()
    );
}

#[test]
fn mosquitto_tls_only() {
    let pki = Arc::new(Pki::new().unwrap());
    let m = Mosquitto::start(MosquittoOptions {
        tls: Some(pki.clone()),
        plain_listener: false,
        ..MosquittoOptions::default()
    })
    .unwrap();
    // Server-authenticated TLS only; no client certificate needed.
    let got = pub_sub(
        m.tls_port.unwrap(),
        Some((&pki, None)),
        "tls/server-only",
        "hi",
    );
    assert_eq!(got.as_deref(), Ok("hi"), "{}", m.log());
}

#[test]
fn mosquitto_without_listener_is_an_error() {
    let err = Mosquitto::start(MosquittoOptions {
        plain_listener: false,
        ..MosquittoOptions::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("no listener"), "{err}");
}

#[test]
fn postgres_starts_answers_and_cleans_up() {
    let pg = Postgres::start().unwrap();
    assert!(
        pg.url.starts_with("postgres://gatewayd@127.0.0.1:"),
        "{}",
        pg.url
    );
    assert_eq!(pg.psql("select 1").unwrap(), "1");
    // And with the real psql client, the way a person would.
    let out = run(Command::new(require::path("psql"))
        .args(["-X", "-A", "-t", "-c", "select 40 + 2"])
        .arg(&pg.url));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    pg.psql("create table t (x int); insert into t values (7)")
        .unwrap();
    let dir = pg.dir.clone();
    let port = pg.port;
    drop(pg);
    assert!(!dir.exists(), "{} not removed", dir.display());
    assert!(wait_for_tcp(port, Duration::from_millis(200)).is_err());
}

#[test]
fn postgres_restart_keeps_data() {
    let mut pg = Postgres::start().unwrap();
    pg.psql("create table t (x int); insert into t values (7)")
        .unwrap();
    pg.restart().unwrap();
    assert_eq!(pg.psql("select x from t").unwrap(), "7");
}

#[test]
fn pki_files_are_pem() {
    let pki = Pki::new().unwrap();
    let c = pki.client("some/odd name").unwrap();
    let c2 = pki.client("some/odd name").unwrap();
    assert_ne!(c.cert, c2.cert);
    for p in [&pki.ca_cert, &pki.server_cert, &c.cert] {
        assert!(std::fs::read_to_string(p)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
    }
    for p in [&pki.server_key, &c.key] {
        assert!(std::fs::read_to_string(p)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
    }
    // OpenSSL agrees the chain is valid for the intended purposes.
    if let Some(openssl) = require::find("openssl") {
        let out = run(Command::new(&openssl)
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(&pki.ca_cert)
            .arg(&pki.server_cert));
        assert!(out.status.success(), "{}", show(&out));
        let out = run(Command::new(&openssl)
            .args(["verify", "-purpose", "sslclient", "-x509_strict", "-CAfile"])
            .arg(&pki.ca_cert)
            .arg(&c.cert));
        assert!(out.status.success(), "{}", show(&out));
    }
    let foreign = foreign_client("x").unwrap();
    let dir = foreign.cert.parent().unwrap().to_path_buf();
    assert!(dir.exists());
    drop(foreign);
    assert!(!dir.exists());
}

#[test]
#[should_panic(expected = "run cargo build --bins first")]
fn bin_path_says_how_to_build_missing_binaries() {
    gatewayd_tests::process::bin_path("no-such-workspace-binary");
}

#[test]
fn bin_path_looks_next_to_the_test_executable() {
    // The test executable is <target>/<profile>/deps/harness-…; binaries are
    // expected in <target>/<profile>/ (under CARGO_TARGET_DIR when set).
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let fake = profile_dir.join(format!("harness-selftest-bin-{}", std::process::id()));
    std::fs::write(&fake, "").unwrap();
    let found = std::panic::catch_unwind(|| {
        gatewayd_tests::process::bin_path(fake.file_name().unwrap().to_str().unwrap())
    });
    std::fs::remove_file(&fake).unwrap();
    assert_eq!(found.unwrap(), fake);
}
