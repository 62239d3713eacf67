# gatewayd: developer entry points. The logic lives in .ci/*.sh.
#
#   make deps    install what is missing (apt; needs root or sudo)
#   make build   build every binary of the workspace (dev profile)
#   make test    deps, fmt check, clippy -D warnings, build, all tests
#   make run     demo: cloud-bridge + gatewayd + simulated CoAP sensors
#   make bench   criterion benchmarks + load harness (release)
#
# CARGO_TARGET_DIR is respected throughout.

SHELL := /bin/bash
CARGO ?= cargo
export CARGO

.DEFAULT_GOAL := help
.PHONY: help deps build test run bench

help:
	@sed -n '3,8s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

deps:
	@bash .ci/deps.sh

build:
	$(CARGO) build --workspace --bins

test: deps
	@bash .ci/test.sh

run: deps
	@bash .ci/demo.sh

bench: deps
	@bash .ci/bench.sh
