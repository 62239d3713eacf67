# Shared helpers for the .ci scripts (sourced, not run).

CARGO="${CARGO:-cargo}"
# Where cargo puts binaries; relative CARGO_TARGET_DIR is relative to the repo.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

say() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_tcp NAME PID PORT LOG [SECONDS]: wait until PORT accepts connections,
# failing (with the log) if PID exits first.
wait_tcp() {
    local name=$1 pid=$2 port=$3 log=$4 secs=${5:-60} i
    for ((i = 0; i < secs * 10; i++)); do
        port_in_use "$port" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            say "$name exited before listening on port $port; its log ($log):"
            tail -n 40 "$log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    say "$name not listening on port $port after ${secs}s; its log ($log):"
    tail -n 40 "$log" >&2 || true
    return 1
}

# wait_log NAME PID LOG NEEDLE [SECONDS]
wait_log() {
    local name=$1 pid=$2 log=$3 needle=$4 secs=${5:-60} i
    for ((i = 0; i < secs * 10; i++)); do
        grep -qF -- "$needle" "$log" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            say "$name exited during startup; its log ($log):"
            tail -n 40 "$log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    say "$name did not log \"$needle\" within ${secs}s; its log ($log):"
    tail -n 40 "$log" >&2 || true
    return 1
}

# stop_pids PID...: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pids() {
    local pid i alive
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid ignored SIGTERM for 10s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# toml_get FILE SECTION KEY: the string value of KEY in [SECTION] of a
# simple TOML file (enough for our demo configs), or nothing.
toml_get() {
    awk -v want="[$2]" -v key="$3" '
        /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); section = $0; next }
        section == want && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*(#.*)?$/, ""); gsub(/"/, ""); print; exit
        }' "$1"
}
