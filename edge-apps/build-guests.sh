#!/usr/bin/env bash
# Builds the edge-app guests (edge-apps/guests, its own cargo workspace) for
# wasm32-unknown-unknown, wraps every core module into a component with
# gatewayd-componentize (main workspace) and puts each beside its manifest:
#
#   <out>/<name>.wasm  <out>/<name>.manifest.toml
#
# Usage: edge-apps/build-guests.sh [--out DIR]
#   DIR defaults to ${CARGO_TARGET_DIR:-<repo>/target}/edge-apps/components.
#   Guest build output goes to $CARGO_TARGET_DIR/wasm-guests if set, else
#   edge-apps/guests/target.
#
# Toolchain: a rustup toolchain with the wasm32-unknown-unknown target if
# installed; otherwise Debian's rustc-web (/usr/bin/cargo, /usr/bin/rustc),
# which has no prebuilt wasm32 core/alloc and builds them (-Zbuild-std).
# Offline: works from ~/.cargo/registry once dependencies are fetched
# (set CARGO_NET_OFFLINE=true to forbid network access).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
guests="$here/guests"
started=$SECONDS

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }

out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "build-guests.sh: --out needs a directory" >&2; exit 2; }
               out="$2"; shift 2 ;;
        --out=*) out="${1#--out=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-guests.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

# Cargo resolves a relative CARGO_TARGET_DIR against its working directory;
# this script changes directories, so make it absolute first.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;; esac
    export CARGO_TARGET_DIR
    main_target="$CARGO_TARGET_DIR"
    guest_target="$CARGO_TARGET_DIR/wasm-guests"
else
    main_target="$root/target"
    guest_target="$guests/target"
fi
out="${out:-$main_target/edge-apps/components}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# --- 1. Guest workspace -> core wasm modules --------------------------------
cd "$guests"
wasm_target=wasm32-unknown-unknown
if command -v rustup >/dev/null 2>&1 \
    && rustup target list --installed 2>/dev/null | grep -qx "$wasm_target"; then
    echo "==> toolchain: rustup $(rustc --version | cut -d' ' -f2) with $wasm_target installed"
    build=(cargo build)
elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] \
    && [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/core" ]; then
    echo "==> toolchain: Debian $(/usr/bin/rustc --version | cut -d' ' -f2) (rustc-web) + -Zbuild-std=core,alloc"
    # Called by path: rustup's cargo usually comes first on PATH.
    build=(env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build -Zbuild-std=core,alloc)
    # rustc links wasm with rust-lld (Debian: rust-web-llvm); else lld-22's wasm-ld.
    if ! command -v rust-lld >/dev/null 2>&1 && command -v wasm-ld-22 >/dev/null 2>&1; then
        export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22
    fi
else
    cat >&2 <<EOF
build-guests.sh: no Rust toolchain that can build $wasm_target. Either
  rustup target add $wasm_target
or (Debian/Ubuntu, no rustup target available)
  apt-get install rustc-web cargo-web rust-web-src lld-22
EOF
    exit 1
fi
CARGO_TARGET_DIR="$guest_target" "${build[@]}" --locked --release --target "$wasm_target"
core_dir="$guest_target/$wasm_target/release"

# --- 2. Core modules -> components ------------------------------------------
cd "$root"
cargo build -q -p gatewayd-componentize
componentize_bin="$main_target/debug/gatewayd-componentize"
componentize() {
    if [ -x "$componentize_bin" ]; then
        "$componentize_bin" "$@"
    else
        cargo run -q -p gatewayd-componentize -- "$@"
    fi
}

names=()
# Rebuilds a component only when its input or the tool changed.
wrap() { # name input manifest [componentize options]
    local name="$1" input="$2" manifest="$3"
    shift 3
    local target="$out/$name.wasm"
    if [ ! -f "$target" ] || [ "$input" -nt "$target" ] \
        || { [ -x "$componentize_bin" ] && [ "$componentize_bin" -nt "$target" ]; }; then
        componentize "$@" "$input" -o "$target"
    fi
    if ! cmp -s "$manifest" "$out/$name.manifest.toml"; then
        cp "$manifest" "$out/$name.manifest.toml"
    fi
    names+=("$name")
}

for manifest_dir in "$guests"/examples/*/ "$guests"/hostile/*/; do
    [ -f "$manifest_dir/Cargo.toml" ] || continue
    name="$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest_dir/Cargo.toml" | head -n1)"
    [ -f "$manifest_dir/manifest.toml" ] || { echo "build-guests.sh: $manifest_dir has no manifest.toml" >&2; exit 1; }
    wrap "$name" "$core_dir/${name//-/_}.wasm" "$manifest_dir/manifest.toml"
done
for wat in "$guests"/wat/*.wat; do
    name="$(basename "$wat" .wat)"
    wrap "$name" "$wat" "${wat%.wat}.manifest.toml" --wit "$here/wit"
done

# --- 3. Summary ---------------------------------------------------------------
echo "==> ${#names[@]} components in $out ($((SECONDS - started)) s)"
for name in "${names[@]}"; do
    size=$(wc -c <"$out/$name.wasm")
    printf '    %-22s %8d bytes  %5d KiB\n' "$name" "$size" $(((size + 1023) / 1024))
done
