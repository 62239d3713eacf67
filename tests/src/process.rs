//! The workspace's binaries, and a guard for child processes that captures
//! their output and kills them when dropped.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long [`ChildGuard::terminate`] waits after SIGTERM before SIGKILL.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory cargo puts binaries of the profile the running executable
/// was built with: `<target>/<profile>` (test executables live in
/// `<target>/<profile>/deps`).
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir = dir.parent()?.to_path_buf();
    }
    Some(dir)
}

/// Path of the workspace binary `name` (`target/<profile>/<name>`), built by
/// `cargo build --bins` with the same profile as the running test.
///
/// Looks next to the running executable first (which is under
/// `CARGO_TARGET_DIR` when that is set), then in `$CARGO_TARGET_DIR/<profile>`.
///
/// # Panics
/// When the binary does not exist, saying to run `cargo build --bins` first.
pub fn bin_path(name: &str) -> PathBuf {
    let exe_name = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let mut candidates = Vec::new();
    let profile = profile_dir();
    if let Some(dir) = &profile {
        candidates.push(dir.join(&exe_name));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let profile_name = profile
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "debug".into());
        candidates.push(PathBuf::from(target).join(profile_name).join(&exe_name));
    }
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "binary `{name}` not found (looked at {}): run cargo build --bins first \
         (with the same profile and CARGO_TARGET_DIR as the tests; `make test` does this)",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// A running child process. Its stdout and stderr go to a log file; it is
/// killed (SIGKILL) and reaped when the guard is dropped.
pub struct ChildGuard {
    child: Mutex<Child>,
    pid: u32,
    name: String,
    log_path: PathBuf,
    status: Mutex<Option<ExitStatus>>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildGuard")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("log", &self.log_path)
            .finish()
    }
}

/// Starts `cmd` with stdin from /dev/null and stdout+stderr captured into a
/// log file in a fresh temporary directory.
pub fn spawn(cmd: Command) -> anyhow::Result<ChildGuard> {
    let name = program_name(&cmd);
    let dir = crate::tempdir(&format!("gatewayd-proc-{name}-"))?;
    let log = dir.path().join(format!("{name}.log"));
    let mut guard = spawn_with_log(cmd, &log)?;
    guard._dir = Some(dir);
    Ok(guard)
}

/// Like [`spawn`], appending the output to `log` (which is kept).
pub fn spawn_with_log(mut cmd: Command, log: &Path) -> anyhow::Result<ChildGuard> {
    let name = program_name(&cmd);
    let file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let err = file.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(err);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    Ok(ChildGuard {
        pid: child.id(),
        child: Mutex::new(child),
        name,
        log_path: log.to_path_buf(),
        status: Mutex::new(None),
        _dir: None,
    })
}

fn program_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "child".into())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions. The pid is that of
    // our own child which has not been reaped yet (checked by the callers),
    // so it cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl ChildGuard {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file with the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the child wrote so far (stdout and stderr, interleaved).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn try_wait(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(Some(s)) = child.try_wait() {
                *status = Some(s);
            }
        }
        *status
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return Ok(s);
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{} (pid {}) still running after {timeout:?}",
                    self.name,
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` unless the process has already exited.
    pub fn signal(&self, sig: libc::c_int) {
        if self.try_wait().is_none() {
            signal(self.pid, sig);
        }
    }

    /// SIGKILL, then reap. Simulates a crash / power cut of the process.
    pub fn kill9(&mut self) {
        self.kill_and_reap();
    }

    fn kill_and_reap(&self) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return;
        }
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        if let Ok(s) = child.wait() {
            *status = Some(s);
        }
    }

    /// SIGTERM, then wait up to [`TERMINATE_TIMEOUT`]; SIGKILL if it is
    /// still running then. See [`ChildGuard::terminate_within`] to learn how
    /// it exited.
    pub fn terminate(&mut self) {
        let _ = self.terminate_within(TERMINATE_TIMEOUT);
    }

    /// SIGTERM, then wait up to `timeout`. Returns the exit status, or an
    /// error (after a SIGKILL) when the process ignored SIGTERM that long.
    pub fn terminate_within(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        match self.wait_exit(timeout) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.kill_and_reap();
                Err(anyhow::anyhow!(
                    "{e}: it ignored SIGTERM, killed it\n--- log:\n{}",
                    crate::tail(&self.log(), 40)
                ))
            }
        }
    }

    /// Waits until `needle` appears in the log. Fails early, with the log,
    /// when the process exits first. Reads the log incrementally, so it is
    /// cheap on big logs.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut pos = 0u64;
        loop {
            if self.log_contains_from(needle, &mut pos) {
                return Ok(());
            }
            if let Some(status) = self.try_wait() {
                // One last look: the line may have been written just before exiting.
                if self.log_contains_from(needle, &mut pos) {
                    return Ok(());
                }
                bail!(
                    "{} exited ({status}) before logging {needle:?}\n--- log:\n{}",
                    self.name,
                    crate::tail(&self.log(), 60)
                );
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}\n--- log:\n{}",
                    self.name,
                    crate::tail(&self.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether `needle` occurs in the log at or after byte `*pos` (minus an
    /// overlap); advances `*pos`.
    fn log_contains_from(&self, needle: &str, pos: &mut u64) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = File::open(&self.log_path) else {
            return false;
        };
        let from = pos.saturating_sub(needle.len() as u64);
        if f.seek(SeekFrom::Start(from)).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return false;
        }
        *pos = from + buf.len() as u64;
        let needle = needle.as_bytes();
        needle.is_empty() || buf.windows(needle.len()).any(|w| w == needle)
    }

    /// Waits until the process accepts TCP connections on
    /// `127.0.0.1:port`; fails early, with the log, if it exits.
    pub fn wait_for_tcp(&self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        crate::ports::wait_for_tcp_while(port, timeout, || match self.try_wait() {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited ({status}) before listening on port {port}\n--- log:\n{}",
                self.name,
                crate::tail(&self.log(), 60)
            ),
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", self.name))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}
