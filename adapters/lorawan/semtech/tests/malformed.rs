//! Malformed input: every way a datagram can be wrong gives a specific
//! error, and never a panic or an error quoting much of the input.

use gatewayd_semtech_udp::{
    decode, DataRateError, Error, FieldError, Identifier, Packet, PushBody, MAX_DATAGRAM_LEN,
    MAX_QUOTED, MAX_RXPK,
};

const EUI: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn push(json: &str) -> Vec<u8> {
    let mut d = vec![2, 0xAB, 0xCD, 0];
    d.extend_from_slice(&EUI);
    d.extend_from_slice(json.as_bytes());
    d
}

fn pull_resp(json: &str) -> Vec<u8> {
    let mut d = vec![2, 0xAB, 0xCD, 3];
    d.extend_from_slice(json.as_bytes());
    d
}

fn body(d: &[u8]) -> PushBody {
    match decode(d) {
        Ok(Packet::PushData { body, .. }) => body,
        other => panic!("{other:?}"),
    }
}

const GOOD_RXPK: &str = r#"{"tmst":1,"freq":868.1,"chan":0,"rfch":0,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-40,"lsnr":9.0,"size":3,"data":"AQID"}"#;

/// GOOD_RXPK with `field` replaced by `value` (raw JSON).
fn rxpk_with(field: &str, value: &str) -> String {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(GOOD_RXPK).unwrap();
    v.insert(field.into(), serde_json::from_str(value).unwrap());
    serde_json::to_string(&v).unwrap()
}

/// GOOD_RXPK without `field`.
fn rxpk_without(field: &str) -> String {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(GOOD_RXPK).unwrap();
    v.remove(field);
    serde_json::to_string(&v).unwrap()
}

/// The error of the second of two rxpk, the first being valid (and kept).
fn second_rxpk_error(bad: &str) -> FieldError {
    let b = body(&push(&format!(r#"{{"rxpk":[{GOOD_RXPK},{bad}]}}"#)));
    assert_eq!(b.rxpk.len(), 2);
    assert_eq!(
        b.rxpk[0].as_ref().unwrap().data,
        [1, 2, 3],
        "the valid rxpk survives"
    );
    let e = b.rxpk[1].clone().unwrap_err();
    assert_eq!(e.index, 1);
    e.error
}

#[test]
fn empty_and_short_datagrams_are_too_short() {
    assert_eq!(decode(&[]), Err(Error::TooShort { len: 0, needed: 4 }));
    for len in 1..4 {
        assert_eq!(
            decode(&[2, 0, 0][..len]),
            Err(Error::TooShort { len, needed: 4 })
        );
    }
    // 4..=11 bytes: enough for PUSH_ACK/PULL_ACK, a truncated EUI otherwise.
    let full = [2, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    for id in [0u8, 2, 5] {
        for len in 4..12 {
            let mut d = full[..len].to_vec();
            d[3] = id;
            assert_eq!(
                decode(&d),
                Err(Error::TooShort { len, needed: 12 }),
                "id {id} len {len}"
            );
        }
    }
}

#[test]
fn wrong_version_and_unknown_identifier_are_named() {
    for v in [0u8, 3, 0xff] {
        assert_eq!(decode(&[v, 0, 0, 1]), Err(Error::UnknownVersion(v)));
    }
    for id in [6u8, 0x10, 0xff] {
        assert_eq!(decode(&[2, 0, 0, id]), Err(Error::UnknownIdentifier(id)));
    }
    let mut tx_ack_v1 = vec![1, 0, 0, 5];
    tx_ack_v1.extend_from_slice(&EUI);
    assert_eq!(
        decode(&tx_ack_v1),
        Err(Error::NotInVersion {
            identifier: Identifier::TxAck,
            version: 1
        })
    );
}

#[test]
fn bodyless_packets_refuse_trailing_bytes_but_not_trailing_nuls() {
    assert_eq!(
        decode(&[2, 0, 0, 1, b'{', b'}']),
        Err(Error::TrailingBytes {
            identifier: Identifier::PushAck,
            extra: 2
        })
    );
    assert_eq!(
        decode(&[2, 0, 0, 4, 7]),
        Err(Error::TrailingBytes {
            identifier: Identifier::PullAck,
            extra: 1
        })
    );
    let mut pull = vec![2, 0, 0, 2];
    pull.extend_from_slice(&EUI);
    pull.push(b'x');
    assert_eq!(
        decode(&pull),
        Err(Error::TrailingBytes {
            identifier: Identifier::PullData,
            extra: 1
        })
    );
    pull.pop();
    pull.extend_from_slice(&[0, 0]);
    assert!(decode(&pull).is_ok());
    assert!(decode(&[2, 0, 0, 1, 0]).is_ok());
    // An EUI ending in zero bytes is not mistaken for NUL padding.
    let d = [2, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        decode(&d).unwrap().gateway().unwrap().0,
        [1, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn missing_bodies_are_refused() {
    assert_eq!(
        decode(&push("")),
        Err(Error::MissingBody(Identifier::PushData))
    );
    assert_eq!(
        decode(&push(" \n\0")),
        Err(Error::MissingBody(Identifier::PushData))
    );
    assert_eq!(
        decode(&pull_resp("")),
        Err(Error::MissingBody(Identifier::PullResp))
    );
}

#[test]
fn invalid_json_is_a_json_error() {
    for bad in [
        "{",
        "}",
        "{\"rxpk\":[}",
        "nul",
        "{\"stat\":?}",
        "{} {}",
        "{}x",
        "{'a':1}",
        "\u{feff}{}",
    ] {
        assert!(matches!(decode(&push(bad)), Err(Error::Json(_))), "{bad:?}");
        assert!(
            matches!(decode(&pull_resp(bad)), Err(Error::Json(_))),
            "{bad:?}"
        );
    }
    // lora_pkt_fwd writes `"stat":?` for an unknown CRC status: not JSON.
    let d = push(r#"{"rxpk":[{"tmst":1,"stat":?}]}"#);
    assert!(matches!(decode(&d), Err(Error::Json(_))));
}

#[test]
fn json_body_must_be_utf8() {
    let mut d = push("{\"stat\":{\"time\":\"");
    d.extend_from_slice(&[0xff, 0xfe]);
    d.extend_from_slice(b"\"}}");
    assert_eq!(decode(&d), Err(Error::NotUtf8 { valid_up_to: 17 }));
}

#[test]
fn json_of_the_wrong_shape_is_refused() {
    for bad in [
        "[]",
        "1",
        "\"rxpk\"",
        "null",
        r#"{"rxpk":{}}"#,
        r#"{"rxpk":"x"}"#,
        r#"{"rxpk":[],"rxpk":[]}"#,
        // A struct as an array of its values is not an object.
        r#"[[], null]"#,
    ] {
        assert!(matches!(decode(&push(bad)), Err(Error::Json(_))), "{bad:?}");
    }
    for bad in [
        r#"{}"#,
        r#"{"txpk":[]}"#,
        r#"{"txpk":1}"#,
        r#"{"txpk":{"freq":"868.1"}}"#,
    ] {
        assert!(
            matches!(decode(&pull_resp(bad)), Err(Error::Json(_))),
            "{bad:?}"
        );
    }
    let mut tx_ack = vec![2, 0, 0, 5];
    tx_ack.extend_from_slice(&EUI);
    for bad in [r#"{}"#, r#"{"txpk_ack":[]}"#, r#"{"txpk_ack":{"error":1}}"#] {
        let mut d = tx_ack.clone();
        d.extend_from_slice(bad.as_bytes());
        assert!(matches!(decode(&d), Err(Error::Json(_))), "{bad:?}");
    }
    // Not fatal for the datagram: a wrong rxpk entry or stat.
    let b = body(&push(r#"{"rxpk":[1,[2],null,{}],"stat":[]}"#));
    assert_eq!(b.rxpk.len(), 4);
    assert!(b
        .rxpk
        .iter()
        .all(|r| matches!(r, Err(e) if matches!(e.error, FieldError::Json(_)))));
    assert!(matches!(b.stat_error(), Some(FieldError::Json(_))));
    // Unknown fields are fine; `rxpk: null` is no rxpk.
    let b = body(&push(
        r#"{"rxpk":null,"foo":{"bar":[1,2]},"stat":{"xyz":1}}"#,
    ));
    assert!(b.rxpk.is_empty());
    assert!(b.stat().is_some());
}

#[test]
fn base64_garbage_loses_only_its_rxpk() {
    for data in ["!!!!", "AQI", "A", "AQID=", "-_-_", "AQ ID"] {
        let e = second_rxpk_error(&rxpk_with("data", &format!("\"{data}\"")));
        assert!(
            matches!(e, FieldError::Base64(_) | FieldError::SizeMismatch { .. }),
            "{data}: {e}"
        );
    }
}

#[test]
fn size_mismatch_in_one_of_two_rxpk_keeps_the_other() {
    let e = second_rxpk_error(&rxpk_with("size", "4"));
    assert_eq!(
        e,
        FieldError::SizeMismatch {
            declared: 4,
            actual: 3
        }
    );
    assert_eq!(e.to_string(), "size is 4 but data holds 3 bytes");
}

#[test]
fn each_rxpk_field_is_checked() {
    use FieldError::*;
    assert!(matches!(
        second_rxpk_error(&rxpk_with("stat", "2")),
        CrcStatus(2)
    ));
    assert!(matches!(
        second_rxpk_error(&rxpk_with("modu", "\"LR-FHSS\"")),
        UnknownModulation(_)
    ));
    assert_eq!(
        second_rxpk_error(&rxpk_with("datr", "\"SF?BW125\"")),
        DataRate(DataRateError::Format)
    );
    assert_eq!(
        second_rxpk_error(&rxpk_with("datr", "\"SF13BW125\"")),
        DataRate(DataRateError::SpreadingFactor(13))
    );
    assert_eq!(
        second_rxpk_error(&rxpk_with("datr", "\"SF7BW812\"")),
        DataRate(DataRateError::Bandwidth(812))
    );
    assert_eq!(
        second_rxpk_error(&rxpk_with("datr", "50000")),
        DataRate(DataRateError::LoraNotString)
    );
    let fsk = rxpk_with("modu", "\"FSK\"");
    let mut v: serde_json::Value = serde_json::from_str(&fsk).unwrap();
    v["datr"] = "SF7BW125".into();
    assert_eq!(
        second_rxpk_error(&v.to_string()),
        DataRate(DataRateError::FskNotNumber)
    );
    for bad in ["-5", "0", "1.5", "4294967296"] {
        v["datr"] = serde_json::from_str(bad).unwrap();
        assert_eq!(
            second_rxpk_error(&v.to_string()),
            DataRate(DataRateError::FskRate),
            "{bad}"
        );
    }
    for bad in ["0", "-868.1", "5000"] {
        assert!(
            matches!(second_rxpk_error(&rxpk_with("freq", bad)), Frequency(_)),
            "{bad}"
        );
    }
    for (field, value) in [
        ("tmst", "-1"),
        ("tmst", "4294967296"),
        ("tmst", "1.5"),
        ("tmst", "\"1\""),
        ("chan", "256"),
        ("rssi", "-35.5"),
        ("freq", "\"868.1\""),
        ("data", "3"),
        ("rsig", "{}"),
        ("rsig", "[{\"ant\":0}]"),
    ] {
        assert!(
            matches!(second_rxpk_error(&rxpk_with(field, value)), Json(_)),
            "{field}: {value}"
        );
    }
    for field in [
        "tmst", "freq", "chan", "rfch", "stat", "modu", "datr", "size", "data",
    ] {
        let e = second_rxpk_error(&rxpk_without(field));
        assert!(matches!(&e, Json(m) if m.contains(field)), "{field}: {e}");
    }
    // Optional: time, tmms, codr, rssi, lsnr, rsig.
    for field in ["codr", "rssi", "lsnr"] {
        let b = body(&push(&format!(r#"{{"rxpk":[{}]}}"#, rxpk_without(field))));
        assert!(b.is_clean(), "{field}");
    }
}

#[test]
fn txpk_content_errors_fail_the_pull_resp() {
    let good = r#"{"txpk":{"imme":true,"freq":869.525,"rfch":0,"powe":14,"modu":"LORA","datr":"SF9BW125","codr":"4/5","ipol":true,"size":2,"data":"AQI="}}"#;
    assert!(decode(&pull_resp(good)).is_ok());
    let bad_size = good.replace("\"size\":2", "\"size\":3");
    assert_eq!(
        decode(&pull_resp(&bad_size)),
        Err(Error::TxPk(FieldError::SizeMismatch {
            declared: 3,
            actual: 2
        }))
    );
    let bad_modu = good.replace("LORA", "GFSK");
    assert!(matches!(
        decode(&pull_resp(&bad_modu)),
        Err(Error::TxPk(FieldError::UnknownModulation(_)))
    ));
    let bad_data = good.replace("AQI=", "A");
    assert!(matches!(
        decode(&pull_resp(&bad_data)),
        Err(Error::TxPk(FieldError::Base64(_)))
    ));
    // `size` is optional in a txpk.
    let no_size = good.replace("\"size\":2,", "");
    assert!(decode(&pull_resp(&no_size)).is_ok());
}

#[test]
fn huge_rxpk_arrays_are_refused() {
    let many = format!(r#"{{"rxpk":[{}]}}"#, vec!["{}"; MAX_RXPK + 1].join(","));
    assert_eq!(decode(&push(&many)), Err(Error::TooManyRxPk(MAX_RXPK + 1)));
    // Valid entries take the fast path; the limit holds there too.
    let valid = format!(
        r#"{{"rxpk":[{}]}}"#,
        vec![GOOD_RXPK; MAX_RXPK + 1].join(",")
    );
    assert!(valid.len() > MAX_DATAGRAM_LEN, "cannot even be sent");
    let limit = format!(r#"{{"rxpk":[{}]}}"#, vec!["1"; MAX_RXPK].join(","));
    assert_eq!(body(&push(&limit)).rxpk.len(), MAX_RXPK);
    // As many tiny entries as fit in a datagram.
    let n = (MAX_DATAGRAM_LEN - 12 - 12) / 2;
    let tiny = format!(r#"{{"rxpk":[{}]}}"#, vec!["0"; n].join(","));
    assert!(tiny.len() + 12 <= MAX_DATAGRAM_LEN);
    assert_eq!(decode(&push(&tiny)), Err(Error::TooManyRxPk(n)));
}

#[test]
fn oversized_datagrams_are_refused() {
    let d = vec![2u8; MAX_DATAGRAM_LEN + 1];
    assert_eq!(decode(&d), Err(Error::TooLong(MAX_DATAGRAM_LEN + 1)));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // serde_json skips unknown values without recursing: fine, and ignored.
    let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(body(&push(&deep)), PushBody::default());
    let deep_stat = format!(r#"{{"stat":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(decode(&push(&deep_stat)), Err(Error::Json(_))));
    let deep_rxpk = format!(r#"{{"rxpk":[{}{}]}}"#, "[".repeat(5_000), "]".repeat(5_000));
    assert!(matches!(decode(&push(&deep_rxpk)), Err(Error::Json(_))));
}

#[test]
fn errors_quote_only_a_short_prefix_of_the_input() {
    let long = "A".repeat(30_000);
    let cases = [
        push(&format!(r#"{{"rxpk":"{long}"}}"#)),
        push(&format!(r#"{{"{long}":1"#)),
        pull_resp(&format!(r#"{{"txpk":{{"freq":"{long}"}}}}"#)),
        pull_resp(&format!(
            r#"{{"txpk":{{"imme":true,"freq":868.1,"rfch":0,"modu":"{long}","datr":"SF7BW125","data":""}}}}"#
        )),
    ];
    for d in &cases {
        let e = decode(d).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            shown.len() < 2 * MAX_QUOTED + 100,
            "{} bytes: {}",
            shown.len(),
            &shown[..200.min(shown.len())]
        );
    }
    let b = body(&push(&format!(
        r#"{{"rxpk":[{}],"stat":{{"alti":"{long}"}}}}"#,
        rxpk_with("modu", &format!("\"{long}\""))
    )));
    let e = b.rxpk[0].as_ref().unwrap_err();
    assert!(format!("{e} {e:?}").len() < 2 * MAX_QUOTED + 100);
    let e = b.stat_error().unwrap();
    assert!(format!("{e} {e:?}").len() < 2 * MAX_QUOTED + 100);
}
