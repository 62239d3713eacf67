//! Framing: CRC, COBS vectors, the streaming decoder's error and resync rules.

mod common;

use common::{decode_all, frame_of_payload};
use gatewayd_sensor_proto::frame::*;

fn cobs(input: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; cobs_max_len(input.len())];
    let n = cobs_encode(input, &mut out).unwrap();
    out.truncate(n);
    out
}

fn uncobs(input: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = input.to_vec();
    let n = cobs_decode_in_place(&mut out)?;
    out.truncate(n);
    Ok(out)
}

#[test]
fn crc32_of_the_check_string_is_the_ieee_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn cobs_encodes_the_known_vectors() {
    let vectors: &[(&[u8], &[u8])] = &[
        (&[], &[0x01]),
        (&[0x00], &[0x01, 0x01]),
        (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
        (&[0x00, 0x11, 0x00], &[0x01, 0x02, 0x11, 0x01]),
        (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
        (&[0x11, 0x22, 0x33, 0x44], &[0x05, 0x11, 0x22, 0x33, 0x44]),
        (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(cobs(plain), *encoded, "encoding {plain:02x?}");
        assert_eq!(uncobs(encoded).unwrap(), *plain, "decoding {encoded:02x?}");
    }
}

#[test]
fn cobs_254_non_zero_bytes_are_one_full_block_without_a_trailing_code() {
    let plain: Vec<u8> = (1..=254).collect();
    let mut expected = vec![0xFF];
    expected.extend(&plain);
    assert_eq!(cobs(&plain), expected);
    assert_eq!(uncobs(&expected).unwrap(), plain);
    // The variant with an explicit empty last block decodes the same.
    expected.push(0x01);
    assert_eq!(uncobs(&expected).unwrap(), plain);
}

#[test]
fn cobs_255_non_zero_bytes_split_into_a_full_block_and_a_one_byte_block() {
    let plain: Vec<u8> = (1..=255).collect();
    let mut expected = vec![0xFF];
    expected.extend(1..=254u8);
    expected.extend([0x02, 0xFF]);
    assert_eq!(cobs(&plain), expected);
    assert_eq!(uncobs(&expected).unwrap(), plain);
}

#[test]
fn cobs_zero_then_254_non_zero_bytes() {
    let mut plain = vec![0x00];
    plain.extend(1..=254u8);
    let mut expected = vec![0x01, 0xFF];
    expected.extend(1..=254u8);
    assert_eq!(cobs(&plain), expected);
    assert_eq!(uncobs(&expected).unwrap(), plain);
}

#[test]
fn cobs_rejects_a_code_promising_more_bytes_than_present_a_zero_or_nothing() {
    assert_eq!(uncobs(&[0x05, 0x11, 0x22]), Err(FrameError::Cobs));
    assert_eq!(uncobs(&[0x02, 0x00]), Err(FrameError::Cobs));
    assert_eq!(uncobs(&[0x00]), Err(FrameError::Cobs));
    assert_eq!(uncobs(&[]), Err(FrameError::Cobs));
}

#[test]
fn cobs_decode_needs_an_output_as_long_as_the_input() {
    let mut out = [0u8; 2];
    assert_eq!(
        cobs_decode(&[0x03, 0x11, 0x22], &mut out),
        Err(FrameError::BufferTooSmall)
    );
    let mut out = [0u8; 3];
    assert_eq!(cobs_decode(&[0x03, 0x11, 0x22], &mut out), Ok(2));
    assert_eq!(&out[..2], &[0x11, 0x22]);
}

#[test]
fn a_frame_is_cobs_of_payload_and_little_endian_crc_then_a_zero() {
    let frame = frame_of_payload(b"123456789");
    let mut expected = vec![0x0E];
    expected.extend(b"123456789");
    expected.extend([0x26, 0x39, 0xF4, 0xCB, 0x00]);
    assert_eq!(frame, expected);
}

#[test]
fn encode_frame_refuses_a_payload_over_the_maximum() {
    let mut out = [0u8; 2 * MAX_FRAME];
    assert_eq!(
        encode_frame(&[1u8; MAX_PAYLOAD + 1], &mut out),
        Err(FrameError::PayloadTooLarge)
    );
}

#[test]
fn encode_frame_refuses_an_output_too_small_at_every_length() {
    let payload = [0u8, 1, 2, 3, 0, 5];
    let full = frame_of_payload(&payload);
    for len in 0..full.len() {
        let mut out = vec![0u8; len];
        assert_eq!(
            encode_frame(&payload, &mut out),
            Err(FrameError::BufferTooSmall),
            "{len}"
        );
    }
}

#[test]
fn an_empty_payload_is_a_valid_frame() {
    assert_eq!(decode_all(&frame_of_payload(&[])), vec![Ok(vec![])]);
}

#[test]
fn back_to_back_frames_with_leading_delimiters_all_decode() {
    let mut wire = vec![0x00];
    wire.extend(frame_of_payload(b"one"));
    wire.push(0x00);
    wire.extend(frame_of_payload(b"two"));
    wire.extend([0x00, 0x00, 0x00]);
    wire.extend(frame_of_payload(b"three"));
    assert_eq!(
        decode_all(&wire),
        vec![
            Ok(b"one".to_vec()),
            Ok(b"two".to_vec()),
            Ok(b"three".to_vec())
        ]
    );
}

#[test]
fn garbage_before_a_frame_is_skipped_and_the_frame_decodes() {
    let mut wire = vec![0x13, 0x37, 0xFF, 0x42, 0x00];
    wire.extend(frame_of_payload(b"payload"));
    let got = decode_all(&wire);
    assert_eq!(got.last(), Some(&Ok(b"payload".to_vec())));
    assert_eq!(got.len(), 2, "the garbage is reported once: {got:?}");
    assert!(got[0].is_err());
}

#[test]
fn a_truncated_frame_is_an_error_and_the_next_frame_decodes() {
    let full = frame_of_payload(b"hello, sensor");
    let mut wire = full[..full.len() - 4].to_vec();
    wire.push(0x00);
    wire.extend(frame_of_payload(b"next"));
    let got = decode_all(&wire);
    assert!(
        matches!(got[0], Err(FrameError::Crc | FrameError::Cobs)),
        "{got:?}"
    );
    assert_eq!(got[1], Ok(b"next".to_vec()));
}

#[test]
fn a_frame_shorter_than_its_crc_is_too_short() {
    assert_eq!(
        decode_all(&[0x04, 0x11, 0x22, 0x33, 0x00]),
        vec![Err(FrameError::TooShort)]
    );
}

#[test]
fn invalid_cobs_is_a_cobs_error() {
    assert_eq!(
        decode_all(&[0x09, 0x11, 0x22, 0x00]),
        vec![Err(FrameError::Cobs)]
    );
}

#[test]
fn a_flipped_bit_is_a_crc_error() {
    let payload = b"reading 21.5 Cel";
    let frame = frame_of_payload(payload);
    // The payload has no zero, so it is the first COBS block: bytes
    // 1..=len. Flip one bit of each (never producing a zero) in turn.
    assert!(usize::from(frame[0]) > payload.len());
    for i in 1..=payload.len() {
        let mut bad = frame.clone();
        bad[i] ^= 0x04;
        assert_eq!(
            decode_all(&bad),
            vec![Err(FrameError::Crc)],
            "bit flipped in byte {i}"
        );
    }
}

#[test]
fn an_over_long_frame_is_reported_once_then_the_next_frame_decodes() {
    let mut d = Decoder::<16>::new();
    let mut got = Vec::new();
    let mut wire = vec![0x55u8; 100];
    wire.push(0x00);
    wire.extend(frame_of_payload(b"fits"));
    d.feed(&wire, |r| got.push(r.map(<[u8]>::to_vec)));
    assert_eq!(got, vec![Err(FrameError::TooLong), Ok(b"fits".to_vec())]);
    assert_eq!((d.frames(), d.errors()), (1, 1));
}

#[test]
fn a_frame_exactly_filling_the_buffer_decodes() {
    let frame = frame_of_payload(&[7u8; 11]); // 1 + 11 + 4 encoded bytes
    assert_eq!(frame.len(), 17);
    let mut d = Decoder::<16>::new();
    let mut got = Vec::new();
    d.feed(&frame, |r| got.push(r.map(<[u8]>::to_vec)));
    assert_eq!(got, vec![Ok(vec![7u8; 11])]);
}

#[test]
fn the_decoder_counts_frames_and_errors() {
    let mut d = FrameDecoder::new();
    let mut wire = frame_of_payload(b"a");
    wire.extend([0x09, 0x00, 0x00]);
    wire.extend(frame_of_payload(b"b"));
    d.feed(&wire, |_| {});
    assert_eq!((d.frames(), d.errors()), (2, 1));
}

#[test]
fn reset_drops_a_partial_frame() {
    let mut d = FrameDecoder::new();
    let frame = frame_of_payload(b"abc");
    d.feed(&frame[..3], |_| panic!("nothing yet"));
    assert_eq!(d.pending(), 3);
    d.reset();
    let mut got = Vec::new();
    d.feed(&frame, |r| got.push(r.map(<[u8]>::to_vec)));
    assert_eq!(got, vec![Ok(b"abc".to_vec())]);
}

#[test]
fn the_largest_payload_fits_max_frame_even_without_any_zero() {
    // The worst case for COBS: no zero anywhere (CRC bytes chosen non-zero).
    let mut payload = [0xA5u8; MAX_PAYLOAD];
    // Adjust the last byte until the CRC has no zero byte.
    for b in 1..=255u8 {
        payload[MAX_PAYLOAD - 1] = b;
        if !crc32(&payload).to_le_bytes().contains(&0) {
            break;
        }
    }
    let frame = frame_of_payload(&payload);
    assert_eq!(frame.len(), MAX_FRAME);
    assert_eq!(decode_all(&frame), vec![Ok(payload.to_vec())]);
}

#[test]
fn frame_errors_display_a_description() {
    assert_eq!(FrameError::Crc.to_string(), "CRC mismatch");
    assert!(FrameError::TooLong.to_string().contains("longer"));
}
