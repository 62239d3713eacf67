//! gatewayctl: the command-line client of gatewayd's D-Bus interface
//! (docs/dbus.md).

mod cli;
mod client;
mod convert;
mod error;
mod input;
mod lorawan;
mod output;
mod serial;
mod sources;
mod watch;

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use serde_json::{json, Map, Value as Json};
use zbus::zvariant::Value;

use cli::{
    AppsCommand, BufferCommand, Cli, Command, ConfigCommand, LoraAddArgs, LoraCommand,
    LoraDevicesCommand, LoraDownlinksCommand, ShellArg, SourceCommand,
};
use client::{Client, Record};
use convert::{dict_to_json, display_json, infer_value, snake_case, to_json};
use error::{exit_for, CtlError, Exit};
use output::{age, age_cell, bytes, cell, duration, field_u64, now_ms, number_cell, Table, DASH};

const COMPLETION_BASH: &str = include_str!(concat!(env!("OUT_DIR"), "/gatewayctl.bash"));
const COMPLETION_ZSH: &str = include_str!(concat!(env!("OUT_DIR"), "/_gatewayctl"));
const COMPLETION_FISH: &str = include_str!(concat!(env!("OUT_DIR"), "/gatewayctl.fish"));
const MAN_PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/gatewayctl.1"));

/// Deploying compiles the app: allow it at least this long.
const MIN_DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            if err
                .chain()
                .any(|c| c.downcast_ref::<StdoutClosed>().is_some())
            {
                // `gatewayctl ... | head`: the reader went away; not an error.
                return Exit::Ok.into();
            }
            eprintln!("gatewayctl: {err:#}");
            exit_for(&err).into()
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    let mut out = Stdout::default();
    // Commands that need no bus.
    match &cli.command {
        Command::Completions { shell } => {
            out.write(match shell {
                ShellArg::Bash => COMPLETION_BASH,
                ShellArg::Zsh => COMPLETION_ZSH,
                ShellArg::Fish => COMPLETION_FISH,
            })?;
            return Ok(Exit::Ok);
        }
        Command::Man => {
            out.write(MAN_PAGE)?;
            return Ok(Exit::Ok);
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_bus_command(cli, &mut out))
}

async fn run_bus_command(cli: Cli, out: &mut Stdout) -> anyhow::Result<Exit> {
    let timeout = Duration::from_secs(cli.timeout);
    let json_output = cli.json;
    // Check local input before connecting, so that a bad value fails the same
    // way whether gatewayd is there or not.
    let prepared = prepare(&cli.command)?;
    let client = Client::connect(&cli.bus, timeout).await?;
    match cli.command {
        Command::Status => status(&client, json_output, out).await,
        Command::Devices { .. } => devices(&client, json_output, out).await,
        Command::Config(cmd) => config(&client, cmd, prepared, json_output, out).await,
        Command::Apps { command } => apps(&client, command, prepared, json_output, out).await,
        Command::Lora(LoraCommand::Devices { command }) => {
            lora(&client, command, prepared, json_output, out).await
        }
        Command::Lora(LoraCommand::Downlinks { command }) => {
            lorawan::downlinks(&client, command, json_output, out).await
        }
        Command::Lora(LoraCommand::Forwarders { source }) => {
            lorawan::forwarders(&client, source, json_output, out).await
        }
        Command::Lora(LoraCommand::Stats { source }) => {
            lorawan::stats(&client, source, json_output, out).await
        }
        Command::Source(SourceCommand::Status { name }) => {
            sources::source_status(&client, &name, out).await
        }
        Command::Source(SourceCommand::Command { name, request }) => {
            // Checked by prepare() before connecting.
            let request = sources::parse_request(&request)?;
            sources::source_command(&client, &name, &request, out).await
        }
        Command::Serial(cmd) => serial::serial(&client, cmd, json_output, out).await,
        Command::Buffer(BufferCommand::Flush { timeout: secs }) => {
            flush(&client, secs, json_output, out).await
        }
        Command::Watch { count } => {
            watch::watch(&client, json_output, count, out).await?;
            Ok(Exit::Ok)
        }
        Command::Completions { .. } | Command::Man => Ok(Exit::Ok),
    }
}

/// Local input read and checked before connecting.
enum Prepared {
    None,
    Value(Value<'static>),
    Bundle(Vec<u8>),
    Device(HashMap<String, Value<'static>>),
}

fn prepare(command: &Command) -> anyhow::Result<Prepared> {
    Ok(match command {
        Command::Config(ConfigCommand::Set { key, value, string }) => Prepared::Value(
            infer_value(value, *string).map_err(|e| CtlError::Input(format!("{key}: {e}")))?,
        ),
        Command::Apps {
            command: Some(AppsCommand::Deploy { file } | AppsCommand::Upgrade { file }),
        } => Prepared::Bundle(input::read_bundle(file)?),
        Command::Lora(LoraCommand::Devices {
            command: Some(LoraDevicesCommand::Add(args)),
        }) => Prepared::Device(lorawan_device(args)?),
        Command::Lora(LoraCommand::Downlinks {
            command: Some(LoraDownlinksCommand::Send(args)),
        }) => {
            // A bad payload fails before connecting.
            lorawan::payload_of(args)?;
            Prepared::None
        }
        Command::Source(SourceCommand::Command { request, .. }) => {
            sources::parse_request(request)?;
            Prepared::None
        }
        _ => Prepared::None,
    })
}

/// The `AddDevice` dictionary; keys given as `-` or `@FILE` are read here.
fn lorawan_device(args: &LoraAddArgs) -> Result<HashMap<String, Value<'static>>, CtlError> {
    let stdin = std::io::stdin();
    let mut keys = input::KeyReader::new(stdin.lock());
    let mut device: HashMap<String, Value<'static>> = HashMap::new();
    let mut put = |k: &str, v: String| {
        device.insert(k.to_string(), Value::from(v));
    };
    put("dev_eui", args.dev_eui.clone());
    if let Some(name) = &args.name {
        put("name", name.clone());
    }
    if let Some(profile) = &args.profile {
        put("profile", profile.clone());
    }
    if let Some(join_eui) = &args.join_eui {
        put("join_eui", join_eui.clone());
    }
    if let Some(dev_addr) = &args.dev_addr {
        put("dev_addr", dev_addr.clone());
    }
    for (option, key, spec) in [
        ("app-key", "app_key", &args.app_key),
        ("nwk-s-key", "nwk_s_key", &args.nwk_s_key),
        ("app-s-key", "app_s_key", &args.app_s_key),
    ] {
        if let Some(spec) = spec {
            put(key, keys.resolve(option, spec)?);
        }
    }
    if args.replace {
        device.insert("replace".to_string(), Value::Bool(true));
    }
    Ok(device)
}

// ---------------------------------------------------------------- status

async fn status(client: &Client, json_output: bool, out: &mut Stdout) -> anyhow::Result<Exit> {
    let props = client
        .properties()
        .await
        .context("reading gatewayd's properties")?;
    let props = dict_to_json(&props);
    if json_output {
        out.json_pretty(&status_json(&props))?;
    } else {
        out.write(&status_text(&props, now_ms()))?;
    }
    Ok(Exit::Ok)
}

/// Properties with snake_case names; `Adapters` as objects.
fn status_json(props: &Map<String, Json>) -> Json {
    let mut obj = Map::new();
    for (name, value) in props {
        let value = if name == "Adapters" {
            adapters(value)
        } else {
            value.clone()
        };
        obj.insert(snake_case(name), value);
    }
    Json::Object(obj)
}

/// `a(ssss)` → `[{"name", "kind", "state", "detail"}]`.
fn adapters(value: &Json) -> Json {
    let Some(list) = value.as_array() else {
        return value.clone();
    };
    Json::Array(
        list.iter()
            .map(|entry| match entry.as_array() {
                Some(fields) => {
                    let mut obj = Map::new();
                    for (i, key) in ["name", "kind", "state", "detail"].iter().enumerate() {
                        obj.insert(
                            key.to_string(),
                            fields.get(i).cloned().unwrap_or(Json::Null),
                        );
                    }
                    Json::Object(obj)
                }
                None => entry.clone(),
            })
            .collect(),
    )
}

fn status_text(props: &Map<String, Json>, now: u64) -> String {
    let s = |key: &str| cell(props, key);
    let u = |key: &str| field_u64(props, key);
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut add = |label: &str, value: String| lines.push((label.to_string(), value));

    add("version", s("Version"));
    add("gateway id", s("GatewayId"));
    add(
        "uptime",
        match (u("Uptime"), u("StartedAt")) {
            (Some(up), Some(started)) if started > 0 => {
                format!("{} (since {})", duration(up), output::rfc3339_ms(started))
            }
            (Some(up), _) => duration(up),
            (None, _) => DASH.to_string(),
        },
    );
    add(
        "config file",
        match props.get("ConfigFile").and_then(Json::as_str) {
            Some("") => "none (configuration changes cannot be persisted)".to_string(),
            Some(_) => s("ConfigFile"),
            None => DASH.to_string(),
        },
    );
    let state = match props.get("UplinkConnected").and_then(Json::as_bool) {
        Some(true) => "connected",
        Some(false) => "disconnected",
        None => DASH,
    };
    add("uplink", format!("{state}, broker {}", s("UplinkBroker")));
    add(
        "  last PUBACK",
        u("UplinkLastPuback").map_or(DASH.to_string(), |t| age(now, t)),
    );
    add("  in flight", s("UplinkInFlight"));
    add("  last error", s("UplinkLastError"));

    let fill = match (u("BufferBytes"), u("BufferMaxBytes")) {
        (Some(b), Some(max)) if max > 0 => format!(
            "{} of {} ({:.1}%)",
            bytes(b),
            bytes(max),
            b as f64 * 100.0 / max as f64
        ),
        (Some(b), _) => bytes(b),
        _ => DASH.to_string(),
    };
    add(
        "buffer",
        format!("{} readings, {fill}", s("BufferReadings")),
    );
    add("  when full", s("BufferPolicy"));
    add(
        "  dropped",
        match props.get("BufferDropped").and_then(Json::as_object) {
            Some(dropped) => {
                let mut parts: Vec<String> = ["oldest", "newest", "too_large"]
                    .iter()
                    .map(|k| format!("{k} {}", field_u64(dropped, k).unwrap_or(0)))
                    .collect();
                for (k, v) in dropped {
                    if !["oldest", "newest", "too_large"].contains(&k.as_str()) {
                        parts.push(format!("{} {}", output::sanitize(k), display_json(v)));
                    }
                }
                parts.join(", ")
            }
            None => DASH.to_string(),
        },
    );
    add(
        "pending restart",
        match props.get("PendingRestart").and_then(Json::as_array) {
            Some(keys) if !keys.is_empty() => format!(
                "{} (take effect when gatewayd restarts)",
                keys.iter()
                    .map(|k| output::sanitize(&display_json(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(_) => "none".to_string(),
            None => DASH.to_string(),
        },
    );

    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
    let mut text = String::new();
    for (label, value) in &lines {
        text.push_str(&format!("{:width$}{value}\n", format!("{label}:")));
    }
    text.push_str("adapters:");
    match adapters(props.get("Adapters").unwrap_or(&Json::Null)).as_array() {
        Some(list) if !list.is_empty() => {
            text.push('\n');
            let mut table = Table::new(["NAME", "KIND", "STATE", "DETAIL"]);
            for a in list {
                let a = a.as_object().cloned().unwrap_or_default();
                table.row(vec![
                    cell(&a, "name"),
                    cell(&a, "kind"),
                    cell(&a, "state"),
                    cell(&a, "detail"),
                ]);
            }
            for line in table.render().lines() {
                text.push_str("  ");
                text.push_str(line);
                text.push('\n');
            }
        }
        _ => text.push_str(" none\n"),
    }
    text
}

// ---------------------------------------------------------------- devices

async fn devices(client: &Client, json_output: bool, out: &mut Stdout) -> anyhow::Result<Exit> {
    let devices = client.list_devices().await.context("listing devices")?;
    let records = sorted_records(&devices, "id");
    if json_output {
        out.json_pretty(&Json::Array(
            records.into_iter().map(Json::Object).collect(),
        ))?;
    } else {
        out.write(&devices_table(&records, now_ms()).render())?;
    }
    Ok(Exit::Ok)
}

fn devices_table(records: &[Map<String, Json>], now: u64) -> Table {
    let mut table = Table::new([
        "ID",
        "TRANSPORT",
        "SOURCE",
        "STATE",
        "LAST SEEN",
        "READINGS",
        "RSSI",
        "BATTERY",
        "FIRMWARE",
    ]);
    for d in records {
        table.row(vec![
            cell(d, "id"),
            cell(d, "transport"),
            cell(d, "source"),
            cell(d, "state"),
            age_cell(d, "last_seen", now),
            cell(d, "readings"),
            number_cell(d, "rssi", ""),
            number_cell(d, "battery", "%"),
            cell(d, "firmware"),
        ]);
    }
    table
}

/// Records as JSON objects, sorted by `key`.
fn sorted_records(records: &[Record], key: &str) -> Vec<Map<String, Json>> {
    let mut records: Vec<Map<String, Json>> = records.iter().map(dict_to_json).collect();
    records.sort_by(|a, b| {
        let k = |r: &Map<String, Json>| r.get(key).map(display_json).unwrap_or_default();
        k(a).cmp(&k(b))
    });
    records
}

// ---------------------------------------------------------------- config

async fn config(
    client: &Client,
    cmd: ConfigCommand,
    prepared: Prepared,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    match cmd {
        ConfigCommand::Get { key } => {
            let key = key.unwrap_or_default();
            let value = client
                .get_config(&key)
                .await
                .with_context(|| format!("reading {}", key_label(&key)))?;
            match value {
                None => {
                    eprintln!("{key} is not set (its default applies)");
                    if json_output {
                        out.line("null")?;
                    }
                }
                Some(value) => {
                    let json = to_json(&value);
                    match (&json, json_output) {
                        (Json::Object(_), _) => out.json_pretty(&json)?,
                        (Json::String(s), false) => out.line(s)?,
                        _ => out.line(&json.to_string())?,
                    }
                }
            }
        }
        ConfigCommand::Set { key, .. } => {
            let Prepared::Value(value) = prepared else {
                anyhow::bail!("internal error: no value prepared");
            };
            let outcome = client
                .set_config(&key, &value)
                .await
                .with_context(|| format!("setting {key}"))?;
            print_outcome(out, &key, &outcome, json_output)?;
        }
        ConfigCommand::Unset { key } => {
            let outcome = client
                .unset_config(&key)
                .await
                .with_context(|| format!("unsetting {key}"))?;
            print_outcome(out, &key, &outcome, json_output)?;
        }
        ConfigCommand::Reload => {
            let (applied, restart) = client
                .reload()
                .await
                .context("reloading the configuration")?;
            if json_output {
                out.line(&json!({"applied": applied, "restart_required": restart}).to_string())?;
            } else {
                out.write(&reload_text(&applied, &restart))?;
            }
        }
    }
    Ok(Exit::Ok)
}

fn key_label(key: &str) -> String {
    if key.is_empty() {
        "the configuration".to_string()
    } else {
        key.to_string()
    }
}

fn print_outcome(
    out: &mut Stdout,
    key: &str,
    outcome: &str,
    json_output: bool,
) -> anyhow::Result<()> {
    if json_output {
        out.line(&json!({"key": key, "outcome": outcome}).to_string())?;
    } else {
        out.line(&output::sanitize(outcome))?;
        if outcome == "restart-required" {
            eprintln!(
                "gatewayctl: {key} is saved; it takes effect when gatewayd restarts (e.g. systemctl restart gatewayd)"
            );
        }
    }
    Ok(())
}

fn reload_text(applied: &[String], restart: &[String]) -> String {
    let list = |keys: &[String]| {
        keys.iter()
            .map(|k| output::sanitize(k))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if applied.is_empty() && restart.is_empty() {
        return "no changes\n".to_string();
    }
    let mut text = String::new();
    if !applied.is_empty() {
        text.push_str(&format!("applied: {}\n", list(applied)));
    }
    if !restart.is_empty() {
        text.push_str(&format!(
            "restart-required: {} (take effect when gatewayd restarts)\n",
            list(restart)
        ));
    }
    text
}

// ---------------------------------------------------------------- apps

async fn apps(
    client: &Client,
    cmd: Option<AppsCommand>,
    prepared: Prepared,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    match cmd.unwrap_or(AppsCommand::List) {
        AppsCommand::List => {
            let apps = client.list_apps().await.context("listing apps")?;
            let records = sorted_records(&apps, "name");
            if json_output {
                out.json_pretty(&Json::Array(
                    records.into_iter().map(Json::Object).collect(),
                ))?;
            } else {
                out.write(&apps_table(&records).render())?;
            }
        }
        AppsCommand::Deploy { file } => {
            deploy(client, "Deploy", &file, prepared, json_output, out).await?;
        }
        AppsCommand::Upgrade { file } => {
            deploy(client, "Upgrade", &file, prepared, json_output, out).await?;
        }
        AppsCommand::Remove { name } => {
            client
                .remove_app(&name)
                .await
                .with_context(|| format!("removing app {name}"))?;
            if json_output {
                out.line(&json!({"removed": name}).to_string())?;
            } else {
                out.line(&format!("removed {}", output::sanitize(&name)))?;
            }
        }
    }
    Ok(Exit::Ok)
}

async fn deploy(
    client: &Client,
    method: &str,
    file: &std::path::Path,
    prepared: Prepared,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    let Prepared::Bundle(bundle) = prepared else {
        anyhow::bail!("internal error: no bundle prepared");
    };
    let call_timeout = client.timeout().max(MIN_DEPLOY_TIMEOUT);
    let deployed = client
        .deploy(method, &bundle, call_timeout)
        .await
        .with_context(|| match method {
            "Upgrade" => format!("upgrading with {}", file.display()),
            _ => format!("deploying {}", file.display()),
        })?;
    if json_output {
        out.line(
            &json!({
                "name": deployed.name,
                "version": deployed.version,
                "previous_version": deployed.previous_version,
            })
            .to_string(),
        )?;
    } else {
        out.line(&deploy_text(&deployed))?;
    }
    Ok(())
}

fn deploy_text(d: &client::Deployed) -> String {
    let name = output::sanitize(&d.name);
    let version = output::sanitize(&d.version);
    if d.previous_version.is_empty() {
        format!("deployed {name} {version}")
    } else if d.previous_version == d.version {
        format!("redeployed {name} {version}")
    } else {
        format!(
            "upgraded {name} {} -> {version}",
            output::sanitize(&d.previous_version)
        )
    }
}

fn apps_table(records: &[Map<String, Json>]) -> Table {
    let mut table = Table::new([
        "NAME",
        "VERSION",
        "STATE",
        "MODE",
        "CALLS",
        "IN",
        "EMITTED",
        "ALERTS",
        "FAILURES",
        "LAST ERROR",
    ]);
    for a in records {
        let state = match (cell(a, "state"), field_u64(a, "disabled_for_ms")) {
            (state, Some(ms)) if ms > 0 => format!("{state} ({} left)", duration(ms / 1000)),
            (state, _) => state,
        };
        table.row(vec![
            cell(a, "name"),
            cell(a, "version"),
            state,
            cell(a, "mode"),
            cell(a, "calls"),
            cell(a, "readings_in"),
            cell(a, "emitted"),
            cell(a, "alerts"),
            cell(a, "failures"),
            cell(a, "last_error"),
        ]);
    }
    table
}

// ---------------------------------------------------------------- lorawan

async fn lora(
    client: &Client,
    cmd: Option<LoraDevicesCommand>,
    prepared: Prepared,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    match cmd.unwrap_or(LoraDevicesCommand::List) {
        LoraDevicesCommand::List => {
            let devices = client
                .list_lorawan_devices()
                .await
                .context("listing LoRaWAN devices")?;
            let records = sorted_records(&devices, "dev_eui");
            if json_output {
                out.json_pretty(&Json::Array(
                    records.into_iter().map(Json::Object).collect(),
                ))?;
            } else {
                out.write(&lora_table(&records, now_ms()).render())?;
            }
        }
        LoraDevicesCommand::Add(args) => {
            let Prepared::Device(device) = prepared else {
                anyhow::bail!("internal error: no device prepared");
            };
            client
                .add_lorawan_device(&device)
                .await
                .with_context(|| format!("adding LoRaWAN device {}", args.dev_eui))?;
            if json_output {
                out.line(&json!({"added": args.dev_eui}).to_string())?;
            } else {
                out.line(&format!("added {}", output::sanitize(&args.dev_eui)))?;
            }
        }
        LoraDevicesCommand::Remove { dev_eui } => {
            client
                .remove_lorawan_device(&dev_eui)
                .await
                .with_context(|| format!("removing LoRaWAN device {dev_eui}"))?;
            if json_output {
                out.line(&json!({"removed": dev_eui}).to_string())?;
            } else {
                out.line(&format!("removed {}", output::sanitize(&dev_eui)))?;
            }
        }
    }
    Ok(Exit::Ok)
}

fn lora_table(records: &[Map<String, Json>], now: u64) -> Table {
    let mut table = Table::new([
        "DEV_EUI",
        "NAME",
        "PROFILE",
        "ACTIVATION",
        "JOIN_EUI",
        "DEV_ADDR",
        "CREATED",
    ]);
    for d in records {
        table.row(vec![
            cell(d, "dev_eui"),
            cell(d, "name"),
            cell(d, "profile"),
            cell(d, "activation"),
            cell(d, "join_eui"),
            cell(d, "dev_addr"),
            age_cell(d, "created", now),
        ]);
    }
    table
}

// ---------------------------------------------------------------- buffer

async fn flush(
    client: &Client,
    secs: u32,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    // 0 = gatewayd's default (30 s); gatewayd caps it at 600 s.
    let effective = if secs == 0 { 30 } else { secs.min(600) };
    let call_timeout = Duration::from_secs(u64::from(effective)) + client.timeout();
    let (delivered, remaining) = client
        .flush_buffer(secs.saturating_mul(1000), call_timeout)
        .await
        .context("flushing the buffer")?;
    if json_output {
        out.line(&json!({"delivered": delivered, "remaining": remaining}).to_string())?;
    } else {
        out.line(&format!("delivered {delivered}, remaining {remaining}"))?;
    }
    if remaining > 0 {
        eprintln!("gatewayctl: {}", CtlError::Incomplete { remaining });
        return Ok(Exit::Incomplete);
    }
    Ok(Exit::Ok)
}

// ---------------------------------------------------------------- stdout

/// Standard output, flushed after every write; a closed pipe is reported as
/// [`StdoutClosed`] so that `gatewayctl ... | head` ends quietly.
pub struct Stdout {
    inner: std::io::Stdout,
}

/// Standard output was closed by its reader.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct StdoutClosed;

impl Default for Stdout {
    fn default() -> Self {
        Stdout {
            inner: std::io::stdout(),
        }
    }
}

impl Stdout {
    pub fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let mut lock = self.inner.lock();
        match lock.write_all(text.as_bytes()).and_then(|()| lock.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
            Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
        }
    }

    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        self.write(&format!("{text}\n"))
    }

    pub fn json_pretty(&mut self, json: &Json) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(json).context("formatting JSON")?;
        self.line(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("gatewayctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_and_man_page_are_generated() {
        assert!(COMPLETION_BASH.contains("_gatewayctl()"), "bash");
        assert!(COMPLETION_BASH.contains("lora"), "bash covers subcommands");
        assert!(COMPLETION_ZSH.starts_with("#compdef gatewayctl"), "zsh");
        assert!(COMPLETION_FISH.contains("complete -c gatewayctl"), "fish");
        assert!(MAN_PAGE.contains(".TH gatewayctl 1"), "man section 1");
        assert!(
            MAN_PAGE.contains(".SH \"EXIT STATUS\""),
            "exit status section"
        );
        assert!(
            MAN_PAGE.contains("gatewayctl config set"),
            "subcommands documented"
        );
        assert!(
            MAN_PAGE.contains("GATEWAYCTL_BUS"),
            "environment documented"
        );
    }

    #[test]
    fn bus_accepts_system_session_and_addresses() {
        assert_eq!(
            parse(&["status"]).expect("default").bus,
            cli::BusArg::System
        );
        assert_eq!(
            parse(&["--bus", "session", "status"]).expect("session").bus,
            cli::BusArg::Session
        );
        assert_eq!(
            parse(&["status", "--bus", "unix:path=/tmp/x/bus"])
                .expect("address")
                .bus,
            cli::BusArg::Address("unix:path=/tmp/x/bus".into())
        );
        let err = parse(&["--bus", "sytem", "status"]).expect_err("typo");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn lorawan_add_requires_exactly_one_activation() {
        let otaa = ["lora", "devices", "add", "--dev-eui", "0011223344556677"];
        let with = |extra: &[&str]| {
            let mut args = otaa.to_vec();
            args.extend_from_slice(extra);
            parse(&args)
        };
        assert!(with(&["--join-eui", "1", "--app-key", "-"]).is_ok());
        assert!(with(&["--dev-addr", "1", "--nwk-s-key", "2", "--app-s-key", "@k"]).is_ok());
        for bad in [
            &[][..],
            &["--join-eui", "1"][..],
            &["--app-key", "2"][..],
            &["--dev-addr", "1", "--nwk-s-key", "2"][..],
            &["--join-eui", "1", "--app-key", "2", "--dev-addr", "3"][..],
            &[
                "--join-eui",
                "1",
                "--app-key",
                "2",
                "--dev-addr",
                "3",
                "--nwk-s-key",
                "4",
                "--app-s-key",
                "5",
            ][..],
        ] {
            let err = with(bad).expect_err(&format!("{bad:?} should be refused"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn lorawan_device_dictionary_has_only_given_keys() {
        let cli = parse(&[
            "lora",
            "devices",
            "add",
            "--dev-eui",
            "0011223344556677",
            "--join-eui",
            "70B3D57ED0000000",
            "--app-key",
            "00112233445566778899AABBCCDDEEFF",
            "--replace",
        ])
        .expect("parse");
        let Command::Lora(LoraCommand::Devices {
            command: Some(LoraDevicesCommand::Add(args)),
        }) = cli.command
        else {
            panic!("not lora devices add")
        };
        let device = lorawan_device(&args).expect("device");
        let mut keys: Vec<&str> = device.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["app_key", "dev_eui", "join_eui", "replace"]);
        assert_eq!(device["replace"], Value::Bool(true));
        assert_eq!(
            device["app_key"],
            Value::from("00112233445566778899AABBCCDDEEFF")
        );
    }

    #[test]
    fn negative_numbers_are_values_not_options() {
        let cli = parse(&["config", "set", "sources.x.offset", "-5"]).expect("parse");
        let Command::Config(ConfigCommand::Set { value, .. }) = cli.command else {
            panic!("not config set")
        };
        assert_eq!(value, "-5");
    }

    fn props() -> Map<String, Json> {
        json!({
            "Version": "0.1.0",
            "GatewayId": "gw-01",
            "StartedAt": 1_000_000u64,
            "Uptime": 3 * 86_400 + 4 * 3600u64,
            "ConfigFile": "/etc/gatewayd/gatewayd.toml",
            "UplinkConnected": true,
            "UplinkBroker": "mqtts://broker:8883",
            "UplinkLastPuback": 9_997_000u64,
            "UplinkInFlight": 2,
            "UplinkLastError": "",
            "BufferReadings": 1234,
            "BufferBytes": 1024 * 1024 * 8,
            "BufferMaxBytes": 1024 * 1024 * 64,
            "BufferPolicy": "drop-oldest",
            "BufferDropped": {"oldest": 3, "newest": 0, "too_large": 1},
            "Adapters": [["coap", "coap", "running", ""], ["lora", "lorawan", "failed", "no concentrator"]],
            "PendingRestart": ["buffer.max_bytes"],
        })
        .as_object()
        .cloned()
        .expect("object")
    }

    #[test]
    fn status_text_summarises_every_property() {
        let text = status_text(&props(), 10_000_000);
        for expected in [
            "version:         0.1.0",
            "gateway id:      gw-01",
            "uptime:          3d 4h (since 1970-01-01T00:16:40.000Z)",
            "uplink:          connected, broker mqtts://broker:8883",
            "  last PUBACK:   3s ago",
            "  in flight:     2",
            "  last error:    -",
            "buffer:          1234 readings, 8.0 MiB of 64.0 MiB (12.5%)",
            "  when full:     drop-oldest",
            "  dropped:       oldest 3, newest 0, too_large 1",
            "pending restart: buffer.max_bytes (take effect when gatewayd restarts)",
            "config file:     /etc/gatewayd/gatewayd.toml",
            "  NAME  KIND     STATE    DETAIL",
            "  lora  lorawan  failed   no concentrator",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn status_text_survives_missing_properties() {
        let text = status_text(&Map::new(), 0);
        assert!(text.contains("version:"), "{text}");
        assert!(text.contains("adapters: none"), "{text}");
    }

    #[test]
    fn status_json_uses_snake_case_and_adapter_objects() {
        let j = status_json(&props());
        assert_eq!(j["gateway_id"], json!("gw-01"));
        assert_eq!(j["uplink_last_puback"], json!(9_997_000u64));
        assert_eq!(j["buffer_dropped"]["too_large"], json!(1));
        assert_eq!(
            j["adapters"][1],
            json!({"name": "lora", "kind": "lorawan", "state": "failed", "detail": "no concentrator"})
        );
        assert_eq!(j["pending_restart"], json!(["buffer.max_bytes"]));
    }

    #[test]
    fn devices_table_has_the_documented_columns() {
        let records: Vec<Map<String, Json>> = [
            json!({"id": "coap:boiler-1", "transport": "coap", "source": "coap", "state": "active",
                   "last_seen": 988_000u64, "readings": 42u64, "battery": 83.0, "firmware": "1.2.3"}),
            json!({"id": "lorawan:0011", "transport": "lorawan", "state": "lost",
                   "last_seen": 0u64, "readings": 1u64, "rssi": -112.25, "snr": 7.5}),
        ]
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let text = devices_table(&records, 1_000_000).render();
        assert_eq!(
            text,
            "ID             TRANSPORT  SOURCE  STATE   LAST SEEN  READINGS  RSSI    BATTERY  FIRMWARE\n\
             coap:boiler-1  coap       coap    active  12s ago    42        -       83%      1.2.3\n\
             lorawan:0011   lorawan    -       lost    never      1         -112.3  -        -\n"
        );
    }

    #[test]
    fn reload_text_lists_both_kinds_of_keys() {
        assert_eq!(reload_text(&[], &[]), "no changes\n");
        assert_eq!(
            reload_text(&["log.level".into()], &["buffer.max_bytes".into(), "uplink.broker".into()]),
            "applied: log.level\nrestart-required: buffer.max_bytes, uplink.broker (take effect when gatewayd restarts)\n"
        );
    }

    #[test]
    fn deploy_text_tells_new_upgrade_and_redeploy_apart() {
        let d = |prev: &str| client::Deployed {
            name: "filter".into(),
            version: "1.1.0".into(),
            previous_version: prev.into(),
        };
        assert_eq!(deploy_text(&d("")), "deployed filter 1.1.0");
        assert_eq!(deploy_text(&d("1.0.0")), "upgraded filter 1.0.0 -> 1.1.0");
        assert_eq!(deploy_text(&d("1.1.0")), "redeployed filter 1.1.0");
    }

    #[test]
    fn apps_and_lorawan_tables_show_absent_fields_as_dash() {
        let apps: Vec<Map<String, Json>> = [json!({"name": "filter", "version": "1.0.0",
            "state": "disabled", "mode": "stream", "calls": 10u64, "disabled_for_ms": 90_000u64,
            "last_error": "trap: unreachable"})]
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let text = apps_table(&apps).render();
        assert_eq!(
            text,
            "NAME    VERSION  STATE                   MODE    CALLS  IN  EMITTED  ALERTS  FAILURES  LAST ERROR\n\
             filter  1.0.0    disabled (1m 30s left)  stream  10     -   -        -       -         trap: unreachable\n"
        );

        let lora: Vec<Map<String, Json>> = [json!({"dev_eui": "0011223344556677", "name": "x",
            "profile": "cayenne", "activation": "abp", "dev_addr": "26011234", "created": 0u64})]
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let text = lora_table(&lora, 1).render();
        assert!(
            text.contains("0011223344556677  x     cayenne  abp         -         26011234  never"),
            "{text}"
        );
    }
}
