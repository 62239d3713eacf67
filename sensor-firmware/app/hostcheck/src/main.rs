//! `gatewayd-sensor-hostcheck`: end-to-end check of the QEMU firmware.
//!
//! Starts `qemu-system-arm -M lm3s6965evb` with the firmware's UART0 on a
//! Unix socket, then talks the real protocol (`gatewayd-sensor-proto`) to
//! it and checks the behaviour the gateway relies on. Developer tool, not
//! a test of the main workspace:
//!
//! ```text
//! hostcheck [--qemu PATH] [--id HEX] ELF          # protocol checks (~25 s)
//! hostcheck [--qemu PATH] --watchdog ELF          # ELF built with feature wdt-test (~25 s)
//! ```
//!
//! Exit status 0 when every check passed; the last line is
//! `hostcheck: N passed, 0 failed`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use gatewayd_sensor_proto::frame::{encode_frame, FrameDecoder, MAX_FRAME, MAX_PAYLOAD};
use gatewayd_sensor_proto::msg::{
    decode_message, write_frame, AckResult, Body, Command, Diagnostics, Envelope, ErrorCode,
    ResetReason,
};

struct Qemu {
    child: Child,
    sock: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

struct Link {
    stream: UnixStream,
    decoder: FrameDecoder,
    pending: std::collections::VecDeque<(Instant, Envelope)>,
    seq: u16,
    /// Arrival time of the message `expect` returned last.
    last_at: Instant,
}

impl Link {
    fn send(&mut self, body: Body) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        let env = Envelope::new(self.seq, body);
        let (mut s, mut w) = ([0u8; MAX_PAYLOAD], [0u8; MAX_FRAME]);
        let n = write_frame(&env, &mut s, &mut w).expect("encode");
        self.stream.write_all(&w[..n]).expect("write");
        self.seq
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Next message from the device, or None after `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<(Instant, Envelope)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut buf = [0u8; 512];
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("read: {e}"),
            };
            let now = Instant::now();
            let pending = &mut self.pending;
            self.decoder.feed(&buf[..n], |r| match r {
                Ok(p) => match decode_message(p) {
                    Ok(env) => pending.push_back((now, env)),
                    Err(e) => eprintln!("  (device sent an undecodable message: {e})"),
                },
                Err(e) => eprintln!("  (bad frame from device: {e})"),
            });
        }
    }

    /// Skips messages (Readings) until one matches `pred`.
    fn expect<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Envelope) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("timed out waiting for {what}"))?;
            let (at, env) = self
                .next(left)
                .ok_or_else(|| format!("timed out waiting for {what}"))?;
            if let Some(v) = pred(&env) {
                self.last_at = at;
                return Ok(v);
            }
            if !matches!(env.body, Body::Readings(_)) {
                eprintln!("  (skipped while waiting for {what}: {:?})", env.body);
            }
        }
    }

    /// The next `n` Readings: (arrival, device time_ms of the first reading).
    fn readings(&mut self, n: usize, timeout: Duration) -> Result<Vec<(Instant, u32)>, String> {
        let mut out = Vec::new();
        while out.len() < n {
            let ms = self.expect("Readings", timeout, |e| match &e.body {
                Body::Readings(b) => Some(b.get(0).and_then(|r| r.time_ms).unwrap_or(0)),
                _ => None,
            })?;
            out.push((self.last_at, ms));
        }
        Ok(out)
    }
}

fn hello(e: &Envelope) -> Option<String> {
    match &e.body {
        Body::Hello { device_id, .. } => Some(device_id.to_string()),
        _ => None,
    }
}

fn diag(e: &Envelope) -> Option<Diagnostics> {
    match &e.body {
        Body::Diagnostics(d) => Some(*d),
        _ => None,
    }
}

fn ack(seq: u16) -> impl FnMut(&Envelope) -> Option<AckResult> {
    move |e| match e.body {
        Body::Ack { seq: s, result } if s == seq => Some(result),
        _ => None,
    }
}

fn start(qemu: &str, elf: &str, id: Option<&str>) -> (Qemu, Link) {
    let sock = std::env::temp_dir().join(format!("fw-hostcheck-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Proc::new(qemu);
    cmd.args([
        "-M",
        "lm3s6965evb",
        "-nographic",
        "-monitor",
        "none",
        "-kernel",
        elf,
    ])
    .arg("-serial")
    .arg(format!("unix:{},server=on,wait=on", sock.display()));
    if let Some(id) = id {
        cmd.arg("-device").arg(format!(
            "loader,addr=0x2000FFF8,data=0x{id:0>8}1D5E1D5E,data-len=8"
        ));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start qemu");
    let q = Qemu {
        child,
        sock: sock.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("connect {}: {e}", sock.display()),
        }
    };
    (
        q,
        Link {
            stream,
            decoder: FrameDecoder::new(),
            pending: Default::default(),
            seq: 1000,
            last_at: Instant::now(),
        },
    )
}

struct Score {
    passed: u32,
    failed: u32,
}

impl Score {
    fn check(&mut self, name: &str, r: Result<String, String>) {
        match r {
            Ok(detail) => {
                self.passed += 1;
                println!("ok   {name}: {detail}");
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
}

const T: Duration = Duration::from_secs(5);

fn protocol_checks(l: &mut Link, s: &mut Score, id: Option<&str>) {
    let want_id = id.map_or("lm3s6965-0001".to_string(), |h| {
        format!("lm3s6965-{:0>8}", h.to_lowercase())
    });
    s.check(
        "boot Hello",
        (|| {
            let got = l.expect("Hello", T, hello)?;
            (got == want_id)
                .then(|| got.clone())
                .ok_or(format!("device_id {got}, want {want_id}"))
        })(),
    );
    s.check(
        "boot Diagnostics",
        (|| {
            let d = l.expect("Diagnostics", T, diag)?;
            if d.reset_reason != ResetReason::PowerOn
                || d.uptime_s > 1
                || d.sample_interval_ms != 1000
            {
                return Err(format!("{d:?}"));
            }
            Ok(format!("{d:?}"))
        })(),
    );
    s.check(
        "Readings at 1 s (device time) and clock calibration",
        (|| {
            let r = l.readings(6, T)?;
            let dev: Vec<u32> = r.windows(2).map(|w| w[1].1.wrapping_sub(w[0].1)).collect();
            if dev.iter().any(|&d| d != 1000) {
                return Err(format!("device deltas {dev:?}"));
            }
            let wall = r[r.len() - 1].0 - r[0].0;
            let devms = r[r.len() - 1].1 - r[0].1;
            let ratio = f64::from(devms) / (wall.as_secs_f64() * 1000.0);
            if !(0.9..=1.1).contains(&ratio) {
                return Err(format!(
                    "device {devms} ms in {wall:?} wall: ratio {ratio:.3}"
                ));
            }
            Ok(format!(
                "deltas {dev:?}; {devms} device ms in {:.0} wall ms (ratio {ratio:.3})",
                wall.as_secs_f64() * 1000.0
            ))
        })(),
    );
    s.check(
        "SetSampleInterval 300: Ack Ok and cadence",
        (|| {
            let seq = l.send(Body::Command(Command::SetSampleInterval { ms: 300 }));
            let res = l.expect("Ack", T, ack(seq))?;
            if res != AckResult::Ok {
                return Err(format!("{res:?}"));
            }
            let r = l.readings(5, T)?;
            let dev: Vec<u32> = r.windows(2).map(|w| w[1].1.wrapping_sub(w[0].1)).collect();
            if dev.iter().any(|&d| d != 300) {
                return Err(format!("device deltas {dev:?}"));
            }
            Ok(format!("deltas {dev:?}"))
        })(),
    );
    s.check(
        "SetSampleInterval 50 refused",
        (|| {
            let seq = l.send(Body::Command(Command::SetSampleInterval { ms: 50 }));
            let res = l.expect("Ack", T, ack(seq))?;
            (res == AckResult::Err(ErrorCode::InvalidArgument))
                .then(|| format!("{res:?}"))
                .ok_or(format!("{res:?}"))
        })(),
    );
    s.check(
        "garbage, then RequestDiagnostics: Hello, Diagnostics, Ack",
        (|| {
            l.raw(&[
                0x11, 0x22, 0x33, 0x00, 0x05, 0xAA, 0xBB, 0xCC, 0xDD, 0x00, 0xFF, 0x00,
            ]);
            l.raw(&[0x42; 300]);
            l.raw(&[0x00]);
            let seq = l.send(Body::Command(Command::RequestDiagnostics));
            l.expect("Hello", T, hello)?;
            let d = l.expect("Diagnostics", T, diag)?;
            let (_, next) = l.next(T).ok_or("no Ack")?;
            if next.body
                != (Body::Ack {
                    seq,
                    result: AckResult::Ok,
                })
            {
                return Err(format!(
                    "expected the Ack right after Diagnostics, got {next:?}"
                ));
            }
            if d.frames_rx_errors == 0 || d.sample_interval_ms != 300 {
                return Err(format!("{d:?}"));
            }
            Ok(format!(
                "frames_rx_errors {}, stack_free_min {}, uptime_s {}",
                d.frames_rx_errors, d.stack_free_min, d.uptime_s
            ))
        })(),
    );
    s.check(
        "protocol errors answered",
        (|| {
            let mut w = [0u8; MAX_FRAME];
            let n = encode_frame(&[1, 5, 9], &mut w).map_err(|e| e.to_string())?; // v1, seq 5, tag 9
            l.raw(&w[..n]);
            let e1 = l.expect("Error", T, |e| match &e.body {
                Body::Error { code, detail } => Some((*code, detail.to_string())),
                _ => None,
            })?;
            let n = encode_frame(&[2, 5, 3, 2], &mut w).map_err(|e| e.to_string())?; // v2
            l.raw(&w[..n]);
            let e2 = l.expect("Error", T, |e| match &e.body {
                Body::Error { code, detail } => Some((*code, detail.to_string())),
                _ => None,
            })?;
            if e1 != (ErrorCode::Unsupported, "unknown tag 9".into())
                || e2.0 != ErrorCode::Unsupported
            {
                return Err(format!("{e1:?} {e2:?}"));
            }
            Ok(format!("{e1:?} {e2:?}"))
        })(),
    );
    s.check(
        "Identify 2 s",
        (|| {
            let seq = l.send(Body::Command(Command::Identify { seconds: 2 }));
            let res = l.expect("Ack", T, ack(seq))?;
            (res == AckResult::Ok)
                .then(|| "Ack Ok (QEMU shows no LED)".to_string())
                .ok_or(format!("{res:?}"))
        })(),
    );
    s.check(
        "Reboot: Ack, then Hello and Diagnostics(Software)",
        (|| {
            let seq = l.send(Body::Command(Command::Reboot));
            let res = l.expect("Ack", T, ack(seq))?;
            if res != AckResult::Ok {
                return Err(format!("{res:?}"));
            }
            let got = l.expect("Hello after reboot", T, hello)?;
            let d = l.expect("Diagnostics after reboot", T, diag)?;
            if got != want_id
                || d.reset_reason != ResetReason::Software
                || d.uptime_s > 1
                || d.sample_interval_ms != 1000
            {
                return Err(format!("{got} {d:?}"));
            }
            Ok(format!("{got}; {d:?}"))
        })(),
    );
}

fn watchdog_checks(l: &mut Link, s: &mut Score) {
    s.check(
        "boot",
        (|| {
            l.expect("Hello", T, hello)?;
            let d = l.expect("Diagnostics", T, diag)?;
            (d.reset_reason == ResetReason::PowerOn && d.watchdog_resets == 0)
                .then(|| format!("{d:?}"))
                .ok_or(format!("{d:?}"))
        })(),
    );
    for n in 1..=2u16 {
        s.check(
            &format!("watchdog reset #{n}"),
            (|| {
                let t0 = Instant::now();
                l.expect(
                    "Hello after the watchdog reset",
                    Duration::from_secs(20),
                    hello,
                )?;
                let d = l.expect("Diagnostics", T, diag)?;
                if d.reset_reason != ResetReason::Watchdog || d.watchdog_resets != n {
                    return Err(format!("{d:?}"));
                }
                Ok(format!("after {:.1} s: {d:?}", t0.elapsed().as_secs_f64()))
            })(),
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut qemu, mut id, mut wdt, mut elf) = ("qemu-system-arm".to_string(), None, false, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--qemu" => qemu = args.next().expect("--qemu PATH"),
            "--id" => id = Some(args.next().expect("--id HEX")),
            "--watchdog" => wdt = true,
            "-h" | "--help" => {
                println!("usage: hostcheck [--qemu PATH] [--id HEX] [--watchdog] ELF");
                return;
            }
            _ => elf = Some(a),
        }
    }
    let elf = elf.expect("usage: hostcheck [--qemu PATH] [--id HEX] [--watchdog] ELF");
    if let Some(h) = &id {
        assert!(
            h.len() <= 8 && u32::from_str_radix(h, 16).is_ok(),
            "--id takes up to 8 hex digits"
        );
    }
    let (_q, mut link) = start(&qemu, &elf, id.as_deref());
    let mut score = Score {
        passed: 0,
        failed: 0,
    };
    if wdt {
        watchdog_checks(&mut link, &mut score);
    } else {
        protocol_checks(&mut link, &mut score, id.as_deref());
    }
    println!(
        "hostcheck: {} passed, {} failed",
        score.passed, score.failed
    );
    std::process::exit(i32::from(score.failed > 0));
}
