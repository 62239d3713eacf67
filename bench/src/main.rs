//! `gatewayd-load`: a simulated fleet of CoAP sensors posting SenML JSON to
//! gatewayd's `/telemetry`, measuring POST → 2.04 latency and ack rate and,
//! with `--cloud`, end-to-end delivery through cloud-bridge's HTTP API
//! (lost / duplicated readings, POST → stored latency). Loopback only.
//!
//! ```text
//! gatewayd-load --sensors 200 --rate 2000 --duration 30 --confirmable \
//!     --target 127.0.0.1:5683 --cloud http://127.0.0.1:8080 --rss-pid $(pidof gatewayd)
//! gatewayd-load --demo            # a few slow sensors until Ctrl-C (make run)
//! gatewayd-load --demo --edge-demo   # … plus a hot boiler and a vibrating pump
//! ```
//!
//! Exit status: 0 fine; 1 error; 2 the run found a problem: no successful
//! response at all, or (with `--cloud`) acknowledged readings missing from
//! the cloud or stored twice.

mod cloud;
mod coap;
mod edge_demo;
mod histo;
mod rss;
mod senml;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;
use tokio::sync::watch;

use crate::cloud::{Poller, Rec, State, Track};
use crate::coap::{Client, Outcome, Timing};
use crate::histo::Histogram;
use crate::senml::Sensor;

/// Simulated fleet of CoAP sensors and load harness for gatewayd.
#[derive(Parser, Debug, Clone)]
#[command(name = "gatewayd-load", version)]
struct Args {
    /// gatewayd's CoAP endpoint (loopback only).
    #[arg(long, default_value = "127.0.0.1:5683")]
    target: SocketAddr,
    /// Number of simulated sensors (devices `coap:sim-0` … `coap:sim-<N-1>`).
    /// Default 10 (5 with --demo).
    #[arg(long)]
    sensors: Option<usize>,
    /// Readings per second, all sensors together. Default 100 (1 per sensor
    /// with --demo).
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send, in seconds. Default 10 (until Ctrl-C with --demo).
    #[arg(long)]
    duration: Option<f64>,
    /// Readings per POST.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Confirmable requests (retransmitted until acknowledged); default
    /// non-confirmable (always confirmable with --demo).
    #[arg(long)]
    confirmable: bool,
    /// UDP sockets shared by the sensors (each POST goes out on the next
    /// one). Default min(sensors, 256), raised so that no socket wraps its
    /// 16-bit message ids within the CoAP exchange lifetime.
    #[arg(long)]
    sockets: Option<usize>,
    /// CoAP ACK_TIMEOUT in milliseconds (RFC 7252 default 2000).
    #[arg(long, default_value_t = 2000)]
    ack_timeout_ms: u64,
    /// CoAP MAX_RETRANSMIT.
    #[arg(long, default_value_t = 4)]
    max_retransmit: u32,
    /// Give up on one exchange after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Largest datagram to send (gatewayd's default max_datagram_bytes).
    #[arg(long, default_value_t = 1280)]
    max_datagram: usize,
    /// cloud-bridge base URL (loopback only), e.g. http://127.0.0.1:8080:
    /// measure end-to-end delivery through its HTTP API.
    #[arg(long)]
    cloud: Option<String>,
    /// After sending, wait up to this many seconds for the cloud to have
    /// every acknowledged reading.
    #[arg(long, default_value_t = 60.0)]
    cloud_wait: f64,
    /// Sample VmRSS / VmHWM of this process (e.g. gatewayd's pid).
    #[arg(long)]
    rss_pid: Option<u32>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Demo mode: a few slow sensors until Ctrl-C, a status line every
    /// --status-every seconds.
    #[arg(long)]
    demo: bool,
    /// Also simulate `coap:boiler-1` (temperature crossing 30 °C every
    /// minute) and `coap:pump-1` (vibration windows, every 5th anomalous),
    /// for the edge apps of `make run`.
    #[arg(long)]
    edge_demo: bool,
    /// Seconds between status lines (demo mode; 0 = none in load mode).
    #[arg(long)]
    status_every: Option<f64>,
    /// Seed for the simulated values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Limits that keep one run bounded.
const MAX_SENSORS: usize = 100_000;
const MAX_RATE: f64 = 1_000_000.0;
const MAX_BATCH: usize = 100;
const MAX_TRACKED_READINGS: f64 = 50_000_000.0;
const MAX_SOCKETS: usize = 4096;
/// Posts per second one socket may carry: 65536 message ids must last the
/// CoAP EXCHANGE_LIFETIME (247 s) or the server's deduplication would
/// answer new requests from its cache.
const POSTS_PER_SOCKET: f64 = 250.0;

struct Plan {
    sensors: usize,
    rate: f64,
    duration: Option<Duration>,
    batch: usize,
    confirmable: bool,
    sockets: usize,
    status_every: Option<Duration>,
}

fn plan(a: &Args) -> anyhow::Result<Plan> {
    if !a.target.ip().is_loopback() {
        bail!(
            "--target {} is not a loopback address: gatewayd-load only loads 127.0.0.1 / ::1",
            a.target
        );
    }
    if let Some(url) = &a.cloud {
        let u =
            reqwest::Url::parse(url).with_context(|| format!("--cloud {url:?} is not a URL"))?;
        let host = u.host_str().unwrap_or("");
        let ok = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !ok {
            bail!("--cloud {url} is not on loopback (localhost, 127.0.0.1, [::1])");
        }
    }
    let sensors = a.sensors.unwrap_or(if a.demo { 5 } else { 10 });
    if !(1..=MAX_SENSORS).contains(&sensors) {
        bail!("--sensors must be 1..={MAX_SENSORS}");
    }
    let rate = a
        .rate
        .unwrap_or(if a.demo { sensors as f64 } else { 100.0 });
    if !(rate > 0.0 && rate <= MAX_RATE) {
        bail!("--rate must be > 0 and <= {MAX_RATE}");
    }
    if !(1..=MAX_BATCH).contains(&a.batch) {
        bail!("--batch must be 1..={MAX_BATCH}");
    }
    let duration = match a.duration {
        Some(d) if !(d > 0.0 && d <= 7.0 * 86400.0) => {
            bail!("--duration must be > 0 s and at most a week")
        }
        Some(d) => Some(Duration::from_secs_f64(d)),
        None if a.demo => None,
        None => Some(Duration::from_secs(10)),
    };
    let timeout_ok = a.timeout > 0.0 && a.timeout <= 600.0;
    if !timeout_ok || !(0.0..=3600.0).contains(&a.cloud_wait) {
        bail!("--timeout must be in (0, 600] and --cloud-wait in [0, 3600]");
    }
    if a.cloud.is_some() {
        if let Some(d) = duration {
            if rate * d.as_secs_f64() > MAX_TRACKED_READINGS {
                bail!(
                    "{} readings is too many to track end to end (limit {MAX_TRACKED_READINGS}); lower --rate or --duration",
                    rate * d.as_secs_f64()
                );
            }
        }
    }
    let post_rate = rate / a.batch as f64;
    let min_sockets = (post_rate / POSTS_PER_SOCKET).ceil() as usize;
    let sockets = a
        .sockets
        .unwrap_or_else(|| sensors.min(256))
        .max(min_sockets)
        .clamp(1, MAX_SOCKETS);
    let status_every = match a.status_every {
        Some(s) if s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => None,
        None if a.demo => Some(Duration::from_secs(10)),
        None => None,
    };
    Ok(Plan {
        sensors,
        rate,
        duration,
        batch: a.batch,
        confirmable: a.confirmable || a.demo,
        sockets,
        status_every,
    })
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Sensor-side counters.
#[derive(Default, Clone)]
struct Counters {
    posts: u64,
    readings: u64,
    ok_posts: u64,
    ok_readings: u64,
    codes: BTreeMap<String, u64>,
    timeouts: u64,
    resets: u64,
    send_errors: u64,
    last_send_error: Option<String>,
    retransmits: u64,
    late: u64,
    latency: Histogram,
}

impl Counters {
    fn record(&mut self, batch: usize, outcome: &Outcome) {
        self.posts += 1;
        self.readings += batch as u64;
        match outcome {
            Outcome::Response {
                code,
                latency,
                retransmits,
            } => {
                *self.codes.entry(code.to_string()).or_default() += 1;
                self.retransmits += u64::from(*retransmits);
                if coap::is_success(*code) {
                    self.ok_posts += 1;
                    self.ok_readings += batch as u64;
                    self.latency.record(latency.as_micros() as u64);
                }
            }
            Outcome::Reset => self.resets += 1,
            Outcome::Timeout { retransmits } => {
                self.timeouts += 1;
                self.retransmits += u64::from(*retransmits);
            }
            Outcome::SendError(e) => {
                self.send_errors += 1;
                self.last_send_error = Some(e.clone());
            }
        }
    }
}

struct Shared {
    total: Mutex<Counters>,
    /// Since the last status line.
    window: Mutex<Counters>,
    tracks: Option<Arc<Vec<Mutex<Track>>>>,
}

async fn sensor_task(
    mut sensor: Sensor,
    plan: Arc<Plan>,
    client: Arc<Client>,
    shared: Arc<Shared>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let reading_period = Duration::from_secs_f64(plan.sensors as f64 / plan.rate);
    let post_period = reading_period * plan.batch as u32;
    let offset = post_period.mul_f64(sensor.index as f64 / plan.sensors as f64);
    let end = plan.duration.map(|d| start + d);
    let period_us = reading_period.as_micros() as i64;
    for k in 0u64.. {
        let due = start + offset + post_period.mul_f64(k as f64);
        if end.is_some_and(|e| due >= e) || *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.changed() => break,
        }
        let late = Instant::now().saturating_duration_since(due) > post_period;
        let now = now_us();
        let readings: Vec<_> = (0..plan.batch)
            .map(|j| sensor.measure(now - (plan.batch - 1 - j) as i64 * period_us))
            .collect();
        let req = Client::request(plan.confirmable, senml::pack(&sensor.name, &readings));
        let first_seq = readings[0].seq as usize;
        if let Some(tracks) = &shared.tracks {
            let mut t = tracks[sensor.index].lock().unwrap();
            for r in &readings {
                t.recs.push(Rec {
                    time_us: r.time_us,
                    post_us: now,
                    state: State::InFlight,
                    seen_key: 0,
                });
            }
        }
        let outcome = client.exchange(req).await;
        if let Some(tracks) = &shared.tracks {
            let state = match &outcome {
                Outcome::Response { code, .. } if coap::is_success(*code) => State::Acked,
                Outcome::Response { .. } => State::Refused,
                _ => State::Unknown,
            };
            let mut t = tracks[sensor.index].lock().unwrap();
            for r in &mut t.recs[first_seq..first_seq + plan.batch] {
                r.state = state;
            }
        }
        for c in [&shared.total, &shared.window] {
            let mut c = c.lock().unwrap();
            c.record(plan.batch, &outcome);
            c.late += u64::from(late);
        }
    }
}

fn ms(us: Option<u64>) -> serde_json::Value {
    us.map_or(serde_json::Value::Null, |v| {
        json!((v as f64 / 1000.0 * 1000.0).round() / 1000.0)
    })
}

fn fmt_ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |v| format!("{:.2} ms", v as f64 / 1000.0))
}

fn latency_json(h: &Histogram) -> serde_json::Value {
    json!({
        "count": h.count(),
        "p50_ms": ms(h.quantile(0.5)),
        "p90_ms": ms(h.quantile(0.9)),
        "p99_ms": ms(h.quantile(0.99)),
        "p999_ms": ms(h.quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean().map(|m| (m / 1000.0 * 1000.0).round() / 1000.0),
    })
}

fn status_line(elapsed: Duration, w: &Counters, t: &Counters) -> String {
    let ack = if w.posts > 0 {
        100.0 * w.ok_posts as f64 / w.posts as f64
    } else {
        0.0
    };
    let mut codes: Vec<String> = w.codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
    if w.timeouts > 0 {
        codes.push(format!("timeout×{}", w.timeouts));
    }
    format!(
        "[{:>6.0}s] posts {} ({} readings), acked {:.1}% [{}], latency p50 {} p99 {}, total readings acked {}",
        elapsed.as_secs_f64(),
        w.posts,
        w.readings,
        ack,
        codes.join(" "),
        fmt_ms(w.latency.quantile(0.5)),
        fmt_ms(w.latency.quantile(0.99)),
        t.ok_readings
    )
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = Arc::new(plan(&args)?);
    let timing = Timing {
        ack_timeout: Duration::from_millis(args.ack_timeout_ms.max(1)),
        max_retransmit: args.max_retransmit,
        exchange_timeout: Duration::from_secs_f64(args.timeout),
    };
    // Largest possible request must fit the datagram limit.
    let probe = {
        let mut s = Sensor::new(plan.sensors - 1, 0);
        let rs: Vec<_> = (0..plan.batch)
            .map(|j| s.measure(now_us() + j as i64 * 999_999))
            .collect();
        let mut rs = rs;
        for r in &mut rs {
            r.seq = 9_999_999_999;
            r.temperature = -10.25;
            r.humidity = 100.0;
        }
        Client::encoded_len(&Client::request(true, senml::pack(&s.name, &rs)))
    };
    if probe > args.max_datagram {
        bail!(
            "--batch {} makes datagrams of up to {probe} bytes, above --max-datagram {} (gatewayd's max_datagram_bytes); lower --batch",
            plan.batch,
            args.max_datagram
        );
    }

    let client = Client::new(args.target, plan.sockets, timing).await?;
    let tracks = args.cloud.as_ref().filter(|_| !args.demo).map(|_| {
        Arc::new(
            (0..plan.sensors)
                .map(|i| Mutex::new(Track::new(format!("coap:sim-{i}"))))
                .collect::<Vec<_>>(),
        )
    });
    let poller = match (&args.cloud, &tracks) {
        (Some(url), Some(tracks)) => {
            let p = Arc::new(Poller::new(url, tracks.clone())?);
            p.check()
                .await
                .context("the cloud API (--cloud) does not answer")?;
            Some(p)
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        total: Mutex::new(Counters::default()),
        window: Mutex::new(Counters::default()),
        tracks,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop_tx = stop_tx.clone();
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
    }

    let (rss_stop_tx, rss_stop_rx) = watch::channel(false);
    let rss_task = args
        .rss_pid
        .map(|pid| tokio::spawn(rss::sample(pid, Duration::from_millis(250), rss_stop_rx)));

    eprintln!(
        "gatewayd-load: {} sensors, {} readings/s, batch {}, {}, {} sockets → coap://{}/telemetry{}{}",
        plan.sensors,
        plan.rate,
        plan.batch,
        if plan.confirmable { "confirmable" } else { "non-confirmable" },
        plan.sockets,
        args.target,
        plan.duration.map_or(" until Ctrl-C".into(), |d| format!(" for {:.1} s", d.as_secs_f64())),
        args.cloud.as_ref().map_or(String::new(), |c| format!(", cloud {c}")),
    );

    let start = Instant::now();
    let start_us = now_us();
    let mut sensors = tokio::task::JoinSet::new();
    for i in 0..plan.sensors {
        sensors.spawn(sensor_task(
            Sensor::new(i, args.seed),
            plan.clone(),
            client.clone(),
            shared.clone(),
            start,
            stop_rx.clone(),
        ));
    }
    if args.edge_demo {
        eprintln!("gatewayd-load: {}", edge_demo::describe());
        let end = plan.duration.map(|d| start + d);
        sensors.spawn(edge_demo::boiler_task(
            client.clone(),
            start,
            end,
            stop_rx.clone(),
        ));
        sensors.spawn(edge_demo::pump_task(
            client.clone(),
            args.seed,
            start,
            end,
            stop_rx.clone(),
        ));
    }

    // Cloud pollers: run during the load and after it, until everything
    // acknowledged has been seen or --cloud-wait expires.
    let (poll_stop_tx, poll_stop_rx) = watch::channel(false);
    let mut pollers = tokio::task::JoinSet::new();
    if let Some(p) = &poller {
        const SHARDS: usize = 4;
        for shard in 0..SHARDS {
            let p = p.clone();
            let mut stop = poll_stop_rx.clone();
            pollers.spawn(async move {
                loop {
                    let t0 = Instant::now();
                    p.round(shard, SHARDS).await;
                    if *stop.borrow() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until((t0 + Duration::from_millis(250)).into()) => {}
                        _ = stop.changed() => {}
                    }
                }
            });
        }
    }

    // Status lines while sending.
    let demo_cloud = args.cloud.clone().filter(|_| args.demo);
    let status = plan.status_every.map(|every| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .ok();
            let mut tick = tokio::time::interval_at((start + every).into(), every);
            loop {
                tick.tick().await;
                let w = std::mem::take(&mut *shared.window.lock().unwrap());
                let t = shared.total.lock().unwrap().clone();
                let mut line = status_line(start.elapsed(), &w, &t);
                if let (Some(url), Some(http)) = (&demo_cloud, &http) {
                    line.push_str(&demo_cloud_note(http, url).await);
                }
                if let Some(e) = &w.last_send_error {
                    line.push_str(&format!(" (send error: {e})"));
                }
                println!("{line}");
            }
        })
    });

    while sensors.join_next().await.is_some() {}
    let send_elapsed = start.elapsed();
    if let Some(s) = status {
        s.abort();
    }

    if let Some(p) = &poller {
        let deadline = Instant::now() + Duration::from_secs_f64(args.cloud_wait);
        while !p.all_acked_seen() && Instant::now() < deadline && !*stop_tx.subscribe().borrow() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = poll_stop_tx.send(true);
        while pollers.join_next().await.is_some() {}
        // One final pass, so nothing delivered just now is missed.
        p.round(0, 1).await;
    }
    let _ = rss_stop_tx.send(true);
    let rss = match rss_task {
        Some(t) => Some(t.await?),
        None => None,
    };

    let total = shared.total.lock().unwrap().clone();
    let report = build_report(
        &args,
        &plan,
        &client,
        &total,
        send_elapsed,
        start_us,
        poller.as_deref(),
        rss.as_ref(),
        interrupted.load(std::sync::atomic::Ordering::SeqCst),
    );
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report.json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json)?);
    } else {
        print!("{}", report.text);
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Demo mode: how many readings of sim-0 the cloud has from the last minute.
async fn demo_cloud_note(http: &reqwest::Client, base: &str) -> String {
    let since = now_us() - 60_000_000;
    let url = format!(
        "{}/api/v1/devices/coap:sim-0/readings",
        base.trim_end_matches('/')
    );
    let resp = http
        .get(&url)
        .query(&[("since", since.to_string()), ("limit", "10000".to_string())])
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
            Ok(body) => format!(
                "; cloud has {} readings of coap:sim-0 from the last minute",
                cloud::parse_readings(&body).0.len()
            ),
            Err(e) => format!("; cloud: bad JSON: {e}"),
        },
        Ok(r) => format!("; cloud: HTTP {}", r.status()),
        Err(e) => format!("; cloud: {e}"),
    }
}

struct Report {
    text: String,
    json: serde_json::Value,
    problems: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &Args,
    plan: &Plan,
    client: &Client,
    c: &Counters,
    elapsed: Duration,
    start_us: i64,
    poller: Option<&Poller>,
    rss: Option<&rss::RssStats>,
    interrupted: bool,
) -> Report {
    use std::fmt::Write as _;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ack_rate = if c.posts > 0 {
        c.ok_posts as f64 / c.posts as f64
    } else {
        0.0
    };
    let mut problems = Vec::new();
    if c.ok_posts == 0 {
        problems.push(format!(
            "no successful response from {} (is gatewayd listening there?)",
            args.target
        ));
    }
    let mut t = String::new();
    let _ = writeln!(t, "\n== gatewayd-load report ==");
    let _ = writeln!(
        t,
        "config      {} sensors, target {} readings/s, batch {}, {}, {} sockets, target {}",
        plan.sensors,
        plan.rate,
        plan.batch,
        if plan.confirmable { "CON" } else { "NON" },
        client.sockets(),
        args.target
    );
    let _ = writeln!(
        t,
        "sent        {} posts / {} readings in {:.1} s = {:.0} readings/s{}",
        c.posts,
        c.readings,
        secs,
        c.readings as f64 / secs,
        if interrupted { " (interrupted)" } else { "" }
    );
    let codes: Vec<String> = c.codes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(
        t,
        "acked       {} posts ({:.2} %), {} readings = {:.0} readings/s; responses [{}], timeouts {}, resets {}, send errors {}, retransmissions {}, late posts {}",
        c.ok_posts,
        100.0 * ack_rate,
        c.ok_readings,
        c.ok_readings as f64 / secs,
        codes.join(", "),
        c.timeouts,
        c.resets,
        c.send_errors,
        c.retransmits,
        c.late
    );
    let _ = writeln!(
        t,
        "latency     POST → 2.xx: p50 {}, p90 {}, p99 {}, max {}",
        fmt_ms(c.latency.quantile(0.5)),
        fmt_ms(c.latency.quantile(0.9)),
        fmt_ms(c.latency.quantile(0.99)),
        fmt_ms(c.latency.max())
    );
    if let Some(e) = &c.last_send_error {
        let _ = writeln!(t, "send error  {e}");
    }
    let mut cloud_json = serde_json::Value::Null;
    if let Some(p) = poller {
        let s = p.stats.lock().unwrap();
        let (mut acked, mut acked_missing, mut unacked_stored, mut refused_stored) =
            (0u64, 0u64, 0u64, 0u64);
        let mut missing_examples = Vec::new();
        for tr in p.tracks.iter() {
            let tr = tr.lock().unwrap();
            for (seq, r) in tr.recs.iter().enumerate() {
                match (r.state, r.seen_key != 0) {
                    (State::Acked, true) => acked += 1,
                    (State::Acked, false) => {
                        acked += 1;
                        acked_missing += 1;
                        if missing_examples.len() < 5 {
                            missing_examples.push(format!("{}#{seq}", tr.device));
                        }
                    }
                    (State::Refused, true) => refused_stored += 1,
                    (_, true) => unacked_stored += 1,
                    _ => {}
                }
            }
        }
        let window_s = s
            .last_received_us
            .map(|l| (l - s.first_post_us.unwrap_or(start_us)) as f64 / 1e6)
            .filter(|w| *w > 0.0);
        let stored_rate = window_s.map(|w| s.delivered as f64 / w);
        if acked_missing > 0 {
            problems.push(format!(
                "{acked_missing} acknowledged readings never reached the cloud (e.g. {})",
                missing_examples.join(", ")
            ));
        }
        if s.duplicates > 0 {
            problems.push(format!("{} readings stored more than once", s.duplicates));
        }
        if refused_stored > 0 {
            problems.push(format!(
                "{refused_stored} readings refused with an error code were stored anyway"
            ));
        }
        let _ = writeln!(
            t,
            "cloud       {} readings stored ({} acked, {} missing, {} duplicates, {} stored without a 2.xx); {} readings/s POST→stored",
            s.delivered,
            acked,
            acked_missing,
            s.duplicates,
            unacked_stored,
            stored_rate.map_or("-".into(), |r| format!("{r:.0}"))
        );
        let _ = writeln!(
            t,
            "end to end  POST → stored (received_us): p50 {}, p99 {}, max {};  POST → visible via API: p50 {}, p99 {}, max {}",
            fmt_ms(s.e2e_stored.quantile(0.5)),
            fmt_ms(s.e2e_stored.quantile(0.99)),
            fmt_ms(s.e2e_stored.max()),
            fmt_ms(s.e2e_visible.quantile(0.5)),
            fmt_ms(s.e2e_visible.quantile(0.99)),
            fmt_ms(s.e2e_visible.max())
        );
        if s.poll_errors > 0 {
            let _ = writeln!(
                t,
                "cloud polls {} ({} failed; last: {})",
                s.polls,
                s.poll_errors,
                s.last_error.as_deref().unwrap_or("-")
            );
        }
        cloud_json = json!({
            "url": p.base,
            "stored": s.delivered,
            "acked": acked,
            "acked_missing": acked_missing,
            "missing_examples": missing_examples,
            "duplicates": s.duplicates,
            "stored_without_ack": unacked_stored,
            "refused_but_stored": refused_stored,
            "stored_readings_per_s": stored_rate,
            "e2e_post_to_stored": latency_json(&s.e2e_stored),
            "e2e_post_to_visible": latency_json(&s.e2e_visible),
            "polls": s.polls,
            "poll_errors": s.poll_errors,
            "last_poll_error": s.last_error,
            "foreign_readings": s.foreign,
        });
    }
    let mut rss_json = serde_json::Value::Null;
    if let Some(r) = rss {
        let _ = writeln!(
            t,
            "memory      pid {}: VmRSS max {:.1} MiB, mean {:.1} MiB, last {:.1} MiB; VmHWM {:.1} MiB ({} samples{})",
            r.pid,
            r.max_rss_kb as f64 / 1024.0,
            r.mean_rss_kb / 1024.0,
            r.last_rss_kb as f64 / 1024.0,
            r.hwm_kb as f64 / 1024.0,
            r.samples,
            if r.exited { "; the process exited!" } else { "" }
        );
        if r.exited {
            problems.push(format!(
                "process {} (--rss-pid) exited during the run",
                r.pid
            ));
        }
        rss_json = json!({
            "pid": r.pid, "samples": r.samples, "max_rss_kb": r.max_rss_kb,
            "mean_rss_kb": r.mean_rss_kb.round(), "last_rss_kb": r.last_rss_kb,
            "hwm_kb": r.hwm_kb, "exited": r.exited,
        });
    }
    for p in &problems {
        let _ = writeln!(t, "PROBLEM     {p}");
    }
    let _ = writeln!(
        t,
        "result      {}",
        if problems.is_empty() { "ok" } else { "FAILED" }
    );
    let json = json!({
        "config": {
            "target": args.target.to_string(),
            "sensors": plan.sensors,
            "rate": plan.rate,
            "batch": plan.batch,
            "confirmable": plan.confirmable,
            "sockets": client.sockets(),
            "duration_s": plan.duration.map(|d| d.as_secs_f64()),
        },
        "elapsed_s": secs,
        "interrupted": interrupted,
        "sent": { "posts": c.posts, "readings": c.readings, "readings_per_s": c.readings as f64 / secs },
        "acked": {
            "posts": c.ok_posts, "readings": c.ok_readings, "ack_rate": ack_rate,
            "readings_per_s": c.ok_readings as f64 / secs,
            "codes": c.codes, "timeouts": c.timeouts, "resets": c.resets,
            "send_errors": c.send_errors, "retransmissions": c.retransmits, "late_posts": c.late,
            "unmatched_datagrams": client.unmatched.load(std::sync::atomic::Ordering::Relaxed),
        },
        "latency_post_to_ack": latency_json(&c.latency),
        "cloud": cloud_json,
        "rss": rss_json,
        "problems": problems,
        "ok": problems.is_empty(),
    });
    Report {
        text: t,
        json,
        problems,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatewayd-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatewayd-load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
