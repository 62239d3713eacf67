//! Arbitrary bytes through the network server's uplink path (decode →
//! dedup → identify → MIC → fcnt → decrypt → MAC → reading → downlink).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    harness::run(data);
});
