//! Puts the selected board's `memory.x` (and an empty `device.x`: the
//! interrupt vectors are defined in Rust) on the linker search path and
//! links with cortex-m-rt's `link.x`.
use std::{env, fs, path::PathBuf};

fn main() {
    let boards: Vec<&str> = ["qemu-lm3s6965", "nrf52840"]
        .into_iter()
        .filter(|b| {
            env::var_os(format!(
                "CARGO_FEATURE_{}",
                b.to_uppercase().replace('-', "_")
            ))
            .is_some()
        })
        .collect();
    let board = match boards.as_slice() {
        [b] => *b,
        [] => return, // nothing to link (e.g. `cargo metadata`, docs)
        _ => panic!("select exactly one board feature, got {boards:?}"),
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"))
        .join("boards")
        .join(board)
        .join("memory.x");
    fs::copy(&src, out.join("memory.x")).expect("copy memory.x");
    fs::write(
        out.join("device.x"),
        "/* interrupt vectors: __INTERRUPTS in the board module */\n",
    )
    .expect("write device.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=build.rs");
}
