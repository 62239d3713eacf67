//! Arbitrary bytes through the CoAP server's pure path: datagram parsing,
//! the request steps, SenML JSON/CBOR decoding, response encoding, and the
//! Observe notification decoder. Seeds: `corpus/coap_datagram/` (also run
//! by `cargo test` through `tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatewayd_adapter_coap::fuzz_datagram(data);
});
