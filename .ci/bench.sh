#!/usr/bin/env bash
# `make bench`: the criterion micro-benchmarks (cargo bench -p gatewayd-bench:
# codec, buffer and edge; -p gatewayd-devices: the device registry; edge needs the edge-app guests, so
# edge-apps/build-guests.sh runs first), then the load harness: release
# builds of cloud-bridge (embedded broker + SQLite) and gatewayd on loopback,
# driven by gatewayd-load. Reports (text and JSON) go to .run/bench/.
#
# Knobs (environment): BENCH_SKIP_CRITERION=1, BENCH_PROFILE=dev (quicker
# build, slower binaries; default release), LOAD_PROFILES (default
# "steady batched"), BENCH_BROKER (embedded | mosquitto), LOAD_DURATION (s, default 30), LOAD_SENSORS (default 200),
# LOAD_RATE (readings/s, default 2000), LOAD_EXTRA (more gatewayd-load args).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh

if [ -z "${BENCH_SKIP_CRITERION:-}" ]; then
    say "==> edge-app guests (for the edge benchmark)"
    bash edge-apps/build-guests.sh
    say "==> criterion benchmarks"
    "$CARGO" bench -p gatewayd-bench
    # Library benches: the device registry (observe per committed group).
    "$CARGO" bench -p gatewayd-devices
fi

PROFILE="${BENCH_PROFILE:-release}"
say "==> building $PROFILE binaries"
if [ "$PROFILE" = release ]; then
    "$CARGO" build --release -p gatewayd -p cloud-bridge -p gatewayd-bench --bins
    BIN="$TARGET_DIR/release"
else
    "$CARGO" build -p gatewayd -p cloud-bridge -p gatewayd-bench --bins
    BIN="$TARGET_DIR/debug"
fi

MQTT_PORT="${BENCH_MQTT_PORT:-21883}"
HTTP_PORT="${BENCH_HTTP_PORT:-28080}"
COAP_PORT="${BENCH_COAP_PORT:-25683}"
for p in "$MQTT_PORT" "$HTTP_PORT"; do
    port_in_use "$p" && die "port $p is in use (set BENCH_MQTT_PORT / BENCH_HTTP_PORT)"
done

out=".run/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
out=$(cd "$out" && pwd)

BROKER="${BENCH_BROKER:-embedded}"
case $BROKER in
    embedded)
        cat >"$out/cloud-bridge.toml" <<TOML
[broker]
embedded = true
listen = "127.0.0.1:$MQTT_PORT"

[mqtt]
client_id = "cloud-bridge-bench"

[storage]
kind = "sqlite"
sqlite_path = "$out/cloud.db"

[http]
listen = "127.0.0.1:$HTTP_PORT"
TOML
        ;;
    mosquitto)
        command -v mosquitto >/dev/null || die "mosquitto not found: run make deps"
        mkdir -p "$out/mosquitto"
        cat >"$out/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $out/mosquitto/
max_queued_messages 0
user root
log_dest file $out/mosquitto.log
CONF
        cat >"$out/cloud-bridge.toml" <<TOML
[broker]
embedded = false

[mqtt]
url = "mqtt://127.0.0.1:$MQTT_PORT"
client_id = "cloud-bridge-bench"

[storage]
kind = "sqlite"
sqlite_path = "$out/cloud.db"

[http]
listen = "127.0.0.1:$HTTP_PORT"
TOML
        ;;
    *) die "BENCH_BROKER must be embedded or mosquitto" ;;
esac

cat >"$out/gatewayd.toml" <<TOML
[gateway]
id = "bench-gw"
data_dir = "$out/gatewayd"

[uplink]
broker = "mqtt://127.0.0.1:$MQTT_PORT"

# No system bus to serve on here (the control plane is idle under load).
[dbus]
enabled = false

[sources.coap]
kind = "coap"
bind = "127.0.0.1:$COAP_PORT"
TOML

pids=()
cleanup() {
    trap - INT TERM EXIT
    [ "${#pids[@]}" -gt 0 ] && stop_pids "${pids[@]}"
    say "bench output: $out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$BROKER" = mosquitto ]; then
    mosquitto -c "$out/mosquitto.conf" >"$out/mosquitto.out" 2>&1 </dev/null &
    pids+=("$!")
    wait_tcp mosquitto "$!" "$MQTT_PORT" "$out/mosquitto.out" 30
fi
say "broker: $BROKER"

"$BIN/cloud-bridge" --config "$out/cloud-bridge.toml" >"$out/cloud-bridge.log" 2>&1 </dev/null &
cb_pid=$!
pids+=("$cb_pid")
wait_tcp cloud-bridge "$cb_pid" "$HTTP_PORT" "$out/cloud-bridge.log" 60
wait_tcp cloud-bridge "$cb_pid" "$MQTT_PORT" "$out/cloud-bridge.log" 60

"$BIN/gatewayd" --config "$out/gatewayd.toml" >"$out/gatewayd.log" 2>&1 </dev/null &
gw_pid=$!
pids+=("$gw_pid")
wait_log gatewayd "$gw_pid" "$out/gatewayd.log" "gatewayd running" 60

DURATION="${LOAD_DURATION:-30}"
SENSORS="${LOAD_SENSORS:-200}"
RATE="${LOAD_RATE:-2000}"
status=0
for profile in ${LOAD_PROFILES:-steady batched}; do
    case $profile in
        steady)  args=(--sensors "$SENSORS" --rate "$RATE" --batch 1 --confirmable) ;;
        batched) args=(--sensors "$SENSORS" --rate "$((RATE * 4))" --batch 8 --confirmable) ;;
        non)     args=(--sensors "$SENSORS" --rate "$RATE" --batch 1) ;;
        *) die "unknown load profile $profile (steady, batched, non)" ;;
    esac
    say ""
    say "==> load profile $profile: ${args[*]} --duration $DURATION"
    # shellcheck disable=SC2086
    if ! "$BIN/gatewayd-load" "${args[@]}" --duration "$DURATION" \
        --target "127.0.0.1:$COAP_PORT" --cloud "http://127.0.0.1:$HTTP_PORT" \
        --rss-pid "$gw_pid" --json-out "$out/load-$profile.json" ${LOAD_EXTRA:-} \
        </dev/null | tee "$out/load-$profile.txt"; then
        say "load profile $profile: gatewayd-load reported a failure"
        status=1
    fi
    kill -0 "$gw_pid" 2>/dev/null || die "gatewayd died during the load; see $out/gatewayd.log"
done
exit "$status"
