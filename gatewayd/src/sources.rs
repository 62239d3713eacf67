//! The source kinds this build knows, and the three things the daemon does
//! with a `[sources.<name>]` table: check it (as `Source::build` would),
//! show its effective configuration (defaults included), and run it.
//!
//! A new adapter registers here: one line in each `match`.

use std::path::Path;

use gatewayd_adapter_coap::CoapSource;
use gatewayd_adapter_lorawan::LoraSource;
use gatewayd_adapter_serial::SerialSource;
use gatewayd_core::{Source, SourceContext, SourceError};
use tokio::task::{AbortHandle, JoinSet};

/// Every `kind` this build supports.
pub const KINDS: &[&str] = &[CoapSource::KIND, LoraSource::KIND, SerialSource::KIND];

/// What a finished source task returns: its name and how it ended.
pub type SourceExit = (String, Result<(), SourceError>);

fn kind_of(key: &str, table: &toml::Table) -> anyhow::Result<String> {
    match table.get("kind") {
        Some(toml::Value::String(k)) => Ok(k.clone()),
        Some(_) => Err(anyhow::anyhow!("{key}.kind: must be a string")),
        None => Err(anyhow::anyhow!(
            "{key}.kind: missing (e.g. kind = \"coap\")"
        )),
    }
}

fn unknown_kind(key: &str, kind: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{key}.kind: unknown source kind {kind:?} (this build supports: {})",
        KINDS.join(", ")
    )
}

/// Parses the adapter's own section (everything but `kind`), with errors
/// naming the dotted key.
fn parse<S: Source>(key: &str, table: &toml::Table) -> anyhow::Result<S::Config> {
    let mut table = table.clone();
    table.remove("kind");
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            anyhow::anyhow!("{key}: {msg}")
        } else {
            anyhow::anyhow!("{key}.{path}: {msg}")
        }
    })
}

fn build<S: Source>(key: &str, table: &toml::Table) -> anyhow::Result<(S, serde_json::Value)> {
    let cfg = parse::<S>(key, table)?;
    let effective = serde_json::to_value(&cfg)?;
    let source = S::build(key, cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((source, effective))
}

/// Validates a source's table exactly as starting it would (no sockets are
/// bound) and returns its effective configuration, `kind` included.
pub fn check(name: &str, table: &toml::Table) -> anyhow::Result<serde_json::Value> {
    let key = format!("sources.{name}");
    let kind = kind_of(&key, table)?;
    let mut effective = match kind.as_str() {
        CoapSource::KIND => build::<CoapSource>(&key, table)?.1,
        LoraSource::KIND => build::<LoraSource>(&key, table)?.1,
        SerialSource::KIND => build::<SerialSource>(&key, table)?.1,
        other => return Err(unknown_kind(&key, other)),
    };
    if let serde_json::Value::Object(m) = &mut effective {
        m.insert("kind".into(), serde_json::Value::String(kind));
    }
    Ok(effective)
}

/// The table with the daemon's settings an adapter needs filled in when
/// the section leaves them out: `state_dir` = `gateway.data_dir` for
/// `lorawan` (where `lorawan.db` lives).
fn with_daemon_defaults(kind: &str, table: &toml::Table, data_dir: &Path) -> toml::Table {
    let mut table = table.clone();
    if kind == LoraSource::KIND && !table.contains_key("state_dir") {
        table.insert(
            "state_dir".into(),
            toml::Value::String(data_dir.to_string_lossy().into_owned()),
        );
    }
    table
}

/// Builds a source from its table and spawns it into `tasks`. `data_dir`
/// (`gateway.data_dir`) fills in adapter settings the table leaves out
/// (see [`with_daemon_defaults`]).
pub fn spawn(
    name: &str,
    table: &toml::Table,
    data_dir: &Path,
    ctx: SourceContext,
    tasks: &mut JoinSet<SourceExit>,
) -> anyhow::Result<AbortHandle> {
    let key = format!("sources.{name}");
    let kind = kind_of(&key, table)?;
    let table = &with_daemon_defaults(&kind, table, data_dir);
    Ok(match kind.as_str() {
        CoapSource::KIND => run(build::<CoapSource>(&key, table)?.0, ctx, tasks),
        LoraSource::KIND => run(build::<LoraSource>(&key, table)?.0, ctx, tasks),
        SerialSource::KIND => run(build::<SerialSource>(&key, table)?.0, ctx, tasks),
        other => return Err(unknown_kind(&key, other)),
    })
}

fn run<S: Source>(
    source: S,
    mut ctx: SourceContext,
    tasks: &mut JoinSet<SourceExit>,
) -> AbortHandle {
    if !S::TAKES_COMMANDS {
        ctx.commands.close();
    }
    let name = ctx.name.clone();
    let health = ctx.health.clone();
    tasks.spawn(async move {
        let r = source.run(ctx).await;
        // The contract: an error return is fatal. Every source's health
        // says so here, not in each adapter.
        if let Err(e) = &r {
            health.set(gatewayd_core::SourceState::Failed(e.to_string()));
        }
        (name, r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn effective_config_includes_adapter_defaults_and_kind() {
        let v = check("coap", &table("kind = \"coap\"\nbind = \"127.0.0.1:5999\"")).unwrap();
        assert_eq!(v["kind"], "coap");
        assert_eq!(v["bind"], "127.0.0.1:5999");
        assert_eq!(v["path"], "telemetry", "default filled in");
    }

    #[test]
    fn bad_adapter_values_name_the_key() {
        let e = check("c", &table("kind = \"coap\"\nbind = 5")).unwrap_err();
        assert!(e.to_string().starts_with("sources.c.bind"), "{e}");
        let e = check("c", &table("kind = \"coap\"\nbogus = 1")).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = check("c", &table("kind = \"zigbee\"")).unwrap_err();
        assert!(e.to_string().contains("sources.c.kind"), "{e}");
    }

    #[test]
    fn lorawan_is_registered_and_gets_the_data_dir_as_state_dir() {
        let t = table("kind = \"lorawan\"\nregion = \"US915\"");
        let v = check("lora", &t).unwrap();
        assert_eq!(v["kind"], "lorawan");
        assert_eq!(v["bind"], "0.0.0.0:1700", "default filled in");
        assert!(v["state_dir"].is_null(), "the daemon's data_dir at start");
        let filled = with_daemon_defaults("lorawan", &t, Path::new("/var/lib/x"));
        assert_eq!(filled["state_dir"].as_str(), Some("/var/lib/x"));
        let own = table("kind = \"lorawan\"\nstate_dir = \"/srv/lora\"");
        let kept = with_daemon_defaults("lorawan", &own, Path::new("/var/lib/x"));
        assert_eq!(kept["state_dir"].as_str(), Some("/srv/lora"));
        let e = check("lora", &table("kind = \"lorawan\"\nregion = \"XX\"")).unwrap_err();
        assert!(e.to_string().starts_with("sources.lora.region"), "{e}");
    }
}
