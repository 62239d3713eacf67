//! Feeds arbitrary bytes from a serial line to the adapter's `Session`
//! (frames, messages, identity, commands, timers); every reading it hands
//! out must be well formed and its queues must stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(bug) = gatewayd_adapter_serial::session::fuzz_session(data) {
        panic!("{bug}");
    }
});
