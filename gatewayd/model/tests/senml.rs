use gatewayd_model::senml::{self, DeviceNaming, Limits, SenmlError};
use gatewayd_model::wire::{self, BatchWriter};
use gatewayd_model::{DeviceId, Measurement, Reading, Timestamp, Transport, Value};
use proptest::prelude::*;

const NOW: Timestamp = Timestamp(1_700_000_000_000_000);

fn default_dev() -> DeviceId {
    DeviceId::new(Transport::Coap, "127.0.0.1").unwrap()
}

fn decode(json: &str) -> Result<Vec<Reading>, SenmlError> {
    let d = default_dev();
    senml::readings_from_json(
        json.as_bytes(),
        &Limits::default(),
        NOW,
        &DeviceNaming::Namespaced {
            transport: Transport::Coap,
            default: &d,
        },
    )
}

#[test]
fn rfc8428_multiple_datapoints_example() {
    // RFC 8428 §5.1.2
    let json = r#"[
      {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","t":0,"u":"V","v":120.1},
      {"n":"current","t":-5,"v":1.2},
      {"n":"current","t":-4,"v":1.3},
      {"n":"current","t":-3,"v":1.4}
    ]"#;
    let readings = decode(json).unwrap();
    assert_eq!(readings.len(), 4);
    assert_eq!(
        readings[0].device.as_str(),
        "coap:urn:dev:ow:10e2073a01080063"
    );
    assert_eq!(readings[0].time, NOW);
    assert_eq!(readings[0].measurements[0].name, "voltage");
    assert_eq!(readings[0].measurements[0].unit.as_deref(), Some("V"));
    assert_eq!(readings[0].measurements[0].value, Some(Value::Float(120.1)));
    assert_eq!(readings[1].time, Timestamp(NOW.0 - 5_000_000));
    assert_eq!(readings[3].measurements[0].value, Some(Value::Float(1.4)));
}

#[test]
fn base_fields_are_applied_and_same_time_groups_into_one_reading() {
    let json = r#"[
      {"bn":"sensor-7/","bt":1.7e9,"bu":"Cel","bv":20,"n":"temperature","v":1.5},
      {"n":"humidity","u":"%RH","v":40},
      {"n":"door","vb":true},
      {"n":"label","vs":"north"},
      {"n":"raw","vd":"AQID"},
      {"n":"energy","u":"J","s":12.5}
    ]"#;
    let readings = decode(json).unwrap();
    assert_eq!(readings.len(), 1);
    let r = &readings[0];
    assert_eq!(r.device.as_str(), "coap:sensor-7");
    assert_eq!(r.time, Timestamp(1_700_000_000_000_000));
    let m = &r.measurements;
    assert_eq!(m[0].value, Some(Value::Float(21.5)));
    assert_eq!(m[0].unit.as_deref(), Some("Cel"));
    assert_eq!(m[1].unit.as_deref(), Some("%RH"));
    assert_eq!(m[1].value, Some(Value::Float(60.0)), "bv is added to v");
    assert_eq!(m[2].value, Some(Value::Bool(true)));
    assert_eq!(m[3].value, Some(Value::String("north".into())));
    assert_eq!(m[4].value, Some(Value::Data(vec![1, 2, 3])));
    assert_eq!(m[5].sum, Some(12.5));
    assert_eq!(m[5].value, None);
}

#[test]
fn records_without_base_name_use_the_default_device() {
    let readings = decode(r#"[{"n":"temp","u":"Cel","v":21}]"#).unwrap();
    assert_eq!(readings[0].device, default_dev());
}

#[test]
fn malformed_packs_get_specific_errors() {
    let cases: &[(&str, &str)] = &[
        ("{", "not valid JSON"),
        (r#"{"n":"a","v":1}"#, "must be an array"),
        ("[]", "empty"),
        (r#"[1]"#, "record 0: a record must be a JSON object"),
        (
            r#"[{"n":"a","v":"hot"}]"#,
            "record 0: field \"v\" must be a number",
        ),
        (r#"[{"n":"a","vb":1}]"#, "field \"vb\" must be a boolean"),
        (r#"[{"n":"a","vs":1}]"#, "field \"vs\" must be a string"),
        (r#"[{"n":"a","vd":"!!"}]"#, "not base64url"),
        (r#"[{"n":"a"}]"#, "has a name but no value"),
        (r#"[{"v":1}]"#, "record has no name"),
        (r#"[{"n":"-a","v":1}]"#, "not a valid SenML name"),
        (r#"[{"n":"a b","v":1}]"#, "not a valid SenML name"),
        (r#"[{"n":"a","v":1,"vs":"x"}]"#, "more than one of"),
        (
            r#"[{"bver":11,"n":"a","v":1}]"#,
            "unsupported SenML version 11",
        ),
        (
            r#"[{"n":"a","v":1,"foo_":1}]"#,
            "\"foo_\" must be understood",
        ),
        (r#"[{"bn":"x"}]"#, "empty"),
    ];
    for (input, expected) in cases {
        let err = decode(input).expect_err(input).to_string();
        assert!(
            err.contains(expected),
            "{input}: got {err:?}, want {expected:?}"
        );
    }
}

#[test]
fn unknown_extension_fields_are_ignored() {
    let readings = decode(r#"[{"n":"a","v":1,"foo":{"x":1}}]"#).unwrap();
    assert_eq!(readings.len(), 1);
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        max_records: 2,
        max_name_len: 8,
        max_string_len: 4,
    };
    let e = senml::decode_json(
        br#"[{"n":"a","v":1},{"n":"a","v":1},{"n":"a","v":1}]"#,
        &limits,
    )
    .unwrap_err();
    assert_eq!(e, SenmlError::TooManyRecords { max: 2 });
    let e = senml::decode_json(br#"[{"n":"abcdefghi","v":1}]"#, &limits).unwrap_err();
    assert!(e.to_string().contains("longer than 8"));
    let e = senml::decode_json(br#"[{"n":"a","vs":"hello"}]"#, &limits).unwrap_err();
    assert!(e.to_string().contains("longer than 4"));
}

#[test]
fn cbor_rfc8428_example_decodes() {
    // RFC 8428 §6: the CBOR rendering of the §5.1.2 example (first records).
    // [{-2: "urn:dev:ow:10e2073a0108006:", -3: 1.276020076001e9, -4: "A",
    //   -1: 5, 0: "voltage", 1: "V", 2: 120.1}, {0: "current", 6: 5, 2: 1.2}]
    let mut e = minicbor::Encoder::new(Vec::new());
    e.array(2).unwrap();
    e.map(7).unwrap();
    e.i8(-2)
        .unwrap()
        .str("urn:dev:ow:10e2073a0108006:")
        .unwrap();
    e.i8(-3).unwrap().f64(1.276020076001e9).unwrap();
    e.i8(-4).unwrap().str("A").unwrap();
    e.i8(-1).unwrap().u8(5).unwrap();
    e.u8(0).unwrap().str("voltage").unwrap();
    e.u8(1).unwrap().str("V").unwrap();
    e.u8(2).unwrap().f64(120.1).unwrap();
    e.map(3).unwrap();
    e.u8(0).unwrap().str("current").unwrap();
    e.u8(6).unwrap().i8(5).unwrap();
    e.u8(2).unwrap().f32(1.2).unwrap();
    let bytes = e.into_writer();
    let d = default_dev();
    let readings = senml::readings_from_cbor(
        &bytes,
        &Limits::default(),
        NOW,
        &DeviceNaming::Namespaced {
            transport: Transport::Coap,
            default: &d,
        },
    )
    .unwrap();
    assert_eq!(readings.len(), 2);
    assert_eq!(readings[0].measurements[0].unit.as_deref(), Some("V"));
    assert_eq!(readings[1].measurements[0].unit.as_deref(), Some("A"));
    assert_eq!(readings[1].time, Timestamp::from_secs_f64(1.276020081001e9));
}

#[test]
fn malformed_cbor_gets_specific_errors() {
    let l = Limits::default();
    assert!(matches!(
        senml::decode_cbor(&[], &l),
        Err(SenmlError::Cbor(_))
    ));
    assert_eq!(senml::decode_cbor(&[0xa0], &l), Err(SenmlError::NotAnArray));
    assert_eq!(senml::decode_cbor(&[0x80], &l), Err(SenmlError::Empty));
    assert!(senml::decode_cbor(&[0x9f, 0xff], &l)
        .unwrap_err()
        .to_string()
        .contains("indefinite"));
    // [ {2: "x"} ] : v must be a number
    let e = senml::decode_cbor(&[0x81, 0xa1, 0x02, 0x61, b'x'], &l).unwrap_err();
    assert!(
        e.to_string().contains("field \"v\" must be a number"),
        "{e}"
    );
    // truncated map
    assert!(senml::decode_cbor(&[0x81, 0xa2, 0x00], &l).is_err());
    // trailing bytes
    assert_eq!(
        senml::decode_cbor(&[0x81, 0xa0, 0x00], &l),
        Err(SenmlError::TrailingBytes)
    );
}

fn arb_reading() -> impl Strategy<Value = Reading> {
    let name = "[a-z][a-z0-9_]{0,10}";
    let value = prop_oneof![
        (-1e12f64..1e12).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        "[ -~]{0,12}".prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Data),
    ];
    let m =
        (name, proptest::option::of("[A-Za-z%]{1,4}"), value).prop_map(|(n, u, v)| Measurement {
            name: n,
            unit: u,
            value: Some(v),
            sum: None,
        });
    (
        "[a-z0-9][a-z0-9._-]{0,15}",
        1_000_000_000_000_000i64..2_000_000_000_000_000,
        proptest::collection::vec(m, 1..5),
    )
        .prop_map(|(dev, t, ms)| {
            Reading::new(
                DeviceId::new(Transport::Serial, &dev).unwrap(),
                Timestamp(t),
                ms,
            )
        })
}

proptest! {
    #[test]
    fn senml_json_round_trips(readings in proptest::collection::vec(arb_reading(), 1..4)) {
        let bytes = senml::encode_json(&readings);
        let back = senml::readings_from_json(&bytes, &Limits::default(), NOW, &DeviceNaming::FullIds).unwrap();
        prop_assert_eq!(merge(&readings), back);
    }

    #[test]
    fn senml_cbor_round_trips(readings in proptest::collection::vec(arb_reading(), 1..4)) {
        let bytes = senml::encode_cbor(&readings);
        let back = senml::readings_from_cbor(&bytes, &Limits::default(), NOW, &DeviceNaming::FullIds).unwrap();
        prop_assert_eq!(merge(&readings), back);
    }

    #[test]
    fn wire_batch_round_trips(readings in proptest::collection::vec(arb_reading(), 0..6)) {
        let mut w = BatchWriter::new("gw-\"1\"");
        let mut bound = w.len_bytes();
        for (i, r) in readings.iter().enumerate() {
            let e = wire::encode_reading(r);
            bound += BatchWriter::cost(&e);
            w.push(u64::MAX - i as u64, &e);
            prop_assert!(w.len_bytes() <= bound);
        }
        let payload = w.finish();
        prop_assert!(payload.len() <= bound);
        let batch = wire::decode_batch(&payload).unwrap();
        prop_assert_eq!(batch.gateway, "gw-\"1\"");
        let expect: Vec<(u64, Reading)> = readings.into_iter().enumerate().map(|(i, r)| (u64::MAX - i as u64, r)).collect();
        prop_assert_eq!(batch.readings, expect);
    }

    #[test]
    fn json_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = senml::decode_json(&bytes, &Limits::default());
    }

    #[test]
    fn cbor_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = senml::decode_cbor(&bytes, &Limits::default());
    }
}

/// Readings that share (device, time) decode as one reading.
fn merge(readings: &[Reading]) -> Vec<Reading> {
    let mut out: Vec<Reading> = Vec::new();
    for r in readings {
        if let Some(o) = out
            .iter_mut()
            .find(|o| o.device == r.device && o.time == r.time)
        {
            o.measurements.extend(r.measurements.iter().cloned());
        } else {
            out.push(r.clone());
        }
    }
    out
}

#[test]
fn wire_rejects_bad_batches() {
    assert!(wire::decode_batch(b"{}").is_err());
    let e = wire::decode_batch(br#"{"v":2,"gw":"g","r":[]}"#).unwrap_err();
    assert!(e.to_string().contains("unsupported wire version 2"));
    let e =
        wire::decode_batch(br#"{"v":1,"gw":"g","r":[{"d":"coap:a","t":1,"e":[{"n":"x","v":1}]}]}"#)
            .unwrap_err();
    assert!(e.to_string().contains("no sequence number"));
    let e = wire::decode_batch(br#"{"v":1,"gw":"g","r":[{"q":1,"d":"bogus","t":1,"e":[]}]}"#)
        .unwrap_err();
    assert!(e.to_string().contains("transport prefix"), "{e}");
    let e = wire::decode_batch(br#"{"v":1,"gw":"g","r":[{"q":1,"d":"coap:a","t":1,"e":[]}]}"#)
        .unwrap_err();
    assert!(e.to_string().contains("no measurements"), "{e}");
}
