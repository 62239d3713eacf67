//! `gatewayd`: the edge gateway daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatewayd::config::{Config, LogFormat, EXAMPLE};
use tracing_subscriber::EnvFilter;

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

fn init_logging(config: &Config, override_format: Option<&str>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .with_context(|| format!("log.level: invalid filter {:?}", config.log.level))?;
    let format = match override_format {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => anyhow::bail!("--log-format: expected text or json, got {other:?}"),
        None => config.log.format,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
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
    init_logging(&config, cli.log_format.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gatewayd")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(gatewayd::daemon::run(config, shutdown_signal()))
}
