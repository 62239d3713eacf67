//! Decodes arbitrary bytes as a datagram; whatever decodes must re-encode
//! into a datagram that decodes to the same thing (minus per-entry errors,
//! which encoding drops).
#![no_main]

use gatewayd_semtech_udp::{Datagram, MAX_DATAGRAM_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(datagram) = Datagram::decode(data) else {
        return;
    };
    let bytes = datagram.to_bytes();
    // Re-encoding can grow a datagram (padding added to base64, `5` written
    // as `5.0`); past the limit the comparison means nothing.
    if bytes.len() > MAX_DATAGRAM_LEN {
        return;
    }
    let again = Datagram::decode(&bytes).expect("a re-encoded datagram decodes");
    assert_eq!(again, datagram.without_errors());
    assert_eq!(again.to_bytes(), bytes, "encoding is canonical");
});
