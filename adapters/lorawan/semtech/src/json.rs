//! JSON plumbing shared by the bodies: object-only structs, a bounded array,
//! base64.

use std::fmt;
use std::marker::PhantomData;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use serde::de::{self, value::MapAccessDeserializer, Deserialize, Deserializer, IgnoredAny};
use serde::Serialize;

use crate::error::{short, FieldError};

/// Decodes like `lora_pkt_fwd`'s `b64_to_bin`: standard alphabet, padding
/// optional, unused bits in the last character ignored (the spec's own
/// `txpk` example needs that).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, FieldError> {
    LENIENT.decode(s).map_err(|e| FieldError::Base64(short(e)))
}

/// Padded standard base64, as `lora_pkt_fwd` writes it.
pub(crate) fn encode_base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// `T` deserialized only from a JSON object. Derived struct impls also accept
/// an array of the field values in order, which the protocol does not allow.
pub(crate) struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = ObjectOnly<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(ObjectOnly)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A JSON array of which at most `crate::MAX_RXPK` elements are kept; the
/// rest are skipped but counted in `total`.
pub(crate) struct Bounded<T> {
    pub items: Vec<T>,
    pub total: usize,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Bounded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = Bounded<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let cap = seq.size_hint().unwrap_or(0).min(crate::MAX_RXPK);
                let mut items = Vec::with_capacity(cap);
                let mut total = 0usize;
                loop {
                    if items.len() < crate::MAX_RXPK {
                        match seq.next_element::<T>()? {
                            Some(x) => items.push(x),
                            None => break,
                        }
                    } else if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    total += 1;
                }
                Ok(Bounded { items, total })
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Appends `value` as JSON.
pub(crate) fn write_json<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, map keys are all strings, and no
    // Serialize impl of this crate returns an error.
    serde_json::to_writer(out, value).expect("JSON encoding of a wire struct cannot fail");
}

/// A serde_json error as a short message.
pub(crate) fn json_message(e: impl fmt::Display) -> String {
    short(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_unpadded_and_padded_and_trailing_bits() {
        assert_eq!(decode_base64("QQ==").unwrap(), b"A");
        assert_eq!(decode_base64("QQ").unwrap(), b"A");
        assert_eq!(decode_base64("QR").unwrap(), b"A");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(encode_base64(b"A"), "QQ==");
    }

    #[test]
    fn base64_refuses_other_alphabets_and_garbage() {
        for bad in ["-DS4", "QQ_=", "Q", "QQ===", "QQ==QQ==", "Q Q=", "é"] {
            assert!(decode_base64(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn object_only_refuses_arrays_that_derived_structs_would_accept() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct S {
            a: u8,
        }
        assert!(serde_json::from_str::<S>("[1]").is_ok());
        assert!(serde_json::from_str::<ObjectOnly<S>>("[1]").is_err());
        assert_eq!(
            serde_json::from_str::<ObjectOnly<S>>(r#"{"a":1}"#)
                .unwrap()
                .0,
            S { a: 1 }
        );
        let v: serde_json::Value = serde_json::from_str("[1]").unwrap();
        assert!(ObjectOnly::<S>::deserialize(v).is_err());
    }

    #[test]
    fn bounded_keeps_at_most_the_limit_but_counts_everything() {
        let text = format!("[{}]", vec!["1"; crate::MAX_RXPK + 5].join(","));
        let b: Bounded<u8> = serde_json::from_str(&text).unwrap();
        assert_eq!(b.items.len(), crate::MAX_RXPK);
        assert_eq!(b.total, crate::MAX_RXPK + 5);
        let b: Bounded<u8> = serde_json::from_str("[]").unwrap();
        assert_eq!((b.items.len(), b.total), (0, 0));
    }
}
