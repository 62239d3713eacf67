//! Runs the `coap_datagram` fuzz target's function over the checked-in seed
//! corpus, so `cargo test` exercises the fuzzed path on stable.

use std::path::Path;

#[test]
fn fuzz_target_handles_every_seed_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/coap_datagram");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("seed corpus exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        gatewayd_adapter_coap::fuzz_datagram(&data);
        // Every prefix too: truncations are the commonest malformation.
        for end in 0..data.len() {
            gatewayd_adapter_coap::fuzz_datagram(&data[..end]);
        }
        seeds += 1;
    }
    assert!(seeds >= 10, "expected the seed corpus in {}", dir.display());
}

#[test]
fn fuzz_target_handles_byte_flips_of_every_seed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/coap_datagram");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for i in 0..data.len() {
            for flip in [0x01u8, 0x10, 0x80, 0xFF] {
                let mut d = data.clone();
                d[i] ^= flip;
                gatewayd_adapter_coap::fuzz_datagram(&d);
            }
        }
    }
}
