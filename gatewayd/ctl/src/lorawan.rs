//! `gatewayctl lora downlinks|forwarders|stats`.

use anyhow::Context as _;
use serde_json::{json, Map, Value as Json};

use crate::cli::{LoraDownlinksCommand, LoraSendArgs};
use crate::client::Client;
use crate::error::{CtlError, Exit};
use crate::output::{self, age_cell, cell, now_ms, Table};
use crate::sources::{source_of_kind, status_of};
use crate::{sorted_records, Stdout};

/// The lorawan source's name and status.
async fn lorawan_status(client: &Client, source: Option<String>) -> anyhow::Result<(String, Json)> {
    let name = source_of_kind(client, "lorawan", source).await?;
    let status = status_of(client, &name).await?;
    Ok((name, status))
}

pub async fn stats(
    client: &Client,
    source: Option<String>,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    let (name, status) = lorawan_status(client, source).await?;
    if json_output {
        out.json_pretty(&json!({
            "source": name,
            "counters": status["counters"],
            "rejected": status["rejected"],
        }))?;
    } else {
        out.write(&stats_table(&status).render())?;
    }
    Ok(Exit::Ok)
}

/// One row per counter, then `rejected.<reason>` rows.
fn stats_table(status: &Json) -> Table {
    let mut table = Table::new(["COUNTER", "VALUE"]);
    for (group, prefix) in [("counters", ""), ("rejected", "rejected.")] {
        if let Some(m) = status[group].as_object() {
            for (k, v) in m {
                table.row(vec![format!("{prefix}{k}"), v.to_string()]);
            }
        }
    }
    table
}

pub async fn forwarders(
    client: &Client,
    source: Option<String>,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    let (_, status) = lorawan_status(client, source).await?;
    let list = status["forwarders"].clone();
    if json_output {
        out.json_pretty(&list)?;
    } else {
        out.write(&forwarders_table(&list).render())?;
    }
    Ok(Exit::Ok)
}

fn secs_ago(v: &Json) -> String {
    v.as_u64()
        .map_or_else(|| output::DASH.to_owned(), |s| format!("{}s ago", s))
}

fn forwarders_table(list: &Json) -> Table {
    let mut table = Table::new([
        "EUI",
        "ALIVE",
        "PULL_ADDR",
        "LAST_PULL",
        "LAST_PUSH",
        "RXPK",
        "BAD_CRC",
        "DOWNLINKS",
        "TX_ERR",
    ]);
    for f in list.as_array().into_iter().flatten() {
        let c = &f["counters"];
        let n = |k: &str| {
            c[k].as_u64()
                .map_or(output::DASH.to_owned(), |v| v.to_string())
        };
        table.row(vec![
            f["eui"].as_str().unwrap_or(output::DASH).to_owned(),
            if f["alive"].as_bool() == Some(true) {
                "yes".into()
            } else {
                "no".into()
            },
            f["pull_addr"].as_str().unwrap_or(output::DASH).to_owned(),
            secs_ago(&f["last_pull_secs_ago"]),
            secs_ago(&f["last_push_secs_ago"]),
            n("rxpk"),
            n("rxpk_bad_crc"),
            n("downlinks_sent"),
            n("tx_ack_err"),
        ]);
    }
    table
}

pub async fn downlinks(
    client: &Client,
    cmd: Option<LoraDownlinksCommand>,
    json_output: bool,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    match cmd.unwrap_or(LoraDownlinksCommand::List { dev_eui: None }) {
        LoraDownlinksCommand::List { dev_eui } => {
            let eui = dev_eui.unwrap_or_default();
            let rows = client
                .list_downlinks(&eui)
                .await
                .context("listing queued LoRaWAN downlinks")?;
            let records = sorted_records(&rows, "id");
            let records: Vec<Map<String, Json>> = records.into_iter().map(hex_payload).collect();
            if json_output {
                out.json_pretty(&Json::Array(
                    records.into_iter().map(Json::Object).collect(),
                ))?;
            } else {
                out.write(&downlinks_table(&records, now_ms()).render())?;
            }
        }
        LoraDownlinksCommand::Send(args) => {
            let payload = payload_of(&args)?;
            let id = client
                .enqueue_downlink(&args.dev_eui, args.fport, &payload, args.confirmed)
                .await
                .with_context(|| format!("queueing a downlink for {}", args.dev_eui))?;
            if json_output {
                out.line(&json!({"queued": id, "dev_eui": args.dev_eui}).to_string())?;
            } else {
                out.line(&format!(
                    "queued {id} for {} ({} bytes, fport {}{})",
                    output::sanitize(&args.dev_eui),
                    payload.len(),
                    args.fport,
                    if args.confirmed { ", confirmed" } else { "" }
                ))?;
            }
        }
        LoraDownlinksCommand::Clear { dev_eui, id } => {
            let n = client
                .clear_downlinks(&dev_eui, id.unwrap_or(0))
                .await
                .with_context(|| format!("clearing the downlinks of {dev_eui}"))?;
            if json_output {
                out.line(&json!({"removed": n}).to_string())?;
            } else {
                out.line(&format!("removed {n}"))?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// Checked locally, before connecting.
pub fn payload_of(args: &LoraSendArgs) -> Result<Vec<u8>, CtlError> {
    crate::input::downlink_payload(
        args.hex.as_deref(),
        args.base64.as_deref(),
        args.text.as_deref(),
    )
}

/// `payload` (a byte array in JSON) as hex digits.
fn hex_payload(mut record: Map<String, Json>) -> Map<String, Json> {
    if let Some(Json::Array(bytes)) = record.get("payload") {
        let b: Vec<u8> = bytes
            .iter()
            .filter_map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect();
        record.insert("payload".into(), Json::String(hex::encode(b)));
    }
    record
}

fn downlinks_table(records: &[Map<String, Json>], now: u64) -> Table {
    let mut table = Table::new(["ID", "DEV_EUI", "FPORT", "CONFIRMED", "PAYLOAD", "QUEUED"]);
    for d in records {
        table.row(vec![
            cell(d, "id"),
            cell(d, "dev_eui"),
            cell(d, "fport"),
            cell(d, "confirmed"),
            cell(d, "payload"),
            age_cell(d, "created", now),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_given_one_way_and_decoded() {
        use crate::input::downlink_payload;
        assert_eq!(
            downlink_payload(Some("01 ff"), None, None).unwrap(),
            [1, 255]
        );
        assert_eq!(downlink_payload(None, Some("AQI="), None).unwrap(), [1, 2]);
        assert_eq!(downlink_payload(None, None, Some("on")).unwrap(), b"on");
        let e = downlink_payload(Some("0g"), None, None).unwrap_err();
        assert!(e.to_string().contains("--hex"), "{e}");
        let e = downlink_payload(None, Some("!!"), None).unwrap_err();
        assert!(e.to_string().contains("--base64"), "{e}");
    }

    #[test]
    fn stats_and_forwarders_tables_read_the_published_status() {
        let status = json!({
            "counters": {"readings": 3, "rxpk": 4},
            "rejected": {"mic": 1},
            "forwarders": [{
                "eui": "0102030405060708", "alive": true, "pull_addr": "127.0.0.1:5",
                "last_pull_secs_ago": 2, "last_push_secs_ago": null,
                "counters": {"rxpk": 4, "rxpk_bad_crc": 0, "downlinks_sent": 1, "tx_ack_err": 0}
            }]
        });
        let text = stats_table(&status).render();
        assert!(text.contains("readings"), "{text}");
        assert!(text.contains("rejected.mic"), "{text}");
        let text = forwarders_table(&status["forwarders"]).render();
        assert!(text.contains("0102030405060708"), "{text}");
        assert!(text.contains("yes") && text.contains("2s ago"), "{text}");
    }

    #[test]
    fn downlink_payloads_show_as_hex() {
        let mut m = Map::new();
        m.insert("payload".into(), json!([1, 171]));
        assert_eq!(hex_payload(m)["payload"], "01ab");
    }
}
