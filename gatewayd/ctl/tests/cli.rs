//! The built binary, without a bus: help, man page, completions, usage errors,
//! an unreachable bus.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gatewayctl");

fn gatewayctl(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("GATEWAYCTL_BUS")
        .env_remove("GATEWAYCTL_TIMEOUT")
        .output()
        .expect("run gatewayctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_works_and_lists_exit_codes() {
    let o = gatewayctl(&["--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for expected in [
        "Usage: gatewayctl",
        "status",
        "watch",
        "--bus",
        "--json",
        "Exit status:",
        "  7  ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    for sub in [
        &["config", "set", "--help"][..],
        &["lora", "devices", "add", "--help"][..],
        &["buffer", "flush", "--help"][..],
    ] {
        let o = gatewayctl(sub);
        assert_eq!(o.status.code(), Some(0), "{sub:?}: {}", stderr(&o));
    }
}

#[test]
fn version_works() {
    let o = gatewayctl(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("gatewayctl "), "{}", stdout(&o));
}

#[test]
fn man_prints_roff_with_exit_status() {
    let o = gatewayctl(&["man"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(".TH gatewayctl 1"), "{text}");
    assert!(text.contains("EXIT STATUS"), "{text}");
    assert!(text.contains("access denied"), "{text}");
    assert!(text.contains("gatewayctl lora devices add"), "{text}");
}

#[test]
fn completions_print_scripts_for_each_shell() {
    let o = gatewayctl(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bash = stdout(&o);
    assert!(bash.contains("_gatewayctl()"), "{bash}");
    assert!(bash.contains("complete -F _gatewayctl"), "{bash}");

    let zsh = stdout(&gatewayctl(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef gatewayctl"), "{zsh}");
    let fish = stdout(&gatewayctl(&["completions", "fish"]));
    assert!(fish.contains("complete -c gatewayctl"), "{fish}");

    let o = gatewayctl(&["completions", "powershell"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unreachable_bus_exits_3_with_a_clear_message() {
    let o = gatewayctl(&["--bus", "unix:path=/nonexistent/bus", "status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("gatewayctl: cannot connect to the bus at unix:path=/nonexistent/bus"),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    assert_eq!(stdout(&o), "");

    // The environment variable works too.
    let o = Command::new(BIN)
        .args(["devices"])
        .env("GATEWAYCTL_BUS", "unix:path=/nonexistent/bus")
        .output()
        .expect("run gatewayctl");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["config", "set", "log.level"][..],
        &[][..],
        &["frobnicate"][..],
        &["--bus", "nonsense", "status"][..],
        &["buffer", "flush", "--timeout", "601"][..],
        &["lora", "devices", "add", "--dev-eui", "0011223344556677"][..],
    ] {
        let o = gatewayctl(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn local_input_errors_exit_5_before_connecting() {
    // The bus does not exist, but the bad input is found first.
    let o = gatewayctl(&[
        "--bus",
        "unix:path=/nonexistent/bus",
        "apps",
        "deploy",
        "/nonexistent/app.gwapp",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/nonexistent/app.gwapp"),
        "{}",
        stderr(&o)
    );

    let o = gatewayctl(&[
        "--bus",
        "unix:path=/nonexistent/bus",
        "config",
        "set",
        "x",
        "{not json",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
}
