//! Runs every file of the fuzz corpus through `decode`, so `cargo test`
//! exercises it: `valid-*` seeds must decode; every file that decodes must
//! survive re-encoding, as the fuzz target asserts.

use std::fs;
use std::path::Path;

use gatewayd_semtech_udp::{Datagram, MAX_DATAGRAM_LEN};

#[test]
fn every_corpus_file_decodes_without_panicking_and_valid_seeds_round_trip() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/datagram");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let mut valid = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let bytes = fs::read(path).unwrap();
        let decoded = Datagram::decode(&bytes);
        if name.starts_with("valid-") {
            assert!(decoded.is_ok(), "{name}: {decoded:?}");
            valid += 1;
        }
        if let Ok(datagram) = decoded {
            let again = datagram.to_bytes();
            if again.len() <= MAX_DATAGRAM_LEN {
                assert_eq!(
                    Datagram::decode(&again),
                    Ok(datagram.without_errors()),
                    "{name}"
                );
            }
        }
    }
    assert!(
        valid >= 10,
        "seed corpus missing: {} valid files in {}",
        valid,
        dir.display()
    );
}
