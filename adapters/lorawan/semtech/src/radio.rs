//! Radio parameters: data rate, coding rate, modulation, CRC status,
//! frequencies.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{DataRateError, FieldError};

/// Modulation (`modu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modulation {
    /// `"LORA"`.
    Lora,
    /// `"FSK"`.
    Fsk,
}

impl Modulation {
    /// The wire name: `"LORA"` or `"FSK"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Modulation::Lora => "LORA",
            Modulation::Fsk => "FSK",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "LORA" => Ok(Modulation::Lora),
            "FSK" => Ok(Modulation::Fsk),
            other => Err(FieldError::UnknownModulation(crate::error::short(other))),
        }
    }
}

impl fmt::Display for Modulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Data rate (`datr`): a LoRa spreading factor and bandwidth, written
/// `"SF7BW125"`, or an FSK bit rate, written as a JSON number.
///
/// `Display` gives the wire form back: `SF7BW125`, or `50000` for FSK.
/// `FromStr` accepts both forms (strictly: no leading zeros, upper case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataRate {
    /// LoRa.
    Lora {
        /// Spreading factor, 5..=12 (SF5/SF6 exist on SX1302 gateways).
        sf: u8,
        /// Bandwidth in kHz: 125, 250 or 500.
        bw_khz: u32,
    },
    /// FSK.
    Fsk {
        /// Bit rate in bits per second.
        bps: u32,
    },
}

impl DataRate {
    /// A checked LoRa data rate.
    pub fn lora(sf: u8, bw_khz: u32) -> Result<Self, DataRateError> {
        if !(5..=12).contains(&sf) {
            return Err(DataRateError::SpreadingFactor(u32::from(sf)));
        }
        if !matches!(bw_khz, 125 | 250 | 500) {
            return Err(DataRateError::Bandwidth(bw_khz));
        }
        Ok(DataRate::Lora { sf, bw_khz })
    }

    /// The modulation this data rate belongs to.
    pub fn modulation(&self) -> Modulation {
        match self {
            DataRate::Lora { .. } => Modulation::Lora,
            DataRate::Fsk { .. } => Modulation::Fsk,
        }
    }

    fn parse_lora(s: &str) -> Result<Self, DataRateError> {
        let rest = s.strip_prefix("SF").ok_or(DataRateError::Format)?;
        let bw_at = rest.find("BW").ok_or(DataRateError::Format)?;
        let sf = small_decimal(&rest[..bw_at], 2)?;
        let bw = small_decimal(&rest[bw_at + 2..], 3)?;
        if !(5..=12).contains(&sf) {
            return Err(DataRateError::SpreadingFactor(sf));
        }
        // sf <= 12 here.
        DataRate::lora(sf as u8, bw)
    }

    /// Builds from `modu` and the raw `datr` of a JSON object.
    pub(crate) fn from_wire(modu: Modulation, datr: RawDatr) -> Result<Self, DataRateError> {
        match (modu, datr) {
            (Modulation::Lora, RawDatr::Str(s)) => DataRate::parse_lora(&s),
            (Modulation::Lora, _) => Err(DataRateError::LoraNotString),
            (Modulation::Fsk, RawDatr::Num(n)) => match u32::try_from(n) {
                Ok(bps) if bps > 0 => Ok(DataRate::Fsk { bps }),
                _ => Err(DataRateError::FskRate),
            },
            (Modulation::Fsk, RawDatr::BadNum) => Err(DataRateError::FskRate),
            (Modulation::Fsk, RawDatr::Str(_)) => Err(DataRateError::FskNotNumber),
        }
    }
}

/// Decimal of at most `max_digits` digits, without sign or leading zero.
fn small_decimal(s: &str, max_digits: usize) -> Result<u32, DataRateError> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > max_digits || !b.iter().all(u8::is_ascii_digit) {
        return Err(DataRateError::Format);
    }
    if b.len() > 1 && b[0] == b'0' {
        return Err(DataRateError::Format);
    }
    Ok(b.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
}

impl fmt::Display for DataRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataRate::Lora { sf, bw_khz } => write!(f, "SF{sf}BW{bw_khz}"),
            DataRate::Fsk { bps } => write!(f, "{bps}"),
        }
    }
}

impl FromStr for DataRate {
    type Err = DataRateError;

    /// `"SF7BW125"` → LoRa; `"50000"` → FSK at 50 kbit/s.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("SF") {
            return DataRate::parse_lora(s);
        }
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) || b[0] == b'0' {
            return Err(DataRateError::Format);
        }
        match s.parse::<u32>() {
            Ok(bps) => Ok(DataRate::Fsk { bps }),
            Err(_) => Err(DataRateError::FskRate),
        }
    }
}

impl Serialize for DataRate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DataRate::Lora { .. } => serializer.collect_str(self),
            DataRate::Fsk { bps } => serializer.serialize_u32(*bps),
        }
    }
}

/// `datr` as found in JSON, before `modu` says how to read it.
pub(crate) enum RawDatr {
    Str(String),
    Num(u64),
    /// A negative or fractional number.
    BadNum,
}

impl<'de> serde::Deserialize<'de> for RawDatr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDatr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a data rate string or number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDatr, E> {
                Ok(RawDatr::Str(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<RawDatr, E> {
                Ok(RawDatr::Str(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDatr, E> {
                Ok(RawDatr::Num(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDatr, E> {
                Ok(u64::try_from(v).map_or(RawDatr::BadNum, RawDatr::Num))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<RawDatr, E> {
                Ok(RawDatr::BadNum)
            }
        }
        d.deserialize_any(V)
    }
}

/// LoRa forward-error-correction coding rate (`codr`).
///
/// Values other than the four standard ones (`"OFF"`, the `"2/3"` and
/// `"1/2"` aliases `lora_pkt_fwd` accepts downstream, anything else) are kept
/// verbatim in [`CodingRate::Other`] so they survive re-encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CodingRate {
    /// `"4/5"`, what LoRaWAN uses.
    Cr45,
    /// `"4/6"`.
    Cr46,
    /// `"4/7"`.
    Cr47,
    /// `"4/8"`.
    Cr48,
    /// Any other string.
    Other(String),
}

impl CodingRate {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            CodingRate::Cr45 => "4/5",
            CodingRate::Cr46 => "4/6",
            CodingRate::Cr47 => "4/7",
            CodingRate::Cr48 => "4/8",
            CodingRate::Other(s) => s,
        }
    }

    pub(crate) fn from_wire(s: String) -> Self {
        match s.as_str() {
            "4/5" => CodingRate::Cr45,
            "4/6" => CodingRate::Cr46,
            "4/7" => CodingRate::Cr47,
            "4/8" => CodingRate::Cr48,
            _ => CodingRate::Other(s),
        }
    }
}

impl From<&str> for CodingRate {
    fn from(s: &str) -> Self {
        CodingRate::from_wire(s.to_owned())
    }
}

impl fmt::Display for CodingRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CodingRate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// CRC status of a received packet (`rxpk.stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrcStatus {
    /// `1`: CRC present and correct.
    CrcOk,
    /// `-1`: CRC present and wrong.
    CrcBad,
    /// `0`: no CRC.
    NoCrc,
}

impl CrcStatus {
    /// The wire value: 1, -1 or 0.
    pub fn as_i8(self) -> i8 {
        match self {
            CrcStatus::CrcOk => 1,
            CrcStatus::CrcBad => -1,
            CrcStatus::NoCrc => 0,
        }
    }

    pub(crate) fn from_wire(v: i64) -> Result<Self, FieldError> {
        match v {
            1 => Ok(CrcStatus::CrcOk),
            -1 => Ok(CrcStatus::CrcBad),
            0 => Ok(CrcStatus::NoCrc),
            other => Err(FieldError::CrcStatus(other)),
        }
    }
}

/// A `freq` in MHz as sent on the wire, rounded to whole Hz.
///
/// Saturates (`NaN` → 0, negative → 0, too large → `u32::MAX`); decoded
/// packets never hold such values.
pub fn hz_from_mhz(mhz: f64) -> u32 {
    // `as` from f64 saturates and maps NaN to 0.
    (mhz * 1e6).round() as u32
}

/// The MHz value to put in `freq` so that a receiver gets exactly `hz` back,
/// whether it rounds (this crate) or truncates as `lora_pkt_fwd` does
/// (`(uint32_t)(1e6 * freq)`).
///
/// For about 1 % of frequencies on a 100 Hz grid (none of the usual LoRaWAN
/// channel plans' frequencies), `hz as f64 / 1e6` times 1e6 lands a hair
/// below `hz` and truncation loses 1 Hz; this nudges the value up by one ULP
/// in that case.
pub fn mhz_from_hz(hz: u32) -> f64 {
    let mhz = f64::from(hz) / 1e6;
    if mhz * 1e6 < f64::from(hz) {
        mhz.next_up()
    } else {
        mhz
    }
}

/// Checks a wire `freq`.
pub(crate) fn check_freq(mhz: f64) -> Result<f64, FieldError> {
    let hz = (mhz * 1e6).round();
    if mhz.is_finite() && hz >= 1.0 && hz <= f64::from(u32::MAX) {
        Ok(mhz)
    } else {
        Err(FieldError::Frequency(mhz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_data_rates_parse_and_display_back_to_the_same_string() {
        for sf in 5..=12u8 {
            for bw in [125, 250, 500] {
                let s = format!("SF{sf}BW{bw}");
                let dr: DataRate = s.parse().unwrap();
                assert_eq!(dr, DataRate::Lora { sf, bw_khz: bw });
                assert_eq!(dr.to_string(), s);
                assert_eq!(dr.modulation(), Modulation::Lora);
            }
        }
    }

    #[test]
    fn fsk_data_rate_is_bits_per_second() {
        let dr: DataRate = "50000".parse().unwrap();
        assert_eq!(dr, DataRate::Fsk { bps: 50_000 });
        assert_eq!(dr.to_string(), "50000");
        assert_eq!(dr.modulation(), Modulation::Fsk);
    }

    #[test]
    fn malformed_data_rates_are_refused_with_the_reason() {
        use DataRateError::*;
        for (s, e) in [
            ("", Format),
            ("SF", Format),
            ("SF7", Format),
            ("SF7BW", Format),
            ("sf7bw125", Format),
            ("SF07BW125", Format),
            ("SF7BW0125", Format),
            ("SF7BW125 ", Format),
            ("SF-7BW125", Format),
            ("SF?BW125", Format),
            ("SF7BW?", Format),
            ("SF123BW125", Format),
            ("SF4BW125", SpreadingFactor(4)),
            ("SF13BW125", SpreadingFactor(13)),
            ("SF99BW125", SpreadingFactor(99)),
            ("SF7BW812", Bandwidth(812)),
            ("SF7BW62", Bandwidth(62)),
            ("0", Format),
            ("050000", Format),
            ("99999999999", Format),
            ("4294967296", FskRate),
        ] {
            assert_eq!(s.parse::<DataRate>(), Err(e), "{s:?}");
        }
        assert_eq!(
            DataRate::lora(7, 125),
            Ok(DataRate::Lora { sf: 7, bw_khz: 125 })
        );
        assert_eq!(DataRate::lora(13, 125), Err(SpreadingFactor(13)));
        assert_eq!(DataRate::lora(7, 200), Err(Bandwidth(200)));
    }

    #[test]
    fn coding_rates_keep_unknown_strings() {
        assert_eq!(CodingRate::from("4/5"), CodingRate::Cr45);
        assert_eq!(CodingRate::from("4/8").to_string(), "4/8");
        assert_eq!(CodingRate::from("OFF"), CodingRate::Other("OFF".into()));
        assert_eq!(CodingRate::from("2/3").as_str(), "2/3");
    }

    #[test]
    fn freq_rounds_to_the_nearest_hz() {
        assert_eq!(hz_from_mhz(868.1), 868_100_000);
        assert_eq!(hz_from_mhz(866.349812), 866_349_812);
        assert_eq!(hz_from_mhz(869.525), 869_525_000);
        assert_eq!(hz_from_mhz(902.3), 902_300_000);
        assert_eq!(hz_from_mhz(923.3), 923_300_000);
        assert_eq!(hz_from_mhz(f64::NAN), 0);
        assert_eq!(hz_from_mhz(-1.0), 0);
        assert_eq!(hz_from_mhz(1e9), u32::MAX);
    }

    #[test]
    fn mhz_from_hz_survives_both_rounding_and_lora_pkt_fwd_truncation() {
        // 512.0002 MHz is one of the values plain division gets wrong for a
        // truncating reader.
        assert!((f64::from(512_000_200u32) / 1e6 * 1e6) < 512_000_200.0);
        let mut hz: u32 = 400_000_000;
        while hz <= 1_000_000_000 {
            let mhz = mhz_from_hz(hz);
            // Through JSON text and back, as the gateway parses it.
            let text = serde_json::to_string(&mhz).unwrap();
            let parsed: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!((1e6 * parsed) as u32, hz, "truncating reader, {hz}");
            assert_eq!(hz_from_mhz(parsed), hz, "rounding reader, {hz}");
            hz += 700; // a coarse but irregular walk: ~860k frequencies
        }
        for hz in [1, 868_100_000, u32::MAX] {
            assert_eq!(hz_from_mhz(mhz_from_hz(hz)), hz);
            assert_eq!((1e6 * mhz_from_hz(hz)) as u32, hz);
        }
    }

    #[test]
    fn freq_check_accepts_1_hz_to_u32_max_hz() {
        assert!(check_freq(868.1).is_ok());
        assert!(check_freq(0.000001).is_ok());
        assert!(check_freq(4294.967295).is_ok());
        for bad in [0.0, -868.1, 4294.9673, f64::INFINITY, f64::NAN, 1e300] {
            assert!(check_freq(bad).is_err(), "{bad}");
        }
    }
}
