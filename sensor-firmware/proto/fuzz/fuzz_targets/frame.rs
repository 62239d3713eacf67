//! Feeds arbitrary bytes to the frame decoder and every decoded payload to
//! `decode_message`; whatever decodes must re-encode stably.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(bug) = gatewayd_sensor_proto::fuzz_frame(data) {
        panic!("{bug}");
    }
});
