//! A simulated sensor on a real pseudo-terminal: the test holds the master
//! side and speaks `gatewayd-sensor-proto` like the firmware does; the
//! source opens the slave through a symlink the test re-points to "replug".

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatewayd_sensor_proto::frame::{FrameDecoder, MAX_FRAME, MAX_PAYLOAD};
use gatewayd_sensor_proto::msg::{
    decode_message, write_frame, AckResult, Body, Command, Diagnostics, Envelope, ErrorCode,
    Reading, ResetReason, Unit, Value,
};
use gatewayd_sensor_proto::{Bounded, Str};

/// A pty pair in raw mode.
pub struct Pty {
    pub master: File,
    /// Kept open so the master never sees a hang-up before the source opens
    /// the slave.
    _slave: OwnedFd,
    pub path: PathBuf,
}

pub fn openpty() -> Pty {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: the out-pointers point to live c_ints; name, termp and winp
    // may be null (no name buffer: the path is read from /proc instead).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded, so both are open descriptors we now own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: termios is plain data; tcgetattr fills it before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: slave is an open tty descriptor, t a valid termios.
    unsafe {
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t), 0);
    }
    let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
    Pty {
        master: File::from(master),
        _slave: slave,
        path,
    }
}

/// Points `link` at `target`, atomically replacing what was there.
pub fn plug(target: &Path, link: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

pub fn frame(env: &Envelope) -> Vec<u8> {
    let mut scratch = [0u8; MAX_PAYLOAD];
    let mut wire = [0u8; MAX_FRAME];
    let n = write_frame(env, &mut scratch, &mut wire).unwrap();
    wire[..n].to_vec()
}

/// How the simulated device answers commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Like the firmware.
    Normally,
    /// Every command answered `Ack{Err(code)}`.
    Refuse(ErrorCode),
    /// No answer at all (identity probes included).
    Ignore,
}

pub struct DeviceState {
    pub id: String,
    pub firmware: String,
    pub interval_ms: u32,
    /// Send readings on the timer.
    pub sampling: bool,
    pub answer: Answer,
    /// Every command envelope received, in order.
    pub received: Vec<Envelope>,
    pub reset_reason: ResetReason,
    booted: Instant,
    seq: u16,
}

/// A simulated sensor on the master side of a pty.
pub struct Device {
    pub pty_path: PathBuf,
    pub state: Arc<Mutex<DeviceState>>,
    master: Arc<File>,
    write_lock: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _pty: Pty,
}

impl Device {
    /// A device with id `id`, not sampling, that has said nothing yet.
    pub fn new(id: &str) -> Device {
        let pty = openpty();
        let master = Arc::new(pty.master.try_clone().unwrap());
        let state = Arc::new(Mutex::new(DeviceState {
            id: id.into(),
            firmware: "0.3.1".into(),
            interval_ms: 100,
            sampling: false,
            answer: Answer::Normally,
            received: Vec::new(),
            reset_reason: ResetReason::PowerOn,
            booted: Instant::now(),
            seq: 0,
        }));
        let mut d = Device {
            pty_path: pty.path.clone(),
            state,
            master,
            write_lock: Arc::new(Mutex::new(())),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            _pty: pty,
        };
        d.threads.push(d.spawn_reader());
        d.threads.push(d.spawn_sampler());
        d
    }

    fn handle(&self) -> Handle {
        Handle {
            state: self.state.clone(),
            master: self.master.clone(),
            write_lock: self.write_lock.clone(),
        }
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.handle().write(bytes);
    }

    pub fn send(&self, body: Body) {
        self.handle().send(body);
    }

    /// Hello then Diagnostics, as at boot.
    pub fn boot(&self) {
        self.handle().boot();
    }

    /// One `Readings` message with `temperature` and `humidity`.
    pub fn sample(&self) {
        self.handle().sample();
    }

    pub fn set_sampling(&self, on: bool) {
        self.state.lock().unwrap().sampling = on;
    }

    pub fn set_answer(&self, a: Answer) {
        self.state.lock().unwrap().answer = a;
    }

    pub fn received(&self) -> Vec<Envelope> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn plug_into(&self, link: &Path) {
        plug(&self.pty_path, link);
    }

    fn spawn_reader(&self) -> JoinHandle<()> {
        let h = self.handle();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let mut decoder = FrameDecoder::new();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: h.master.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: pfd is a valid pollfd for an open descriptor.
                let n = unsafe { libc::poll(&mut pfd, 1, 20) };
                if n <= 0 || pfd.revents & libc::POLLIN == 0 {
                    if pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    continue;
                }
                let n = match (&*h.master).read(&mut buf) {
                    Ok(n) => n,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let mut envs = Vec::new();
                decoder.feed(&buf[..n], |r| {
                    if let Ok(env) = r.map(decode_message) {
                        envs.extend(env.ok());
                    }
                });
                for env in envs {
                    h.command(env);
                }
            }
        })
    }

    fn spawn_sampler(&self) -> JoinHandle<()> {
        let h = self.handle();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                let (on, interval) = {
                    let s = h.state.lock().unwrap();
                    (s.sampling, s.interval_ms)
                };
                if Instant::now() < next {
                    continue;
                }
                next = Instant::now() + Duration::from_millis(u64::from(interval));
                if on {
                    h.sample();
                }
            }
        })
    }

    /// Pulls the plug: the master side closes (the source reads EIO).
    pub fn unplug(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        drop(self);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Handle {
    state: Arc<Mutex<DeviceState>>,
    master: Arc<File>,
    write_lock: Arc<Mutex<()>>,
}

impl Handle {
    fn write(&self, bytes: &[u8]) {
        let _g = self.write_lock.lock().unwrap();
        let _ = (&*self.master).write_all(bytes);
    }

    fn send(&self, body: Body) {
        let seq = {
            let mut s = self.state.lock().unwrap();
            s.seq = s.seq.wrapping_add(1);
            s.seq
        };
        self.write(&frame(&Envelope::new(seq, body)));
    }

    fn diagnostics(&self) -> Diagnostics {
        let s = self.state.lock().unwrap();
        Diagnostics {
            firmware: Str::new(&s.firmware).unwrap(),
            uptime_s: s.booted.elapsed().as_secs() as u32,
            reset_reason: s.reset_reason,
            battery_mv: Some(3000),
            stack_free_min: 512,
            watchdog_resets: 0,
            sample_interval_ms: s.interval_ms,
            frames_rx_errors: 0,
        }
    }

    fn hello(&self) -> Body {
        let s = self.state.lock().unwrap();
        Body::Hello {
            device_id: Str::new(&s.id).unwrap(),
            firmware: Str::new(&s.firmware).unwrap(),
            protocol: 1,
        }
    }

    fn boot(&self) {
        self.send(self.hello());
        self.send(Body::Diagnostics(self.diagnostics()));
    }

    fn sample(&self) {
        let t = self.state.lock().unwrap().booted.elapsed().as_millis() as u32;
        let r = |name: &str, unit, v| Reading {
            sensor: Str::new(name).unwrap(),
            unit,
            value: Value::F32(v),
            time_ms: Some(t),
        };
        let batch = Bounded::try_from_iter([
            r("temperature", Unit::Celsius, 21.5),
            r("humidity", Unit::RelativeHumidity, 40.0),
        ])
        .unwrap();
        self.send(Body::Readings(batch));
    }

    fn command(&self, env: Envelope) {
        let Body::Command(cmd) = env.body else {
            return;
        };
        let answer = {
            let mut s = self.state.lock().unwrap();
            s.received.push(env.clone());
            s.answer
        };
        let ack = |result| Body::Ack {
            seq: env.seq,
            result,
        };
        match answer {
            Answer::Ignore => {}
            Answer::Refuse(code) => self.send(ack(AckResult::Err(code))),
            Answer::Normally => {
                if let Err(code) = cmd.validate() {
                    return self.send(ack(AckResult::Err(code)));
                }
                match cmd {
                    Command::SetSampleInterval { ms } => {
                        self.state.lock().unwrap().interval_ms = ms;
                        self.send(ack(AckResult::Ok));
                    }
                    Command::Identify { .. } => self.send(ack(AckResult::Ok)),
                    Command::RequestDiagnostics => {
                        self.boot();
                        self.send(ack(AckResult::Ok));
                    }
                    Command::Reboot => {
                        self.send(ack(AckResult::Ok));
                        {
                            let mut s = self.state.lock().unwrap();
                            s.reset_reason = ResetReason::Software;
                            s.booted = Instant::now();
                        }
                        self.boot();
                    }
                }
            }
        }
    }
}
