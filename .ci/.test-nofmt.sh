#!/usr/bin/env bash
# `make test`: formatting, lints, build, the whole test suite. Prints one
# summary line at the end (and which step failed). Run `make deps` first.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-$([ -t 1 ] && echo always || echo never)}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

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
        printf '\nmake test: FAILED at %s (%s) after %ss; passed: %s\n' \
            "$step_name" "$*" "$((SECONDS - start))" "${summary[*]:-nothing}" >&2
        exit 1
    fi
}

#step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace --bins
step test cargo test --workspace

# Count tests from cargo's "test result:" lines.
read -r passed ignored < <(sed 's/\x1b\[[0-9;]*m//g' "$log_dir/test.log" |
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^ignored/) g += $i } }
         END { print p + 0, g + 0 }')
printf '\nmake test: OK in %ss: %s tests passed, %s ignored (%s)\n' \
    "$((SECONDS - start))" "$passed" "$ignored" "${summary[*]}"
