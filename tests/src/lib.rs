//! Shared test harness for gatewayd's end-to-end tests: real peers, no mocks.
//!
//! Everything here is synchronous (`std::process`, `std::net`), so it works
//! from plain `#[test]`s and from `#[tokio::test]`s alike. Every process it
//! starts is killed when its guard is dropped, and every file it writes lives
//! in a temporary directory removed at the same time (set
//! `GATEWAYD_TEST_KEEP=1` to keep them for a post-mortem).
//!
//! * [`ports`]: free loopback ports, waiting for a listener.
//! * [`certs`]: a throw-away PKI (CA, server and client certificates).
//! * [`mosquitto`]: a real mosquitto broker, plain and/or mutual TLS.
//! * [`postgres`]: a real PostgreSQL cluster in a temporary directory.
//! * [`dbus`]: a private `dbus-daemon` with one of the project's bus configs.
//! * [`process`]: the workspace's binaries and a child-process guard.
//! * [`require`]: fail (not skip) when an external tool is missing.

pub mod certs;
pub mod dbus;
pub mod mosquitto;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod require;

/// Keep temporary directories (logs, data) after the test, for debugging.
pub(crate) fn keep_files() -> bool {
    std::env::var_os("GATEWAYD_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A temporary directory honouring [`keep_files`].
pub(crate) fn tempdir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context;
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create a temporary directory")?;
    if keep_files() {
        dir.disable_cleanup(true);
        eprintln!("gatewayd-tests: keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// The last `lines` lines of `text`, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// A directory of build artifacts that a script outside cargo writes under
/// the target directory (`edge-apps/components`, `firmware`): `$<env_var>`
/// when set and not empty, else `<target>/<sub>` with `<target>` =
/// `CARGO_TARGET_DIR` (relative to the workspace root) or
/// `<workspace>/target`.
pub fn artifact_dir(env_var: &str, sub: &str) -> std::path::PathBuf {
    if let Some(d) = std::env::var_os(env_var).filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(d);
    }
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(t) => workspace.join(t), // an absolute `t` replaces `workspace`
        None => workspace.join("target"),
    };
    target.join(sub)
}
