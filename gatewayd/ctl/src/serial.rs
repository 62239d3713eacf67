//! `gatewayctl serial sensors|interval|identify|reboot|diagnostics`: the
//! serial source's status and commands (adapters/serial/README.md).

use serde_json::{json, Value as Json};

use crate::cli::SerialCommand;
use crate::client::Client;
use crate::error::Exit;
use crate::output::{self, now_ms, Table};
use crate::sources::{command, source_of_kind, status_of};
use crate::Stdout;

pub async fn serial(
    client: &Client,
    cmd: SerialCommand,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    let (source, request) = match cmd {
        SerialCommand::Sensors { source } => {
            let name = source_of_kind(client, "serial", source.source).await?;
            let status = status_of(client, &name).await?;
            if json_output {
                out.json_pretty(&status["ports"])?;
            } else {
                out.write(&sensors_table(&status, now_ms()).render())?;
            }
            return Ok(Exit::Ok);
        }
        SerialCommand::Interval { device, ms, source } => (
            source,
            json!({"command": "set_sample_interval", "device": device, "ms": ms}),
        ),
        SerialCommand::Identify {
            device,
            seconds,
            source,
        } => (
            source,
            json!({"command": "identify", "device": device, "seconds": seconds}),
        ),
        SerialCommand::Reboot { device, source } => {
            (source, json!({"command": "reboot", "device": device}))
        }
        SerialCommand::Diagnostics { device, source } => (
            source,
            json!({"command": "request_diagnostics", "device": device}),
        ),
    };
    let name = source_of_kind(client, "serial", source.source).await?;
    let answer = command(client, &name, &request).await?;
    if json_output {
        out.json_pretty(&answer)?;
    } else {
        out.write(&acknowledged(&request, &answer))?;
    }
    Ok(Exit::Ok)
}

/// `<device> acknowledged <command> (seq N, M ms)`.
fn acknowledged(request: &Json, answer: &Json) -> String {
    let device = answer["device"]
        .as_str()
        .or(request["device"].as_str())
        .unwrap_or(output::DASH);
    let what = request["command"].as_str().unwrap_or("the command");
    let mut detail = Vec::new();
    if let Some(seq) = answer["seq"].as_u64() {
        detail.push(format!("seq {seq}"));
    }
    if let Some(ms) = answer["rtt_ms"].as_u64() {
        detail.push(format!("{ms} ms"));
    }
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", detail.join(", "))
    };
    format!("{} acknowledged {what}{detail}\n", output::sanitize(device))
}

/// One row per port, with the sensor on it (if it introduced itself).
fn sensors_table(status: &Json, now: u64) -> Table {
    let mut table = Table::new([
        "PORT",
        "STATE",
        "DEVICE",
        "FIRMWARE",
        "LAST_SEEN",
        "UPTIME",
        "RESET",
        "INTERVAL",
        "RX_ERR",
        "REOPENS",
    ]);
    let text = |v: &Json| {
        v.as_str()
            .map_or_else(|| output::DASH.to_owned(), output::sanitize)
    };
    for port in status["ports"].as_array().into_iter().flatten() {
        let d = &port["device"];
        let c = &port["counters"];
        let rx_errors: u64 = [
            "crc_errors",
            "cobs_errors",
            "too_short",
            "too_long",
            "malformed",
        ]
        .iter()
        .filter_map(|k| c[*k].as_u64())
        .sum();
        table.row(vec![
            text(&port["name"]),
            text(&port["state"]),
            text(&d["id"]),
            text(&d["firmware"]),
            d["last_seen_ms"]
                .as_u64()
                .map_or_else(|| output::DASH.to_owned(), |t| output::age(now, t)),
            d["uptime_s"]
                .as_u64()
                .map_or_else(|| output::DASH.to_owned(), output::duration),
            text(&d["reset_reason"]),
            d["sample_interval_ms"]
                .as_u64()
                .map_or_else(|| output::DASH.to_owned(), |ms| format!("{ms} ms")),
            rx_errors.to_string(),
            port["reopens"]
                .as_u64()
                .map_or_else(|| output::DASH.to_owned(), |n| n.to_string()),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensors_table_shows_the_device_on_each_port_and_sums_receive_errors() {
        let status = json!({"ports": [
            {"name": "ttyUSB0", "state": "open", "reopens": 2,
             "counters": {"crc_errors": 3, "too_long": 1, "frames_ok": 9},
             "device": {"id": "serial:lm3s6965-0001", "firmware": "0.1.0",
                        "last_seen_ms": 9_000, "uptime_s": 3_700,
                        "reset_reason": "software", "sample_interval_ms": 500}},
            {"name": "ttyUSB1", "state": "closed", "reopens": 0, "counters": {},
             "device": null}
        ]});
        let text = sensors_table(&status, 10_000).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for want in [
            "ttyUSB0",
            "serial:lm3s6965-0001",
            "0.1.0",
            "software",
            "500 ms",
        ] {
            assert!(lines[1].contains(want), "{want} missing: {text}");
        }
        assert!(lines[1].contains(" 4 "), "3 + 1 receive errors: {text}");
        assert!(lines[2].contains("closed"), "{text}");
    }

    #[test]
    fn acknowledgement_names_device_command_seq_and_round_trip() {
        let line = acknowledged(
            &json!({"command": "reboot", "device": "port0"}),
            &json!({"device": "serial:x", "seq": 7, "rtt_ms": 12}),
        );
        assert_eq!(line, "serial:x acknowledged reboot (seq 7, 12 ms)\n");
    }
}
