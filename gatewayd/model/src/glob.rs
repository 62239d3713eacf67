//! Glob matching for selectors (device ids, measurement names): used by
//! edge-app manifests and the anomaly detectors, once per reading, so it does
//! not allocate for ASCII input.

/// Matches `text` against a glob `pattern` where `*` matches any run of
/// characters (including none, including `:` and `/`) and `?` matches exactly
/// one character; every other character matches itself, case-sensitively.
/// Backtracks only to the last `*`, so it runs in O(pattern × text) at worst
/// and no pattern is exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        // Device ids are ASCII: skip collecting chars.
        matches(pattern.as_bytes(), text.as_bytes(), b'*', b'?')
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        matches(&p, &t, '*', '?')
    }
}

fn matches<T: PartialEq + Copy>(p: &[T], t: &[T], star: T, any: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*` seen, and the text position it matched up to.
    let mut resume: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(&c) if c == star => {
                resume = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == any || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match resume {
                // Let the last `*` swallow one more character and retry.
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    resume = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == star)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn literals_and_wildcards() {
        assert!(glob_match("coap:pump-1", "coap:pump-1"));
        assert!(!glob_match("coap:pump-1", "coap:pump-10"));
        assert!(!glob_match("coap:Pump-1", "coap:pump-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "lora:70b3"));
        assert!(glob_match("coap:*", "coap:pump-1"));
        assert!(!glob_match("coap:*", "lora:pump-1"));
        assert!(glob_match("*:pump-?", "ble:pump-7"));
        assert!(!glob_match("*:pump-?", "ble:pump-"));
        assert!(!glob_match("*:pump-?", "ble:pump-17"));
        assert!(glob_match("coap:*-*-x", "coap:a-b-c-x"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "aXXbYYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYYbZ"));
        assert!(glob_match("**a**", "a"));
        assert!(!glob_match("", "a"));
        assert!(glob_match("", ""));
        assert!(!glob_match("?", ""));
    }

    #[test]
    fn question_mark_is_one_character_not_one_byte() {
        assert!(glob_match("?", "é"));
        assert!(glob_match("caf?", "café"));
        assert!(!glob_match("caf??", "café"));
        assert!(!glob_match("é", "e"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "a*".repeat(50));
        assert!(!glob_match(&pattern, &text));
    }

    #[test]
    fn literals_exact() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(!glob_match("a", ""));
        assert!(glob_match("temperature", "temperature"));
        assert!(!glob_match("temperature", "temperatur"));
        assert!(!glob_match("temperatur", "temperature"));
        assert!(!glob_match("Temperature", "temperature"));
    }

    #[test]
    fn star_runs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("**", "x"));
        assert!(glob_match("coap:*", "coap:"));
        assert!(glob_match("coap:*", "coap:sensor-1"));
        assert!(!glob_match("coap:*", "lora:sensor-1"));
        assert!(glob_match("*-1", "coap:sensor-1"));
        assert!(!glob_match("*-1", "coap:sensor-12"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaab"));
        assert!(!glob_match("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaa"));
        assert!(glob_match("*ab", "aab"));
        assert!(glob_match("a*", "a"));
    }

    #[test]
    fn question_mark_cases() {
        assert!(glob_match("?", "x"));
        assert!(!glob_match("?", ""));
        assert!(!glob_match("?", "xy"));
        assert!(glob_match("sensor-?", "sensor-7"));
        assert!(!glob_match("sensor-?", "sensor-17"));
        assert!(glob_match("s?n*-?", "sensor-7"));
        assert!(glob_match("?*", "é"));
        assert!(glob_match("caf?", "café"));
    }
}
