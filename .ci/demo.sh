#!/usr/bin/env bash
# `make run`: cloud-bridge (embedded MQTT broker + SQLite), gatewayd and a
# simulated fleet of CoAP sensors, on loopback, with the configs in
# docs/demo/. State and logs in .run/. Ctrl-C stops everything.
#
# Control plane: a private D-Bus message bus (.run/bus) carries gatewayd's
# io.gatewayd.Gateway1 interface; `gatewayctl` (GATEWAYCTL_BUS points at it)
# deploys the apps and shows status and devices.
#
# Edge apps: the example guests are built (edge-apps/build-guests.sh), signed
# with a demo key made in .run/edge/ (trusted by docs/demo/gatewayd.toml) and
# deployed into the running gatewayd with `gatewayctl apps deploy`:
# threshold-alert (temperature above 30 °C), downsample (10 s aggregates of
# the coap:sim-* sensors, docs/demo/apps/) and vibration-anomaly (the
# vibration-ae ONNX model). The fleet adds coap:boiler-1, which overheats
# every minute, and coap:pump-1, whose vibration is anomalous every 5th
# window; once an alert, an aggregate and an anomaly score have reached the
# cloud API the script prints them.
#
# LoRaWAN: gatewayd's lorawan source (docs/demo/gatewayd.toml, port 1700) is
# the network server for three simulated ABP devices behind a simulated
# Semtech packet forwarder (gatewayd-lora-load --demo): two send Cayenne LPP,
# decoded by gatewayd; the third has profile "lora-codec" and is decoded by
# the lora-codec edge app. Their frame counters start over at each run, so
# the demo's LoRaWAN sessions (.run/gatewayd/lorawan.db) are reset too.
#
# Serial: the sensor firmware (sensor-firmware/app, board qemu-lm3s6965) is
# built and runs in qemu-system-arm (sensor-firmware/run-qemu.sh) with its
# UART on a pseudo-terminal, linked as .run/ttySENSOR0; gatewayd's serial
# source (port "bench-0") reads it like a USB serial adapter.
#
# Knobs (environment): DEMO_SENSORS (default 5), DEMO_SECONDS (stop that
# many seconds after the demo is up; default: run until Ctrl-C), DEMO_EDGE_WAIT
# (seconds to wait for the edge-app output to reach the cloud, default 120).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh

CB_CONFIG=docs/demo/cloud-bridge.toml
GW_CONFIG=docs/demo/gatewayd.toml
SENSORS="${DEMO_SENSORS:-5}"
DEMO_SECONDS="${DEMO_SECONDS:-}"
EDGE_WAIT="${DEMO_EDGE_WAIT:-120}"
# The demo signing key (PREFIX.key / PREFIX.pub) and the signed bundles.
EDGE_DIR=.run/edge
EDGE_KEY=$EDGE_DIR/demo-signing
case $DEMO_SECONDS in ""|*[!0-9]*) [ -z "$DEMO_SECONDS" ] || die "DEMO_SECONDS must be a whole number of seconds" ;; esac
case $EDGE_WAIT in ""|*[!0-9]*) die "DEMO_EDGE_WAIT must be a whole number of seconds" ;; esac
grep -qF "\"$EDGE_KEY.pub\"" "$GW_CONFIG" \
    || die "$GW_CONFIG must trust the demo key: [edge_apps] trusted_keys = [\"$EDGE_KEY.pub\"]"

for f in "$CB_CONFIG" "$GW_CONFIG"; do [ -f "$f" ] || die "missing $f"; done
# Ports from the configs (defaults: what the demo configs say today).
http_listen=$(toml_get "$CB_CONFIG" http listen)
broker_listen=$(toml_get "$CB_CONFIG" broker listen)
HTTP_PORT=${http_listen##*:}; HTTP_PORT=${HTTP_PORT:-8080}
MQTT_PORT=${broker_listen##*:}; MQTT_PORT=${MQTT_PORT:-1883}
COAP=$(toml_get "$GW_CONFIG" sources.coap bind); COAP=${COAP:-127.0.0.1:5683}
LORA=$(toml_get "$GW_CONFIG" sources.lora bind); LORA=${LORA:-127.0.0.1:1700}
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
"$CARGO" build -p gatewayd -p gatewayctl -p cloud-bridge -p gatewayd-bench -p gatewayd-artifact --bins
BIN="$TARGET_DIR/debug"

mkdir -p .run
say "==> building the edge-app guests (edge-apps/build-guests.sh, log: .run/build-guests.log)"
bash edge-apps/build-guests.sh >.run/build-guests.log 2>&1 \
    || { tail -n 30 .run/build-guests.log >&2; die "building the guests failed; full log: .run/build-guests.log"; }
COMPONENTS="$TARGET_DIR/edge-apps/components"
MODEL=edge-apps/models/vibration-ae/model.onnx

say "==> signing the demo apps (key $EDGE_KEY.key)"
mkdir -p "$EDGE_DIR"
if [ ! -f "$EDGE_KEY.key" ] || [ ! -f "$EDGE_KEY.pub" ]; then
    rm -f "$EDGE_KEY.key" "$EDGE_KEY.pub"
    "$BIN/gatewayd-app" keygen --algorithm ed25519 --out "$EDGE_KEY" --comment "make run demo key" >&2
fi
# pack_app NAME MANIFEST [gatewayd-app pack args...]
pack_app() {
    local name=$1 manifest=$2
    shift 2
    [ -f "$COMPONENTS/$name.wasm" ] || die "$COMPONENTS/$name.wasm missing after build-guests.sh"
    "$BIN/gatewayd-app" pack --manifest "$manifest" --module "$COMPONENTS/$name.wasm" \
        --key "$EDGE_KEY.key" --out "$EDGE_DIR/$name.gwapp" "$@"
}
# unit-convert is left out: it would turn every temperature into kelvin.
pack_app threshold-alert "$COMPONENTS/threshold-alert.manifest.toml"
pack_app downsample docs/demo/apps/downsample.manifest.toml
pack_app vibration-anomaly "$COMPONENTS/vibration-anomaly.manifest.toml" --model "vibration-ae=$MODEL"
# As shipped: it decodes the LoRaWAN devices whose profile is lora-codec.
pack_app lora-codec "$COMPONENTS/lora-codec.manifest.toml"
EDGE_APPS=(threshold-alert downsample vibration-anomaly lora-codec)

say "==> building the sensor firmware (sensor-firmware/build.sh, log: .run/firmware.log)"
bash sensor-firmware/build.sh --board qemu-lm3s6965 >.run/firmware.log 2>&1 \
    || { tail -n 30 .run/firmware.log >&2; die "building the firmware failed; full log: .run/firmware.log"; }

mkdir -p .run/cloud-bridge .run/gatewayd
# The simulated LoRaWAN devices count their frames from 0 again.
rm -f .run/gatewayd/lorawan.db .run/gatewayd/lorawan.db-wal .run/gatewayd/lorawan.db-shm
# gatewayd runs on a copy of its config: `gatewayctl config set` persists
# into the file it was started with, and that should not be the repository's.
cp "$GW_CONFIG" .run/gatewayd.toml
GW_CONFIG=.run/gatewayd.toml
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

say "==> starting a private D-Bus bus for gatewayd's control interface (.run/bus)"
command -v dbus-daemon >/dev/null || die "dbus-daemon not found: run \`make deps\`"
rm -f .run/bus
BUS="unix:path=$PWD/.run/bus"
dbus-daemon --session --address="$BUS" --nofork --nopidfile >>.run/dbus.log 2>&1 </dev/null &
pids+=("$!")
for ((i = 0; i < 100; i++)); do [ -S .run/bus ] && break; sleep 0.1; done
[ -S .run/bus ] || die "dbus-daemon did not start: see .run/dbus.log"
export GATEWAYCTL_BUS="$BUS"
CTL="$BIN/gatewayctl"

say "==> starting the sensor firmware in QEMU (lm3s6965evb; log: .run/qemu.log)"
command -v qemu-system-arm >/dev/null || die "qemu-system-arm not found: run \`make deps\`"
: >.run/qemu.log
bash sensor-firmware/run-qemu.sh --serial pty >>.run/qemu.log 2>&1 </dev/null &
qemu_pid=$!
pids+=("$qemu_pid")
pty=""
for ((i = 0; i < 300; i++)); do
    pty=$(sed -n 's/^char device redirected to \(\/dev\/pts\/[0-9]*\).*/\1/p' .run/qemu.log | head -n 1)
    [ -n "$pty" ] && break
    kill -0 "$qemu_pid" 2>/dev/null || { cat .run/qemu.log >&2; die "qemu-system-arm exited"; }
    sleep 0.1
done
[ -n "$pty" ] || die "qemu-system-arm printed no pseudo-terminal: see .run/qemu.log"
ln -sfn "$pty" .run/ttySENSOR0
say "    firmware UART on $pty (.run/ttySENSOR0)"

say "==> starting cloud-bridge (log: .run/cloud-bridge.log)"
"$BIN/cloud-bridge" --config "$CB_CONFIG" >>.run/cloud-bridge.log 2>&1 </dev/null &
cb_pid=$!
pids+=("$cb_pid")
wait_tcp cloud-bridge "$cb_pid" "$HTTP_PORT" .run/cloud-bridge.log 60
wait_tcp cloud-bridge "$cb_pid" "$MQTT_PORT" .run/cloud-bridge.log 60

say "==> starting gatewayd (log: .run/gatewayd.log)"
gw_log_offset=$(stat -c %s .run/gatewayd.log 2>/dev/null || echo 0)
"$BIN/gatewayd" --config "$GW_CONFIG" --bus "$BUS" >>.run/gatewayd.log 2>&1 </dev/null &
gw_pid=$!
pids+=("$gw_pid")
# Wait for this run's "gatewayd running" line (the log file is appended to).
for ((i = 0; ; i++)); do
    tail -c +"$((gw_log_offset + 1))" .run/gatewayd.log | grep -qF "gatewayd running" && break
    kill -0 "$gw_pid" 2>/dev/null || { say "gatewayd exited during startup:"; tail -n 40 .run/gatewayd.log >&2; exit 1; }
    [ "$i" -lt 600 ] || { say "gatewayd did not report running within 60s:"; tail -n 40 .run/gatewayd.log >&2; exit 1; }
    sleep 0.1
done

# The D-Bus interface comes up beside the sources.
for ((i = 0; ; i++)); do
    "$CTL" status >/dev/null 2>&1 && break
    [ "$i" -lt 100 ] || { say "gatewayd's D-Bus interface did not come up; last lines of .run/gatewayd.log:"; tail -n 40 .run/gatewayd.log >&2; exit 1; }
    sleep 0.1
done

say "==> deploying the edge apps (gatewayctl apps deploy: verified, compiled and running when it returns)"
for app in "${EDGE_APPS[@]}"; do
    say "\$ gatewayctl apps deploy $EDGE_DIR/$app.gwapp"
    "$CTL" apps deploy "$EDGE_DIR/$app.gwapp" >&2
done
say "$("$CTL" apps list)"

say "==> starting $SENSORS simulated CoAP sensors + boiler-1 and pump-1 (log: .run/fleet.log)"
fleet_start_us=$(date +%s%6N)
"$BIN/gatewayd-load" --demo --edge-demo --sensors "$SENSORS" --target "$COAP" \
    --cloud "http://127.0.0.1:$HTTP_PORT" > >(tee -a .run/fleet.log) 2>&1 </dev/null &
fleet_pid=$!
pids+=("$fleet_pid")

say "==> starting a simulated LoRaWAN packet forwarder with 3 ABP devices (log: .run/lora.log)"
"$BIN/gatewayd-lora-load" --demo --devices 3 --codec 1 --demo-interval 5 --target "$LORA" \
    >>.run/lora.log 2>&1 </dev/null &
pids+=("$!")

# show TITLE DEVICE MEASUREMENT [JQ-CONDITION]: waits (bounded by $EDGE_WAIT
# from the fleet's start) until the cloud API has a reading of DEVICE
# carrying MEASUREMENT (and meeting the condition), stored since the fleet
# started, then prints the command and that reading. Sets edge_ok=0 when it
# does not come.
show() {
    local title=$1 device=$2 measurement=$3 cond=${4:-} body found
    local url="localhost:$HTTP_PORT/api/v1/devices/$device/readings?since=$fleet_start_us&limit=5000"
    local filter="[.readings[] | select(any(.measurements[]; .name == \"$measurement\")${cond:+ and $cond})] | first"
    say ""
    say "--- $title"
    if command -v jq >/dev/null; then
        say "\$ curl -s '$url' | jq -c '$filter'"
    else
        say "\$ curl -s '$url'   (install jq to pick the reading out)"
    fi
    while :; do
        body=$(curl -sf --max-time 5 "http://$url" || true)
        found=""
        if [ -n "$body" ]; then
            if command -v jq >/dev/null; then
                found=$(jq -c "$filter // empty" <<<"$body" 2>/dev/null || true)
            elif grep -qF "\"name\":\"$measurement\"" <<<"$body"; then
                found=$(head -c 2000 <<<"$body")
            fi
        fi
        if [ -n "$found" ]; then
            say "$found"
            return 0
        fi
        if ! kill -0 "$cb_pid" 2>/dev/null || ! kill -0 "$gw_pid" 2>/dev/null; then
            say "(not there, and cloud-bridge or gatewayd has stopped: see .run/*.log)"
            edge_ok=0
            return 0
        fi
        if [ $(($(date +%s) - fleet_start_us / 1000000)) -ge "$EDGE_WAIT" ]; then
            say "(no $measurement reading of $device after ${EDGE_WAIT}s: see .run/gatewayd.log)"
            edge_ok=0
            return 0
        fi
        sleep 1
    done
}

say ""
say "==> waiting (up to ${EDGE_WAIT}s) for the edge apps' output in the cloud API"
edge_ok=1
# (A full window: the first one may have started before the fleet did.)
show "downsample: a 10 s aggregate of coap:sim-0 (temperature_mean/_min/_max/_count)" \
    coap:sim-0 temperature_mean 'any(.measurements[]; .name == "temperature_count" and .value >= 5)'
show "vibration-anomaly: the anomaly score of a 32-sample window of coap:pump-1" coap:pump-1 anomaly_score
show "vibration-anomaly: a critical alert (a window with a spike)" coap:pump-1 alert
show "threshold-alert: coap:boiler-1 went above 30 °C" coap:boiler-1 alert
show "LoRaWAN: an uplink of lora:70B3D57E00000000 (Cayenne LPP, decoded by gatewayd)" \
    lora:70B3D57E00000000 temperature_1
show "LoRaWAN + lora-codec: lora:70B3D57E00000002 (profile lora-codec, decoded by the edge app)" \
    lora:70B3D57E00000002 temperature
show "Serial: a reading of serial:lm3s6965-0001 (our firmware in QEMU, over a pty)" \
    serial:lm3s6965-0001 temperature
say ""
if [ "$edge_ok" = 1 ]; then
    say "==> edge apps: all output seen in the cloud"
else
    say "==> edge apps: some output did not show up (the demo keeps running; see above)"
fi
say "$("$CTL" apps list 2>&1 || true)"
say ""
say "\$ gatewayctl status"
say "$("$CTL" status 2>&1 || true)"
say ""
say "\$ gatewayctl devices"
say "$("$CTL" devices 2>&1 || true)"
say ""
say "\$ gatewayctl serial sensors"
say "$("$CTL" serial sensors 2>&1 || true)"
say ""
say "\$ gatewayctl lora forwarders"
say "$("$CTL" lora forwarders 2>&1 || true)"

cat <<MSG

gatewayd demo is running. Look at:

  cloud API       http://127.0.0.1:$HTTP_PORT
    curl -s localhost:$HTTP_PORT/healthz
    curl -s localhost:$HTTP_PORT/api/v1/gateways
    curl -s localhost:$HTTP_PORT/api/v1/devices
    curl -s 'localhost:$HTTP_PORT/api/v1/devices/coap:sim-0/readings?limit=5'
  control plane   export GATEWAYCTL_BUS=$BUS
    $CTL status | devices | watch | config get buffer | apps list | buffer flush   (man: $CTL man | man -l -)
    $CTL config set log.level debug      (persisted to $GW_CONFIG; applied at once)
    busctl --address=$BUS introspect io.gatewayd.Gateway1 /io/gatewayd/Gateway1
  LoRaWAN         $CTL lora devices | lora forwarders | lora stats | source status lora
    queue a downlink for the next uplink: $CTL lora downlinks send 70B3D57E00000000 --fport 10 --hex 0102
    (the simulated forwarder answers it with a TX_ACK: .run/lora.log counts them)
  serial sensor   $CTL serial sensors | serial interval bench-0 250 | serial identify bench-0
    $CTL serial reboot bench-0 | serial diagnostics bench-0 | source status wired
    readings: curl -s 'localhost:$HTTP_PORT/api/v1/devices/serial:lm3s6965-0001/readings?limit=5'
  edge apps        $CTL apps list   (also: deploy BUNDLE, upgrade BUNDLE, remove NAME)
    alerts:        curl -s 'localhost:$HTTP_PORT/api/v1/devices/coap:boiler-1/readings?since=$fleet_start_us&limit=5000' | jq -c '.readings[] | select(any(.measurements[]; .name == "alert"))'
    anomaly scores: curl -s 'localhost:$HTTP_PORT/api/v1/devices/coap:pump-1/readings?since=$fleet_start_us&limit=5000' | jq -c '.readings[] | select(any(.measurements[]; .name == "anomaly_score")) | [.time, .measurements[0].value]'
    aggregates:    curl -s 'localhost:$HTTP_PORT/api/v1/devices/coap:sim-0/readings?since=$fleet_start_us&limit=5000' | jq -c '.readings[] | select(any(.measurements[]; .name == "temperature_mean"))'
  post your own reading (libcoap):
    coap-client -m post -t 110 -e '[{"bn":"my-sensor/","n":"temperature","u":"Cel","v":22.5}]' coap://$COAP/telemetry
  logs            .run/cloud-bridge.log  .run/gatewayd.log  .run/fleet.log  .run/lora.log  .run/qemu.log  .run/dbus.log
  state           .run/cloud-bridge/ (SQLite)  .run/gatewayd/ (buffer, apps/)  .run/edge/ (demo key, bundles)

$(if [ -n "$DEMO_SECONDS" ]; then echo "Stopping after ${DEMO_SECONDS}s (DEMO_SECONDS); Ctrl-C stops earlier."; else echo "Ctrl-C stops everything."; fi)

MSG

if [ -n "$DEMO_SECONDS" ]; then
    sleep "$DEMO_SECONDS" &
    timer_pid=$!
    pids+=("$timer_pid")
fi

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
[ "$edge_ok" = 1 ] || status=1
exit "$status"
