//! `gatewayctl watch`: gatewayd's signals, one line each.

use futures_util::StreamExt as _;
use serde_json::{json, Map, Value as Json};
use zbus::message::Type as MessageType;
use zbus::zvariant::Structure;
use zbus::{MatchRule, Message, MessageStream};

use crate::client::{Client, APPS, IFACE, LORAWAN, NAME, PATH, PROPERTIES};
use crate::convert::to_json;
use crate::error::CtlError;
use crate::output::{now_ms, rfc3339_ms, sanitize};
use crate::Stdout;

/// One decoded signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub interface: String,
    pub member: String,
    /// Arguments by name, in order.
    pub args: Vec<(String, Json)>,
}

/// The argument names of gatewayd's signals (docs/dbus.md). Arguments beyond
/// these (added in a later version) are named `argN`.
fn arg_names(interface: &str, member: &str) -> &'static [&'static str] {
    match (interface, member) {
        (IFACE, "DeviceFirstSeen") => &["id", "transport", "source"],
        (IFACE, "DeviceLost") => &["id", "last_seen"],
        (IFACE, "DeviceReturned") => &["id", "lost_for_ms"],
        (IFACE, "UplinkConnected") => &["broker"],
        (IFACE, "UplinkDisconnected") => &["broker", "reason"],
        (IFACE, "BufferHighWater") => &["bytes", "max_bytes"],
        (APPS, "AppDeployed") => &["name", "version", "previous_version"],
        (APPS, "AppRemoved") => &["name", "version"],
        (APPS, "AppCrashed") => &["name", "version", "fault", "reason"],
        (APPS, "AppDisabled") => &["name", "version", "for_ms", "reason"],
        (APPS, "AppEnabled") => &["name", "version"],
        (APPS, "AppRefused") => &["name", "file", "reason"],
        (PROPERTIES, "PropertiesChanged") => &["interface", "changed", "invalidated"],
        _ => &[],
    }
}

/// Is this one of the signals `watch` reports?
fn wanted(interface: &str, member: &str) -> bool {
    matches!(interface, IFACE | APPS | LORAWAN)
        || (interface == PROPERTIES && member == "PropertiesChanged")
}

/// Decodes a signal message; `None` for signals `watch` does not report.
pub fn decode_signal(msg: &Message) -> Option<Signal> {
    let header = msg.header();
    if msg.message_type() != MessageType::Signal || header.path().map(|p| p.as_str()) != Some(PATH)
    {
        return None;
    }
    let interface = header.interface()?.as_str().to_string();
    let member = header.member()?.as_str().to_string();
    if !wanted(&interface, &member) {
        return None;
    }
    let body = msg.body();
    let fields: Vec<Json> = if body.is_empty() {
        Vec::new()
    } else {
        match body.deserialize::<Structure<'_>>() {
            Ok(s) => s.fields().iter().map(to_json).collect(),
            Err(e) => vec![Json::String(format!("<undecodable body: {e}>"))],
        }
    };
    let names = arg_names(&interface, &member);
    let args = fields
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let name = names
                .get(i)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("arg{i}"));
            (name, v)
        })
        .collect();
    Some(Signal {
        interface,
        member,
        args,
    })
}

/// `{"signal": ..., "interface": ..., "time": ..., "args": {...}}`
pub fn json_line(signal: &Signal, time: &str) -> String {
    let args: Map<String, Json> = signal.args.iter().cloned().collect();
    json!({
        "signal": signal.member,
        "interface": signal.interface,
        "time": time,
        "args": args,
    })
    .to_string()
}

/// `<time> <Signal> key=value ...`; PropertiesChanged lists the changed
/// properties themselves.
pub fn human_line(signal: &Signal, time: &str) -> String {
    let mut line = format!("{time} {}", signal.member);
    let mut push = |key: &str, value: &Json| {
        line.push(' ');
        line.push_str(&sanitize(key));
        line.push('=');
        line.push_str(&sanitize(&human_value(value)));
    };
    if signal.interface == PROPERTIES && signal.member == "PropertiesChanged" {
        for (key, value) in &signal.args {
            match (key.as_str(), value) {
                ("changed", Json::Object(changed)) => {
                    for (k, v) in changed {
                        push(k, v);
                    }
                }
                ("invalidated", Json::Array(names)) if names.is_empty() => {}
                _ => push(key, value),
            }
        }
    } else {
        for (key, value) in &signal.args {
            push(key, value);
        }
    }
    line
}

/// Strings bare unless they need quotes (empty, spaces, quotes, `=`);
/// everything else as compact JSON.
fn human_value(value: &Json) -> String {
    match value {
        Json::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\') =>
        {
            s.clone()
        }
        other => other.to_string(),
    }
}

/// Subscribes, then prints signals until `count` have been printed (or
/// forever).
pub async fn watch(
    client: &Client,
    json_output: bool,
    count: Option<u64>,
    out: &mut Stdout,
) -> anyhow::Result<()> {
    let conn = client.connection();
    let bus = client.bus().to_string();
    let zerr = |e: zbus::Error| CtlError::from_zbus(e, &bus);

    // Every signal gatewayd's object sends; the bus resolves the well-known
    // sender name to its current owner, also one that appears later.
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(NAME)
        .map_err(zerr)?
        .path(PATH)
        .map_err(zerr)?
        .build();
    let owner_rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .map_err(zerr)?
        .interface("org.freedesktop.DBus")
        .map_err(zerr)?
        .member("NameOwnerChanged")
        .map_err(zerr)?
        .add_arg(NAME)
        .map_err(zerr)?
        .build();
    // `for_match_rule` returns once the bus has acknowledged AddMatch.
    let mut signals = crate::client::with_timeout("AddMatch", client.timeout(), async {
        MessageStream::for_match_rule(rule, conn, Some(1024))
            .await
            .map_err(zerr)
    })
    .await?;
    let mut owners = crate::client::with_timeout("AddMatch", client.timeout(), async {
        MessageStream::for_match_rule(owner_rule, conn, Some(16))
            .await
            .map_err(zerr)
    })
    .await?;

    if !client.gatewayd_on_bus().await? {
        eprintln!(
            "gatewayctl: note: gatewayd ({NAME}) is not on the {bus}; waiting for it to start"
        );
    }
    eprintln!("watching {NAME}");

    let mut printed: u64 = 0;
    if count == Some(0) {
        return Ok(());
    }
    loop {
        tokio::select! {
            next = signals.next() => {
                let msg = match next {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => return Err(zerr(e).into()),
                    None => return Err(CtlError::Io { bus, detail: "the bus closed the connection".into() }.into()),
                };
                let Some(signal) = decode_signal(&msg) else { continue };
                let time = rfc3339_ms(now_ms());
                let line = if json_output { json_line(&signal, &time) } else { human_line(&signal, &time) };
                out.line(&line)?;
                printed += 1;
                if count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
            next = owners.next() => {
                if let Some(Ok(msg)) = next {
                    if let Ok((_, _, new_owner)) = msg.body().deserialize::<(String, String, String)>() {
                        if new_owner.is_empty() {
                            eprintln!("gatewayctl: note: gatewayd left the {bus}; waiting for it to come back");
                        } else {
                            eprintln!("gatewayctl: note: gatewayd is on the {bus} ({new_owner})");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::zvariant::Value;

    fn signal<B>(iface: &str, member: &str, body: &B) -> Message
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        Message::signal(PATH, iface, member)
            .expect("builder")
            .build(body)
            .expect("message")
    }

    #[test]
    fn signals_get_their_documented_argument_names() {
        let msg = signal(IFACE, "DeviceFirstSeen", &("coap:boiler-1", "coap", "coap"));
        let s = decode_signal(&msg).expect("decoded");
        assert_eq!(
            json_line(&s, "T"),
            r#"{"args":{"id":"coap:boiler-1","source":"coap","transport":"coap"},"interface":"io.gatewayd.Gateway1","signal":"DeviceFirstSeen","time":"T"}"#
        );
        assert_eq!(
            human_line(&s, "T"),
            "T DeviceFirstSeen id=coap:boiler-1 transport=coap source=coap"
        );

        let msg = signal(
            IFACE,
            "UplinkDisconnected",
            &("mqtts://b:8883", "connection refused"),
        );
        let s = decode_signal(&msg).expect("decoded");
        assert_eq!(
            human_line(&s, "T"),
            r#"T UplinkDisconnected broker=mqtts://b:8883 reason="connection refused""#
        );

        let msg = signal(IFACE, "UplinkConnected", &"mqtts://b:8883");
        let s = decode_signal(&msg).expect("single argument");
        assert_eq!(
            s.args,
            vec![("broker".to_string(), json!("mqtts://b:8883"))]
        );

        let msg = signal(
            APPS,
            "AppDisabled",
            &("filter", "1.2.0", 60_000u64, "crash loop"),
        );
        let s = decode_signal(&msg).expect("decoded");
        assert_eq!(s.args[2], ("for_ms".to_string(), json!(60_000)));
    }

    #[test]
    fn unknown_signals_and_extra_arguments_are_numbered() {
        let msg = signal(LORAWAN, "DeviceJoined", &("0011223344556677", 7u32));
        let s = decode_signal(&msg).expect("decoded");
        assert_eq!(
            s.args,
            vec![
                ("arg0".to_string(), json!("0011223344556677")),
                ("arg1".to_string(), json!(7))
            ]
        );
        let msg = signal(IFACE, "UplinkConnected", &("b", "extra"));
        let s = decode_signal(&msg).expect("decoded");
        assert_eq!(s.args[1].0, "arg1");
        let msg = signal(IFACE, "Ping", &());
        assert_eq!(decode_signal(&msg).expect("decoded").args, vec![]);
    }

    #[test]
    fn properties_changed_lists_the_changed_properties() {
        let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
        changed.insert("UplinkConnected", Value::Bool(false));
        changed.insert("UplinkLastError", Value::from("tls: bad certificate"));
        let msg = signal(
            PROPERTIES,
            "PropertiesChanged",
            &(IFACE, changed, Vec::<String>::new()),
        );
        let s = decode_signal(&msg).expect("decoded");
        assert_eq!(
            human_line(&s, "T"),
            r#"T PropertiesChanged interface=io.gatewayd.Gateway1 UplinkConnected=false UplinkLastError="tls: bad certificate""#
        );
        let line: Json = serde_json::from_str(&json_line(&s, "T")).expect("json");
        assert_eq!(line["args"]["changed"]["UplinkConnected"], json!(false));
        assert_eq!(line["args"]["invalidated"], json!([]));
    }

    #[test]
    fn other_interfaces_and_paths_are_ignored() {
        let msg = signal("org.freedesktop.DBus.ObjectManager", "InterfacesAdded", &());
        assert!(decode_signal(&msg).is_none());
        let msg = Message::signal("/other", IFACE, "DeviceLost")
            .expect("builder")
            .build(&("x", 1u64))
            .expect("message");
        assert!(decode_signal(&msg).is_none());
    }
}
