//! A small glob matcher: `*` matches any run of characters (also empty),
//! `?` exactly one character; everything else matches itself. No character
//! classes, no escapes. Iterative with single backtrack point, so linear-ish
//! and no recursion blow-up on patterns like `*a*a*a*b`.

/// Whether `text` matches the glob `pattern` (whole string, case-sensitive).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last '*' seen in the pattern, and the text position it
    // currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    // Let the last star swallow one more character.
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn literals() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(!glob_match("a", ""));
        assert!(glob_match("temperature", "temperature"));
        assert!(!glob_match("temperature", "temperatur"));
        assert!(!glob_match("temperatur", "temperature"));
        assert!(!glob_match("Temperature", "temperature"));
    }

    #[test]
    fn star() {
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
    fn question_mark() {
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
