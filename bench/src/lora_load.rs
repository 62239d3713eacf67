//! `gatewayd-lora-load`: a simulated LoRaWAN network for gatewayd's
//! `lorawan` source. It plays Semtech UDP packet forwarders (PUSH_DATA with
//! `rxpk`, PULL_DATA keepalives, TX_ACK for every PULL_RESP) carrying
//! uplinks of simulated ABP devices whose frames it builds with the
//! `lorawan` crate, and measures:
//!
//! * the uplinks it sent and the PUSH_ACKs it got back;
//! * with `--cloud`, end to end: every reading of its devices read back from
//!   cloud-bridge's HTTP API, the throughput from the first uplink sent to
//!   the last reading stored, and the UDP → stored latency.
//!
//! ```text
//! gatewayd-lora-load --print-devices 1000 > devices.toml   # for [sources.lora]
//! gatewayd-lora-load --devices 1000 --rate 20000 --duration 20 \
//!     --target 127.0.0.1:1700 --cloud http://127.0.0.1:8080
//! gatewayd-lora-load --demo --devices 3 --codec 1           # make run
//! ```
//!
//! Device `i`: DevEUI `70B3D57E` + `i` (8 hex digits), DevAddr `0x26100000 +
//! i`, keys derived from `i` (printed by `--print-devices`). Payloads:
//! Cayenne LPP (temperature, humidity), or for the last `--codec` devices
//! the 5-byte format of the `lora-codec` example app (profile `lora-codec`).
//! Frame counters start at `--fcnt-start`: the gateway keeps sessions, so a
//! second run against the same state needs a higher start (or fresh state).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Parser;
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::parser::FCtrl;
use serde_json::{json, Value};
use tokio::net::UdpSocket;

/// Simulated LoRaWAN forwarders and ABP devices for gatewayd's lorawan source.
#[derive(Parser, Debug, Clone)]
#[command(name = "gatewayd-lora-load", version)]
struct Args {
    /// gatewayd's lorawan source (loopback only).
    #[arg(long, default_value = "127.0.0.1:1700")]
    target: SocketAddr,
    /// Simulated devices (at most 1024, the config's limit).
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// The last N devices send the lora-codec format (profile lora-codec).
    #[arg(long, default_value_t = 0)]
    codec: u32,
    /// Uplinks per second, all devices together.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds to send.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// rxpk per PUSH_DATA (lora_pkt_fwd batches what it received).
    #[arg(long, default_value_t = 1)]
    per_datagram: usize,
    /// Simulated forwarders (each device is heard by one).
    #[arg(long, default_value_t = 1)]
    forwarders: u32,
    /// First frame counter of every device.
    #[arg(long, default_value_t = 0)]
    fcnt_start: u32,
    /// cloud-bridge base URL (loopback): read every reading back.
    #[arg(long)]
    cloud: Option<String>,
    /// Wait up to this many seconds for the cloud to have every reading.
    #[arg(long, default_value_t = 120.0)]
    cloud_wait: f64,
    /// Print the `devices = [...]` TOML for N devices and exit.
    #[arg(long, value_name = "N")]
    print_devices: Option<u32>,
    /// Demo: each device sends every --demo-interval seconds until Ctrl-C.
    #[arg(long)]
    demo: bool,
    /// Seconds between a demo device's uplinks.
    #[arg(long, default_value_t = 5.0)]
    demo_interval: f64,
    /// Write the JSON report to this file too.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

const MAX_DEVICES: u32 = 1024;

struct Device {
    dev_eui: String,
    dev_addr: u32,
    nwk: [u8; 16],
    app: [u8; 16],
    codec: bool,
    fcnt: u32,
}

fn key(i: u32, salt: u8) -> [u8; 16] {
    let mut k = [0u8; 16];
    for (j, b) in k.iter_mut().enumerate() {
        *b = (i as u8)
            .wrapping_mul(31)
            .wrapping_add((i >> 8) as u8)
            .wrapping_add((j as u8).wrapping_mul(7))
            ^ salt;
    }
    k
}

fn devices(n: u32, codec: u32, fcnt_start: u32) -> Vec<Device> {
    (0..n)
        .map(|i| Device {
            dev_eui: format!("70B3D57E{i:08X}"),
            dev_addr: 0x2610_0000 + i,
            nwk: key(i, 0xA5),
            app: key(i, 0x5A),
            codec: i >= n.saturating_sub(codec),
            fcnt: fcnt_start,
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn print_devices(n: u32, codec: u32) {
    println!("devices = [");
    for d in devices(n, codec, 0) {
        let profile = if d.codec { "lora-codec" } else { "cayenne" };
        println!(
            "  {{ dev_eui = \"{}\", dev_addr = \"{:08X}\", nwk_s_key = \"{}\", app_s_key = \"{}\", profile = \"{profile}\" }},",
            d.dev_eui,
            d.dev_addr,
            hex(&d.nwk),
            hex(&d.app)
        );
    }
    println!("]");
}

impl Device {
    /// The next uplink's PHYPayload: a slowly varying temperature and
    /// humidity, Cayenne LPP or the lora-codec format.
    fn next_frame(&mut self, t: f64) -> anyhow::Result<Vec<u8>> {
        let phase = f64::from(self.dev_addr & 0xFF) / 40.0;
        let temp = 21.0 + 4.0 * (t / 60.0 + phase).sin();
        let hum = 50.0 + 10.0 * (t / 90.0 + phase).cos();
        let payload: Vec<u8> = if self.codec {
            let deci = (temp * 10.0).round() as i16;
            let mut p = deci.to_be_bytes().to_vec();
            p.push(hum.round() as u8);
            p.extend_from_slice(&3300u16.to_be_bytes());
            p
        } else {
            let deci = (temp * 10.0).round() as i16;
            let mut p = vec![0x01, 0x67];
            p.extend_from_slice(&deci.to_be_bytes());
            p.extend_from_slice(&[0x02, 0x68, (hum * 2.0).round() as u8]);
            p
        };
        let mut c = DataPayloadCreator::new();
        c.set_confirmed(false)
            .set_uplink(true)
            .set_dev_addr(&self.dev_addr.to_le_bytes())
            .set_fctrl(&FCtrl::new(0, true))
            .set_fcnt(self.fcnt)
            .set_f_port(if self.codec { 3 } else { 1 });
        let phy = c
            .build(
                &payload,
                &[],
                &NewSKey::from(self.nwk),
                &AppSKey::from(self.app),
            )
            .map_err(|e| anyhow::anyhow!("building a frame: {e:?}"))?
            .to_vec();
        self.fcnt = self.fcnt.wrapping_add(1);
        Ok(phy)
    }
}

/// One simulated forwarder: a PUSH socket and a PULL socket.
struct Forwarder {
    eui: [u8; 8],
    push: Arc<UdpSocket>,
    pull: Arc<UdpSocket>,
    token: u16,
}

#[derive(Default)]
struct Counters {
    datagrams: AtomicU64,
    uplinks: AtomicU64,
    push_acks: AtomicU64,
    pull_acks: AtomicU64,
    downlinks: AtomicU64,
}

fn datagram(token: u16, id: u8, eui: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let t = token.to_be_bytes();
    let mut d = vec![2, t[0], t[1], id];
    d.extend_from_slice(eui);
    d.extend_from_slice(body);
    d
}

impl Forwarder {
    async fn new(n: u32, target: SocketAddr, counters: Arc<Counters>) -> anyhow::Result<Forwarder> {
        let push = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let pull = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        push.connect(target).await?;
        pull.connect(target).await?;
        let mut eui = [0xAA, 0x55, 0x5A, 0, 0, 0, 0, 0];
        eui[4..].copy_from_slice(&(n + 1).to_be_bytes());
        // PUSH_ACKs.
        let (p, c) = (push.clone(), counters.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(n) = p.recv(&mut buf).await {
                if n == 4 && buf[3] == 1 {
                    c.push_acks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // PULL_ACKs, and PULL_RESPs answered with TX_ACK.
        let (p, c) = (pull.clone(), counters.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = p.recv(&mut buf).await {
                match buf.get(3) {
                    Some(4) => {
                        c.pull_acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(3) if n >= 4 => {
                        c.downlinks.fetch_add(1, Ordering::Relaxed);
                        let ack = datagram(u16::from_be_bytes([buf[1], buf[2]]), 5, &eui, b"");
                        let _ = p.send(&ack).await;
                    }
                    _ => {}
                }
            }
        });
        Ok(Forwarder {
            eui,
            push,
            pull,
            token: 0,
        })
    }

    fn token(&mut self) -> u16 {
        self.token = self.token.wrapping_add(1);
        self.token
    }

    async fn keepalive(&mut self) -> anyhow::Result<()> {
        let d = datagram(self.token(), 2, &self.eui, b"");
        self.pull.send(&d).await.context("PULL_DATA")?;
        Ok(())
    }

    async fn push(&mut self, frames: &[Vec<u8>], tmst: u32) -> anyhow::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let rxpk: Vec<Value> = frames
            .iter()
            .map(|phy| {
                json!({"tmst": tmst, "chan": 0, "rfch": 0, "freq": 868.1, "stat": 1,
                       "modu": "LORA", "datr": "SF7BW125", "codr": "4/5",
                       "rssi": -60, "lsnr": 9.5, "size": phy.len(), "data": b64.encode(phy)})
            })
            .collect();
        let body = json!({ "rxpk": rxpk }).to_string();
        let d = datagram(self.token(), 0, &self.eui, body.as_bytes());
        self.push.send(&d).await.context("PUSH_DATA")?;
        Ok(())
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatewayd-lora-load: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(n) = a.print_devices {
        if n == 0 || n > MAX_DEVICES {
            bail!("--print-devices: 1..={MAX_DEVICES}");
        }
        print_devices(n, a.codec.min(n));
        return Ok(ExitCode::SUCCESS);
    }
    if !a.target.ip().is_loopback() {
        bail!("--target must be a loopback address (this is a load generator)");
    }
    if a.devices == 0 || a.devices > MAX_DEVICES {
        bail!("--devices: 1..={MAX_DEVICES}");
    }
    if !(a.rate > 0.0 && a.rate <= 1_000_000.0) {
        bail!("--rate: more than 0, at most 1000000");
    }
    if a.per_datagram == 0 || a.per_datagram > 64 {
        bail!("--per-datagram: 1..=64");
    }
    let counters = Arc::new(Counters::default());
    let mut fwds = Vec::new();
    for n in 0..a.forwarders.clamp(1, 64) {
        let mut f = Forwarder::new(n, a.target, counters.clone()).await?;
        f.keepalive().await?;
        fwds.push(f);
    }
    let mut devs = devices(a.devices, a.codec.min(a.devices), a.fcnt_start);
    // Wait for the PULL_ACKs: the source is listening.
    let t0 = Instant::now();
    while counters.pull_acks.load(Ordering::Relaxed) < fwds.len() as u64 {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!(
                "no PULL_ACK from {} within 10 s: is the lorawan source running?",
                a.target
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    if a.demo {
        return demo(&a, &mut fwds, &mut devs, &counters).await;
    }

    let start_us = now_us();
    let start = Instant::now();
    let total = (a.rate * a.duration).round() as u64;
    let mut sent = 0u64;
    let mut next_dev = 0usize;
    let mut last_keepalive = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * a.rate) as u64).min(total);
        while sent < due {
            let n = ((due - sent) as usize).min(a.per_datagram);
            let t = start.elapsed().as_secs_f64();
            let tmst = (t * 1e6) as u32;
            let fw = next_dev % fwds.len();
            let mut frames = Vec::with_capacity(n);
            for _ in 0..n {
                frames.push(devs[next_dev].next_frame(t)?);
                next_dev = (next_dev + 1) % devs.len();
            }
            fwds[fw].push(&frames, tmst).await?;
            counters.datagrams.fetch_add(1, Ordering::Relaxed);
            counters.uplinks.fetch_add(n as u64, Ordering::Relaxed);
            sent += n as u64;
        }
        if last_keepalive.elapsed() > Duration::from_secs(5) {
            last_keepalive = Instant::now();
            for f in &mut fwds {
                f.keepalive().await?;
            }
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut report = json!({
        "devices": a.devices,
        "forwarders": fwds.len(),
        "per_datagram": a.per_datagram,
        "offered_rate": a.rate,
        "uplinks_sent": sent,
        "datagrams_sent": counters.datagrams.load(Ordering::Relaxed),
        "push_acks": counters.push_acks.load(Ordering::Relaxed),
        "send_seconds": send_secs,
        "achieved_send_rate": sent as f64 / send_secs,
    });
    let mut problem = false;
    if let Some(cloud) = &a.cloud {
        let e2e = end_to_end(cloud, &devs, start_us, sent, a.cloud_wait).await?;
        problem = e2e["delivered"].as_u64() != Some(sent) || e2e["duplicates"] != 0;
        report["cloud"] = e2e;
    }
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = &a.json_out {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(if problem {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads every reading of the simulated devices back from cloud-bridge
/// (stored since `start_us`) until `want` are there or `wait` passes.
async fn end_to_end(
    cloud: &str,
    devs: &[Device],
    start_us: i64,
    want: u64,
    wait: f64,
) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs_f64(wait);
    loop {
        let mut delivered = 0u64;
        let mut duplicates = 0u64;
        let mut last_received = 0i64;
        let mut lat: Vec<i64> = Vec::new();
        for d in devs {
            let url = format!(
                "{cloud}/api/v1/devices/lora:{}/readings?since={start_us}&limit=10000",
                d.dev_eui
            );
            let resp = http.get(&url).send().await.context("cloud-bridge")?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            let body: Value = resp.error_for_status()?.json().await?;
            let mut fcnts = std::collections::HashSet::new();
            for r in body["readings"].as_array().into_iter().flatten() {
                let fcnt = r["meta"]["extra"]["fcnt"].as_str().unwrap_or("").to_owned();
                if !fcnts.insert(fcnt) {
                    duplicates += 1;
                    continue;
                }
                delivered += 1;
                let rec = r["received_us"].as_i64().unwrap_or(0);
                last_received = last_received.max(rec);
                lat.push(rec - r["time_us"].as_i64().unwrap_or(rec));
            }
        }
        if delivered >= want || Instant::now() >= deadline {
            lat.sort_unstable();
            let pct = |p: f64| -> f64 {
                if lat.is_empty() {
                    return 0.0;
                }
                let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
                lat[i] as f64 / 1000.0
            };
            let secs = (last_received - start_us) as f64 / 1e6;
            return Ok(json!({
                "delivered": delivered,
                "duplicates": duplicates,
                "first_send_to_last_stored_seconds": secs,
                "end_to_end_rate": if secs > 0.0 { delivered as f64 / secs } else { 0.0 },
                "latency_ms_p50": pct(0.5),
                "latency_ms_p99": pct(0.99),
                "latency_ms_max": pct(1.0),
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn demo(
    a: &Args,
    fwds: &mut [Forwarder],
    devs: &mut [Device],
    counters: &Counters,
) -> anyhow::Result<ExitCode> {
    let every = Duration::from_secs_f64(a.demo_interval.max(0.5));
    println!(
        "simulated LoRaWAN: {} devices via {} forwarder(s) to {}, one uplink each every {:.1}s",
        devs.len(),
        fwds.len(),
        a.target,
        every.as_secs_f64()
    );
    let start = Instant::now();
    let mut tick = tokio::time::interval(every / devs.len().max(1) as u32);
    let mut i = 0usize;
    let mut status = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        let t = start.elapsed().as_secs_f64();
        let frame = devs[i].next_frame(t)?;
        let fw = i % fwds.len();
        fwds[fw].push(&[frame], (t * 1e6) as u32).await?;
        counters.uplinks.fetch_add(1, Ordering::Relaxed);
        i = (i + 1) % devs.len();
        if i == 0 {
            for f in fwds.iter_mut() {
                f.keepalive().await?;
            }
        }
        if status.elapsed() >= Duration::from_secs(30) {
            status = Instant::now();
            println!(
                "lora: {} uplinks sent, {} PUSH_ACKs, {} downlinks received",
                counters.uplinks.load(Ordering::Relaxed),
                counters.push_acks.load(Ordering::Relaxed),
                counters.downlinks.load(Ordering::Relaxed)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
