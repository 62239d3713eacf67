//! What the end-to-end test files share: a gatewayd and a cloud-bridge
//! started as real processes on their own temporary directories and ports,
//! and CoAP clients (libcoap's `coap-client`, and our own over UDP).
//!
//! Each test file includes this with `mod common;` and uses what it needs.

#![allow(dead_code)]

pub mod apps;
pub mod bus;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use coap_lite::{ContentFormat, MessageClass, MessageType, Packet, RequestType};
use gatewayd_tests::certs::ClientCert;
use gatewayd_tests::ports::{free_tcp_port, free_udp_port, wait_for_tcp};
use gatewayd_tests::process::{bin_path, spawn, ChildGuard};
use gatewayd_tests::require;
use serde_json::Value as J;

pub const WAIT: Duration = Duration::from_secs(60);

pub struct Gateway {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub coap_port: u16,
    pub broker: String,
    pub tls: Option<(PathBuf, Option<ClientCert>)>,
    pub extra: String,
    /// The D-Bus address to serve on; `None`: no D-Bus interface.
    pub dbus: Option<String>,
}

impl Gateway {
    pub fn new(id: &str, broker: &str) -> Gateway {
        Gateway {
            id: id.into(),
            dir: tempfile::tempdir().unwrap(),
            coap_port: free_udp_port(),
            broker: broker.into(),
            tls: None,
            extra: String::new(),
            dbus: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        let mut tls = String::new();
        if let Some((ca, client)) = &self.tls {
            tls.push_str(&format!("[uplink.tls]\nca = {:?}\n", ca));
            if let Some(c) = client {
                tls.push_str(&format!("cert = {:?}\nkey = {:?}\n", c.cert, c.key));
            }
        }
        let text = format!(
            r#"
[gateway]
id = "{id}"
data_dir = {data:?}

[log]
level = "info,gatewayd=debug,gatewayd_uplink=debug"

[uplink]
broker = "{broker}"
reconnect_min_ms = 100
reconnect_max_ms = 1000
{tls}
[dbus]
{dbus}

[sources.coap]
kind = "coap"
bind = "127.0.0.1:{port}"
{extra}
"#,
            id = self.id,
            data = self.dir.path().join("state"),
            broker = self.broker,
            port = self.coap_port,
            extra = self.extra,
            dbus = match &self.dbus {
                Some(addr) => format!("bus = {addr:?}"),
                None => "enabled = false".to_owned(),
            },
        );
        let path = self.dir.path().join("gatewayd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn start(&self) -> ChildGuard {
        let mut cmd = Command::new(bin_path("gatewayd"));
        cmd.arg("--config").arg(self.config_path());
        let child = spawn(cmd).expect("spawn gatewayd");
        child
            .wait_for_log("gatewayd running", WAIT)
            .unwrap_or_else(|e| panic!("gatewayd did not start: {e}\n{}", child.log()));
        child
    }
}

pub struct Cloud {
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub http_port: u16,
    pub http: String,
    pub broker_port: Option<u16>,
    pub child: ChildGuard,
}

impl Cloud {
    /// cloud-bridge on an external broker (`mqtt_url`), or with its embedded
    /// broker when `mqtt_url` is None.
    pub fn start(mqtt_url: Option<&str>, client_id: &str) -> Cloud {
        Self::start_with(mqtt_url, client_id, "")
    }

    pub fn start_with(mqtt_url: Option<&str>, client_id: &str, extra_mqtt: &str) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_tcp_port();
        let (broker, broker_port, url) = match mqtt_url {
            Some(u) => (
                "[broker]\nembedded = false\n".to_owned(),
                None,
                u.to_owned(),
            ),
            None => {
                let p = free_tcp_port();
                (
                    format!("[broker]\nembedded = true\nlisten = \"127.0.0.1:{p}\"\n"),
                    Some(p),
                    format!("mqtt://127.0.0.1:{p}"),
                )
            }
        };
        let text = format!(
            r#"
{broker}
[mqtt]
url = "{url}"
client_id = "{client_id}"
{extra_mqtt}

[storage]
kind = "sqlite"
sqlite_path = {db:?}

[http]
listen = "127.0.0.1:{http_port}"
"#,
            db = dir.path().join("cloud.db"),
        );
        let cfg = dir.path().join("cloud-bridge.toml");
        std::fs::write(&cfg, text).unwrap();
        let mut cmd = Command::new(bin_path("cloud-bridge"));
        cmd.arg("--config").arg(&cfg);
        let child = spawn(cmd).expect("spawn cloud-bridge");
        wait_for_tcp(http_port, WAIT)
            .unwrap_or_else(|e| panic!("cloud-bridge HTTP not up: {e}\n{}", child.log()));
        Cloud {
            _dir: dir,
            config: cfg,
            http_port,
            http: format!("http://127.0.0.1:{http_port}"),
            broker_port,
            child,
        }
    }

    /// Kills cloud-bridge with SIGKILL and starts it again on the same
    /// config (same ports, same SQLite file).
    pub fn crash_and_restart(&mut self, while_down: impl FnOnce()) {
        self.child.kill9();
        while_down();
        let mut cmd = Command::new(bin_path("cloud-bridge"));
        cmd.arg("--config").arg(&self.config);
        self.child = spawn(cmd).expect("spawn cloud-bridge");
        wait_for_tcp(self.http_port, WAIT)
            .unwrap_or_else(|e| panic!("cloud-bridge HTTP not up: {e}\n{}", self.child.log()));
    }

    pub async fn readings(&self, device: &str) -> anyhow::Result<Vec<J>> {
        let url = format!("{}/api/v1/devices/{device}/readings?limit=10000", self.http);
        let resp = reqwest::get(&url).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        let body: J = resp.error_for_status()?.json().await?;
        Ok(body["readings"].as_array().cloned().unwrap_or_default())
    }

    /// Polls until `device` has at least `n` readings.
    pub async fn wait_readings(&self, device: &str, n: usize, gw: Option<&ChildGuard>) -> Vec<J> {
        let start = Instant::now();
        loop {
            let r = self.readings(device).await.unwrap_or_default();
            if r.len() >= n {
                return r;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "{device}: {} of {n} readings after {WAIT:?}\n--- cloud-bridge log:\n{}\n--- gatewayd log:\n{}",
                    r.len(),
                    tail(&self.child.log()),
                    gw.map(|g| tail(&g.log())).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn tail(s: &str) -> String {
    gatewayd_tests::tail(s, 60)
}

pub fn coap_client_post(port: u16, format: u16, payload: &Path) -> std::process::Output {
    require::command("coap-client");
    Command::new(require::path("coap-client"))
        .args(["-m", "post", "-t", &format.to_string(), "-B", "10", "-f"])
        .arg(payload)
        .arg(format!("coap://127.0.0.1:{port}/telemetry"))
        .output()
        .expect("run coap-client")
}

pub fn measurement<'a>(reading: &'a J, name: &str) -> &'a J {
    reading["measurements"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no measurement {name} in {reading}"))
}

/// One confirmable POST /telemetry; returns the response (piggybacked or
/// separate).
pub fn coap_post(
    port: u16,
    payload: &[u8],
    msg_id: u16,
    timeout: Duration,
) -> anyhow::Result<Packet> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(timeout))?;
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = msg_id;
    p.set_token(msg_id.to_be_bytes().to_vec());
    p.add_option(coap_lite::CoapOption::UriPath, b"telemetry".to_vec());
    p.set_content_format(ContentFormat::ApplicationSenmlJSON);
    // coap-lite refuses to serialise large payloads, so append the payload
    // marker and payload ourselves.
    let mut bytes = p.to_bytes()?;
    if !payload.is_empty() {
        bytes.push(0xff);
        bytes.extend_from_slice(payload);
    }
    sock.send_to(&bytes, ("127.0.0.1", port))?;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let (n, _) = sock.recv_from(&mut buf).context("no CoAP response")?;
        let r = Packet::from_bytes(&buf[..n])?;
        if matches!(r.header.code, MessageClass::Response(_)) {
            return Ok(r);
        }
    }
    bail!("no CoAP response within {timeout:?}")
}
