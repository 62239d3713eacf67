//! Cayenne Low Power Payload (LPP) decoder.
//!
//! A payload is a sequence of `channel (1 byte) | type (1 byte) | data`,
//! data big-endian. Types and resolutions are those of the myDevices
//! reference (`LPP_*` constants) plus the extensions of ElectronicCats'
//! CayenneLPP library (voltage 116 … switch 142). Every value becomes one
//! [`Measurement`] named `<type>_<channel>` (`temperature_3`); the
//! multi-axis types add a suffix (`accelerometer_1_x`, `gps_1_lat`,
//! `colour_1_r`).
//!
//! Units are SenML symbols from the primary registry (RFC 8428 §12.1 plus
//! RFC 8798 §2), converting where LPP uses a non-primary unit:
//!
//! | LPP type | LPP resolution | SenML | conversion |
//! | --- | --- | --- | --- |
//! | analog in/out (2, 3) | 0.01 signed | — | |
//! | generic sensor (100) | 1, u32 | — | |
//! | illuminance (101) | 1 lux | `lx` | |
//! | temperature (103) | 0.1 °C signed | `Cel` | |
//! | humidity (104) | 0.5 % | `%RH` | |
//! | accelerometer (113) | 0.001 G signed | `m/s2` | × 9.80665 |
//! | barometer (115) | 0.1 hPa | `Pa` | × 100 (hPa is only a secondary unit) |
//! | voltage (116) | 0.01 V | `V` | |
//! | current (117) | 0.001 A | `A` | |
//! | frequency (118) | 1 Hz, u32 | `Hz` | |
//! | percentage (120) | 1 % | `%` | |
//! | altitude (121) | 1 m signed | `m` | |
//! | concentration (125) | 1 ppm | `/` | × 10⁻⁶ (ppm is only a secondary unit, RFC 8798 §3) |
//! | power (128) | 1 W | `W` | |
//! | distance (130) | 0.001 m, u32 | `m` | |
//! | energy (131) | 0.001 kWh, u32 | `J` | × 3.6·10⁶ (Wh/kWh are only secondary units) |
//! | direction (132) | 1° | `deg` | (RFC 8798 primary) |
//! | unixtime (133) | 1 s, u32 | `s` | |
//! | gyrometer (134) | 0.01 °/s signed | — | no SenML angular-velocity unit: value in °/s |
//! | GPS (136) | lat/lon 0.0001° signed 24-bit, alt 0.01 m signed 24-bit | `lat`, `lon`, `m` | |
//! | digital in/out (0, 1), presence (102), colour (135), switch (142) | 1 | — | |
//!
//! Decimal resolutions are applied by division (`272 / 10 = 27.2`, the
//! nearest `f64`), not by multiplying with an inexact `0.1`.
//!
//! An unknown type or a truncated value is an error for the whole payload
//! (the length of an unknown type is unknown, so nothing after it can be
//! read); the decoder never panics.

use serde::Serialize;

/// One decoded value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// `<type>_<channel>[_<axis>]`, e.g. `temperature_3`, `gps_1_lat`.
    pub name: String,
    /// SenML unit symbol, `None` for dimensionless or unit-less values.
    pub unit: Option<&'static str>,
    /// The value in that unit.
    pub value: f64,
}

/// Why a Cayenne LPP payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CayenneError {
    /// A channel byte with no type byte after it.
    #[error("channel at byte {offset} has no type")]
    MissingType {
        /// Offset of the channel byte.
        offset: usize,
    },
    /// A type this decoder does not know (e.g. polyline 240).
    #[error("unknown LPP type {lpp_type} at byte {offset}")]
    UnknownType {
        /// Offset of the type byte.
        offset: usize,
        /// The type.
        lpp_type: u8,
    },
    /// Fewer data bytes left than the type needs.
    #[error("LPP type {lpp_type} at byte {offset} needs {needed} data bytes, {left} left")]
    Truncated {
        /// Offset of the type byte.
        offset: usize,
        /// The type.
        lpp_type: u8,
        /// Data bytes the type needs.
        needed: usize,
        /// Data bytes left.
        left: usize,
    },
}

/// How one LPP type's data is laid out and scaled.
struct LppType {
    code: u8,
    name: &'static str,
    /// Bytes per value.
    width: usize,
    signed: bool,
    /// Axis suffixes; empty for a single value.
    axes: &'static [&'static str],
    /// Value = raw / divisor × factor.
    divisor: f64,
    factor: f64,
    unit: Option<&'static str>,
}

const fn t(
    code: u8,
    name: &'static str,
    width: usize,
    signed: bool,
    divisor: f64,
    unit: Option<&'static str>,
) -> LppType {
    LppType {
        code,
        name,
        width,
        signed,
        axes: &[],
        divisor,
        factor: 1.0,
        unit,
    }
}

/// Standard gravity (CGPM 1901), m/s² per G.
const G: f64 = 9.806_65;
const XYZ: &[&str] = &["x", "y", "z"];

static TYPES: &[LppType] = &[
    t(0, "digital_input", 1, false, 1.0, None),
    t(1, "digital_output", 1, false, 1.0, None),
    t(2, "analog_input", 2, true, 100.0, None),
    t(3, "analog_output", 2, true, 100.0, None),
    t(100, "generic_sensor", 4, false, 1.0, None),
    t(101, "illuminance", 2, false, 1.0, Some("lx")),
    t(102, "presence", 1, false, 1.0, None),
    t(103, "temperature", 2, true, 10.0, Some("Cel")),
    t(104, "humidity", 1, false, 2.0, Some("%RH")),
    LppType {
        axes: XYZ,
        factor: G,
        ..t(113, "accelerometer", 2, true, 1000.0, Some("m/s2"))
    },
    LppType {
        factor: 10.0,
        ..t(115, "barometer", 2, false, 1.0, Some("Pa"))
    },
    t(116, "voltage", 2, false, 100.0, Some("V")),
    t(117, "current", 2, false, 1000.0, Some("A")),
    t(118, "frequency", 4, false, 1.0, Some("Hz")),
    t(120, "percentage", 1, false, 1.0, Some("%")),
    t(121, "altitude", 2, true, 1.0, Some("m")),
    t(125, "concentration", 2, false, 1_000_000.0, Some("/")),
    t(128, "power", 2, false, 1.0, Some("W")),
    t(130, "distance", 4, false, 1000.0, Some("m")),
    LppType {
        factor: 3600.0,
        ..t(131, "energy", 4, false, 1.0, Some("J"))
    },
    t(132, "direction", 2, false, 1.0, Some("deg")),
    t(133, "unixtime", 4, false, 1.0, Some("s")),
    LppType {
        axes: XYZ,
        ..t(134, "gyrometer", 2, true, 100.0, None)
    },
    LppType {
        axes: &["r", "g", "b"],
        ..t(135, "colour", 1, false, 1.0, None)
    },
    // GPS (136) is handled separately: three 24-bit values, different units.
    t(142, "switch", 1, false, 1.0, None),
];

const GPS: u8 = 136;

fn read(bytes: &[u8], signed: bool) -> f64 {
    let mut v: u64 = 0;
    for &b in bytes {
        v = (v << 8) | u64::from(b);
    }
    let bits = 8 * bytes.len() as u32;
    if signed && bits < 64 && v & (1 << (bits - 1)) != 0 {
        (v as i64 - (1i64 << bits)) as f64
    } else {
        v as f64
    }
}

/// Decodes a Cayenne LPP payload. An empty payload gives no measurements.
///
/// ```
/// let m = gatewayd_lorawan_proto::decode_cayenne(&[0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xFF]).unwrap();
/// assert_eq!((m[0].name.as_str(), m[0].value), ("temperature_3", 27.2));
/// assert_eq!((m[1].name.as_str(), m[1].unit), ("temperature_5", Some("Cel")));
/// ```
pub fn decode(payload: &[u8]) -> Result<Vec<Measurement>, CayenneError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < payload.len() {
        let channel = payload[i];
        let Some(&code) = payload.get(i + 1) else {
            return Err(CayenneError::MissingType { offset: i });
        };
        let data = &payload[i + 2..];
        let truncated = |needed: usize| CayenneError::Truncated {
            offset: i + 1,
            lpp_type: code,
            needed,
            left: data.len(),
        };
        if code == GPS {
            let d = data.get(..9).ok_or_else(|| truncated(9))?;
            let lat = read(&d[0..3], true) / 10_000.0;
            let lon = read(&d[3..6], true) / 10_000.0;
            let alt = read(&d[6..9], true) / 100.0;
            for (axis, unit, value) in [("lat", "lat", lat), ("lon", "lon", lon), ("alt", "m", alt)]
            {
                out.push(Measurement {
                    name: format!("gps_{channel}_{axis}"),
                    unit: Some(unit),
                    value,
                });
            }
            i += 2 + 9;
            continue;
        }
        let Some(ty) = TYPES.iter().find(|ty| ty.code == code) else {
            return Err(CayenneError::UnknownType {
                offset: i + 1,
                lpp_type: code,
            });
        };
        let n = ty.axes.len().max(1);
        let len = ty.width * n;
        let d = data.get(..len).ok_or_else(|| truncated(len))?;
        for k in 0..n {
            let raw = read(&d[k * ty.width..(k + 1) * ty.width], ty.signed);
            let value = raw / ty.divisor * ty.factor;
            let name = match ty.axes.get(k) {
                Some(axis) => format!("{}_{channel}_{axis}", ty.name),
                None => format!("{}_{channel}", ty.name),
            };
            out.push(Measurement {
                name,
                unit: ty.unit,
                value,
            });
        }
        i += 2 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, unit: Option<&'static str>, value: f64) -> Measurement {
        Measurement {
            name: name.to_owned(),
            unit,
            value,
        }
    }

    fn close(a: &[Measurement], b: &[Measurement]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!((&x.name, x.unit), (&y.name, y.unit));
            let scale = x.value.abs().max(y.value.abs()).max(1.0);
            assert!((x.value - y.value).abs() <= 1e-12 * scale, "{x:?} vs {y:?}");
        }
    }

    // Examples from the myDevices Cayenne LPP documentation.

    #[test]
    fn reference_two_temperature_sensors() {
        let got = decode(&[0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xFF]).unwrap();
        assert_eq!(
            got,
            vec![
                m("temperature_3", Some("Cel"), 27.2),
                m("temperature_5", Some("Cel"), 25.5)
            ]
        );
    }

    #[test]
    fn reference_type_order_in_one_frame() {
        // 01 67 FF D7: temperature -4.1 on ch 1; 06 71 04 D2 FB 2E 00 00:
        // accelerometer 1.234 G, -1.234 G, 0 G on ch 6.
        let got = decode(&[
            0x01, 0x67, 0xFF, 0xD7, 0x06, 0x71, 0x04, 0xD2, 0xFB, 0x2E, 0x00, 0x00,
        ])
        .unwrap();
        close(
            &got,
            &[
                m("temperature_1", Some("Cel"), -4.1),
                m("accelerometer_6_x", Some("m/s2"), 1.234 * G),
                m("accelerometer_6_y", Some("m/s2"), -1.234 * G),
                m("accelerometer_6_z", Some("m/s2"), 0.0),
            ],
        );
    }

    #[test]
    fn reference_gps() {
        // 01 88 06 76 5F F2 96 0A 00 03 E8: 42.3519 N, -87.9094 E, 10 m.
        let got = decode(&[
            0x01, 0x88, 0x06, 0x76, 0x5F, 0xF2, 0x96, 0x0A, 0x00, 0x03, 0xE8,
        ])
        .unwrap();
        close(
            &got,
            &[
                m("gps_1_lat", Some("lat"), 42.3519),
                m("gps_1_lon", Some("lon"), -87.9094),
                m("gps_1_alt", Some("m"), 10.0),
            ],
        );
    }

    #[test]
    fn standard_types_scale_and_units() {
        let got = decode(&[
            0x01, 0x00, 0x01, // digital in 1
            0x02, 0x01, 0x00, // digital out 0
            0x03, 0x02, 0xFF, 0x9C, // analog in -1.00
            0x04, 0x03, 0x01, 0x2C, // analog out 3.00
            0x05, 0x65, 0x01, 0xF4, // illuminance 500 lx
            0x06, 0x66, 0x01, // presence 1
            0x07, 0x68, 0x61, // humidity 48.5 %RH
            0x08, 0x73, 0x27, 0x7F, // barometer 1011.1 hPa
            0x09, 0x86, 0x00, 0x64, 0xFF, 0x9C, 0x00, 0x00, // gyro 1, -1, 0 deg/s
            0x0A, 0x64, 0x00, 0x01, 0x00, 0x00, // generic 65536
        ])
        .unwrap();
        close(
            &got,
            &[
                m("digital_input_1", None, 1.0),
                m("digital_output_2", None, 0.0),
                m("analog_input_3", None, -1.0),
                m("analog_output_4", None, 3.0),
                m("illuminance_5", Some("lx"), 500.0),
                m("presence_6", None, 1.0),
                m("humidity_7", Some("%RH"), 48.5),
                m("barometer_8", Some("Pa"), 101_110.0),
                m("gyrometer_9_x", None, 1.0),
                m("gyrometer_9_y", None, -1.0),
                m("gyrometer_9_z", None, 0.0),
                m("generic_sensor_10", None, 65_536.0),
            ],
        );
    }

    #[test]
    fn extension_types_scale_and_units() {
        let got = decode(&[
            0x01, 116, 0x01, 0x4A, // 3.30 V
            0x02, 117, 0x03, 0xE8, // 1.000 A
            0x03, 118, 0x00, 0x00, 0x03, 0x20, // 800 Hz
            0x04, 120, 0x4B, // 75 %
            0x05, 121, 0xFF, 0xF6, // -10 m
            0x06, 125, 0x01, 0x9C, // 412 ppm
            0x07, 128, 0x00, 0x3C, // 60 W
            0x08, 130, 0x00, 0x00, 0x30, 0x39, // 12.345 m
            0x09, 131, 0x00, 0x00, 0x04, 0xD2, // 1.234 kWh
            0x0A, 132, 0x01, 0x0E, // 270 deg
            0x0B, 133, 0x65, 0x53, 0xF1, 0x00, // 1700000000 s
            0x0C, 135, 0xFF, 0x80, 0x00, // colour
            0x0D, 142, 0x01, // switch on
        ])
        .unwrap();
        close(
            &got,
            &[
                m("voltage_1", Some("V"), 3.3),
                m("current_2", Some("A"), 1.0),
                m("frequency_3", Some("Hz"), 800.0),
                m("percentage_4", Some("%"), 75.0),
                m("altitude_5", Some("m"), -10.0),
                m("concentration_6", Some("/"), 412e-6),
                m("power_7", Some("W"), 60.0),
                m("distance_8", Some("m"), 12.345),
                m("energy_9", Some("J"), 1.234 * 3.6e6),
                m("direction_10", Some("deg"), 270.0),
                m("unixtime_11", Some("s"), 1_700_000_000.0),
                m("colour_12_r", None, 255.0),
                m("colour_12_g", None, 128.0),
                m("colour_12_b", None, 0.0),
                m("switch_13", None, 1.0),
            ],
        );
    }

    #[test]
    fn empty_payload_has_no_measurements() {
        assert_eq!(decode(&[]), Ok(vec![]));
    }

    #[test]
    fn truncated_and_unknown_types_are_errors() {
        assert_eq!(
            decode(&[0x03]),
            Err(CayenneError::MissingType { offset: 0 })
        );
        assert_eq!(
            decode(&[0x03, 0x67, 0x01]),
            Err(CayenneError::Truncated {
                offset: 1,
                lpp_type: 0x67,
                needed: 2,
                left: 1
            })
        );
        assert_eq!(
            decode(&[0x03, 0x67, 0x01, 0x10, 0x01, 0x88, 0, 0, 0]),
            Err(CayenneError::Truncated {
                offset: 5,
                lpp_type: 0x88,
                needed: 9,
                left: 3
            })
        );
        assert_eq!(
            decode(&[0x03, 0x67, 0x01, 0x10, 0x01, 240, 1, 2]),
            Err(CayenneError::UnknownType {
                offset: 5,
                lpp_type: 240
            })
        );
    }

    #[test]
    fn signed_24_bit_extremes() {
        let got = decode(&[0, 0x88, 0x80, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
        assert_eq!(got[0].value, -8_388_608.0 / 10_000.0);
        assert_eq!(got[1].value, 8_388_607.0 / 10_000.0);
        assert_eq!(got[2].value, -0.01);
    }
}
