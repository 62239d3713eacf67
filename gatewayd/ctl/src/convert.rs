//! Conversions between the command line, D-Bus variants and JSON.
//!
//! * [`infer_value`]: a `config set` VALUE typed by its form (`b`, `x`, `d`,
//!   `av`, `a{sv}`, `s`).
//! * [`to_json`]: any D-Bus value as JSON, for `--json` and for display.

use std::collections::HashMap;

use serde_json::{Map, Number, Value as Json};
use zbus::zvariant::Value;

/// A VALUE that cannot be turned into a D-Bus value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// Types a command-line VALUE by its form: `true`/`false` → `b`, an integer
/// → `x`, a float → `d`, a JSON array → `av`, a JSON object → `a{sv}`
/// (recursively), anything else → `s`. With `force_string`, always `s`.
pub fn infer_value(text: &str, force_string: bool) -> Result<Value<'static>, ValueError> {
    if force_string {
        return Ok(Value::from(text.to_string()));
    }
    match text {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if looks_like_integer(text) {
        return text.parse::<i64>().map(Value::I64).map_err(|_| {
            ValueError(format!(
                "{text} is out of range for a 64-bit integer (use --string to send it as a string)"
            ))
        });
    }
    if looks_like_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            if f.is_finite() {
                return Ok(Value::F64(f));
            }
        }
        return Err(ValueError(format!(
            "{text} is out of range for a float (use --string to send it as a string)"
        )));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let json: Json = serde_json::from_str(text).map_err(|e| {
            ValueError(format!(
                "the value looks like JSON but is not valid JSON ({e}); use --string to send it as a string"
            ))
        })?;
        return json_to_value(&json);
    }
    Ok(Value::from(text.to_string()))
}

/// `[+-]?[0-9]+`
fn looks_like_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[+-]?(D+.D*|.D+|D+)([eE][+-]?D+)?` with a `.` or an exponent (so `inf`,
/// `nan` and `1.` style oddities other than these stay strings).
fn looks_like_float(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = all_digits(int_part)
        && frac_part.is_none_or(all_digits)
        && (!int_part.is_empty() || frac_part.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let d = e.strip_prefix(['+', '-']).unwrap_or(e);
        !d.is_empty() && all_digits(d)
    });
    mantissa_ok && exponent_ok && (frac_part.is_some() || exponent.is_some())
}

/// JSON → D-Bus: string `s`, integer `x` (`t` above `i64::MAX`), other
/// numbers `d`, boolean `b`, array `av`, object `a{sv}`. `null` has no D-Bus
/// form and is refused.
pub fn json_to_value(json: &Json) -> Result<Value<'static>, ValueError> {
    Ok(match json {
        Json::Null => {
            return Err(ValueError(
                "null cannot be sent over D-Bus (to go back to the default, use `config unset`)"
                    .into(),
            ))
        }
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::I64(i)
            } else if let Some(u) = n.as_u64() {
                Value::U64(u)
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() => Value::F64(f),
                    _ => return Err(ValueError(format!("{n} is not a representable number"))),
                }
            }
        }
        Json::String(s) => Value::from(s.clone()),
        Json::Array(items) => {
            let values = items
                .iter()
                .map(json_to_value)
                .collect::<Result<Vec<_>, _>>()?;
            Value::from(values)
        }
        Json::Object(map) => {
            let mut dict = HashMap::with_capacity(map.len());
            for (k, v) in map {
                dict.insert(k.clone(), json_to_value(v)?);
            }
            Value::from(dict)
        }
    })
}

/// D-Bus → JSON. Integers of every width become JSON integers, `d` a JSON
/// number (`null` when not finite), strings, object paths and signatures JSON
/// strings, variants their content, arrays (including `ay`) and structures
/// JSON arrays, dictionaries JSON objects (non-string keys as their JSON text).
pub fn to_json(value: &Value<'_>) -> Json {
    match value {
        Value::U8(v) => Json::from(*v),
        Value::Bool(v) => Json::Bool(*v),
        Value::I16(v) => Json::from(*v),
        Value::U16(v) => Json::from(*v),
        Value::I32(v) => Json::from(*v),
        Value::U32(v) => Json::from(*v),
        Value::I64(v) => Json::from(*v),
        Value::U64(v) => Json::from(*v),
        Value::F64(v) => Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.as_str().to_string()),
        Value::Signature(s) => Json::String(s.to_string()),
        Value::ObjectPath(p) => Json::String(p.as_str().to_string()),
        Value::Value(inner) => to_json(inner),
        Value::Array(array) => Json::Array(array.iter().map(to_json).collect()),
        Value::Dict(dict) => {
            let mut map = Map::new();
            for (k, v) in dict.iter() {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, to_json(v));
            }
            Json::Object(map)
        }
        Value::Structure(s) => Json::Array(s.fields().iter().map(to_json).collect()),
        #[cfg(unix)]
        Value::Fd(fd) => Json::String(format!("fd:{fd}")),
        #[allow(unreachable_patterns)]
        _ => Json::Null,
    }
}

/// A JSON value for humans: strings bare, everything else as compact JSON.
pub fn display_json(json: &Json) -> String {
    match json {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `a{sv}` → JSON object (keys kept as they are).
pub fn dict_to_json<'a, I>(entries: I) -> Map<String, Json>
where
    I: IntoIterator<Item = (&'a String, &'a zbus::zvariant::OwnedValue)>,
{
    entries
        .into_iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect()
}

/// `UplinkLastPuback` → `uplink_last_puback`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zbus::zvariant::{Array, Dict, ObjectPath, Signature};

    fn sig(v: &Value<'_>) -> String {
        v.value_signature().to_string()
    }

    #[test]
    fn set_value_infers_integer_float_bool_and_string() {
        assert_eq!(infer_value("true", false), Ok(Value::Bool(true)));
        assert_eq!(infer_value("false", false), Ok(Value::Bool(false)));
        assert_eq!(infer_value("42", false), Ok(Value::I64(42)));
        assert_eq!(infer_value("-7", false), Ok(Value::I64(-7)));
        assert_eq!(infer_value("+7", false), Ok(Value::I64(7)));
        assert_eq!(infer_value("1.5", false), Ok(Value::F64(1.5)));
        assert_eq!(infer_value("-0.25", false), Ok(Value::F64(-0.25)));
        assert_eq!(infer_value("1e3", false), Ok(Value::F64(1000.0)));
        assert_eq!(infer_value(".5", false), Ok(Value::F64(0.5)));
        for s in [
            "debug",
            "True",
            "",
            "1.2.3",
            "inf",
            "nan",
            "NaN",
            "1_000",
            "0x10",
            "10s",
            "e5",
            ".",
            "-",
            "mqtts://broker:8883",
            "0.0.0.0:5683",
        ] {
            assert_eq!(
                infer_value(s, false),
                Ok(Value::from(s.to_string())),
                "{s:?}"
            );
        }
    }

    #[test]
    fn string_flag_forces_a_string() {
        for s in ["true", "42", "1.5", "[1,2]", "{\"a\":1}"] {
            let v = infer_value(s, true).expect("string");
            assert_eq!(sig(&v), "s");
            assert_eq!(v, Value::from(s.to_string()));
        }
    }

    #[test]
    fn integer_out_of_range_is_refused_not_rounded() {
        let err = infer_value("99999999999999999999", false).expect_err("too large");
        assert!(err.0.contains("--string"), "{err}");
    }

    #[test]
    fn json_array_becomes_av() {
        let v = infer_value(r#"["a", 1, 2.5, true]"#, false).expect("array");
        assert_eq!(sig(&v), "av");
        let Value::Array(a) = &v else {
            panic!("not an array: {v:?}")
        };
        let inner: Vec<Value<'_>> = a
            .iter()
            .map(|e| match e {
                Value::Value(b) => (**b).try_clone().expect("clone"),
                other => panic!("element not a variant: {other:?}"),
            })
            .collect();
        assert_eq!(
            inner,
            vec![
                Value::from("a"),
                Value::I64(1),
                Value::F64(2.5),
                Value::Bool(true)
            ]
        );
        assert_eq!(to_json(&v), json!(["a", 1, 2.5, true]));
    }

    #[test]
    fn json_object_becomes_nested_asv() {
        let text = r#"{"bind": "0.0.0.0:5683", "limits": {"max": 10, "tags": ["x"]}}"#;
        let v = infer_value(text, false).expect("object");
        assert_eq!(sig(&v), "a{sv}");
        let Value::Dict(d) = &v else {
            panic!("not a dict: {v:?}")
        };
        let (_, limits) = d
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s.as_str() == "limits"))
            .expect("limits present");
        let Value::Value(limits) = limits else {
            panic!("dictionary value not a variant: {limits:?}")
        };
        assert_eq!(sig(limits), "a{sv}");
        assert_eq!(
            to_json(&v),
            json!({"bind": "0.0.0.0:5683", "limits": {"max": 10, "tags": ["x"]}})
        );
    }

    #[test]
    fn invalid_json_and_null_are_refused() {
        assert!(infer_value("[1, 2", false).is_err());
        assert!(infer_value("{oops}", false).is_err());
        assert!(infer_value("[null]", false).is_err());
        assert!(infer_value(r#"{"a": null}"#, false).is_err());
    }

    #[test]
    fn json_u64_above_i64_becomes_t() {
        let v = infer_value("[18446744073709551615]", false).expect("array");
        assert_eq!(to_json(&v), json!([u64::MAX]));
    }

    #[test]
    fn integers_of_each_width_become_json_integers() {
        assert_eq!(to_json(&Value::U8(255)), json!(255));
        assert_eq!(to_json(&Value::I16(-32768)), json!(-32768));
        assert_eq!(to_json(&Value::U16(65535)), json!(65535));
        assert_eq!(to_json(&Value::I32(i32::MIN)), json!(i32::MIN));
        assert_eq!(to_json(&Value::U32(u32::MAX)), json!(u32::MAX));
        assert_eq!(to_json(&Value::I64(i64::MIN)), json!(i64::MIN));
        assert_eq!(to_json(&Value::U64(u64::MAX)), json!(u64::MAX));
        assert_eq!(to_json(&Value::F64(0.5)), json!(0.5));
        assert_eq!(to_json(&Value::F64(f64::NAN)), Json::Null);
        assert_eq!(to_json(&Value::Bool(true)), json!(true));
    }

    #[test]
    fn strings_paths_signatures_and_variants_convert() {
        assert_eq!(to_json(&Value::from("x")), json!("x"));
        let path = ObjectPath::try_from("/io/gatewayd/Gateway1").expect("path");
        assert_eq!(to_json(&Value::from(path)), json!("/io/gatewayd/Gateway1"));
        let signature = Signature::try_from("a{sv}").expect("signature");
        assert_eq!(to_json(&Value::from(signature)), json!("a{sv}"));
        let nested = Value::Value(Box::new(Value::Value(Box::new(Value::U32(3)))));
        assert_eq!(to_json(&nested), json!(3));
    }

    #[test]
    fn byte_arrays_become_arrays_of_numbers() {
        let v = Value::from(vec![0u8, 7, 255]);
        assert_eq!(sig(&v), "ay");
        assert_eq!(to_json(&v), json!([0, 7, 255]));
        let empty = Value::Array(Array::new(&Signature::U8));
        assert_eq!(to_json(&empty), json!([]));
    }

    #[test]
    fn structures_and_non_string_keys_convert() {
        let adapters = Value::from(vec![(
            "coap".to_string(),
            "coap".to_string(),
            "running".to_string(),
            String::new(),
        )]);
        assert_eq!(sig(&adapters), "a(ssss)");
        assert_eq!(to_json(&adapters), json!([["coap", "coap", "running", ""]]));

        let mut dict = Dict::new(&Signature::U32, &Signature::Str);
        dict.add(7u32, "seven").expect("add");
        assert_eq!(to_json(&Value::Dict(dict)), json!({"7": "seven"}));

        let mut dropped = HashMap::new();
        dropped.insert("oldest".to_string(), 3u64);
        dropped.insert("newest".to_string(), 0u64);
        let v = Value::from(dropped);
        assert_eq!(sig(&v), "a{st}");
        assert_eq!(to_json(&v), json!({"oldest": 3, "newest": 0}));
    }

    #[test]
    fn property_names_become_snake_case() {
        assert_eq!(snake_case("Version"), "version");
        assert_eq!(snake_case("GatewayId"), "gateway_id");
        assert_eq!(snake_case("UplinkLastPuback"), "uplink_last_puback");
        assert_eq!(snake_case("BufferMaxBytes"), "buffer_max_bytes");
        assert_eq!(snake_case("HTTPPort"), "http_port");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn display_prints_strings_bare() {
        assert_eq!(display_json(&json!("debug")), "debug");
        assert_eq!(display_json(&json!(65536)), "65536");
        assert_eq!(display_json(&json!(["a"])), r#"["a"]"#);
    }
}
