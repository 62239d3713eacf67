//! `cloud-bridge [--config FILE] [--client-id ID] [--log-format text|json]`
//! `cloud-bridge config example` | `cloud-bridge config check [--config FILE]`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use cloud_bridge::config::{Config, CLIENT_ID_ENV, EXAMPLE};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "cloud-bridge",
    version,
    about = "gatewayd cloud ingestion service"
)]
struct Cli {
    /// Configuration file (TOML). Without it: embedded broker on
    /// 127.0.0.1:1883, SQLite in ./cloud-bridge-data, HTTP on 127.0.0.1:8080.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// MQTT client id (persistent session); overrides CLOUD_BRIDGE_CLIENT_ID
    /// and mqtt.client_id.
    #[arg(long, global = true)]
    client_id: Option<String>,
    /// Log format; the level comes from RUST_LOG (default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print a commented example configuration.
    Example,
    /// Validate the configuration and print it with defaults filled in.
    Check,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_toml(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Config::default(),
    };
    config.resolve_client_id(cli.client_id.clone(), std::env::var(CLIENT_ID_ENV).ok());
    config.validate().context("invalid configuration")?;
    Ok(config)
}

async fn shutdown_signal(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            r = tokio::signal::ctrl_c() => match r {
                Ok(()) => tracing::info!("SIGINT received"),
                Err(e) => tracing::error!(error = %e, "cannot listen for SIGINT"),
            },
        }
        token.cancel();
    });
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Config { action }) = &cli.command {
        match action {
            ConfigAction::Example => {
                print!("{EXAMPLE}");
                return Ok(());
            }
            ConfigAction::Check => {
                let mut config = load_config(&cli)?;
                if config.mqtt.password.is_some() {
                    config.mqtt.password = Some("<redacted>".into());
                }
                for p in config.broker.users.values_mut() {
                    *p = "<redacted>".into();
                }
                print!(
                    "{}",
                    toml::to_string_pretty(&config).context("rendering the configuration")?
                );
                return Ok(());
            }
        }
    }
    init_logging(cli.log_format);
    let config = load_config(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let token = CancellationToken::new();
        shutdown_signal(token.clone()).await?;
        cloud_bridge::run(config, token).await
    })
}
