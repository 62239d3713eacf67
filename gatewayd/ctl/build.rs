//! Generates gatewayctl's shell completions (bash, zsh, fish) and man page
//! (roff, section 1) from the clap definition in `src/cli.rs`, into `OUT_DIR`
//! (the binary embeds them) and, when `GATEWAYCTL_ASSETS_DIR` is set, into
//! that directory too (for packagers).

use std::io::Write as _;
use std::path::{Path, PathBuf};

include!("src/cli.rs");

/// File names of the generated assets, shared with `src/main.rs` by convention.
const BASH: &str = "gatewayctl.bash";
const ZSH: &str = "_gatewayctl";
const FISH: &str = "gatewayctl.fish";
const MAN: &str = "gatewayctl.1";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-env-changed=GATEWAYCTL_ASSETS_DIR");

    let out_dir = match std::env::var_os("OUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => fail("OUT_DIR is not set (build.rs must run under cargo)"),
    };

    let assets = [
        (BASH, completion(clap_complete::Shell::Bash)),
        (ZSH, completion(clap_complete::Shell::Zsh)),
        (FISH, completion(clap_complete::Shell::Fish)),
        (MAN, man_page()),
    ];

    for (name, content) in &assets {
        write(&out_dir.join(name), content);
    }

    if let Some(dir) = std::env::var_os("GATEWAYCTL_ASSETS_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            fail(&format!("cannot create {}: {e}", dir.display()));
        }
        for (name, content) in &assets {
            write(&dir.join(name), content);
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("gatewayctl build.rs: {msg}");
    std::process::exit(1);
}

fn write(path: &Path, content: &[u8]) {
    if let Err(e) = std::fs::write(path, content) {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
}

fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "gatewayctl", &mut buf);
    buf
}

/// The man page: clap_mangen's standard sections, then every subcommand's
/// full help, EXIT STATUS and ENVIRONMENT.
fn man_page() -> Vec<u8> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone()).section("1");
    let mut buf = Vec::new();
    let rendered = (|| -> std::io::Result<()> {
        man.render_title(&mut buf)?;
        man.render_name_section(&mut buf)?;
        man.render_synopsis_section(&mut buf)?;
        man.render_description_section(&mut buf)?;
        man.render_options_section(&mut buf)?;

        writeln!(buf, ".SH COMMANDS")?;
        let mut commands = Vec::new();
        collect_commands(&cmd, "gatewayctl", &mut commands);
        for (path, sub) in commands {
            render_command(&mut buf, &path, sub)?;
        }

        writeln!(buf, ".SH \"EXIT STATUS\"")?;
        for (code, meaning) in EXIT_CODES {
            writeln!(buf, ".TP\n\\fB{code}\\fR\n{}", roff_line(meaning))?;
        }

        writeln!(buf, ".SH ENVIRONMENT")?;
        writeln!(
            buf,
            ".TP\n\\fBGATEWAYCTL_BUS\\fR\nDefault for \\fB\\-\\-bus\\fR: \\fBsystem\\fR, \\fBsession\\fR or a D\\-Bus address."
        )?;
        writeln!(
            buf,
            ".TP\n\\fBGATEWAYCTL_TIMEOUT\\fR\nDefault for \\fB\\-\\-timeout\\fR, in seconds."
        )?;
        writeln!(
            buf,
            ".TP\n\\fBDBUS_SYSTEM_BUS_ADDRESS\\fR, \\fBDBUS_SESSION_BUS_ADDRESS\\fR\nWhere the system and session buses are."
        )?;

        writeln!(buf, ".SH \"SEE ALSO\"")?;
        writeln!(
            buf,
            "\\fBgatewayd\\fR, \\fBbusctl\\fR(1), \\fBgdbus\\fR(1); gatewayd's D\\-Bus interface: docs/dbus.md"
        )?;
        man.render_version_section(&mut buf)?;
        Ok(())
    })();
    if let Err(e) = rendered {
        fail(&format!("cannot render the man page: {e}"));
    }
    buf
}

/// Every subcommand (depth first) with its full name, e.g. `gatewayctl config set`.
fn collect_commands<'a>(
    cmd: &'a clap::Command,
    path: &str,
    out: &mut Vec<(String, &'a clap::Command)>,
) {
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        out.push((sub_path.clone(), sub));
        collect_commands(sub, &sub_path, out);
    }
}

/// One subcommand: its full name, description, usage and own arguments
/// (the global options are described once, under OPTIONS).
fn render_command(buf: &mut Vec<u8>, path: &str, sub: &clap::Command) -> std::io::Result<()> {
    writeln!(buf, ".SS \"{}\"", roff_escape(path))?;
    if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
        for (i, paragraph) in about.to_string().split("\n\n").enumerate() {
            if i > 0 {
                writeln!(buf, ".PP")?;
            }
            // Lines that start with spaces are examples: keep them as they are.
            for line in paragraph.lines() {
                if line.starts_with(' ') {
                    writeln!(buf, ".nf\n{}\n.fi", roff_line(line))?;
                } else {
                    writeln!(buf, "{}", roff_line(line))?;
                }
            }
        }
    }
    let usage = sub.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
    writeln!(buf, ".PP\n\\fB{}\\fR", roff_line(usage))?;
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_global_set() || arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        let value_name = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|n| n.to_string())
            .unwrap_or_else(|| id.to_uppercase());
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let mut head = String::new();
        if arg.is_positional() {
            head.push_str(&format!("\\fI{}\\fR", roff_escape(&value_name)));
        } else {
            let mut names = Vec::new();
            if let Some(short) = arg.get_short() {
                names.push(format!("\\fB\\-{short}\\fR"));
            }
            if let Some(long) = arg.get_long() {
                names.push(format!("\\fB\\-\\-{}\\fR", roff_escape(long)));
            }
            head.push_str(&names.join(", "));
            if takes_value {
                head.push_str(&format!(" \\fI{}\\fR", roff_escape(&value_name)));
            }
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if takes_value && !defaults.is_empty() {
            head.push_str(&format!(" [default: {}]", roff_escape(&defaults.join(","))));
        }
        writeln!(buf, ".TP\n{head}")?;
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        let mut help = help;
        if !possible.is_empty() {
            help.push_str(&format!(" (one of: {})", possible.join(", ")));
        }
        writeln!(buf, "{}", roff_line(&help))?;
    }
    Ok(())
}

fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('"', "\\(dq")
}

/// One line of text for roff: escaped, and protected from being read as a
/// request when it starts with `.` or `'`.
fn roff_line(line: &str) -> String {
    let escaped = text_escape(line);
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn text_escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}
