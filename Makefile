# gatewayd: developer entry points. The logic lives in .ci/*.sh.
#
#   make deps    install what is missing (apt; needs root or sudo)
#   make build   build every binary of the workspace (dev profile)
#   make guests  build the example edge apps (wasm components) from source
#   make firmware build the Cortex-M sensor firmware (both boards) and print its size
#   make test    deps, fmt check, clippy -D warnings, build, all tests
#   make run     demo: cloud-bridge + gatewayd + simulated CoAP, LoRaWAN and serial (QEMU) sensors
#   make bench   criterion benchmarks + load harness (release)
#   make fuzz    run the fuzz targets (CoAP/SenML, edge-app bundles, Semtech UDP, LoRaWAN PHYPayload, serial frames and the serial session; FUZZ_SECONDS each)
#
# CARGO_TARGET_DIR is respected throughout.

SHELL := /bin/bash
CARGO ?= cargo
export CARGO

.DEFAULT_GOAL := help
.PHONY: help deps build guests firmware test run bench fuzz

help:
	@sed -n '3,11s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

deps:
	@bash .ci/deps.sh

build:
	$(CARGO) build --workspace --bins

guests:
	@bash edge-apps/build-guests.sh

firmware:
	@bash sensor-firmware/build.sh

test: deps
	@bash .ci/test.sh

run: deps
	@bash .ci/demo.sh

bench: deps
	@bash .ci/bench.sh

# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1
# enables them. Installs cargo-fuzz from crates.io when missing.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd adapters/coap/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run coap_datagram corpus/coap_datagram -- -max_total_time=$(FUZZ_SECONDS)
	cd edge-apps/artifact/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run bundle corpus/bundle -- -max_total_time=$(FUZZ_SECONDS)
	cd adapters/lorawan/semtech/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run datagram corpus/datagram -- -max_total_time=$(FUZZ_SECONDS)
	cd adapters/lorawan/proto/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run phypayload corpus/phypayload -- -max_total_time=$(FUZZ_SECONDS)
	cd sensor-firmware/proto/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run frame corpus/frame -- -max_total_time=$(FUZZ_SECONDS)
	cd adapters/serial/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run session corpus/session -- -max_total_time=$(FUZZ_SECONDS)
