#!/usr/bin/env bash
# Builds the sensor firmware (sensor-firmware/app, its own cargo workspace)
# for both boards in release and prints their sizes:
#
#   qemu-lm3s6965  thumbv7m-none-eabi     (QEMU lm3s6965evb, Cortex-M3)
#   nrf52840       thumbv7em-none-eabihf  (nRF52840, Cortex-M4F)
#
# Usage: sensor-firmware/build.sh [--board qemu-lm3s6965|nrf52840]...
#   Build output: $CARGO_TARGET_DIR/<target>/release/<board> if
#   CARGO_TARGET_DIR is set, else sensor-firmware/app/target. Stable
#   copies: ${CARGO_TARGET_DIR:-<repo>/target}/firmware/<board>.elf
#   (what the gateway tests and run-qemu.sh use).
#
# Toolchain: rustup's cargo if the board's target is installed
# (rustup target list --installed); otherwise Debian's rustc-web
# (/usr/bin/cargo, /usr/bin/rustc) with -Zbuild-std=core (core only, no
# alloc). Linker: rust-lld (rustc's default for these targets), else
# ld.lld-22. Offline once dependencies are fetched (CARGO_NET_OFFLINE=true
# forbids network access); --locked after sensor-firmware/app/Cargo.lock.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
app="$here/app"
started=$SECONDS

usage() { sed -n '2,19s/^# \{0,1\}//p' "$0"; }

boards=()
while [ $# -gt 0 ]; do
    case "$1" in
        --board) [ $# -ge 2 ] || { echo "build.sh: --board needs a name" >&2; exit 2; }
                 boards+=("$2"); shift 2 ;;
        --board=*) boards+=("${1#--board=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[ ${#boards[@]} -gt 0 ] || boards=(qemu-lm3s6965 nrf52840)

target_of() {
    case "$1" in
        qemu-lm3s6965) echo thumbv7m-none-eabi ;;
        nrf52840) echo thumbv7em-none-eabihf ;;
        *) echo "build.sh: unknown board '$1' (qemu-lm3s6965, nrf52840)" >&2; exit 2 ;;
    esac
}

# Cargo resolves a relative CARGO_TARGET_DIR against its working directory;
# this script changes directories, so make it absolute first.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;; esac
    export CARGO_TARGET_DIR
    build_dir="$CARGO_TARGET_DIR"
    stable_dir="$CARGO_TARGET_DIR/firmware"
else
    build_dir="$app/target"
    stable_dir="$root/target/firmware"
fi
mkdir -p "$stable_dir"

# The lock file is committed; --locked keeps builds reproducible.
locked=()
[ -f "$app/Cargo.lock" ] && locked=(--locked)

debian_ok() {
    [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] \
        && [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/core" ]
}

size_tool=""
for t in llvm-size-22 llvm-size rust-size arm-none-eabi-size; do
    if command -v "$t" >/dev/null 2>&1; then size_tool="$t"; break; fi
done

cd "$app"
elfs=()
for board in "${boards[@]}"; do
    target="$(target_of "$board")"
    if command -v rustup >/dev/null 2>&1 \
        && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        echo "==> $board: rustup $(rustc --version | cut -d' ' -f2) with $target installed"
        build=(cargo build)
    elif debian_ok; then
        echo "==> $board: Debian $(/usr/bin/rustc --version | cut -d' ' -f2) (rustc-web) + -Zbuild-std=core"
        # Called by path: rustup's cargo usually comes first on PATH.
        build=(env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build -Zbuild-std=core)
    else
        cat >&2 <<EOM
build.sh: no Rust toolchain that can build $target. Either
  rustup target add $target
or (Debian/Ubuntu, no rustup target available)
  apt-get install rustc-web cargo-web rust-web-src lld-22
EOM
        exit 1
    fi
    # rustc links these targets with rust-lld (Debian: rust-web-llvm); else lld-22.
    if ! command -v rust-lld >/dev/null 2>&1 && command -v ld.lld-22 >/dev/null 2>&1; then
        var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"
        export "$var=ld.lld-22"
    fi
    "${build[@]}" "${locked[@]}" --release --target "$target" \
        -p gatewayd-sensor-firmware --features "$board" --bin "$board"
    elf="$build_dir/$target/release/$board"
    cp -f "$elf" "$stable_dir/$board.elf"
    elfs+=("$elf")
done

echo "==> ${#elfs[@]} firmware image(s) ($((SECONDS - started)) s)"
for elf in "${elfs[@]}"; do
    if [ -n "$size_tool" ]; then
        "$size_tool" "$elf" | sed 's/^/    /'
    fi
done
echo "==> ELF files:"
for elf in "${elfs[@]}"; do
    echo "    $elf"
    echo "    $stable_dir/$(basename "$elf").elf"
done
