//! Driving gatewayd's D-Bus interface from the tests: `gatewayctl` (as this
//! user or as `nobody`), `busctl`/`gdbus` as independent clients, and a
//! `gatewayctl watch --json` collecting signals.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gatewayd_tests::process::bin_path;
use gatewayd_tests::require;
use serde_json::Value as J;

pub const NAME: &str = "io.gatewayd.Gateway1";
pub const PATH: &str = "/io/gatewayd/Gateway1";

/// Whether this process may switch to another uid (the tests that call as
/// `nobody` need it; CI runs as root).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// gatewayctl copied where `nobody` can execute it (the build directory
/// may sit under a private home).
pub fn ctl_for_anyone(dir: &Path) -> PathBuf {
    let target = dir.join("gatewayctl");
    if !target.exists() {
        std::fs::copy(bin_path("gatewayctl"), &target).expect("copy gatewayctl");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    target
}

pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `gatewayctl --bus <address> <args>` as this user.
pub fn ctl(bus: &str, args: &[&str]) -> Output {
    ctl_with(Command::new(bin_path("gatewayctl")), bus, args, None)
}

/// The same with `stdin` fed to the command.
pub fn ctl_stdin(bus: &str, args: &[&str], stdin: &str) -> Output {
    ctl_with(Command::new(bin_path("gatewayctl")), bus, args, Some(stdin))
}

/// `gatewayctl` as uid/gid 65534 (`nobody`) with the given supplementary
/// groups (none: `--clear-groups`).
pub fn ctl_as_nobody(exe: &Path, groups: &[u32], bus: &str, args: &[&str]) -> Output {
    require::command("setpriv");
    let mut cmd = Command::new(require::path("setpriv"));
    cmd.args(["--reuid=65534", "--regid=65534"]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", g.join(",")));
    }
    cmd.arg(exe);
    ctl_with(cmd, bus, args, None)
}

fn ctl_with(mut cmd: Command, bus: &str, args: &[&str], stdin: Option<&str>) -> Output {
    cmd.arg("--bus").arg(bus).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run gatewayctl");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("gatewayctl output")
}

/// Runs gatewayctl, asserts exit code `code`, returns stdout.
pub fn ctl_ok(bus: &str, args: &[&str]) -> String {
    let out = ctl(bus, args);
    assert!(out.status.success(), "gatewayctl {args:?}: {}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs gatewayctl with `--json`, parses stdout.
pub fn ctl_json(bus: &str, args: &[&str]) -> J {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let text = ctl_ok(bus, &a);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// Asserts gatewayctl fails with exit code `code`; returns stderr.
pub fn ctl_fails(bus: &str, args: &[&str], code: i32) -> String {
    let out = ctl(bus, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "gatewayctl {args:?}: {}",
        show(&out)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Polls `f` until it returns `Some`, or panics with `what` after 60 s.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `gatewayctl watch --json`, its lines collected by a thread.
pub struct Watch {
    child: Child,
    lines: mpsc::Receiver<J>,
    pub seen: Vec<J>,
}

impl Watch {
    /// Starts watching and returns once the match rules are installed.
    pub fn start(bus: &str) -> Watch {
        let mut child = Command::new(bin_path("gatewayctl"))
            .args(["--bus", bus, "watch", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gatewayctl watch");
        let stderr = child.stderr.take().unwrap();
        let mut err = BufReader::new(stderr);
        let mut line = String::new();
        loop {
            line.clear();
            let n = err.read_line(&mut line).unwrap();
            assert!(n > 0, "gatewayctl watch exited before watching");
            if line.contains("watching") {
                break;
            }
        }
        std::thread::spawn(move || for _ in err.lines() {});
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if let Ok(j) = serde_json::from_str::<J>(&l) {
                    if tx.send(j).is_err() {
                        break;
                    }
                }
            }
        });
        Watch {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a signal named `signal` whose args satisfy `pred`.
    pub fn wait(&mut self, signal: &str, pred: impl Fn(&J) -> bool) -> J {
        if let Some(j) = self
            .seen
            .iter()
            .find(|j| j["signal"] == signal && pred(&j["args"]))
        {
            return j.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(j) => {
                    self.seen.push(j.clone());
                    if j["signal"] == signal && pred(&j["args"]) {
                        return j;
                    }
                }
                Err(_) => panic!(
                    "no {signal} signal within 60 s; saw: {}",
                    serde_json::to_string_pretty(&self.seen).unwrap()
                ),
            }
        }
    }

    /// Signals named `signal` received so far (after draining the pipe).
    pub fn count(&mut self, signal: &str) -> usize {
        while let Ok(j) = self.lines.try_recv() {
            self.seen.push(j);
        }
        self.seen.iter().filter(|j| j["signal"] == signal).count()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
