//! The app's configuration: the manifest's `[config]` table, which the host
//! passes to `init` as a JSON object, e.g. `{"threshold":30.0,"unit":"Cel"}`.
//!
//! A small, complete JSON parser (RFC 8259; nesting limited to 32 levels)
//! with typed getters for the top-level keys. Nested arrays and objects are
//! parsed and reachable through [`Config::get`].

use alloc::{
    borrow::ToOwned,
    format,
    string::{String, ToString},
    vec::Vec,
};

#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<JsonValue>),
    /// Keys in document order.
    Object(Vec<(String, JsonValue)>),
}

impl JsonValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            JsonValue::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            JsonValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[JsonValue]> {
        match self {
            JsonValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        match self {
            JsonValue::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "a boolean",
            JsonValue::Number(_) => "a number",
            JsonValue::String(_) => "a string",
            JsonValue::Array(_) => "an array",
            JsonValue::Object(_) => "an object",
        }
    }
}

/// The parsed `[config]` object. Getters return `Err` with a message that
/// names the key when a key is present with the wrong type, so
/// `App::init` can pass it on with `?`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    members: Vec<(String, JsonValue)>,
}

impl Config {
    /// Parses a JSON object; an empty string or `null` is an empty config.
    pub fn parse(json: &str) -> Result<Config, String> {
        if json.trim().is_empty() {
            return Ok(Config::default());
        }
        match parse(json)? {
            JsonValue::Object(members) => Ok(Config { members }),
            JsonValue::Null => Ok(Config::default()),
            other => Err(format!("expected a JSON object, got {}", other.kind())),
        }
    }

    /// The raw value of a top-level key.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Top-level keys, in document order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_str())
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: &str,
        f: impl FnOnce(&'a JsonValue) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.get(key) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(v) => f(v)
                .map(Some)
                .ok_or_else(|| format!("`{key}` must be {want}, got {}", v.kind())),
        }
    }

    /// A number, `None` if absent or null.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, String> {
        self.typed(key, "a number", JsonValue::as_f64)
    }

    /// A number, or `default` if absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        Ok(self.f64(key)?.unwrap_or(default))
    }

    /// A non-negative whole number.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        self.typed(key, "a non-negative integer", |v| {
            let n = v.as_f64()?;
            // 2^53: beyond it, f64 no longer holds every integer.
            ((0.0..=9_007_199_254_740_992.0).contains(&n) && n == (n as u64) as f64)
                .then_some(n as u64)
        })
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, String> {
        Ok(self.u64(key)?.unwrap_or(default))
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>, String> {
        self.typed(key, "a string", JsonValue::as_str)
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, String> {
        Ok(self.str(key)?.unwrap_or(default))
    }

    /// A required string.
    pub fn require_str(&self, key: &str) -> Result<&str, String> {
        self.str(key)?
            .ok_or_else(|| format!("`{key}` is required (a string)"))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        self.typed(key, "a boolean", JsonValue::as_bool)
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        Ok(self.bool(key)?.unwrap_or(default))
    }

    /// An array of strings.
    pub fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?
                .iter()
                .map(|e| e.as_str().map(ToOwned::to_owned))
                .collect()
        })
    }
}

/// Parses one JSON document.
pub fn parse(json: &str) -> Result<JsonValue, String> {
    let mut p = Parser {
        s: json.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

const MAX_DEPTH: u32 = 32;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: u32,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.i)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }

    fn literal(&mut self, word: &str, v: JsonValue) -> Result<JsonValue, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unexpected character"))
        }
    }

    fn value(&mut self) -> Result<JsonValue, String> {
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => self.string().map(JsonValue::String),
            Some(b't') => self.literal("true", JsonValue::Bool(true)),
            Some(b'f') => self.literal("false", JsonValue::Bool(false)),
            Some(b'n') => self.literal("null", JsonValue::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn nested(
        &mut self,
        f: fn(&mut Self) -> Result<JsonValue, String>,
    ) -> Result<JsonValue, String> {
        if self.depth == MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Result<JsonValue, String> {
        self.eat(b'{')?;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(JsonValue::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let v = self.value()?;
            members.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(JsonValue::Object(members));
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self) -> Result<JsonValue, String> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(JsonValue::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(JsonValue::Array(items));
                }
                _ => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    fn number(&mut self) -> Result<JsonValue, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit"));
            }
            self.digits();
        }
        // Only ASCII was consumed, so this is a char boundary.
        let text = core::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        text.parse::<f64>()
            .map(JsonValue::Number)
            .map_err(|_| self.err("bad number"))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.err("bad \\u escape")),
            };
            v = v * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    let simple = match e {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'/' => Some(b'/'),
                        b'b' => Some(0x08),
                        b'f' => Some(0x0c),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => return Err(self.err("bad escape")),
                    };
                    if let Some(b) = simple {
                        out.push(b);
                        continue;
                    }
                    let mut cp = self.hex4()?;
                    if (0xD800..0xDC00).contains(&cp) {
                        // A high surrogate must be followed by `\u` + low.
                        if !self.s[self.i..].starts_with(b"\\u") {
                            return Err(self.err("unpaired surrogate"));
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return Err(self.err("unpaired surrogate"));
                        }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    let ch = char::from_u32(cp).ok_or_else(|| self.err("unpaired surrogate"))?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(self.err("control character in string")),
                _ => out.push(c),
            }
        }
        // The input was a &str and escapes were encoded as UTF-8.
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_object() {
        let c = Config::parse(r#" {"threshold":30.0,"unit":"Cel","on":true,"n":10,"x":null} "#)
            .unwrap();
        assert_eq!(c.f64("threshold").unwrap(), Some(30.0));
        assert_eq!(c.str("unit").unwrap(), Some("Cel"));
        assert_eq!(c.bool("on").unwrap(), Some(true));
        assert_eq!(c.u64("n").unwrap(), Some(10));
        assert_eq!(c.f64("x").unwrap(), None);
        assert_eq!(c.f64_or("missing", 1.5).unwrap(), 1.5);
        assert!(c
            .f64("unit")
            .unwrap_err()
            .contains("`unit` must be a number"));
        assert!(c.u64("threshold").is_ok());
        assert!(c.require_str("missing").is_err());
    }

    #[test]
    fn nested_and_escapes() {
        let c = Config::parse(
            r#"{"a":[1,-2.5e3,"x"],"o":{"k":"v"},"s":"q\"\\\/\n\u00e9\ud83d\ude00","m":["a","b"]}"#,
        )
        .unwrap();
        assert_eq!(
            c.get("a").unwrap().as_array().unwrap()[1],
            JsonValue::Number(-2500.0)
        );
        assert_eq!(c.get("o").unwrap().get("k").unwrap().as_str(), Some("v"));
        assert_eq!(c.str("s").unwrap(), Some("q\"\\/\n\u{e9}\u{1F600}"));
        assert_eq!(
            c.str_list("m").unwrap(),
            Some(alloc::vec!["a".into(), "b".into()])
        );
        assert!(c.str_list("a").is_err());
        assert_eq!(c.keys().count(), 4);
    }

    #[test]
    fn errors() {
        for bad in [
            "{",
            "[1]",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "{\"a\":01}",
            r#"{"a":"\x"}"#,
            "1 2",
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"\u{1}\"}",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("null").unwrap(), Config::default());
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(parse(&deep).is_err());
    }
}
