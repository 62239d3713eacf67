//! The control plane end to end: gatewayd serving `io.gatewayd.Gateway1`
//! on a private `dbus-daemon` started with the project's own bus config
//! (`tests/dbus/system-bus.conf`, which includes the shipped policy file
//! `gatewayd/dbus/io.gatewayd.Gateway1.conf`), driven by the real
//! `gatewayctl`, by `busctl` and `gdbus` as independent clients, and by
//! callers of another uid (via `setpriv`, which needs root: CI runs as root).

mod common;

use std::process::Command;
use std::time::Duration;

use common::apps::{select, Publisher};
use common::bus::{
    ctl, ctl_as_nobody, ctl_fails, ctl_for_anyone, ctl_json, ctl_ok, ctl_stdin, eventually,
    is_root, show, Watch, NAME, PATH,
};
use common::{coap_post, Gateway, WAIT};
use gatewayd_tests::dbus::{config_file, DbusDaemon};
use gatewayd_tests::mosquitto::{Mosquitto, MosquittoOptions};
use gatewayd_tests::process::{bin_path, spawn, ChildGuard};
use gatewayd_tests::require;
use serde_json::Value as J;

fn system_bus() -> DbusDaemon {
    DbusDaemon::start(&config_file("system-bus.conf")).expect("private system bus")
}

/// gatewayd on `bus`; `extra` is appended to its config.
fn gateway(id: &str, broker: &str, bus: &DbusDaemon, extra: &str) -> Gateway {
    let mut gw = Gateway::new(id, broker);
    gw.dbus = Some(bus.address.clone());
    gw.extra = extra.to_owned();
    gw
}

/// gatewayd on `bus` trusting `publisher`'s bundles.
fn app_gateway(id: &str, broker: &str, bus: &DbusDaemon, publisher: &Publisher) -> Gateway {
    let trusted = format!(
        "[edge_apps]\ntrusted_keys = [{:?}]\nscan_interval_ms = 200\n",
        publisher.pub_path
    );
    gateway(id, broker, bus, &trusted)
}

fn start(gw: &Gateway) -> ChildGuard {
    let child = gw.start();
    child
        .wait_for_log("D-Bus interface ready", WAIT)
        .unwrap_or_else(|e| panic!("no D-Bus interface: {e}\n{}", child.log()));
    child
}

/// Starts gatewayd on `gw`'s config as edited by `edit` (for keys the
/// harness writes itself, such as those of `[uplink]`).
fn start_edited(gw: &Gateway, edit: impl FnOnce(String) -> String) -> ChildGuard {
    let cfg = gw.config_path();
    let text = edit(std::fs::read_to_string(&cfg).unwrap());
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = Command::new(bin_path("gatewayd"));
    cmd.arg("--config").arg(&cfg);
    let child = spawn(cmd).unwrap();
    child
        .wait_for_log("D-Bus interface ready", WAIT)
        .unwrap_or_else(|e| panic!("no D-Bus interface: {e}\n{}", child.log()));
    child
}

/// The gid of `name` in /etc/group.
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name))
                .then(|| f.get(2)?.parse().ok())
                .flatten()
        })
}

fn post(port: u16, dev: &str, v: f64) {
    static ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let id = ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let senml = format!(r#"[{{"bn":"{dev}/","n":"temperature","u":"Cel","v":{v}}}]"#);
    coap_post(port, senml.as_bytes(), id, Duration::from_secs(10)).expect("CoAP POST");
}

fn device<'a>(list: &'a J, id: &str) -> Option<&'a J> {
    list.as_array()?.iter().find(|d| d["id"] == id)
}

fn assert_running(child: &ChildGuard) {
    assert!(child.is_running(), "gatewayd died:\n{}", child.log());
}

#[test]
fn gatewayctl_drives_every_subcommand() {
    let bus = system_bus();
    let broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let publisher = Publisher::new();
    let gw = app_gateway("gw-ctl", &broker.url(), &bus, &publisher);
    let child = start(&gw);
    let b = bus.address.as_str();
    let mut watch = Watch::start(b);

    // status
    let st = eventually("uplink connected", || {
        let st = ctl_json(b, &["status"]);
        (st["uplink_connected"] == true).then_some(st)
    });
    assert_eq!(st["gateway_id"], "gw-ctl");
    assert_eq!(st["adapters"][0]["name"], "coap");
    assert_eq!(st["adapters"][0]["state"], "running");
    assert!(ctl_ok(b, &["status"]).contains("gw-ctl"));

    // devices (and DeviceFirstSeen)
    post(gw.coap_port, "boiler-1", 21.5);
    let first = watch.wait("DeviceFirstSeen", |a| a["id"] == "coap:boiler-1");
    assert_eq!(first["args"]["transport"], "coap");
    let list = ctl_json(b, &["devices"]);
    let d = device(&list, "coap:boiler-1").expect("device listed");
    assert_eq!(d["readings"], 1);
    assert_eq!(d["state"], "active");
    assert!(ctl_ok(b, &["devices"]).contains("coap:boiler-1"));

    // config get / set / unset / reload
    assert_eq!(
        ctl_ok(b, &["config", "get", "buffer.max_bytes"]).trim(),
        "268435456"
    );
    assert_eq!(ctl_ok(b, &["config", "get", "gateway.id"]).trim(), "gw-ctl");
    let out = ctl(b, &["config", "get", "uplink.username"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        show(&out)
    );
    let whole = ctl_json(b, &["config", "get"]);
    assert_eq!(whole["sources"]["coap"]["path"], "telemetry");
    assert_eq!(
        ctl_ok(b, &["config", "set", "log.level", "debug"]).trim(),
        "applied"
    );
    assert_eq!(
        ctl_ok(b, &["config", "set", "buffer.max_bytes", "1000000"]).trim(),
        "restart-required"
    );
    let text = std::fs::read_to_string(gw.dir.path().join("gatewayd.toml")).unwrap();
    assert!(
        text.contains("max_bytes = 1000000") && text.contains("[sources.coap]"),
        "{text}"
    );
    assert_eq!(
        ctl_json(b, &["status"])["pending_restart"],
        serde_json::json!(["buffer.max_bytes"])
    );
    assert_eq!(
        ctl_ok(b, &["config", "set", "buffer.max_bytes", "1000000"]).trim(),
        "unchanged"
    );
    assert_eq!(
        ctl_ok(b, &["config", "unset", "buffer.max_bytes"]).trim(),
        "restart-required"
    );
    assert_eq!(
        ctl_json(b, &["status"])["pending_restart"],
        serde_json::json!([])
    );
    // An edit of the file by hand, then reload.
    let path = gw.dir.path().join("gatewayd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[forwarder]\nack_flush_ms = 60\n")).unwrap();
    let out = ctl_ok(b, &["config", "reload"]);
    assert!(out.contains("forwarder.ack_flush_ms"), "{out}");

    // apps deploy / list / upgrade / remove
    let v1 = publisher.bundle("threshold-alert", |m| select(m, "coap:*", &["temperature"]));
    let out = ctl_ok(b, &["apps", "deploy", v1.to_str().unwrap()]);
    assert!(out.contains("threshold-alert"), "{out}");
    watch.wait("AppDeployed", |a| a["name"] == "threshold-alert");
    let apps = ctl_json(b, &["apps", "list"]);
    assert_eq!(apps[0]["name"], "threshold-alert");
    assert_eq!(apps[0]["state"], "running");
    let deploy_dir = gw.dir.path().join("state/apps/deploy");
    assert!(
        deploy_dir.join("threshold-alert.gwapp").is_file(),
        "bundle kept as desired state"
    );
    let v2 = publisher.bundle("threshold-alert", |m| {
        select(m, "coap:*", &["temperature"]);
        common::apps::section(m, "app").insert("version".into(), "9.9.9".into());
    });
    let out = ctl_ok(b, &["apps", "upgrade", v2.to_str().unwrap()]);
    assert!(out.contains("9.9.9"), "{out}");
    let other = publisher.bundle("downsample", |_| {});
    ctl_fails(b, &["apps", "upgrade", other.to_str().unwrap()], 6);
    ctl_ok(b, &["apps", "remove", "threshold-alert"]);
    watch.wait("AppRemoved", |a| a["name"] == "threshold-alert");
    assert!(!deploy_dir.join("threshold-alert.gwapp").exists());
    assert_eq!(ctl_json(b, &["apps", "list"]), serde_json::json!([]));
    ctl_fails(b, &["apps", "remove", "threshold-alert"], 6);

    // lora devices add / list / remove
    let out = ctl_stdin(
        b,
        &[
            "lora",
            "devices",
            "add",
            "--dev-eui",
            "70B3D57ED0000001",
            "--join-eui",
            "0000000000000001",
            "--app-key",
            "-",
            "--name",
            "field-7",
        ],
        "000102030405060708090A0B0C0D0E0F\n",
    );
    assert!(out.status.success(), "{}", show(&out));
    let out = ctl_stdin(
        b,
        &[
            "lora",
            "devices",
            "add",
            "--dev-eui",
            "70B3D57ED0000002",
            "--dev-addr",
            "26011F00",
            "--nwk-s-key",
            "-",
            "--app-s-key",
            "00112233445566778899AABBCCDDEEFF",
        ],
        "0F0E0D0C0B0A09080706050403020100\n",
    );
    assert!(out.status.success(), "{}", show(&out));
    let lora = ctl_json(b, &["lora", "devices", "list"]);
    assert_eq!(lora.as_array().unwrap().len(), 2, "{lora}");
    let text = lora.to_string().to_lowercase();
    assert!(
        !text.contains("00112233445566778899aabbccddeeff") && !text.contains("0f0e0d0c"),
        "keys are write-only: {text}"
    );
    assert_eq!(lora[0]["activation"], "otaa");
    assert_eq!(
        lora[1]["dev_addr"].as_str().unwrap().to_uppercase(),
        "26011F00"
    );
    ctl_fails(
        b,
        &[
            "lora",
            "devices",
            "add",
            "--dev-eui",
            "70B3D57ED0000001",
            "--join-eui",
            "0000000000000001",
            "--app-key",
            "000102030405060708090A0B0C0D0E0F",
        ],
        5,
    );
    ctl_ok(b, &["lora", "devices", "remove", "70B3D57ED0000001"]);
    ctl_fails(b, &["lora", "devices", "remove", "70B3D57ED0000001"], 6);
    assert_eq!(
        ctl_json(b, &["lora", "devices", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // buffer flush: connected, so everything goes.
    post(gw.coap_port, "boiler-1", 22.0);
    let out = ctl_ok(b, &["buffer", "flush", "--timeout", "30"]);
    assert!(out.contains("remaining 0"), "{out}");

    assert_running(&child);
}

#[test]
fn independent_clients_introspect_call_and_read_properties() {
    require::command("busctl");
    require::command("gdbus");
    let bus = system_bus();
    let gw = gateway("gw-intro", "mqtt://127.0.0.1:1", &bus, "");
    let child = start(&gw);
    let addr = bus.address.as_str();

    let busctl = |args: &[&str]| {
        let out = Command::new(require::path("busctl"))
            .arg(format!("--address={addr}"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "busctl {args:?}: {}", show(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let xml = busctl(&["introspect", "--xml-interface", NAME, PATH]);
    for iface in [
        "io.gatewayd.Gateway1",
        "io.gatewayd.Gateway1.Apps",
        "io.gatewayd.Gateway1.LoRaWAN",
    ] {
        assert!(
            xml.contains(&format!("<interface name=\"{iface}\">")),
            "{xml}"
        );
    }
    assert!(xml.contains("<method name=\"SetConfig\">"), "{xml}");
    assert!(xml.contains("<signal name=\"DeviceFirstSeen\">"), "{xml}");
    assert!(xml.contains("EmitsChangedSignal"), "{xml}");
    let table = busctl(&["introspect", NAME, PATH, "io.gatewayd.Gateway1"]);
    assert!(
        table.contains(".BufferReadings") && table.contains("property"),
        "{table}"
    );
    assert_eq!(
        busctl(&[
            "get-property",
            NAME,
            PATH,
            "io.gatewayd.Gateway1",
            "GatewayId"
        ])
        .trim(),
        "s \"gw-intro\""
    );
    assert_eq!(
        busctl(&[
            "call",
            NAME,
            PATH,
            "io.gatewayd.Gateway1",
            "GetConfig",
            "s",
            "gateway.id"
        ])
        .trim(),
        "v s \"gw-intro\""
    );
    assert_eq!(
        busctl(&[
            "call",
            NAME,
            PATH,
            "io.gatewayd.Gateway1",
            "SetConfig",
            "sv",
            "log.level",
            "s",
            "debug"
        ])
        .trim(),
        "s \"applied\""
    );

    let gdbus = |args: &[&str]| {
        let out = Command::new(require::path("gdbus"))
            .args(args)
            .args(["--address", addr])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = gdbus(&["introspect", "--dest", NAME, "--object-path", PATH]);
    assert!(
        ok && out.contains("interface io.gatewayd.Gateway1.Apps"),
        "{out}"
    );
    assert!(out.contains("readonly a(ssss) Adapters"), "{out}");
    let (ok, out) = gdbus(&[
        "call",
        "--dest",
        NAME,
        "--object-path",
        PATH,
        "--method",
        "io.gatewayd.Gateway1.GetConfig",
        "buffer.max_bytes",
    ]);
    assert!(ok && out.contains("<int64 268435456>"), "{out}");
    let (ok, out) = gdbus(&[
        "call",
        "--dest",
        NAME,
        "--object-path",
        PATH,
        "--method",
        "org.freedesktop.DBus.Properties.Get",
        "io.gatewayd.Gateway1",
        "Version",
    ]);
    assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    assert_running(&child);
}

#[test]
fn bad_values_and_unknown_keys_get_clear_errors_and_the_daemon_keeps_running() {
    require::command("gdbus");
    let bus = system_bus();
    let gw = gateway("gw-bad", "mqtt://127.0.0.1:1", &bus, "");
    let child = start(&gw);
    let addr = bus.address.as_str();
    let cfg = gw.dir.path().join("gatewayd.toml");
    let before = std::fs::read_to_string(&cfg).unwrap();

    // (method, args…) → the D-Bus error name and what its message names.
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &[
                "io.gatewayd.Gateway1.SetConfig",
                "buffer.max_bytes",
                "<int64 10>",
            ],
            "io.gatewayd.Error.InvalidValue",
            "buffer.max_bytes: must be at least 65536",
        ),
        (
            &[
                "io.gatewayd.Gateway1.SetConfig",
                "buffer.max_bytes",
                "<'lots'>",
            ],
            "io.gatewayd.Error.InvalidValue",
            "buffer.max_bytes",
        ),
        (
            &[
                "io.gatewayd.Gateway1.SetConfig",
                "buffer.when_full",
                "<'explode'>",
            ],
            "io.gatewayd.Error.InvalidValue",
            "buffer.when_full",
        ),
        (
            &[
                "io.gatewayd.Gateway1.SetConfig",
                "sources.coap.bind",
                "<'nowhere'>",
            ],
            "io.gatewayd.Error.InvalidValue",
            "sources.coap.bind",
        ),
        (
            &[
                "io.gatewayd.Gateway1.SetConfig",
                "sources.coap.kind",
                "<'zigbee'>",
            ],
            "io.gatewayd.Error.InvalidValue",
            "sources.coap.kind",
        ),
        (
            &[
                "io.gatewayd.Gateway1.SetConfig",
                "buffer.bogus",
                "<int64 1>",
            ],
            "io.gatewayd.Error.UnknownKey",
            "buffer.bogus",
        ),
        (
            &[
                "io.gatewayd.Gateway1.SetConfig",
                "nosuchsection.key",
                "<int64 1>",
            ],
            "io.gatewayd.Error.UnknownKey",
            "nosuchsection.key",
        ),
        (
            &["io.gatewayd.Gateway1.SetConfig", "gateway.id.x", "<'a'>"],
            "io.gatewayd.Error.InvalidValue",
            "gateway.id",
        ),
        (
            &["io.gatewayd.Gateway1.UnsetConfig", "uplink.nonsense"],
            "io.gatewayd.Error.UnknownKey",
            "uplink.nonsense",
        ),
        (
            &["io.gatewayd.Gateway1.GetConfig", "buffer.bogus"],
            "io.gatewayd.Error.UnknownKey",
            "buffer.bogus",
        ),
        (
            &["io.gatewayd.Gateway1.GetConfig", "uplink.password"],
            "io.gatewayd.Error.NotSet",
            "uplink.password",
        ),
        (
            &["io.gatewayd.Gateway1.Apps.Remove", "ghost"],
            "io.gatewayd.Error.NotFound",
            "ghost",
        ),
        (
            &["io.gatewayd.Gateway1.Apps.Deploy", "[byte 1, 2, 3]"],
            "io.gatewayd.Error.AppRefused",
            "bundle",
        ),
        (
            &[
                "io.gatewayd.Gateway1.LoRaWAN.AddDevice",
                "{'dev_eui': <'XYZ'>}",
            ],
            "io.gatewayd.Error.InvalidValue",
            "dev_eui",
        ),
        (
            &[
                "io.gatewayd.Gateway1.LoRaWAN.AddDevice",
                "{'dev_eui': <'0011223344556677'>, 'join_eui': <'0000000000000001'>}",
            ],
            "io.gatewayd.Error.InvalidValue",
            "app_key",
        ),
        (
            &[
                "io.gatewayd.Gateway1.LoRaWAN.RemoveDevice",
                "0011223344556677",
            ],
            "io.gatewayd.Error.NotFound",
            "0011223344556677",
        ),
    ];
    for (call, name, names) in cases {
        let out = Command::new(require::path("gdbus"))
            .args([
                "call",
                "--address",
                addr,
                "--dest",
                NAME,
                "--object-path",
                PATH,
                "--method",
            ])
            .args(*call)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{call:?} succeeded: {}", show(&out));
        assert!(
            err.contains(name) && err.contains(names),
            "{call:?}: want {name} naming {names:?}, got {err}"
        );
        assert_running(&child);
    }
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        before,
        "a refused change writes nothing"
    );

    // gatewayctl maps them to its exit codes.
    let b = addr;
    let e = ctl_fails(b, &["config", "set", "buffer.max_bytes", "10"], 5);
    assert!(
        e.contains("buffer.max_bytes: must be at least 65536"),
        "{e}"
    );
    let e = ctl_fails(b, &["config", "set", "buffer.bogus", "1"], 5);
    assert!(e.contains("buffer.bogus"), "{e}");
    ctl_fails(b, &["config", "get", "no.such.key"], 5);
    ctl_fails(b, &["apps", "remove", "ghost"], 6);
    ctl_fails(b, &["source", "status", "ghost"], 6);
    // Commands: to a source that takes none, to no source, not JSON.
    let e = ctl_fails(b, &["source", "command", "coap", r#"{"command": "x"}"#], 5);
    assert!(e.contains("takes no commands"), "{e}");
    ctl_fails(b, &["source", "command", "ghost", "{}"], 6);
    let e = ctl_fails(b, &["source", "command", "coap", "not json"], 5);
    assert!(e.contains("not JSON"), "{e}");
    ctl_fails(b, &["serial", "sensors"], 6); // no serial source runs here
    ctl_fails(b, &["serial", "interval", "x", "5"], 2); // below 100 ms
    ctl_fails(b, &["lora", "stats"], 6); // no lorawan source runs here
    ctl_fails(
        b,
        &[
            "lora",
            "downlinks",
            "send",
            "0011223344556677",
            "--fport",
            "1",
            "--hex",
            "0g",
        ],
        5,
    );
    ctl_fails(
        b,
        &[
            "lora",
            "downlinks",
            "send",
            "0011223344556677",
            "--fport",
            "1",
            "--hex",
            "01",
        ],
        6,
    );
    // And the daemon still serves.
    assert_eq!(ctl_ok(b, &["config", "get", "gateway.id"]).trim(), "gw-bad");
    post(gw.coap_port, "still-here", 1.0);
    assert_running(&child);
}

/// Calling as another user needs root (setpriv). Without root these tests
/// fail, unless `GATEWAYD_TESTS_SKIP_ROOT=1` says to skip them (a developer
/// account); CI runs as root, so there they always run.
fn root_or_skip_allowed() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("GATEWAYD_TESTS_SKIP_ROOT").is_some_and(|v| v == "1"),
        "this test calls gatewayctl as another user (setpriv), which needs root; \
         run as root, or set GATEWAYD_TESTS_SKIP_ROOT=1 to skip it"
    );
    eprintln!("SKIPPED (GATEWAYD_TESTS_SKIP_ROOT=1): needs root");
    false
}

#[test]
fn policy_file_lets_other_users_read_but_not_write() {
    if !root_or_skip_allowed() {
        return;
    }
    let bus = system_bus();
    let gw = gateway("gw-policy", "mqtt://127.0.0.1:1", &bus, "");
    let child = start(&gw);
    let exe = ctl_for_anyone(gw.dir.path());
    let b = bus.address.as_str();

    // Reads.
    for args in [
        &["--json", "status"][..],
        &["devices"],
        &["config", "get", "gateway.id"],
        &["apps", "list"],
        &["lora", "devices", "list"],
        &["lora", "downlinks", "list"],
        &["source", "status", "coap"],
    ] {
        let out = ctl_as_nobody(&exe, &[], b, args);
        assert!(out.status.success(), "nobody {args:?}: {}", show(&out));
    }
    // Writes: refused by the bus (exit 4).
    for args in [
        &["config", "set", "log.level", "debug"][..],
        &["config", "unset", "log.level"],
        &["config", "reload"],
        &["apps", "remove", "x"],
        &["lora", "devices", "remove", "0011223344556677"],
        &[
            "lora",
            "downlinks",
            "send",
            "0011223344556677",
            "--fport",
            "1",
            "--hex",
            "01",
        ],
        &["lora", "downlinks", "clear", "0011223344556677"],
        &["buffer", "flush"],
        &["source", "command", "coap", "{}"],
    ] {
        let out = ctl_as_nobody(&exe, &[], b, args);
        assert_eq!(
            out.status.code(),
            Some(4),
            "nobody {args:?}: {}",
            show(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Rejected send message"),
            "refused by the bus policy: {}",
            show(&out)
        );
    }
    // Root (the policy's user) may.
    assert_eq!(
        ctl_ok(b, &["config", "set", "log.level", "debug"]).trim(),
        "applied"
    );
    // dbus-daemon took the policy file without complaint about its syntax.
    assert!(!bus.log().contains("Failed to parse"), "{}", bus.log());
    assert_running(&child);
}

#[test]
fn daemon_refuses_writes_a_permissive_bus_lets_through() {
    if !root_or_skip_allowed() {
        return;
    }
    // "users" (gid 100) exists on Debian; it stands in for the gatewayd group.
    let users = group_id("users").expect("group users in /etc/group");
    let bus = DbusDaemon::start(&config_file("open-bus.conf")).unwrap();
    let gw = gateway("gw-recheck", "mqtt://127.0.0.1:1", &bus, "");
    let child = start_edited(&gw, |t| {
        t.replace("[dbus]\n", "[dbus]\nwrite_group = \"users\"\n")
    });
    let exe = ctl_for_anyone(gw.dir.path());
    let b = bus.address.as_str();

    let out = ctl_as_nobody(&exe, &[], b, &["config", "set", "log.level", "debug"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only root") && err.contains("\"users\""),
        "refused by gatewayd itself: {err}"
    );
    assert!(
        child.log().contains("D-Bus write refused"),
        "{}",
        child.log()
    );
    let out = ctl_as_nobody(
        &exe,
        &[],
        b,
        &[
            "lora",
            "devices",
            "add",
            "--dev-eui",
            "0011223344556677",
            "--join-eui",
            "0000000000000001",
            "--app-key",
            "000102030405060708090A0B0C0D0E0F",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let out = ctl_as_nobody(&exe, &[], b, &["source", "command", "coap", "{}"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    // Reads still work.
    let out = ctl_as_nobody(&exe, &[], b, &["config", "get", "log.level"]);
    assert!(out.status.success(), "{}", show(&out));
    // A member of the write group may write.
    let out = ctl_as_nobody(&exe, &[users], b, &["config", "set", "log.level", "debug"]);
    assert!(out.status.success(), "group member: {}", show(&out));
    assert_running(&child);
}

#[test]
fn signals_report_devices_lost_and_returned_uplink_and_buffer_high_water() {
    let bus = system_bus();
    let mut broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    let gw = gateway(
        "gw-signals",
        &broker.url(),
        &bus,
        "[devices]\nlost_after_secs = 2\n",
    );
    // A small buffer, so that high water is reached quickly.
    let child = start_edited(&gw, |t| {
        t.replace("[uplink]\n", "[buffer]\nmax_bytes = 65536\n\n[uplink]\n")
    });
    let b = bus.address.as_str();
    let mut watch = Watch::start(b);
    eventually("uplink connected", || {
        (ctl_json(b, &["status"])["uplink_connected"] == true).then_some(())
    });

    post(gw.coap_port, "pump-1", 1.0);
    watch.wait("DeviceFirstSeen", |a| a["id"] == "coap:pump-1");
    watch.wait("DeviceLost", |a| a["id"] == "coap:pump-1");
    assert_eq!(
        device(&ctl_json(b, &["devices"]), "coap:pump-1").unwrap()["state"],
        "lost"
    );
    post(gw.coap_port, "pump-1", 2.0);
    watch.wait("DeviceReturned", |a| a["id"] == "coap:pump-1");
    assert_eq!(watch.count("DeviceFirstSeen"), 1);

    broker.stop();
    watch.wait("UplinkDisconnected", |_| true);
    // Readings pile up in the buffer while the broker is away.
    let mut n = 0;
    while ctl_json(b, &["status"])["buffer_bytes"].as_u64().unwrap() * 100 < 65536 * 85 {
        for _ in 0..20 {
            post(gw.coap_port, &format!("fill-{}", n % 50), n as f64);
            n += 1;
        }
        assert!(n < 20_000, "buffer never filled");
    }
    let hw = watch.wait("BufferHighWater", |_| true);
    assert_eq!(hw["args"]["max_bytes"], 65536);
    assert_eq!(
        watch.count("BufferHighWater"),
        1,
        "signalled once per crossing"
    );
    broker.restart().unwrap();
    watch.wait("UplinkConnected", |_| true);
    assert_running(&child);
}

#[test]
fn flush_reconnects_at_once_instead_of_waiting_out_the_backoff() {
    let bus = system_bus();
    // A broker that exists but is down when gatewayd starts.
    let mut broker = Mosquitto::start(MosquittoOptions::default()).unwrap();
    broker.stop();
    let gw = gateway("gw-flush", &broker.url(), &bus, "");
    // Backoff of at least 10 minutes: only FlushBuffer can bring the
    // uplink back within the flush timeout below.
    let child = start_edited(&gw, |t| {
        t.replace("reconnect_min_ms = 100", "reconnect_min_ms = 600000")
            .replace("reconnect_max_ms = 1000", "reconnect_max_ms = 600000")
    });
    child.wait_for_log("reconnecting", WAIT).unwrap();
    let b = bus.address.as_str();
    for i in 0..5 {
        post(gw.coap_port, "meter-1", f64::from(i));
    }
    assert_eq!(ctl_json(b, &["status"])["buffer_readings"], 5);
    // Without a broker the flush times out with everything still there.
    let out = ctl(b, &["buffer", "flush", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("remaining 5"),
        "{}",
        show(&out)
    );

    broker.restart().unwrap();
    let out = ctl_ok(b, &["buffer", "flush", "--timeout", "60"]);
    assert!(
        out.contains("delivered 5") && out.contains("remaining 0"),
        "{out}"
    );
    assert!(
        child.log().contains("reconnect requested"),
        "{}",
        child.log()
    );
    assert_running(&child);
}

#[test]
fn a_changed_source_restarts_live_and_a_new_one_starts() {
    let bus = system_bus();
    let gw = gateway("gw-live", "mqtt://127.0.0.1:1", &bus, "");
    let child = start(&gw);
    let b = bus.address.as_str();
    let new_port = gatewayd_tests::ports::free_udp_port();
    let out = ctl_ok(
        b,
        &[
            "config",
            "set",
            "sources.coap.bind",
            &format!("127.0.0.1:{new_port}"),
        ],
    );
    assert_eq!(out.trim(), "applied");
    post(new_port, "moved-1", 1.0);
    assert!(device(&ctl_json(b, &["devices"]), "coap:moved-1").is_some());
    // The old port is closed: nothing answers there.
    assert!(coap_post(gw.coap_port, b"[]", 999, Duration::from_millis(500)).is_err());

    let third = gatewayd_tests::ports::free_udp_port();
    let table = format!(r#"{{"kind":"coap","bind":"127.0.0.1:{third}"}}"#);
    assert_eq!(
        ctl_ok(b, &["config", "set", "sources.coap2", &table]).trim(),
        "applied"
    );
    let adapters = eventually("coap2 running", || {
        let st = ctl_json(b, &["status"]);
        let a = st["adapters"].as_array().unwrap().clone();
        a.iter()
            .any(|x| x["name"] == "coap2" && x["state"] == "running")
            .then_some(a)
    });
    assert_eq!(adapters.len(), 2);
    post(third, "second-source", 1.0);
    let d = ctl_json(b, &["devices"]);
    assert_eq!(device(&d, "coap:second-source").unwrap()["source"], "coap2");
    // And removing it stops it.
    assert_eq!(
        ctl_ok(b, &["config", "unset", "sources.coap2"]).trim(),
        "applied"
    );
    eventually("coap2 gone", || {
        (ctl_json(b, &["status"])["adapters"]
            .as_array()
            .unwrap()
            .len()
            == 1)
            .then_some(())
    });
    assert_running(&child);
}

#[test]
fn sighup_reloads_the_file_and_an_invalid_file_is_refused() {
    let bus = system_bus();
    let gw = gateway("gw-hup", "mqtt://127.0.0.1:1", &bus, "");
    let child = start(&gw);
    let b = bus.address.as_str();
    let cfg = gw.dir.path().join("gatewayd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[forwarder]\nbatch_max_readings = 100\n"),
    )
    .unwrap();
    child.signal(libc::SIGHUP);
    eventually("reload pending restart", || {
        let p = ctl_json(b, &["status"])["pending_restart"].clone();
        (p == serde_json::json!(["forwarder.batch_max_readings"])).then_some(())
    });
    // A broken file: refused, the running configuration kept.
    std::fs::write(&cfg, format!("{text}\n[buffer]\nmax_bytes = 1\n")).unwrap();
    let e = ctl_fails(b, &["config", "reload"], 5);
    assert!(e.contains("buffer.max_bytes"), "{e}");
    assert_eq!(
        ctl_json(b, &["config", "get", "forwarder.batch_max_readings"]),
        100
    );
    assert_running(&child);
}

#[test]
fn known_devices_survive_a_restart_without_being_announced_again() {
    let bus = system_bus();
    let gw = gateway("gw-restart", "mqtt://127.0.0.1:1", &bus, "");
    let mut child = start(&gw);
    let b = bus.address.as_str();
    post(gw.coap_port, "tank-1", 1.0);
    let first = device(&ctl_json(b, &["devices"]), "coap:tank-1")
        .unwrap()
        .clone();
    child.terminate_within(Duration::from_secs(30)).unwrap();
    let child = start(&gw);
    let mut watch = Watch::start(b);
    let after = device(&ctl_json(b, &["devices"]), "coap:tank-1")
        .expect("still known")
        .clone();
    assert_eq!(after["first_seen"], first["first_seen"]);
    post(gw.coap_port, "tank-1", 2.0);
    post(gw.coap_port, "tank-2", 2.0);
    watch.wait("DeviceFirstSeen", |a| a["id"] == "coap:tank-2");
    assert!(
        !watch
            .seen
            .iter()
            .any(|s| s["signal"] == "DeviceFirstSeen" && s["args"]["id"] == "coap:tank-1"),
        "tank-1 announced again: {:?}",
        watch.seen
    );
    assert_eq!(
        device(&ctl_json(b, &["devices"]), "coap:tank-1").unwrap()["readings"],
        2
    );
    assert_running(&child);
}

#[test]
fn a_crashing_app_is_signalled_as_crashed_then_disabled() {
    let bus = system_bus();
    let publisher = Publisher::new();
    let gw = app_gateway("gw-crash", "mqtt://127.0.0.1:1", &bus, &publisher);
    let child = start(&gw);
    let b = bus.address.as_str();
    let mut watch = Watch::start(b);
    // hostile-trap panics (a wasm trap) in every call.
    let trap = publisher.bundle("hostile-trap", |_| {});
    ctl_ok(b, &["apps", "deploy", trap.to_str().unwrap()]);
    for i in 0..3 {
        post(gw.coap_port, "victim", f64::from(i));
    }
    let crashed = watch.wait("AppCrashed", |a| a["name"] == "hostile-trap");
    assert_eq!(crashed["args"]["fault"], "trap", "{crashed}");
    let disabled = watch.wait("AppDisabled", |a| a["name"] == "hostile-trap");
    assert!(
        disabled["args"]["for_ms"].as_u64().unwrap() > 0,
        "{disabled}"
    );
    // The list's counters are refreshed about once a second.
    let apps = eventually("the app listed as disabled", || {
        let apps = ctl_json(b, &["apps", "list"]);
        (apps[0]["state"] == "disabled").then_some(apps)
    });
    assert!(apps[0]["failures"].as_u64().unwrap() >= 3, "{apps}");
    // Readings still flow (on_failure = "pass").
    assert_eq!(
        device(&ctl_json(b, &["devices"]), "coap:victim").unwrap()["readings"],
        3
    );
    assert_running(&child);
}
