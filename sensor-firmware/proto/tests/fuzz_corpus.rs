//! Runs the `frame` fuzz target's function over the checked-in seed corpus,
//! so `cargo test` exercises the fuzzed path on stable, and checks that the
//! `valid-*` seeds are exactly the current encoding of the sample messages.
//!
//! Regenerate the seeds after an intended wire change (which needs a new
//! protocol version):
//! `UPDATE_FUZZ_CORPUS=1 cargo test -p gatewayd-sensor-proto --test fuzz_corpus valid_seeds`
//! (only that test: the others read the corpus concurrently).

mod common;

use std::path::{Path, PathBuf};

use gatewayd_sensor_proto::fuzz_frame;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame")
}

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("seed corpus exists")
        .map(|e| {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn valid_seeds_are_one_frame_per_sample_message() {
    let update = std::env::var_os("UPDATE_FUZZ_CORPUS").is_some();
    for (name, env) in common::samples() {
        let path = corpus_dir().join(name);
        let frame = common::frame_of(&env);
        if update {
            std::fs::write(&path, &frame).unwrap();
        }
        let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(seed, frame, "{name} is not the current encoding");
        assert_eq!(fuzz_frame(&seed), Ok(1), "{name}");
    }
}

#[test]
fn fuzz_target_handles_every_seed_and_its_prefixes() {
    let seeds = seeds();
    assert!(
        seeds.len() >= 11,
        "expected the seed corpus in {}",
        corpus_dir().display()
    );
    for (path, data) in &seeds {
        let name = path.file_name().unwrap().to_string_lossy();
        let decoded = fuzz_frame(data).unwrap();
        if name.starts_with("valid-") {
            assert!(decoded >= 1, "{name} decodes");
        }
        // Every prefix too: truncations are the commonest malformation.
        for end in 0..data.len() {
            fuzz_frame(&data[..end]).unwrap();
        }
    }
}

#[test]
fn fuzz_target_handles_byte_flips_of_every_seed() {
    for (_, data) in seeds() {
        for i in 0..data.len() {
            for flip in [0x01u8, 0x10, 0x80, 0xFF] {
                let mut d = data.clone();
                d[i] ^= flip;
                fuzz_frame(&d).unwrap();
            }
        }
    }
}

#[test]
fn all_seeds_concatenated_decode_in_one_stream() {
    let stream: Vec<u8> = seeds()
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("valid-")
        })
        .flat_map(|(_, d)| d)
        .collect();
    assert_eq!(fuzz_frame(&stream), Ok(common::samples().len()));
}
