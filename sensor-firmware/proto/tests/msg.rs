//! Messages: round trips, golden bytes, the compatibility rule, malformed
//! payloads and command validation.

mod common;

use common::{decode_all, frame_of, frame_of_payload, reading, samples};
use gatewayd_sensor_proto::frame::{FrameDecoder, MAX_FRAME, MAX_PAYLOAD};
use gatewayd_sensor_proto::msg::*;
use gatewayd_sensor_proto::{Bounded, Str};

fn payload_of(env: &Envelope) -> Vec<u8> {
    let mut buf = [0u8; MAX_PAYLOAD];
    encode_message(env, &mut buf).unwrap().to_vec()
}

#[test]
fn every_body_kind_round_trips_through_frame_and_decoder() {
    let mut wire = Vec::new();
    for (_, env) in samples() {
        wire.extend(frame_of(&env));
    }
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    decoder.feed(&wire, |r| got.push(decode_message(r.unwrap()).unwrap()));
    let expected: Vec<Envelope> = samples().into_iter().map(|(_, e)| e).collect();
    assert_eq!(got, expected);
    let tags: Vec<u32> = got.iter().map(|e| e.body.tag()).collect();
    assert_eq!(tags, [0, 1, 2, 3, 3, 3, 3, 4, 4, 5, 6]);
}

#[test]
fn the_body_tag_on_the_wire_is_the_documented_tag() {
    for (name, env) in samples() {
        // version, seq (varint), then the tag; all sample tags are < 128.
        let payload = payload_of(&env);
        let seq_len = if env.seq < 128 { 1 } else { 2 };
        assert_eq!(u32::from(payload[1 + seq_len]), env.body.tag(), "{name}");
    }
}

/// Compatibility test: these bytes are the version-1 wire format. If this
/// fails, the encoding changed and old firmware can no longer talk to the
/// gateway (or the other way round): bump `PROTOCOL_VERSION` instead.
#[test]
fn compatibility_golden_frames_are_unchanged() {
    let identify = Envelope::new(7, Body::Command(Command::Identify { seconds: 5 }));
    let golden: &[u8] = &[
        0x0A, 0x01, 0x07, 0x03, 0x01, 0x05, 0x83, 0x9D, 0xA2, 0x0D, 0x00,
    ];
    assert_eq!(frame_of(&identify), golden);
    assert_eq!(decode_all(golden), vec![Ok(payload_of(&identify))]);

    let reading = Envelope::new(300, Body::Reading(reading()));
    #[rustfmt::skip]
    let golden: &[u8] = &[
        0x04, 0x01, 0xAC, 0x02,                         // version 1, seq 300
        0x0D, 0x0B, b't', b'e', b'm', b'p', b'e', b'r', // tag 0; "temperature"
        b'a', b't', b'u', b'r', b'e',
        0x01,                                           // unit 0 (Cel)
        0x01,                                           // value 0 (F32)
        0x01, 0x0A, 0xAC, 0x41,                         // 21.5f32 = 00 00 AC 41
        0x01, 0xE8, 0x07,                               // Some(1000)
        0x9F, 0x5B, 0xED, 0x67,                         // CRC-32
        0x00,
    ];
    assert_eq!(frame_of(&reading), golden);
    let payload = decode_all(golden).remove(0).unwrap();
    assert_eq!(decode_message(&payload), Ok(reading));
}

#[test]
fn an_unknown_body_tag_is_reported_as_unknown_message_with_its_tag() {
    // version 1, seq 5, tag 200 (varint C8 01), some future fields.
    let payload = [0x01, 0x05, 0xC8, 0x01, 0x2A, 0x00];
    let frame = frame_of_payload(&payload);
    let got = decode_all(&frame).remove(0).unwrap();
    assert_eq!(
        decode_message(&got),
        Err(DecodeError::UnknownMessage { tag: 200 })
    );
    // The first tag after the known ones, without any fields.
    assert_eq!(
        decode_message(&[0x01, 0x00, 0x07]),
        Err(DecodeError::UnknownMessage { tag: 7 })
    );
}

#[test]
fn another_protocol_version_is_refused_naming_both_versions() {
    let mut env = Envelope::new(1, Body::Command(Command::Reboot));
    env.version = 2;
    let err = decode_message(&payload_of(&env)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Version {
            got: 2,
            supported: 1
        }
    );
    let text = err.to_string();
    assert!(text.contains('2') && text.contains('1'), "{text}");
    // The version is checked before anything else, even the tag.
    assert_eq!(
        decode_message(&[0x00, 0xFF]),
        Err(DecodeError::Version {
            got: 0,
            supported: 1
        })
    );
}

#[test]
fn invalid_utf8_in_a_string_is_malformed() {
    let mut payload = payload_of(&Envelope::new(0, Body::Reading(reading())));
    // "temperature" starts at offset 4 (version, seq 0, tag 0, length 11).
    assert_eq!(&payload[3..5], &[0x0B, b't']);
    payload[4] = 0xFF;
    assert_eq!(decode_message(&payload), Err(DecodeError::Malformed));
}

#[test]
fn a_string_over_its_capacity_is_malformed() {
    // Error { code: Internal, detail: 33 bytes } — detail holds 32.
    let mut payload = vec![0x01, 0x00, 0x05, 0x03, 33];
    payload.extend([b'x'; 33]);
    assert_eq!(decode_message(&payload), Err(DecodeError::Malformed));
    payload[4] = 32;
    payload.pop();
    assert!(decode_message(&payload).is_ok());
}

#[test]
fn a_batch_over_its_capacity_is_malformed() {
    let one = payload_of(&Envelope::new(0, Body::Reading(reading())));
    let reading_bytes = &one[3..]; // after version, seq, tag
    let mut payload = vec![0x01, 0x00, 0x01, (MAX_READINGS + 1) as u8];
    for _ in 0..=MAX_READINGS {
        payload.extend(reading_bytes);
    }
    assert_eq!(decode_message(&payload), Err(DecodeError::Malformed));
    // The same with exactly MAX_READINGS decodes.
    let mut payload = vec![0x01, 0x00, 0x01, MAX_READINGS as u8];
    for _ in 0..MAX_READINGS {
        payload.extend(reading_bytes);
    }
    let Body::Readings(batch) = decode_message(&payload).unwrap().body else {
        panic!("a batch")
    };
    assert_eq!(batch.len(), MAX_READINGS);
}

#[test]
fn a_batch_longer_than_its_capacity_cannot_be_built() {
    let mut batch = Bounded::<Reading, MAX_READINGS>::new();
    for _ in 0..MAX_READINGS {
        batch.push(reading()).unwrap();
    }
    assert!(batch.push(reading()).is_err());
}

#[test]
fn truncated_payloads_and_trailing_bytes_are_malformed() {
    for (name, env) in samples() {
        let payload = payload_of(&env);
        for end in 0..payload.len() {
            assert_eq!(
                decode_message(&payload[..end]),
                Err(DecodeError::Malformed),
                "{name} cut at {end}"
            );
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(
            decode_message(&longer),
            Err(DecodeError::Malformed),
            "{name}"
        );
    }
}

#[test]
fn invalid_field_values_are_malformed() {
    // Bool 2, Option tag 2, unknown nested enum variant.
    let bool2 = [0x01, 0x00, 0x00, 0x01, b't', 0x00, 0x02, 0x02, 0x00];
    assert_eq!(decode_message(&bool2), Err(DecodeError::Malformed));
    let option2 = [0x01, 0x00, 0x00, 0x01, b't', 0x00, 0x02, 0x01, 0x02];
    assert_eq!(decode_message(&option2), Err(DecodeError::Malformed));
    let command9 = [0x01, 0x00, 0x03, 0x09];
    assert_eq!(decode_message(&command9), Err(DecodeError::Malformed));
    let seq_too_big = [0x01, 0xFF, 0xFF, 0x7F, 0x03, 0x02];
    assert_eq!(decode_message(&seq_too_big), Err(DecodeError::Malformed));
}

#[test]
fn the_largest_message_fits_max_payload() {
    let name = Str::new(&"n".repeat(24)).unwrap();
    let worst = Reading {
        sensor: name,
        unit: Unit::Other(Str::new("12345678").unwrap()),
        value: Value::I32(i32::MIN),
        time_ms: Some(u32::MAX),
    };
    let batch = Bounded::try_from_iter([worst; MAX_READINGS]).unwrap();
    let env = Envelope::new(u16::MAX, Body::Readings(batch));
    let payload = payload_of(&env);
    assert_eq!(payload.len(), 6 + 47 * MAX_READINGS);
    assert!(payload.len() <= MAX_PAYLOAD);
    let mut scratch = [0u8; MAX_PAYLOAD];
    let mut out = [0u8; MAX_FRAME];
    assert!(write_frame(&env, &mut scratch, &mut out).is_ok());
}

#[test]
fn encode_message_reports_a_buffer_too_small() {
    let env = Envelope::new(1, Body::Reading(reading()));
    let mut buf = [0u8; 4];
    assert_eq!(
        encode_message(&env, &mut buf),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn write_frame_reports_an_output_too_small() {
    let env = Envelope::new(1, Body::Command(Command::Reboot));
    let (mut scratch, mut out) = ([0u8; MAX_PAYLOAD], [0u8; 4]);
    assert_eq!(
        write_frame(&env, &mut scratch, &mut out),
        Err(EncodeError::Frame(
            gatewayd_sensor_proto::frame::FrameError::BufferTooSmall
        ))
    );
}

#[test]
fn command_validation_enforces_the_documented_limits() {
    use Command::*;
    assert_eq!(
        SetSampleInterval { ms: 99 }.validate(),
        Err(ErrorCode::InvalidArgument)
    );
    assert_eq!(SetSampleInterval { ms: 100 }.validate(), Ok(()));
    assert_eq!(SetSampleInterval { ms: 3_600_000 }.validate(), Ok(()));
    assert_eq!(
        SetSampleInterval { ms: 3_600_001 }.validate(),
        Err(ErrorCode::InvalidArgument)
    );
    assert_eq!(Identify { seconds: 60 }.validate(), Ok(()));
    assert_eq!(
        Identify { seconds: 61 }.validate(),
        Err(ErrorCode::InvalidArgument)
    );
    assert_eq!(Reboot.validate(), Ok(()));
    assert_eq!(RequestDiagnostics.validate(), Ok(()));
}

#[test]
fn units_map_to_their_senml_symbols_and_back() {
    let units = [
        (Unit::Celsius, "Cel"),
        (Unit::RelativeHumidity, "%RH"),
        (Unit::Pascal, "Pa"),
        (Unit::Volt, "V"),
        (Unit::Ampere, "A"),
        (Unit::Watt, "W"),
        (Unit::Lux, "lx"),
        (Unit::MetersPerSecondSquared, "m/s2"),
        (Unit::Ppm, "ppm"),
        (Unit::Count, "count"),
    ];
    for (unit, symbol) in units {
        assert_eq!(unit.senml(), symbol);
        assert_eq!(Unit::from_senml(symbol), Some(unit));
    }
    assert_eq!(
        Unit::from_senml("dB").map(|u| u.senml().to_owned()),
        Some("dB".into())
    );
    assert_eq!(Unit::from_senml("much-too-long"), None);
}

#[test]
fn str_refuses_text_over_its_capacity() {
    assert!(Str::<4>::new("abcd").is_ok());
    assert!(Str::<4>::new("abcde").is_err());
    assert_eq!(Str::<4>::new("ab").unwrap(), "ab");
    assert_eq!(format!("{:?}", Str::<4>::new("ab").unwrap()), "\"ab\"");
}

#[test]
fn decode_errors_display_a_description() {
    assert_eq!(
        DecodeError::UnknownMessage { tag: 200 }.to_string(),
        "unknown message tag 200"
    );
    assert_eq!(DecodeError::Malformed.to_string(), "malformed message");
}
