//! Decodes raw LoRaWAN payloads (a `data` measurement named `payload`, as
//! a LoRaWAN adapter delivers them) into measurements.
//!
//! Payload format (5 bytes, big-endian):
//!
//! | bytes | field       | type | unit    | "not measured" |
//! |-------|-------------|------|---------|----------------|
//! | 0-1   | temperature | i16  | 0.1 Cel | 0x8000         |
//! | 2     | humidity    | u8   | %RH     | 0xFF           |
//! | 3-4   | battery     | u16  | mV      | 0xFFFF         |
//!
//! A decoded reading replaces the original: same device, time and
//! metadata, the payload measurement swapped for `temperature` (Cel),
//! `humidity` (%RH) and `battery` (V); other measurements are kept. An
//! undecodable payload passes unchanged and raises a `codec-error` warning.
#![no_std]

extern crate alloc;

use alloc::{format, string::String, vec::Vec};
use core::fmt::Write;
use gatewayd_edge_sdk::{
    export_app, Alert, App, Config, Measurement, Output, Reading, Severity, Value, Verdict, Window,
};

#[derive(Debug, PartialEq)]
struct Decoded {
    temperature: Option<f64>,
    humidity: Option<f64>,
    battery: Option<f64>,
}

fn decode(p: &[u8]) -> Result<Decoded, String> {
    let [t0, t1, h, b0, b1] = *p else {
        return Err(format!("expected 5 bytes, got {}", p.len()));
    };
    let t = i16::from_be_bytes([t0, t1]);
    let b = u16::from_be_bytes([b0, b1]);
    if h != 0xFF && h > 100 {
        return Err(format!("humidity {h} % out of range"));
    }
    Ok(Decoded {
        temperature: (t != i16::MIN).then(|| f64::from(t) / 10.0),
        humidity: (h != 0xFF).then(|| f64::from(h)),
        battery: (b != 0xFFFF).then(|| f64::from(b) / 1000.0),
    })
}

fn hex(p: &[u8]) -> String {
    let mut s = String::with_capacity(2 * p.len().min(16) + 3);
    for b in p.iter().take(16) {
        let _ = write!(s, "{b:02x}");
    }
    if p.len() > 16 {
        s.push_str("...");
    }
    s
}

struct LoraCodec {
    measurement: String,
}

impl App for LoraCodec {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(LoraCodec {
            measurement: config.str_or("measurement", "payload")?.into(),
        })
    }

    fn process(
        &mut self,
        readings: Vec<Reading>,
        _window: Option<Window>,
    ) -> Result<Output, String> {
        let mut out = Output::pass_all();
        for (i, r) in readings.into_iter().enumerate() {
            let Some(payload) = r.data(&self.measurement) else {
                continue;
            };
            let decoded = match decode(payload) {
                Ok(d) => d,
                Err(e) => {
                    let message =
                        format!("cannot decode {} ({}): {e}", self.measurement, hex(payload));
                    out.alert(Alert::new(
                        r.device.clone(),
                        r.time_us,
                        Severity::Warning,
                        "codec-error",
                        message,
                    ));
                    continue;
                }
            };
            let mut replaced = r;
            let mut ms: Vec<Measurement> = replaced
                .measurements
                .into_iter()
                .filter(|m| {
                    !(m.name == self.measurement && matches!(m.value, Some(Value::Data(_))))
                })
                .collect();
            let fields = [
                ("temperature", "Cel", decoded.temperature),
                ("humidity", "%RH", decoded.humidity),
                ("battery", "V", decoded.battery),
            ];
            for (name, unit, v) in fields {
                if let Some(v) = v {
                    ms.push(Measurement::float(name, Some(unit), v));
                }
            }
            replaced.measurements = ms;
            out.set_verdict(i, Verdict::Replace(replaced));
        }
        Ok(out)
    }
}

export_app!(LoraCodec);
