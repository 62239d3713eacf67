//! Property tests: framing round trips, no panics on arbitrary input,
//! resynchronization after arbitrary garbage.

mod common;

use common::{decode_all, frame_of, frame_of_payload, samples};
use gatewayd_sensor_proto::frame::{FrameDecoder, MAX_PAYLOAD};
use gatewayd_sensor_proto::msg::decode_message;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_payload_round_trips_through_encode_frame_and_the_decoder(
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
    ) {
        let frame = frame_of_payload(&payload);
        prop_assert_eq!(frame.iter().filter(|&&b| b == 0).count(), 1);
        prop_assert_eq!(frame.last(), Some(&0));
        prop_assert_eq!(decode_all(&frame), vec![Ok(payload)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_decode_message(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut decoder = FrameDecoder::new();
        decoder.feed(&bytes, |r| {
            if let Ok(payload) = r {
                let _ = decode_message(payload);
            }
        });
        let _ = decode_message(&bytes);
        prop_assert!(gatewayd_sensor_proto::fuzz_frame(&bytes).is_ok());
    }

    #[test]
    fn arbitrary_payloads_with_a_valid_crc_never_panic_decode_message(
        version_one in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut payload = vec![if version_one { 1 } else { 2 }];
        payload.extend(rest);
        prop_assert!(gatewayd_sensor_proto::fuzz_frame(&frame_of_payload(&payload)).is_ok());
    }

    #[test]
    fn a_valid_frame_after_arbitrary_garbage_is_always_decoded(
        garbage in proptest::collection::vec(any::<u8>(), 0..2048),
        which in 0..11usize,
    ) {
        let (_, env) = samples().swap_remove(which);
        let mut wire = garbage;
        wire.push(0x00);
        wire.extend(frame_of(&env));
        let mut decoder = FrameDecoder::new();
        let mut last = None;
        decoder.feed(&wire, |r| last = Some(r.map(decode_message)));
        prop_assert_eq!(last, Some(Ok(Ok(env))));
    }
}
