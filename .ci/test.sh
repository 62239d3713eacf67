#!/usr/bin/env bash
# `make test`: formatting, lints, build, the whole test suite. Prints one
# summary line at the end (and which step failed). Run `make deps` first.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-$([ -t 1 ] && echo always || echo never)}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# Steps change directory (the firmware workspace): a relative
# CARGO_TARGET_DIR must not move with them.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in /*) ;; *) export CARGO_TARGET_DIR="$PWD/$CARGO_TARGET_DIR" ;; esac
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
target_parent=$(dirname "$target_dir")
log_dir=$(mktemp -d "${TMPDIR:-/tmp}/gatewayd-test.XXXXXX")
trap 'rm -rf "$log_dir"' EXIT
start=$SECONDS
step_name=""
summary=()

step() {
    step_name=$1; shift
    local t0=$SECONDS
    printf '\n==> %s: %s\n' "$step_name" "$*"
    if "$@" 2>&1 | tee "$log_dir/$step_name.log"; then
        summary+=("$step_name $((SECONDS - t0))s")
    else
        if [ "$step_name" = test ]; then
            printf '\nFailed tests:\n' >&2
            sed 's/\x1b\[[0-9;]*m//g' "$log_dir/test.log" | grep -E '^test .* FAILED$' | sed 's/^/  /' >&2 || true
            count_tests
            printf 'tests: %s passed, %s failed, %s ignored\n' "$passed" "$failed" "$ignored" >&2
        fi
        # Out-of-space failures look like compiler errors: say how much is left.
        printf 'disk: %s available; target dir %s\n' \
            "$(df -h --output=avail "$target_parent" 2>/dev/null | tail -1 | tr -d ' ')" \
            "$(du -sh "$target_dir" 2>/dev/null | cut -f1)" >&2
        printf '\nmake test: FAILED at %s (%s) after %ss; passed steps: %s\n' \
            "$step_name" "$*" "$((SECONDS - start))" "${summary[*]:-none}" >&2
        exit 1
    fi
}

# Sums cargo's "test result:" lines into $passed $failed $ignored.
count_tests() {
    read -r passed failed ignored < <(sed 's/\x1b\[[0-9;]*m//g' "$log_dir/test.log" |
        awk '/^test result:/ { for (i = 1; i < NF; i++) {
                 if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
             END { print p + 0, f + 0, g + 0 }')
}

# The sensor firmware (sensor-firmware/app) is its own workspace: its
# host-testable crates (the application logic, hostcheck) are formatted,
# linted and tested beside the main workspace; the Cortex-M crate only
# builds for thumb targets (the firmware step).
fw_app=sensor-firmware/app
fmt_all() {
    cargo fmt --all -- --check
    (cd "$fw_app" && cargo fmt --all -- --check)
}
clippy_all() {
    cargo clippy --workspace --all-targets -- -D warnings
    (cd "$fw_app" && cargo clippy --locked --all-targets -- -D warnings)
}
# Both test runs go to the end (--no-fail-fast), then the step fails if
# either did.
test_all() {
    local rc=0
    cargo test --workspace --no-fail-fast || rc=1
    (cd "$fw_app" && cargo test --locked --no-fail-fast) || rc=1
    return "$rc"
}

step fmt fmt_all
step clippy clippy_all
step build cargo build --workspace --bins
# The example and hostile edge apps, compiled from source to wasm components
# (the runtime, componentize and end-to-end tests load them).
step guests bash edge-apps/build-guests.sh
# The sensor firmware for both boards (thumbv7m/thumbv7em, no_std); the
# serial end-to-end tests run the QEMU board's image.
step firmware bash sensor-firmware/build.sh
# --no-fail-fast: report every failing test binary, not just the first.
step test test_all

count_tests
printf '\nmake test: OK in %ss: %s tests passed, %s ignored (%s); target dir %s\n' \
    "$((SECONDS - start))" "$passed" "$ignored" "${summary[*]}" "$(du -sh "$target_dir" 2>/dev/null | cut -f1)"
