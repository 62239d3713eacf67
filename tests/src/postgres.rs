//! A real PostgreSQL cluster (Debian's `postgresql` package, any version)
//! in a temporary directory on a free port: trust authentication on
//! 127.0.0.1, unix sockets in the cluster directory, one database.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (CI)
//! `initdb` and `pg_ctl` run as the `postgres` system user
//! (`runuser -u postgres --`) in a directory under /tmp owned by it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context};

use crate::ports::free_tcp_port;

/// Database and role created in the cluster.
pub const DB: &str = "gatewayd";
pub const USER: &str = "gatewayd";

/// A running PostgreSQL cluster, stopped and removed on drop.
pub struct Postgres {
    /// `postgres://gatewayd@127.0.0.1:<port>/gatewayd`
    pub url: String,
    pub port: u16,
    /// The cluster's directory (data in `data/`, log in `postgres.log`,
    /// unix sockets in the directory itself).
    pub dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    running: bool,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .finish()
    }
}

/// `/usr/lib/postgresql/<version>/bin` of the newest installed version, or
/// `$PG_BIN_DIR` when set.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let v: Vec<u32> = name
                        .split('.')
                        .map(|p| p.parse().ok())
                        .collect::<Option<_>>()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL server not found (no /usr/lib/postgresql/*/bin/initdb): run `make deps`"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id")
            .arg(flag)
            .arg(user)
            .output()
            .context("cannot run `id`")?;
        if !out.status.success() {
            bail!(
                "system user `{user}` does not exist (it comes with the postgresql package): run `make deps`"
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_recursive(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

impl Postgres {
    /// initdb, start on a free port, create the database; returns when it
    /// accepts connections.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        // Under /tmp (not $TMPDIR) so the postgres user can reach it.
        let tmp = tempfile::Builder::new()
            .prefix("gatewayd-pg-")
            .tempdir_in("/tmp")
            .context("cannot create a directory under /tmp")?;
        let mut tmp = tmp;
        if crate::keep_files() {
            tmp.disable_cleanup(true);
            eprintln!("gatewayd-tests: keeping {}", tmp.path().display());
        }
        let dir = tmp.path().to_path_buf();
        let run_as = if is_root() {
            crate::require::command("runuser");
            let (uid, gid) = user_ids("postgres")?;
            chown_recursive(&dir, uid, gid)?;
            Some("postgres".to_owned())
        } else {
            None
        };
        let port = free_tcp_port();
        let mut pg = Postgres {
            url: format!("postgres://{USER}@127.0.0.1:{port}/{DB}"),
            port,
            dir,
            bin,
            run_as,
            running: false,
            _tmp: tmp,
        };
        pg.init()?;
        Ok(pg)
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, what: &str, mut cmd: Command) -> anyhow::Result<Output> {
        cmd.current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env("LANG", "C");
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {what}: {cmd:?}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {cmd:?}\n--- stdout:\n{}\n--- stderr:\n{}\n--- server log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                crate::tail(&self.log(), 30)
            );
        }
        Ok(out)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init(&mut self) -> anyhow::Result<()> {
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(self.data()).args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        self.run("initdb", initdb)?;

        let sockets = self.dir.to_str().context("non-UTF-8 temp dir")?;
        let conf = format!(
            "\n# gatewayd-tests\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{sockets}'\nmax_connections = 200\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             log_min_messages = warning\nlog_connections = off\n",
            self.port
        );
        let conf_file = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_file)
            .with_context(|| format!("cannot read {}", conf_file.display()))?;
        text.push_str(&conf);
        std::fs::write(&conf_file, text)?;

        self.start_server()?;

        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .arg(DB);
        self.run("createdb", createdb)?;
        Ok(())
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"]);
        self.run("pg_ctl start", pg_ctl)?;
        self.running = true;
        crate::ports::wait_for_tcp(self.port, std::time::Duration::from_secs(30))
    }

    fn stop_server(&mut self, mode: &str) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60", "-m", mode, "stop"]);
        self.running = false;
        self.run("pg_ctl stop", pg_ctl).map(drop)
    }

    /// Stops the server (fast shutdown) keeping the data; see [`Postgres::restart`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.stop_server("fast")
    }

    /// Stops (if running) and starts again on the same port with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_server()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs SQL with `psql` (as the test role), returning its unaligned,
    /// tuples-only output.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&self.url)
            .arg("-c")
            .arg(sql);
        let out = self.run("psql", psql)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop_server("immediate") {
            eprintln!("gatewayd-tests: stopping PostgreSQL: {e:#}");
        }
    }
}
