#!/usr/bin/env bash
# Runs the QEMU sensor firmware (lm3s6965evb) with its UART0 on a pty, on
# stdio or on a Unix socket.
#
# Usage: sensor-firmware/run-qemu.sh [--serial pty|stdio|unix:PATH] [--id HEX] [--elf ELF]
#   --serial pty        (default) the first stdout line (QEMU's) is "char device
#                       redirected to /dev/pts/N (label serial0)"
#   --serial stdio      the frames (binary) on stdout; input from stdin
#   --serial unix:PATH  a listening Unix socket (QEMU waits for a client)
#   --id HEX            device id lm3s6965-<HEX as 8 digits> (default
#                       lm3s6965-0001), written by QEMU's loader to the RAM
#                       reserved at 0x2000FFF8 (see app/firmware/boards/)
#   --elf ELF           default ${CARGO_TARGET_DIR:-<repo>/target}/firmware/qemu-lm3s6965.elf
#                       (built by sensor-firmware/build.sh)
# QEMU runs in the foreground; stop it with Ctrl-C (or kill its pid).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; }

serial=pty id="" elf=""
while [ $# -gt 0 ]; do
    case "$1" in
        --serial) serial="${2:?--serial needs pty, stdio or unix:PATH}"; shift 2 ;;
        --serial=*) serial="${1#--serial=}"; shift ;;
        --id) id="${2:?--id needs a hex number}"; shift 2 ;;
        --id=*) id="${1#--id=}"; shift ;;
        --elf) elf="${2:?--elf needs a path}"; shift 2 ;;
        --elf=*) elf="${1#--elf=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-qemu.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

if [ -z "$elf" ]; then
    target_dir="${CARGO_TARGET_DIR:-$root/target}"
    case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
    elf="$target_dir/firmware/qemu-lm3s6965.elf"
fi
[ -f "$elf" ] || { echo "run-qemu.sh: $elf not found; run sensor-firmware/build.sh first" >&2; exit 1; }
command -v qemu-system-arm >/dev/null 2>&1 \
    || { echo "run-qemu.sh: qemu-system-arm not found (apt-get install qemu-system-arm)" >&2; exit 1; }

case "$serial" in
    pty|stdio) chardev="$serial" ;;
    unix:*) chardev="unix:${serial#unix:},server=on,wait=on" ;;
    *) echo "run-qemu.sh: --serial takes pty, stdio or unix:PATH" >&2; exit 2 ;;
esac

args=(-M lm3s6965evb -nographic -monitor none -serial "$chardev" -kernel "$elf")
if [ -n "$id" ]; then
    id="${id#0x}"
    [[ "$id" =~ ^[0-9A-Fa-f]{1,8}$ ]] || { echo "run-qemu.sh: --id takes 1..8 hex digits" >&2; exit 2; }
    # 8 bytes at 0x2000FFF8, little-endian: word 0 = magic 0x1D5E1D5E, word 1 = the id.
    args+=(-device "loader,addr=0x2000FFF8,data=0x$(printf '%08x' "0x$id")1D5E1D5E,data-len=8")
fi

echo "run-qemu.sh: qemu-system-arm ${args[*]}" >&2
# With --serial pty, QEMU itself prints
#   char device redirected to /dev/pts/N (label serial0)
# as its first line on stdout.
exec qemu-system-arm "${args[@]}"
