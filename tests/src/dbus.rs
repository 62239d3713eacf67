//! A private `dbus-daemon` for a test: started with a bus configuration
//! file of the project's (`tests/dbus/*.conf`), listening on a socket in a
//! temporary directory anyone may enter (so a test can call it as another
//! user), killed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::process::{spawn, ChildGuard};
use crate::require;

/// A running private message bus.
pub struct DbusDaemon {
    /// The address clients connect to (`unix:path=…`).
    pub address: String,
    /// The socket file.
    pub socket: PathBuf,
    pub child: ChildGuard,
    _dir: tempfile::TempDir,
}

/// `tests/dbus/<name>` in this repository.
pub fn config_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dbus")
        .join(name)
}

impl DbusDaemon {
    /// Starts `dbus-daemon --config-file <config>` on a fresh socket and
    /// waits until it accepts connections.
    pub fn start(config: &Path) -> anyhow::Result<DbusDaemon> {
        require::command("dbus-daemon");
        let dir = crate::tempdir("gatewayd-bus-")?;
        // World-traversable: tests connect as `nobody` too.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        let mut cmd = Command::new(require::path("dbus-daemon"));
        cmd.arg(format!("--config-file={}", config.display()))
            .arg(format!("--address={address}"))
            .arg("--nofork")
            .arg("--nopidfile");
        let child = spawn(cmd)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = child.try_wait() {
                bail!(
                    "dbus-daemon exited ({status}) with config {}:\n{}",
                    config.display(),
                    child.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "dbus-daemon did not create {}:\n{}",
                    socket.display(),
                    child.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777))
            .with_context(|| format!("chmod {}", socket.display()))?;
        Ok(DbusDaemon {
            address,
            socket,
            child,
            _dir: dir,
        })
    }

    /// What dbus-daemon has logged (policy warnings, refusals).
    pub fn log(&self) -> String {
        self.child.log()
    }
}
