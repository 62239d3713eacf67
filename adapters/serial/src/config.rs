//! The `[sources.<name>]` section of a serial source, and its validation.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use gatewayd_core::ConfigError;
use serde::{Deserialize, Serialize};

/// Most ports one source may list (one task each).
pub const MAX_PORTS: usize = 64;
/// Baud rates accepted: the standard ones from 300 to 4 Mbaud.
pub const BAUD_RATES: &[u32] = &[
    300, 600, 1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 500_000,
    576_000, 921_600, 1_000_000, 1_152_000, 1_500_000, 2_000_000, 2_500_000, 3_000_000, 3_500_000,
    4_000_000,
];
/// Longest timeout or backoff accepted, ms (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Most commands waiting for their ack on one port.
pub const MAX_PENDING_COMMANDS: usize = 256;
/// Longest port name (it becomes `extra["port"]` of every reading).
pub const MAX_PORT_NAME_LEN: usize = 64;

/// Configuration of a serial source. Every field but `ports` has a working
/// default.
///
/// ```toml
/// [sources.wired]
/// kind = "serial"
/// [[sources.wired.ports]]
/// path = "/dev/ttyUSB0"
/// baud = 115200
/// name = "boiler-room"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialConfig {
    /// The serial ports, one sensor each.
    pub ports: Vec<PortConfig>,
    /// First delay before reopening a port that failed or vanished, ms.
    pub reopen_min_ms: u64,
    /// Longest delay between two reopen attempts, ms (the delay doubles
    /// from `reopen_min_ms`, with jitter).
    pub reopen_max_ms: u64,
    /// How long a command waits for its ack before it is resent, ms.
    pub command_timeout_ms: u64,
    /// How many times an unanswered command is resent (same seq).
    pub command_retries: u32,
    /// Commands waiting for their ack on one port, at most.
    pub max_pending_commands: usize,
    /// After opening a port, how long to wait for the device's `Hello`
    /// before asking for it (`RequestDiagnostics`), ms; doubles per probe.
    pub hello_timeout_ms: u64,
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            ports: Vec::new(),
            reopen_min_ms: 500,
            reopen_max_ms: 30_000,
            command_timeout_ms: 2_000,
            command_retries: 2,
            max_pending_commands: 8,
            hello_timeout_ms: 3_000,
        }
    }
}

/// One serial port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/…` (required).
    pub path: String,
    /// Line speed. Default 115200.
    pub baud: u32,
    /// 5..=8. Default 8.
    pub data_bits: u8,
    /// Default none.
    pub parity: Parity,
    /// 1 or 2. Default 1.
    pub stop_bits: u8,
    /// Default none.
    pub flow_control: FlowControl,
    /// Label used in status, commands and `extra["port"]`. Default: the
    /// path's file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            path: String::new(),
            baud: 115_200,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
            name: None,
        }
    }
}

/// Parity bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// A validated port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    pub path: String,
    pub name: String,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub ports: Vec<PortSettings>,
    pub reopen_min: Duration,
    pub reopen_max: Duration,
    pub command_timeout: Duration,
    pub command_retries: u32,
    pub max_pending_commands: usize,
    pub hello_timeout: Duration,
}

fn valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PORT_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Checks a config; errors name the dotted key (`<key>.ports[1].baud`).
pub fn validate(key: &str, c: SerialConfig) -> Result<Validated, ConfigError> {
    let k = |f: &str| format!("{key}.{f}");
    let ms = |field: &str, v: u64| -> Result<Duration, ConfigError> {
        if v == 0 || v > MAX_TIMEOUT_MS {
            return Err(ConfigError::new(
                k(field),
                format!("must be 1..={MAX_TIMEOUT_MS} (ms)"),
            ));
        }
        Ok(Duration::from_millis(v))
    };
    let reopen_min = ms("reopen_min_ms", c.reopen_min_ms)?;
    let reopen_max = ms("reopen_max_ms", c.reopen_max_ms)?;
    if reopen_max < reopen_min {
        return Err(ConfigError::new(
            k("reopen_max_ms"),
            "must not be less than reopen_min_ms",
        ));
    }
    let command_timeout = ms("command_timeout_ms", c.command_timeout_ms)?;
    let hello_timeout = ms("hello_timeout_ms", c.hello_timeout_ms)?;
    if c.command_retries > 10 {
        return Err(ConfigError::new(k("command_retries"), "must be 0..=10"));
    }
    if !(1..=MAX_PENDING_COMMANDS).contains(&c.max_pending_commands) {
        return Err(ConfigError::new(
            k("max_pending_commands"),
            format!("must be 1..={MAX_PENDING_COMMANDS}"),
        ));
    }
    if c.ports.is_empty() {
        return Err(ConfigError::new(
            k("ports"),
            "at least one port is required ([[sources.<name>.ports]] with a path)",
        ));
    }
    if c.ports.len() > MAX_PORTS {
        return Err(ConfigError::new(
            k("ports"),
            format!("at most {MAX_PORTS} ports"),
        ));
    }
    let mut paths = HashSet::new();
    let mut names = HashSet::new();
    let mut ports = Vec::with_capacity(c.ports.len());
    for (i, p) in c.ports.into_iter().enumerate() {
        let pk = |f: &str| format!("{key}.ports[{i}].{f}");
        if p.path.trim().is_empty() {
            return Err(ConfigError::new(pk("path"), "is required"));
        }
        if !paths.insert(p.path.clone()) {
            return Err(ConfigError::new(
                pk("path"),
                format!("{:?} is listed twice", p.path),
            ));
        }
        if !BAUD_RATES.contains(&p.baud) {
            return Err(ConfigError::new(
                pk("baud"),
                format!(
                    "{} is not a standard rate (300, 1200, …, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, … 4000000)",
                    p.baud
                ),
            ));
        }
        if !(5..=8).contains(&p.data_bits) {
            return Err(ConfigError::new(pk("data_bits"), "must be 5..=8"));
        }
        if !(1..=2).contains(&p.stop_bits) {
            return Err(ConfigError::new(pk("stop_bits"), "must be 1 or 2"));
        }
        let name = match p.name {
            Some(n) => {
                if !valid_port_name(&n) {
                    return Err(ConfigError::new(
                        pk("name"),
                        format!("{n:?}: 1..={MAX_PORT_NAME_LEN} characters of A-Z a-z 0-9 - . _"),
                    ));
                }
                n
            }
            None => {
                let file = Path::new(&p.path)
                    .file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or("");
                let n: String = file
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(MAX_PORT_NAME_LEN)
                    .collect();
                if n.is_empty() {
                    return Err(ConfigError::new(
                        pk("name"),
                        "the path has no file name to default to: set a name",
                    ));
                }
                n
            }
        };
        if !names.insert(name.clone()) {
            return Err(ConfigError::new(
                pk("name"),
                format!("{name:?} is used by another port (names default to the path's file name)"),
            ));
        }
        ports.push(PortSettings {
            path: p.path,
            name,
            baud: p.baud,
            data_bits: p.data_bits,
            parity: p.parity,
            stop_bits: p.stop_bits,
            flow_control: p.flow_control,
        });
    }
    Ok(Validated {
        ports,
        reopen_min,
        reopen_max,
        command_timeout,
        command_retries: c.command_retries,
        max_pending_commands: c.max_pending_commands,
        hello_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Validated, String> {
        let c: SerialConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        validate("sources.wired", c).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_a_minimal_port() {
        let v = parse("[[ports]]\npath = \"/dev/ttyUSB0\"\n").unwrap();
        assert_eq!(v.ports[0].name, "ttyUSB0");
        assert_eq!(v.ports[0].baud, 115_200);
        assert_eq!(v.ports[0].data_bits, 8);
        assert_eq!(v.ports[0].parity, Parity::None);
        assert_eq!(v.reopen_min, Duration::from_millis(500));
        assert_eq!(v.reopen_max, Duration::from_secs(30));
        assert_eq!(v.command_timeout, Duration::from_secs(2));
        assert_eq!(v.command_retries, 2);
        assert_eq!(v.max_pending_commands, 8);
        assert_eq!(v.hello_timeout, Duration::from_secs(3));
    }

    #[test]
    fn every_key_parses() {
        let v = parse(
            r#"
reopen_min_ms = 100
reopen_max_ms = 1000
command_timeout_ms = 300
command_retries = 0
max_pending_commands = 2
hello_timeout_ms = 50
[[ports]]
path = "/dev/ttyAMA0"
baud = 9600
data_bits = 7
parity = "even"
stop_bits = 2
flow_control = "hardware"
name = "boiler-room"
"#,
        )
        .unwrap();
        let p = &v.ports[0];
        assert_eq!(
            (p.baud, p.data_bits, p.parity, p.stop_bits, p.flow_control),
            (9600, 7, Parity::Even, 2, FlowControl::Hardware)
        );
        assert_eq!(p.name, "boiler-room");
        assert_eq!(v.command_retries, 0);
    }

    #[test]
    fn errors_name_the_key() {
        let two = |second: &str| {
            format!(
                "[[ports]]\npath = \"/dev/ttyUSB0\"\n[[ports]]\npath = \"/dev/ttyUSB1\"\n{second}"
            )
        };
        assert!(parse("")
            .unwrap_err()
            .starts_with("sources.wired.ports: at least one"));
        assert!(parse(&two("baud = 12345"))
            .unwrap_err()
            .starts_with("sources.wired.ports[1].baud: 12345"));
        assert!(parse(&two("data_bits = 9"))
            .unwrap_err()
            .starts_with("sources.wired.ports[1].data_bits"));
        assert!(parse(&two("stop_bits = 3"))
            .unwrap_err()
            .starts_with("sources.wired.ports[1].stop_bits"));
        let dup = "[[ports]]\npath = \"/dev/a\"\n[[ports]]\npath = \"/dev/a\"\n";
        assert!(parse(dup)
            .unwrap_err()
            .starts_with("sources.wired.ports[1].path"));
        let same_name = "[[ports]]\npath = \"/dev/a/tty\"\n[[ports]]\npath = \"/dev/b/tty\"\n";
        assert!(parse(same_name)
            .unwrap_err()
            .starts_with("sources.wired.ports[1].name"));
        assert!(parse(&two("name = \"a b\""))
            .unwrap_err()
            .starts_with("sources.wired.ports[1].name"));
        assert!(
            parse("command_timeout_ms = 0\n[[ports]]\npath = \"/dev/a\"")
                .unwrap_err()
                .starts_with("sources.wired.command_timeout_ms")
        );
        assert!(
            parse("reopen_min_ms = 10\nreopen_max_ms = 5\n[[ports]]\npath = \"/dev/a\"")
                .unwrap_err()
                .starts_with("sources.wired.reopen_max_ms")
        );
        assert!(parse("[[ports]]\npath = \"/dev/a\"\nparity = \"mark\"").is_err());
        assert!(parse("[[ports]]\npath = \"/dev/a\"\nbogus = 1").is_err());
        assert!(parse("[[ports]]\nbaud = 9600")
            .unwrap_err()
            .starts_with("sources.wired.ports[0].path"));
    }
}
