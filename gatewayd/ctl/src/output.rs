//! Human output: tables, ages, sizes, durations, timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json};

/// Shown for absent fields.
pub const DASH: &str = "-";

/// A plain text table: a header row, columns separated by two spaces, each
/// as wide as its widest cell; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(header: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(display_width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = width.saturating_sub(display_width(cell));
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Printable cells: control characters (a device could name itself with an
/// escape sequence) are replaced.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn display_width(text: &str) -> usize {
    text.chars().count()
}

/// Milliseconds since the UNIX epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`; `never` for 0; `just now` for
/// times in the future (clock skew).
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "never".to_string();
    }
    if then_ms > now_ms {
        return "just now".to_string();
    }
    let secs = (now_ms - then_ms) / 1000;
    let text = match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    format!("{text} ago")
}

/// A duration in seconds, two most significant units: `45s`, `5m 3s`,
/// `4h 12m`, `3d 4h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Binary-prefixed sizes: `512 B`, `1.5 KiB`, `64.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// RFC 3339, UTC, milliseconds: `2026-11-01T12:34:56.789Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A dictionary field as a table cell; `-` when absent.
pub fn cell(record: &Map<String, Json>, key: &str) -> String {
    match record.get(key) {
        None | Some(Json::Null) => DASH.to_string(),
        Some(Json::String(s)) if s.is_empty() => DASH.to_string(),
        Some(Json::String(s)) => sanitize(s),
        Some(other) => sanitize(&other.to_string()),
    }
}

/// An unsigned dictionary field, if present and numeric.
pub fn field_u64(record: &Map<String, Json>, key: &str) -> Option<u64> {
    record.get(key).and_then(Json::as_u64)
}

/// A float field with at most one decimal (`-87`, `-87.5`) and a suffix.
pub fn number_cell(record: &Map<String, Json>, key: &str, suffix: &str) -> String {
    match record.get(key).and_then(Json::as_f64) {
        Some(v) => {
            let rounded = (v * 10.0).round() / 10.0;
            if rounded.fract() == 0.0 {
                format!("{rounded:.0}{suffix}")
            } else {
                format!("{rounded:.1}{suffix}")
            }
        }
        None => DASH.to_string(),
    }
}

/// An age cell from a unix-ms field.
pub fn age_cell(record: &Map<String, Json>, key: &str, now: u64) -> String {
    match field_u64(record, key) {
        Some(t) => age(now, t),
        None => DASH.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_does_not_pad_the_last() {
        let mut t = Table::new(["ID", "STATE", "NOTE"]);
        t.row(vec!["coap:boiler-1".into(), "active".into(), "x".into()]);
        t.row(vec!["ble:a".into(), "lost".into(), "".into()]);
        assert_eq!(
            t.render(),
            "ID             STATE   NOTE\n\
             coap:boiler-1  active  x\n\
             ble:a          lost\n"
        );
    }

    #[test]
    fn table_shows_absent_fields_as_dash() {
        let record = json!({"id": "coap:boiler-1", "rssi": -87.46, "source": ""});
        let record = record.as_object().expect("object");
        assert_eq!(cell(record, "id"), "coap:boiler-1");
        assert_eq!(cell(record, "firmware"), "-");
        assert_eq!(cell(record, "source"), "-");
        assert_eq!(number_cell(record, "rssi", ""), "-87.5");
        assert_eq!(number_cell(record, "battery", "%"), "-");
        assert_eq!(age_cell(record, "last_seen", 10_000), "-");
        let mut t = Table::new(["ID", "FIRMWARE", "RSSI"]);
        t.row(vec![
            cell(record, "id"),
            cell(record, "firmware"),
            number_cell(record, "rssi", ""),
        ]);
        assert_eq!(
            t.render(),
            "ID             FIRMWARE  RSSI\ncoap:boiler-1  -         -87.5\n"
        );
    }

    #[test]
    fn control_characters_are_not_printed() {
        assert_eq!(sanitize("a\u{1b}[2Jb\n"), "a?[2Jb?");
    }

    #[test]
    fn ages_are_humanized() {
        let now = 1_000_000_000;
        assert_eq!(age(now, 0), "never");
        assert_eq!(age(now, now - 12_000), "12s ago");
        assert_eq!(age(now, now - 300), "0s ago");
        assert_eq!(age(now, now - 5 * 60_000 - 1), "5m ago");
        assert_eq!(age(now, now - 3 * 3_600_000), "3h ago");
        assert_eq!(age(now, now - 2 * 86_400_000), "2d ago");
        assert_eq!(age(now, now + 5_000), "just now");
    }

    #[test]
    fn durations_and_sizes_are_humanized() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(303), "5m 3s");
        assert_eq!(duration(4 * 3600 + 12 * 60 + 5), "4h 12m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 60), "3d 4h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_793_536_496_789), "2026-11-01T12:34:56.789Z");
    }
}
