// The command line of gatewayctl, and nothing else.
//
// This file is self-contained (it uses only clap): `build.rs` includes it with
// `include!` to generate the shell completions and the man page at build time.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// The exit statuses of gatewayctl, shown in `--help`, the man page and the
/// README.
#[allow(dead_code)]
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "success"),
    (
        1,
        "any other error (including io.gatewayd.Error.Unavailable and io.gatewayd.Error.Failed)",
    ),
    (2, "usage error: bad command line"),
    (
        3,
        "gatewayd not reachable: cannot connect to the bus, gatewayd is not on it, or it did not answer in time",
    ),
    (
        4,
        "access denied (org.freedesktop.DBus.Error.AccessDenied, from the bus policy or from gatewayd)",
    ),
    (
        5,
        "invalid input: unknown key, invalid value, refused app bundle, LoRaWAN device already exists, no config file to persist to, a command to a source that takes none, or an unreadable/too large local file",
    ),
    (6, "not found: no such app, LoRaWAN device, serial sensor or source"),
    (
        7,
        "incomplete: `buffer flush` timed out with readings still unacknowledged",
    ),
    (
        8,
        "a device refused a command (io.gatewayd.Error.Refused) or did not answer it (io.gatewayd.Error.Timeout)",
    ),
];

/// The exit statuses as the text that follows `--help`.
#[allow(dead_code)]
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit status:\n");
    for (code, meaning) in EXIT_CODES {
        text.push_str(&format!("  {code}  {meaning}\n"));
    }
    text.push_str(
        "\nEnvironment:\n  GATEWAYCTL_BUS      default for --bus\n  GATEWAYCTL_TIMEOUT  default for --timeout",
    );
    text
}

/// Command-line client of gatewayd's D-Bus interface.
#[derive(Debug, Parser)]
#[command(
    name = "gatewayctl",
    version,
    about = "Command-line client of gatewayd's D-Bus interface",
    long_about = "Command-line client of gatewayd's D-Bus interface (io.gatewayd.Gateway1).\n\n\
Reads gatewayd's status, devices and configuration, changes the configuration, \
deploys edge apps, manages the LoRaWAN device registry, flushes the buffer and \
watches gatewayd's signals. Writes need root, the gatewayd user or membership \
of the gatewayd group.",
    after_help = exit_codes_help(),
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// The bus gatewayd is on: `system`, `session`, or a D-Bus address such as
    /// `unix:path=/run/x/bus`.
    #[arg(
        long,
        global = true,
        env = "GATEWAYCTL_BUS",
        default_value = "system",
        value_name = "system|session|ADDRESS",
        value_parser = parse_bus
    )]
    pub bus: BusArg,

    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds to wait for gatewayd to answer a call.
    #[arg(
        long,
        env = "GATEWAYCTL_TIMEOUT",
        default_value_t = 30,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// Which bus to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusArg {
    System,
    Session,
    /// A D-Bus address, e.g. `unix:path=/run/x/bus`.
    Address(String),
}

impl std::fmt::Display for BusArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusArg::System => f.write_str("system bus"),
            BusArg::Session => f.write_str("session bus"),
            BusArg::Address(addr) => write!(f, "bus at {addr}"),
        }
    }
}

fn parse_bus(s: &str) -> Result<BusArg, String> {
    match s {
        "system" => Ok(BusArg::System),
        "session" => Ok(BusArg::Session),
        _ if s.contains(':') && !s.starts_with(':') => Ok(BusArg::Address(s.to_string())),
        _ => Err(format!(
            "`{s}` is neither `system`, `session` nor a D-Bus address like `unix:path=/run/x/bus`"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show gatewayd's status: version, uplink, buffer, adapters.
    Status,

    /// List the devices gatewayd has seen (also `devices list`).
    Devices {
        #[command(subcommand)]
        command: Option<DevicesCommand>,
    },

    /// Read and change gatewayd's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Manage edge apps (io.gatewayd.Gateway1.Apps).
    Apps {
        #[command(subcommand)]
        command: Option<AppsCommand>,
    },

    /// The LoRaWAN network server: devices, downlinks, forwarders, counters.
    #[command(subcommand)]
    Lora(LoraCommand),

    /// Serial sensors (gatewayd's Cortex-M firmware): list them, send them commands.
    #[command(subcommand)]
    Serial(SerialCommand),

    /// Inspect a running source (sources.<name>), send it a command.
    #[command(subcommand)]
    Source(SourceCommand),

    /// Act on the reading buffer.
    #[command(subcommand)]
    Buffer(BufferCommand),

    /// Print gatewayd's signals as they arrive, one line each.
    #[command(
        long_about = "Print gatewayd's signals as they arrive, one line each: \
`<time> <Signal> key=value ...`, or with --json one JSON object per line \
(`{\"signal\": ..., \"interface\": ..., \"time\": ..., \"args\": {...}}`). \
Covers every signal of io.gatewayd.Gateway1, io.gatewayd.Gateway1.Apps and \
io.gatewayd.Gateway1.LoRaWAN, and PropertiesChanged of /io/gatewayd/Gateway1. \
If gatewayd is not on the bus, waits for it."
    )]
    Watch {
        /// Exit after this many signals.
        #[arg(long, short = 'n', value_name = "N")]
        count: Option<u64>,
    },

    /// Print a shell completion script.
    #[command(long_about = "Print a shell completion script, e.g.\n  \
gatewayctl completions bash > /usr/share/bash-completion/completions/gatewayctl\n  \
gatewayctl completions zsh > /usr/share/zsh/vendor-completions/_gatewayctl\n  \
gatewayctl completions fish > /usr/share/fish/vendor_completions.d/gatewayctl.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: ShellArg,
    },

    /// Print the man page (roff), e.g. `gatewayctl man > /usr/share/man/man1/gatewayctl.1`.
    Man,
}

/// Shells for which a completion script is generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List the devices gatewayd has seen.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective value of a key (the whole configuration without KEY).
    #[command(
        long_about = "Print the effective value of a key (defaults included): strings bare, \
other values as JSON, tables pretty-printed. Without KEY, the whole configuration. \
A key that is optional and not set prints nothing (`null` with --json) and a note \
on stderr, and exits 0."
    )]
    Get {
        /// Dotted key, e.g. `buffer.max_bytes` or `sources.coap.bind`.
        key: Option<String>,
    },

    /// Set a key in the config file and apply it.
    #[command(
        long_about = "Set a key in the config file and apply it. VALUE is typed by its \
form: `true`/`false` is a boolean, `42` an integer, `1.5` a float, a JSON array or \
object (`[\"a\",\"b\"]`, `{\"bind\":\"0.0.0.0:5683\"}`) an array or table, anything \
else a string; --string sends it as a string whatever its form. Prints the outcome: \
`applied`, `restart-required` (takes effect when gatewayd restarts) or `unchanged`."
    )]
    Set {
        /// Dotted key, e.g. `log.level`.
        key: String,
        /// The new value (use `--` before a string that starts with `-`).
        #[arg(allow_negative_numbers = true)]
        value: String,
        /// Send VALUE as a string, whatever it looks like.
        #[arg(long, short = 's')]
        string: bool,
    },

    /// Remove a key from the config file (its default applies again).
    Unset {
        /// Dotted key.
        key: String,
    },

    /// Re-read the config file and apply what changed.
    Reload,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List deployed edge apps and their state.
    List,
    /// Deploy a signed app bundle (.gwapp); upgrades the app if it exists.
    Deploy {
        /// The bundle file (at most 32 MiB).
        file: std::path::PathBuf,
    },
    /// Upgrade a deployed app with a signed bundle (.gwapp); fails if the app is not deployed.
    Upgrade {
        /// The bundle file (at most 32 MiB).
        file: std::path::PathBuf,
    },
    /// Remove an app.
    Remove {
        /// The app's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Print what a source publishes about itself (counters, peers) as JSON.
    Status {
        /// The source's name (the `<name>` of `[sources.<name>]`).
        name: String,
    },
    /// Send a JSON command to a source and print its JSON answer.
    #[command(
        long_about = "Send a command to a source (D-Bus SourceCommand) and print its answer. \
REQUEST is a JSON object whose form the adapter defines, e.g. for a serial source \
'{\"command\": \"reboot\", \"device\": \"lm3s6965-0001\"}' (see adapters/serial/README.md). \
Sources that take no commands answer io.gatewayd.Error.NotSupported (exit 5)."
    )]
    Command {
        /// The source's name.
        name: String,
        /// The request, a JSON object.
        request: String,
    },
}

/// Which serial source (`--source`), shared by the `serial` subcommands.
#[derive(Debug, Args)]
pub struct SerialSourceArg {
    /// The serial source (default: the only one running).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SerialCommand {
    /// The ports of a serial source and the sensor on each: firmware, last seen, uptime, reset reason, sample interval, errors.
    Sensors {
        #[command(flatten)]
        source: SerialSourceArg,
    },
    /// Set a sensor's sample interval (100 ms to 1 h); waits for the sensor's acknowledgement.
    Interval {
        /// The sensor: its id (e.g. `lm3s6965-0001` or `serial:lm3s6965-0001`) or its port's name.
        device: String,
        /// The new interval in milliseconds.
        #[arg(value_parser = clap::value_parser!(u32).range(100..=3_600_000))]
        ms: u32,
        #[command(flatten)]
        source: SerialSourceArg,
    },
    /// Make a sensor noticeable (blink its LED) for a while.
    Identify {
        /// The sensor: its id or its port's name.
        device: String,
        /// How long, 1..=60 s.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=60))]
        seconds: u8,
        #[command(flatten)]
        source: SerialSourceArg,
    },
    /// Restart a sensor (it acknowledges first, then resets and introduces itself again).
    Reboot {
        /// The sensor: its id or its port's name.
        device: String,
        #[command(flatten)]
        source: SerialSourceArg,
    },
    /// Ask a sensor for its diagnostics now (they arrive as a reading).
    Diagnostics {
        /// The sensor: its id or its port's name.
        device: String,
        #[command(flatten)]
        source: SerialSourceArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum LoraCommand {
    /// LoRaWAN devices (the registry).
    Devices {
        #[command(subcommand)]
        command: Option<LoraDevicesCommand>,
    },
    /// Application downlinks queued for LoRaWAN devices.
    Downlinks {
        #[command(subcommand)]
        command: Option<LoraDownlinksCommand>,
    },
    /// The packet forwarders (gateways) of a LoRaWAN source: liveness, addresses, counters.
    Forwarders {
        /// The lorawan source (default: the only one running).
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
    },
    /// The counters of a LoRaWAN source, rejected uplinks by reason included.
    Stats {
        /// The lorawan source (default: the only one running).
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LoraDownlinksCommand {
    /// List queued downlinks (of one device, or all).
    List {
        /// The device's DevEUI.
        dev_eui: Option<String>,
    },
    /// Queue a downlink for the device's next uplink (class A); prints its id.
    #[command(
        long_about = "Queue an application downlink for the device's next uplink (class A: one per uplink, in RX1 or RX2). The payload is given as --hex, --base64 or --text, at most 242 bytes (less at slow data rates: an item too large for the device's windows waits). --confirmed asks the device to acknowledge it: it is sent again (new frame counter) on each uplink without the ACK, up to 3 times. The queue is durable; after a crash a downlink may be sent twice. Prints the queued item's id."
    )]
    Send(LoraSendArgs),
    /// Delete queued downlinks of a device (all, or --id).
    Clear {
        /// The device's DevEUI.
        dev_eui: String,
        /// Only this queued item.
        #[arg(long)]
        id: Option<u64>,
    },
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("payload")
        .args(["hex", "base64", "text"])
        .required(true)
))]
pub struct LoraSendArgs {
    /// The device's DevEUI.
    pub dev_eui: String,
    /// FPort, 1..=223.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=223))]
    pub fport: u8,
    /// Payload as hex digits.
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,
    /// Payload as base64.
    #[arg(long, value_name = "B64")]
    pub base64: Option<String>,
    /// Payload as UTF-8 text.
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// Ask the device to acknowledge it.
    #[arg(long)]
    pub confirmed: bool,
}

#[derive(Debug, Subcommand)]
pub enum LoraDevicesCommand {
    /// List registered LoRaWAN devices.
    List,
    /// Register a LoRaWAN device, OTAA (--join-eui, --app-key) or ABP (--dev-addr, --nwk-s-key, --app-s-key).
    #[command(
        long_about = "Register a LoRaWAN device, either OTAA (--join-eui and --app-key) or \
ABP (--dev-addr, --nwk-s-key and --app-s-key). Keys are hex strings. To keep a key out \
of `ps` and the shell history, give it as `-` to read it from standard input (one line; \
one key at most) or as `@FILE` to read it from a file."
    )]
    Add(LoraAddArgs),
    /// Remove a LoRaWAN device.
    Remove {
        /// The device's DevEUI (16 hex digits).
        dev_eui: String,
    },
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("otaa")
        .args(["join_eui", "app_key"])
        .multiple(true)
        .conflicts_with("abp")
))]
#[command(group(
    ArgGroup::new("abp")
        .args(["dev_addr", "nwk_s_key", "app_s_key"])
        .multiple(true)
))]
#[command(group(
    ArgGroup::new("activation")
        .args(["join_eui", "app_key", "dev_addr", "nwk_s_key", "app_s_key"])
        .multiple(true)
        .required(true)
))]
pub struct LoraAddArgs {
    /// DevEUI, 16 hex digits.
    #[arg(long, value_name = "HEX")]
    pub dev_eui: String,
    /// Display name (default: the DevEUI).
    #[arg(long)]
    pub name: Option<String>,
    /// Device profile (payload codec), default `cayenne`.
    #[arg(long)]
    pub profile: Option<String>,
    /// OTAA: JoinEUI (AppEUI), 16 hex digits.
    #[arg(long, value_name = "HEX", requires = "app_key")]
    pub join_eui: Option<String>,
    /// OTAA: AppKey, 32 hex digits, or `-` (stdin) or `@FILE`.
    #[arg(long, value_name = "KEY", requires = "join_eui")]
    pub app_key: Option<String>,
    /// ABP: DevAddr, 8 hex digits.
    #[arg(long, value_name = "HEX", requires_all = ["nwk_s_key", "app_s_key"])]
    pub dev_addr: Option<String>,
    /// ABP: NwkSKey, 32 hex digits, or `-` (stdin) or `@FILE`.
    #[arg(long, value_name = "KEY", requires = "dev_addr")]
    pub nwk_s_key: Option<String>,
    /// ABP: AppSKey, 32 hex digits, or `-` (stdin) or `@FILE`.
    #[arg(long, value_name = "KEY", requires = "dev_addr")]
    pub app_s_key: Option<String>,
    /// Replace an existing device with this DevEUI.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// Send everything buffered now and wait for the broker's acknowledgements.
    #[command(
        long_about = "Send everything buffered now (reconnecting the uplink if it is \
waiting to) and wait until the broker has acknowledged it or --timeout passes. \
Prints the readings delivered and those remaining; exits 7 if any remain."
    )]
    Flush {
        /// Seconds to wait for the broker (0 = gatewayd's default, 30; at most 600).
        #[arg(
            long,
            default_value_t = 30,
            value_name = "SECS",
            value_parser = clap::value_parser!(u32).range(0..=600)
        )]
        timeout: u32,
    },
}
