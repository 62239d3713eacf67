//! `gatewayd`: the edge gateway daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use gatewayd::config::{BusChoice, Config, LogFormat, EXAMPLE};
use gatewayd::control::LogControl;
use gatewayd::daemon::RunOptions;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer};

#[derive(Parser, Debug)]
#[command(
    name = "gatewayd",
    version,
    about = "Edge gateway daemon: sensors in, durable MQTT uplink out"
)]
struct Cli {
    /// Config file (TOML). Without one, built-in defaults are used.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Override log format (text or json).
    #[arg(long, global = true)]
    log_format: Option<String>,
    /// Serve the D-Bus interface on this bus instead of `dbus.bus`:
    /// `system`, `session` (development) or a D-Bus address.
    #[arg(long, value_name = "system|session|ADDRESS")]
    bus: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Config helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Edge apps: deploy, remove, list (through the deployment directory).
    Apps {
        #[command(subcommand)]
        action: AppsAction,
    },
}

#[derive(Subcommand, Debug)]
enum AppsAction {
    /// Verify a signed bundle (.gwapp) and place it in the deployment
    /// directory; a running daemon deploys (or upgrades) it within seconds.
    Deploy { bundle: PathBuf },
    /// Remove an app's bundle from the deployment directory.
    Remove { name: String },
    /// Show deployed apps and the deployment directory.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print a commented example config with every default.
    Example,
    /// Validate a config file and exit.
    Check,
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    match &cli.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

/// Installs the log subscriber; returns the handle that changes its filter
/// at run time (`log.level` through D-Bus or SIGHUP).
fn init_logging(config: &Config, override_format: Option<&str>) -> anyhow::Result<LogControl> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .with_context(|| format!("log.level: invalid filter {:?}", config.log.level))?;
    let format = match override_format {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => anyhow::bail!("--log-format: expected text or json, got {other:?}"),
        None => config.log.format,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    Ok(Arc::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| format!("invalid filter {level:?}: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Exit codes: 0 clean shutdown, 1 error (config, startup, fatal), 2 usage
/// error (clap).
fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line; no backtrace
            // for an operator's config mistake.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Config {
            action: ConfigAction::Example,
        }) => {
            print!("{EXAMPLE}");
            return Ok(());
        }
        Some(Command::Config {
            action: ConfigAction::Check,
        }) => {
            load(&cli)?;
            println!("config ok");
            return Ok(());
        }
        Some(Command::Apps { action }) => {
            let config = load(&cli)?;
            let out = match action {
                AppsAction::Deploy { bundle } => gatewayd::apps_cli::deploy(&config, bundle)?,
                AppsAction::Remove { name } => gatewayd::apps_cli::remove(&config, name)?,
                AppsAction::List { json } => gatewayd::apps_cli::list(&config, *json)?,
            };
            println!("{out}");
            return Ok(());
        }
        None => {}
    }
    let config = load(&cli)?;
    let bus = cli
        .bus
        .as_deref()
        .map(BusChoice::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--bus: {e}"))?;
    let log = init_logging(&config, cli.log_format.as_deref())?;
    // Absolute, so D-Bus shows where it is and a reload after a `cd` (none
    // happens, but embedders may) still finds it.
    let config_path = cli
        .config
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let opts = RunOptions {
        config_path,
        bus,
        log: Some(log),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatewayd")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(gatewayd::daemon::run_with(config, opts, shutdown_signal()))
}
