//! RFC 3339 formatting and parsing for microsecond UNIX timestamps.
//!
//! Hand-rolled (proleptic Gregorian calendar, UTC) so that the API accepts
//! exactly what it documents: RFC 3339 date-times (`Z` or a numeric offset,
//! optional fraction up to nanoseconds, `T`, `t` or a space as separator)
//! or an integer number of microseconds since the UNIX epoch.

const US_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Formats microseconds since the UNIX epoch as RFC 3339 UTC with six
/// fractional digits, e.g. `2026-11-24T20:00:00.123456Z`. Never panics:
/// years outside 0000–9999 are printed with as many digits as they need.
pub fn format_us(us: i64) -> String {
    let secs = us.div_euclid(US_PER_SEC);
    let frac = us.rem_euclid(US_PER_SEC);
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Parses a time given either as integer microseconds since the UNIX epoch
/// (`1732476000123456`, optionally negative) or as an RFC 3339 date-time.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| format!("{s:?} is out of range for microseconds since the UNIX epoch"));
    }
    parse_rfc3339(s)
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize, what: &str) -> Result<u32, String> {
        let end = self.pos + n;
        let chunk = self
            .b
            .get(self.pos..end)
            .filter(|c| c.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| format!("expected {n} digits for the {what}"))?;
        self.pos = end;
        Ok(chunk
            .iter()
            .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0')))
    }

    fn expect(&mut self, allowed: &[u8], what: &str) -> Result<u8, String> {
        match self.b.get(self.pos) {
            Some(c) if allowed.contains(c) => {
                self.pos += 1;
                Ok(*c)
            }
            _ => Err(format!("expected {what}")),
        }
    }
}

/// Parses an RFC 3339 date-time into microseconds since the UNIX epoch.
/// Digits beyond microseconds are truncated.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let inner = |s: &str| -> Result<i64, String> {
        let mut c = Cursor {
            b: s.as_bytes(),
            pos: 0,
        };
        let year = c.digits(4, "year")?;
        c.expect(b"-", "'-' after the year")?;
        let month = c.digits(2, "month")?;
        c.expect(b"-", "'-' after the month")?;
        let day = c.digits(2, "day")?;
        c.expect(b"Tt ", "'T' between date and time")?;
        let hour = c.digits(2, "hour")?;
        c.expect(b":", "':' after the hour")?;
        let minute = c.digits(2, "minute")?;
        c.expect(b":", "':' after the minutes")?;
        let second = c.digits(2, "second")?;
        let mut micros = 0i64;
        if c.b.get(c.pos) == Some(&b'.') {
            c.pos += 1;
            let start = c.pos;
            while c.b.get(c.pos).is_some_and(u8::is_ascii_digit) {
                c.pos += 1;
            }
            let frac = &c.b[start..c.pos];
            if frac.is_empty() || frac.len() > 9 {
                return Err("the fraction of a second must have 1 to 9 digits".into());
            }
            for i in 0..6 {
                micros = micros * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
        }
        let offset_secs = match c.expect(b"Zz+-", "'Z' or a UTC offset like +02:00")? {
            b'Z' | b'z' => 0i64,
            sign => {
                let oh = c.digits(2, "offset hours")?;
                c.expect(b":", "':' in the UTC offset")?;
                let om = c.digits(2, "offset minutes")?;
                if oh > 23 || om > 59 {
                    return Err("UTC offset out of range".into());
                }
                let off = i64::from(oh) * 3600 + i64::from(om) * 60;
                if sign == b'-' {
                    -off
                } else {
                    off
                }
            }
        };
        if c.pos != c.b.len() {
            return Err("unexpected characters after the date-time".into());
        }
        let year = i64::from(year);
        if !(1..=12).contains(&month) {
            return Err("month out of range".into());
        }
        if day < 1 || day > days_in_month(year, month) {
            return Err("day out of range for the month".into());
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err("time of day out of range".into());
        }
        let secs = days_from_civil(year, month, day) * SECS_PER_DAY
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second)
            - offset_secs;
        Ok(secs * US_PER_SEC + micros)
    };
    inner(s).map_err(|e| format!("{s:?} is not an RFC 3339 date-time or integer microseconds: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_and_fractions() {
        assert_eq!(format_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_us(1_732_476_000_123_456),
            "2024-11-24T19:20:00.123456Z"
        );
        assert_eq!(format_us(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_us(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn formatting_extreme_values_does_not_panic() {
        assert!(!format_us(i64::MAX).is_empty());
        assert!(!format_us(i64::MIN).is_empty());
    }

    #[test]
    fn parses_rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time("2024-11-24T19:20:00.123456Z"),
            Ok(1_732_476_000_123_456)
        );
        assert_eq!(
            parse_time("2024-11-24T21:20:00.123456789+02:00"),
            Ok(1_732_476_000_123_456)
        );
        assert_eq!(
            parse_time("2024-11-24 19:20:00.5z"),
            Ok(1_732_476_000_500_000)
        );
        assert_eq!(parse_time("1969-12-31T23:00:00-01:00"), Ok(0));
    }

    #[test]
    fn parses_integer_microseconds() {
        assert_eq!(parse_time("1732476000123456"), Ok(1_732_476_000_123_456));
        assert_eq!(parse_time("-5"), Ok(-5));
        assert!(parse_time("99999999999999999999").is_err());
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "-",
            "yesterday",
            "2024-11-24",
            "2024-11-24T19:20:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-11-24T24:00:00Z",
            "2024-11-24T19:20:00.Z",
            "2024-11-24T19:20:00.1234567890Z",
            "2024-11-24T19:20:00+2:00",
            "2024-11-24T19:20:00Zjunk",
            "1.5",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn format_and_parse_round_trip() {
        for us in [
            0,
            1,
            -1,
            1_732_476_000_123_456,
            253_402_300_799_999_999,
            -62_135_596_800_000_000,
        ] {
            assert_eq!(parse_time(&format_us(us)), Ok(us), "{us}");
        }
    }
}
