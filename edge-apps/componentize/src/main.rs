//! `gatewayd-componentize [--wit DIR] [--world NAME] IN.wasm|IN.wat -o OUT.wasm`
//!
//! Wraps a core wasm module that implements the `gatewayd:edge` world into a
//! component. Modules built with wit-bindgen already carry the world in a
//! `component-type` custom section; for the others (hand-written WAT) the
//! world is read from `--wit DIR` and embedded first.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

const USAGE: &str =
    "usage: gatewayd-componentize [--wit DIR] [--world NAME] IN.wasm|IN.wat -o OUT.wasm";

#[derive(Debug, PartialEq)]
struct Args {
    input: PathBuf,
    output: PathBuf,
    wit: Option<PathBuf>,
    world: String,
}

#[derive(Debug)]
enum Cmd {
    Run(Args),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cmd> {
    let mut input = None;
    let mut output = None;
    let mut wit = None;
    let mut world = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .with_context(|| format!("{name} needs a value; {USAGE}")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help),
            "-o" | "--output" => output = Some(PathBuf::from(value("-o")?)),
            "--wit" => wit = Some(PathBuf::from(value("--wit")?)),
            "--world" => world = Some(value("--world")?),
            f if f.starts_with('-') && f != "-" => bail!("unknown option `{f}`; {USAGE}"),
            _ if input.is_some() => bail!("more than one input (`{arg}`); {USAGE}"),
            _ => input = Some(PathBuf::from(arg)),
        }
    }
    Ok(Cmd::Run(Args {
        input: input.with_context(|| format!("no input module; {USAGE}"))?,
        output: output.with_context(|| format!("no output (-o OUT.wasm); {USAGE}"))?,
        wit,
        world: world.unwrap_or_else(|| "edge-app".to_string()),
    }))
}

/// What a wasm binary is, as far as componentizing cares.
struct Inspection {
    is_component: bool,
    has_component_type: bool,
}

fn inspect(wasm: &[u8]) -> Result<Inspection> {
    let mut has_component_type = false;
    let mut is_component = false;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.context("not a valid wasm binary")? {
            wasmparser::Payload::Version { encoding, .. } => {
                is_component = encoding == wasmparser::Encoding::Component;
                if is_component {
                    break;
                }
            }
            wasmparser::Payload::CustomSection(s) if s.name().starts_with("component-type") => {
                has_component_type = true;
            }
            _ => {}
        }
    }
    Ok(Inspection {
        is_component,
        has_component_type,
    })
}

/// Embeds `world` from the WIT package in `dir` into `module`.
fn embed_world(module: &mut Vec<u8>, dir: &Path, world: &str) -> Result<()> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(dir)
        .with_context(|| format!("cannot load WIT from {}", dir.display()))?;
    let world_id = resolve
        .select_world(&[pkg], Some(world))
        .with_context(|| format!("no world `{world}` in {}", dir.display()))?;
    wit_component::embed_component_metadata(module, &resolve, world_id, StringEncoding::UTF8)
        .context("cannot embed the component-type metadata")
}

/// Turns a core module (binary or text) into a validated component.
fn componentize(input: &[u8], wit: Option<&Path>, world: &str) -> Result<Vec<u8>> {
    let mut module = wat::parse_bytes(input)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace('\n', " ")))?
        .into_owned();
    let found = inspect(&module)?;
    if found.is_component {
        bail!("already a component, not a core module");
    }
    if !found.has_component_type {
        let dir = wit.context(
            "the module has no component-type metadata (not built with wit-bindgen): \
             pass --wit DIR to embed the world",
        )?;
        embed_world(&mut module, dir, world)?;
    }
    ComponentEncoder::default()
        .module(&module)
        .context("cannot read the module's component metadata")?
        .validate(true)
        .encode()
        // One line: the encoder's validation messages span several.
        .map_err(|e| anyhow::anyhow!("{}", format!("{e:#}").replace('\n', " ")))
        .context("cannot build the component")
}

fn run(args: &Args) -> Result<()> {
    let input = std::fs::read(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let component = componentize(&input, args.wit.as_deref(), &args.world)
        .with_context(|| format!("{}", args.input.display()))?;
    // Write beside the target, then rename: a reader never sees half a file.
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = args.output.with_extension("wasm.tmp");
    std::fs::write(&tmp, &component).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}

fn main() {
    let result = parse_args(std::env::args().skip(1)).and_then(|cmd| match cmd {
        Cmd::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Cmd::Run(args) => run(&args),
    });
    if let Err(e) = result {
        eprintln!("gatewayd-componentize: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Cmd> {
        parse_args(s.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_arguments() {
        let Cmd::Run(a) = args(&["--wit=w", "in.wat", "-o", "out.wasm"]).unwrap() else {
            panic!("expected run");
        };
        assert_eq!(
            a,
            Args {
                input: "in.wat".into(),
                output: "out.wasm".into(),
                wit: Some("w".into()),
                world: "edge-app".into(),
            }
        );
        assert!(matches!(args(&["-h"]).unwrap(), Cmd::Help));
        for bad in [
            &["in.wasm"][..],
            &["-o", "x"],
            &["a", "b", "-o", "x"],
            &["--bogus"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
        assert!(args(&["in", "-o"])
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
    }

    const WIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");

    #[test]
    fn wat_without_metadata_needs_wit() {
        let wat = br#"(module
            (memory (export "memory") 1)
            (func (export "init") (param i32 i32) (result i32) i32.const 0)
            (func (export "process") (param i32 i32 i32 i64 i64) (result i32) i32.const 0)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))"#;
        let err = componentize(wat, None, "edge-app").unwrap_err();
        assert!(format!("{err:#}").contains("--wit"), "{err:#}");
        let component = componentize(wat, Some(Path::new(WIT)), "edge-app").unwrap();
        assert!(inspect(&component).unwrap().is_component);
        // A component is not componentized twice.
        assert!(componentize(&component, None, "edge-app").is_err());
        // Wrong signatures are caught by validation.
        let bad = br#"(module (memory (export "memory") 1)
            (func (export "init") (param i32) (result i32) i32.const 0))"#;
        let err = componentize(bad, Some(Path::new(WIT)), "edge-app").unwrap_err();
        assert!(!format!("{err:#}").contains('\n'));
        assert!(componentize(b"(module", None, "edge-app").is_err());
        assert!(componentize(wat, Some(Path::new(WIT)), "nope").is_err());
    }
}
