//! A real mosquitto broker (2.x) on loopback: a plain listener and/or a TLS
//! listener (optionally requiring client certificates), with persistence in
//! a temporary directory that survives [`Mosquitto::restart`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::certs::Pki;
use crate::ports::free_tcp_port;
use crate::process::{spawn_with_log, ChildGuard};

/// How long to wait for mosquitto to listen (generous: CI machines stall).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What to start. The default: a plain listener, anonymous clients allowed,
/// persistence on, no TLS.
#[derive(Clone, Debug)]
pub struct MosquittoOptions {
    /// Add a TLS listener with this PKI's server certificate, trusting its CA.
    pub tls: Option<Arc<Pki>>,
    /// On the TLS listener: require a client certificate signed by the CA,
    /// and use its common name as the MQTT user name.
    pub require_certificate: bool,
    /// Have a plain (non-TLS) listener too. With `tls: None` this must be
    /// true.
    pub plain_listener: bool,
    /// Persist sessions and queued messages to disk (saved every second and
    /// on shutdown; survives `stop` + `restart`).
    pub persistence: bool,
    /// Allow clients without user name (and without client certificate).
    pub allow_anonymous: bool,
}

impl Default for MosquittoOptions {
    fn default() -> Self {
        MosquittoOptions {
            tls: None,
            require_certificate: false,
            plain_listener: true,
            persistence: true,
            allow_anonymous: true,
        }
    }
}

/// A running mosquitto, killed (and its directory removed) on drop.
pub struct Mosquitto {
    /// The plain listener's port (0 when there is no plain listener).
    pub port: u16,
    /// The TLS listener's port.
    pub tls_port: Option<u16>,
    /// Config, persistence, logs.
    pub dir: PathBuf,
    /// mosquitto's own log (`log_dest file`, every log type).
    pub log_file: PathBuf,
    /// What mosquitto printed on stdout/stderr (config errors end up here).
    pub output_file: PathBuf,
    config: PathBuf,
    opts: MosquittoOptions,
    child: Option<ChildGuard>,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mosquitto")
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("dir", &self.dir)
            .field("running", &self.is_running())
            .finish()
    }
}

fn conf_path(p: &std::path::Path) -> anyhow::Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("path is not UTF-8: {}", p.display()))?;
    if s.contains(char::is_whitespace) {
        bail!("mosquitto config paths cannot contain white space: {s}");
    }
    Ok(s.to_owned())
}

impl Mosquitto {
    /// Writes a config, starts mosquitto and waits until every listener
    /// accepts connections.
    pub fn start(opts: MosquittoOptions) -> anyhow::Result<Mosquitto> {
        crate::require::command("mosquitto");
        if opts.tls.is_none() && !opts.plain_listener {
            bail!("MosquittoOptions: no listener (tls is None and plain_listener is false)");
        }
        let tmp = crate::tempdir("gatewayd-mosquitto-")?;
        let dir = tmp.path().to_path_buf();
        // mosquitto may run as another user (when not started as root it
        // stays who it is; as root we say `user root`), but make the
        // directory readable anyway.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let port = if opts.plain_listener {
            free_tcp_port()
        } else {
            0
        };
        let tls_port = opts.tls.as_ref().map(|_| free_tcp_port());
        let log_file = dir.join("mosquitto.log");
        let output_file = dir.join("mosquitto.out");
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;

        let mut c = String::new();
        writeln!(c, "# written by gatewayd-tests")?;
        writeln!(c, "user root")?;
        writeln!(c, "per_listener_settings false")?;
        writeln!(c, "allow_anonymous {}", opts.allow_anonymous)?;
        writeln!(c, "persistence {}", opts.persistence)?;
        if opts.persistence {
            writeln!(c, "persistence_location {}/", conf_path(&data)?)?;
            writeln!(c, "autosave_interval 1")?;
        }
        writeln!(c, "log_dest file {}", conf_path(&log_file)?)?;
        writeln!(c, "log_type all")?;
        writeln!(c, "log_timestamp true")?;
        writeln!(c, "log_timestamp_format %H:%M:%S")?;
        writeln!(c, "connection_messages true")?;
        writeln!(c, "max_queued_messages 0")?;
        if opts.plain_listener {
            writeln!(c, "\nlistener {port} 127.0.0.1")?;
        }
        if let (Some(pki), Some(tls_port)) = (&opts.tls, tls_port) {
            writeln!(c, "\nlistener {tls_port} 127.0.0.1")?;
            writeln!(c, "cafile {}", conf_path(&pki.ca_cert)?)?;
            writeln!(c, "certfile {}", conf_path(&pki.server_cert)?)?;
            writeln!(c, "keyfile {}", conf_path(&pki.server_key)?)?;
            if opts.require_certificate {
                writeln!(c, "require_certificate true")?;
                writeln!(c, "use_identity_as_username true")?;
            }
        }
        let config = dir.join("mosquitto.conf");
        std::fs::write(&config, c)?;

        let mut m = Mosquitto {
            port,
            tls_port,
            dir,
            log_file,
            output_file,
            config,
            opts,
            child: None,
            _tmp: tmp,
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(crate::require::path("mosquitto"));
        cmd.arg("-c").arg(&self.config);
        let child = spawn_with_log(cmd, &self.output_file)?;
        let ports = [self.opts.plain_listener.then_some(self.port), self.tls_port];
        for port in ports.into_iter().flatten() {
            if let Err(e) = child.wait_for_tcp(port, START_TIMEOUT) {
                let log = self.log();
                drop(child);
                bail!(
                    "mosquitto did not start: {e}\n--- mosquitto log:\n{}",
                    crate::tail(&log, 40)
                );
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// Whether the broker process is running.
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| c.is_running())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid())
    }

    /// SIGTERM and wait (mosquitto saves its persistence file on the way
    /// out). SIGKILL if it takes longer than 15 s. No-op when stopped.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.terminate_within(STOP_TIMEOUT);
        }
    }

    /// SIGKILL: a crash. What was not yet autosaved (every second) is lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill9();
        }
    }

    /// Stops (SIGTERM) if running, then starts again on the same ports with
    /// the same persistence directory, and waits until it listens.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// mosquitto's log so far (across restarts), followed by anything it
    /// printed on stdout/stderr.
    pub fn log(&self) -> String {
        let mut s = std::fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if let Ok(out) = std::fs::read(&self.output_file) {
            if !out.is_empty() {
                s.push_str("\n--- mosquitto stdout/stderr:\n");
                s.push_str(&String::from_utf8_lossy(&out));
            }
        }
        s
    }

    /// `mqtt://127.0.0.1:<port>` of the plain listener.
    ///
    /// # Panics
    /// When started without a plain listener.
    pub fn url(&self) -> String {
        assert!(
            self.opts.plain_listener,
            "this mosquitto has no plain listener (MosquittoOptions::plain_listener is false)"
        );
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:<tls_port>` when there is a TLS listener.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("mqtts://127.0.0.1:{p}"))
    }

    /// The PKI of the TLS listener.
    pub fn pki(&self) -> Option<&Arc<Pki>> {
        self.opts.tls.as_ref()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
