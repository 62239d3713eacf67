#!/usr/bin/env bash
# `make run`: cloud-bridge (embedded MQTT broker + SQLite), gatewayd and a
# simulated fleet of CoAP sensors, on loopback, with the configs in
# docs/demo/. State and logs in .run/. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh

CB_CONFIG=docs/demo/cloud-bridge.toml
GW_CONFIG=docs/demo/gatewayd.toml
SENSORS="${DEMO_SENSORS:-5}"

for f in "$CB_CONFIG" "$GW_CONFIG"; do [ -f "$f" ] || die "missing $f"; done
# Ports from the configs (defaults: what the demo configs say today).
http_listen=$(toml_get "$CB_CONFIG" http listen)
broker_listen=$(toml_get "$CB_CONFIG" broker listen)
HTTP_PORT=${http_listen##*:}; HTTP_PORT=${HTTP_PORT:-8080}
MQTT_PORT=${broker_listen##*:}; MQTT_PORT=${MQTT_PORT:-1883}
COAP=$(toml_get "$GW_CONFIG" sources.coap bind); COAP=${COAP:-127.0.0.1:5683}
case $COAP in  # a wildcard bind: the simulated sensors use loopback
    0.0.0.0:*) COAP=127.0.0.1:${COAP##*:} ;;
    "[::]:"*) COAP="[::1]:${COAP##*:}" ;;
esac
for p in "$MQTT_PORT" "$HTTP_PORT"; do
    if port_in_use "$p"; then
        die "port $p on 127.0.0.1 is already in use (a system mosquitto on 1883? \`systemctl stop mosquitto\`; another \`make run\`?)"
    fi
done

say "==> building (dev profile)"
"$CARGO" build -p gatewayd -p cloud-bridge -p gatewayd-bench --bins
BIN="$TARGET_DIR/debug"

mkdir -p .run/cloud-bridge .run/gatewayd
pids=()
cleanup() {
    trap - INT TERM EXIT
    if [ "${#pids[@]}" -gt 0 ]; then
        say ""
        say "==> stopping (logs stay in .run/)"
        stop_pids "${pids[@]}"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "==> starting cloud-bridge (log: .run/cloud-bridge.log)"
"$BIN/cloud-bridge" --config "$CB_CONFIG" >>.run/cloud-bridge.log 2>&1 </dev/null &
cb_pid=$!
pids+=("$cb_pid")
wait_tcp cloud-bridge "$cb_pid" "$HTTP_PORT" .run/cloud-bridge.log 60
wait_tcp cloud-bridge "$cb_pid" "$MQTT_PORT" .run/cloud-bridge.log 60

say "==> starting gatewayd (log: .run/gatewayd.log)"
gw_log_offset=$(stat -c %s .run/gatewayd.log 2>/dev/null || echo 0)
"$BIN/gatewayd" --config "$GW_CONFIG" >>.run/gatewayd.log 2>&1 </dev/null &
gw_pid=$!
pids+=("$gw_pid")
# Wait for this run's "gatewayd running" line (the log file is appended to).
for ((i = 0; ; i++)); do
    tail -c +"$((gw_log_offset + 1))" .run/gatewayd.log | grep -qF "gatewayd running" && break
    kill -0 "$gw_pid" 2>/dev/null || { say "gatewayd exited during startup:"; tail -n 40 .run/gatewayd.log >&2; exit 1; }
    [ "$i" -lt 600 ] || { say "gatewayd did not report running within 60s:"; tail -n 40 .run/gatewayd.log >&2; exit 1; }
    sleep 0.1
done

say "==> starting $SENSORS simulated CoAP sensors (log: .run/fleet.log)"
"$BIN/gatewayd-load" --demo --sensors "$SENSORS" --target "$COAP" \
    --cloud "http://127.0.0.1:$HTTP_PORT" > >(tee -a .run/fleet.log) 2>&1 </dev/null &
fleet_pid=$!
pids+=("$fleet_pid")

cat <<MSG

gatewayd demo is running. Look at:

  cloud API       http://127.0.0.1:$HTTP_PORT
    curl -s localhost:$HTTP_PORT/healthz
    curl -s localhost:$HTTP_PORT/api/v1/gateways
    curl -s localhost:$HTTP_PORT/api/v1/devices
    curl -s 'localhost:$HTTP_PORT/api/v1/devices/coap:sim-0/readings?limit=5'
  post your own reading (libcoap):
    coap-client -m post -t 110 -e '[{"bn":"my-sensor/","n":"temperature","u":"Cel","v":22.5}]' coap://$COAP/telemetry
  logs            .run/cloud-bridge.log  .run/gatewayd.log  .run/fleet.log
  state           .run/cloud-bridge/ (SQLite)  .run/gatewayd/ (buffer)

Ctrl-C stops everything.

MSG

# Until Ctrl-C, or until one of them exits on its own. (gatewayd-load
# handles SIGINT itself, prints its report and exits; that ends the demo too.)
set +e
wait -n "${pids[@]}"
set -e
status=0
for pid in "$cb_pid" "$gw_pid"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        status=1
        case $pid in
            "$cb_pid") say "cloud-bridge exited; last lines of .run/cloud-bridge.log:"; tail -n 20 .run/cloud-bridge.log >&2 ;;
            "$gw_pid") say "gatewayd exited; last lines of .run/gatewayd.log:"; tail -n 20 .run/gatewayd.log >&2 ;;
        esac
    fi
done
exit "$status"
