//! Arbitrary bytes as a bundle archive, a manifest and a key file: parsing
//! must refuse with an error, never panic. Seeds: `corpus/bundle/` (also
//! run by `cargo test` through `tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatewayd_artifact::fuzz_parse(data);
});
