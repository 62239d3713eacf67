//! Runs the `bundle` fuzz target's function over the checked-in seed corpus
//! and over a freshly packed bundle (with truncations and byte flips), so
//! `cargo test` exercises the fuzzed path on stable.

use std::path::Path;

use gatewayd_artifact::{fuzz_parse, pack, Algorithm, SigningKey};

#[test]
fn fuzz_target_handles_every_seed_and_its_truncations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bundle");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("seed corpus exists") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        fuzz_parse(&data);
        for end in (0..data.len()).step_by(97) {
            fuzz_parse(&data[..end]);
        }
        seeds += 1;
    }
    assert!(seeds >= 5, "expected the seed corpus in {}", dir.display());
}

#[test]
fn fuzz_target_handles_byte_flips_of_a_bundle_signed_by_the_trusted_key() {
    // fuzz_parse trusts the ed25519 key with seed [7; 32]: this bundle gets
    // through parsing into signature verification.
    let key = SigningKey::from_seed(Algorithm::Ed25519, &[7; 32]).unwrap();
    let manifest = "schema = 1\n[app]\nname = \"x\"\nversion = \"1.0.0\"\nmodule = \"app.wasm\"\n";
    let b = pack(manifest, b"\0asm\x01\0\0\0", &[], &[key]).unwrap();
    fuzz_parse(&b);
    for i in (0..b.len()).step_by(7) {
        let mut d = b.clone();
        d[i] ^= 0x5a;
        fuzz_parse(&d);
    }
}
