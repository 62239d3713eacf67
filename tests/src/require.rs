//! External tools the tests need. A missing tool fails the test (with what
//! to do about it); it never skips it.

use std::path::{Path, PathBuf};

/// Directories searched after `PATH`: mosquitto lives in /usr/sbin, which is
/// not on a normal user's PATH.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Other names a tool goes by. Debian's libcoap3-bin installs
/// `coap-client-{openssl,gnutls,notls}` but no `coap-client` (`make deps`
/// adds a `coap-client` link in /usr/local/bin).
fn aliases(name: &str) -> &'static [&'static str] {
    match name {
        "coap-client" => &[
            "coap-client-openssl",
            "coap-client-gnutls",
            "coap-client-notls",
        ],
        "coap-server" => &[
            "coap-server-openssl",
            "coap-server-gnutls",
            "coap-server-notls",
        ],
        _ => &[],
    }
}

fn find_exact(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Where the executable `name` is: on `PATH`, in an sbin directory, or
/// under a known alternative name (`coap-client` → `coap-client-openssl`, …).
/// Run what this returns rather than `name` itself.
pub fn find(name: &str) -> Option<PathBuf> {
    find_exact(name).or_else(|| aliases(name).iter().find_map(|a| find_exact(a)))
}

/// Panics unless the executable `name` is installed. Use [`path`] to get
/// the path to run (it may be in /usr/sbin, or an alias).
///
/// # Panics
/// "`name` not found: run `make deps`".
pub fn command(name: &str) {
    path(name);
}

/// The full path of the executable `name`.
///
/// # Panics
/// "`name` not found: run `make deps`".
pub fn path(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| {
        panic!(
            "`{name}` not found: run `make deps` (looked in PATH and {})",
            EXTRA_DIRS.join(", ")
        )
    })
}
