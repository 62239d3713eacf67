#!/usr/bin/env bash
# Installs what building, testing and running gatewayd needs on Debian
# bookworm / Ubuntu: apt packages that are missing (as root, or via sudo),
# the `coap-client` name for libcoap's client, and the rustfmt/clippy
# rustup components. Installed things are left alone; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    mosquitto           # MQTT broker for the end-to-end tests
    mosquitto-clients   # mosquitto_pub / mosquitto_sub (harness self-tests)
    libcoap3-bin        # coap-client (libcoap): a real CoAP peer
    postgresql          # cloud-bridge's PostgreSQL store tests (initdb, pg_ctl)
    postgresql-client   # psql
    pkg-config
    build-essential     # cc for crates with C parts (SQLite, ring)
    make
    ca-certificates
    openssl             # the harness cross-checks its certificates with it
    curl                # `make run` examples
    dbus-daemon         # private buses for the D-Bus interface tests
    libglib2.0-bin      # gdbus: an independent D-Bus client in the tests
    systemd             # busctl: another one (systemd is not started)
    util-linux          # setpriv: calling gatewayd as another user
    # Edge-app guests (wasm32-unknown-unknown) when rustup has no wasm32
    # target: Debian's Rust (1.96) builds core/alloc from source
    # (-Zbuild-std); see edge-apps/README.md.
    rustc-web
    cargo-web
    rust-web-src
    lld-22
    # The sensor firmware (sensor-firmware/app) runs in an emulated
    # Cortex-M3 (lm3s6965evb) for the serial end-to-end tests and `make run`.
    qemu-system-arm
)

say() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

command -v dpkg-query >/dev/null || die "this script needs a Debian-based system (dpkg/apt); install by hand: ${PACKAGES[*]}"

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        SUDO=(sudo)
    elif [ "${#missing[@]}" -gt 0 ]; then
        die "not root and no sudo; as root run: apt-get install ${missing[*]}"
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "apt packages: all present"
fi

# Debian's libcoap3-bin ships coap-client-{openssl,gnutls,notls} but no
# plain `coap-client`; give it that name (the tests and README use it).
if ! command -v coap-client >/dev/null; then
    for v in openssl gnutls notls; do
        if [ -x "/usr/bin/coap-client-$v" ]; then
            say "linking /usr/local/bin/coap-client -> /usr/bin/coap-client-$v"
            "${SUDO[@]}" ln -sf "/usr/bin/coap-client-$v" /usr/local/bin/coap-client
            break
        fi
    done
    command -v coap-client >/dev/null || die "coap-client not found after installing libcoap3-bin"
fi

# node + lora-packet: an independent LoRaWAN implementation the LoRaWAN
# tests build and check frames with (tests/lorawan, versions pinned by its
# package-lock.json).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends nodejs npm
fi
if [ ! -d tests/lorawan/node_modules/lora-packet ] \
    || [ tests/lorawan/package-lock.json -nt tests/lorawan/node_modules ]; then
    say "npm ci in tests/lorawan (lora-packet)"
    (cd tests/lorawan && npm ci --no-audit --no-fund --loglevel=error)
fi

# Rust: a toolchain must already be there (https://rustup.rs); we only add
# the rustfmt and clippy components when missing.
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs), Rust >= 1.95"
for comp in rustfmt clippy; do
    sub=$([ "$comp" = rustfmt ] && echo fmt || echo clippy)
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || die "cargo $sub missing and no rustup to install $comp"
        say "adding rustup component $comp"
        rustup component add "$comp"
    fi
done
say "ok"
