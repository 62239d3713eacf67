//! Conversions between gatewayd's data model and the WIT types.
//!
//! Readings coming back from an app are untrusted: they are converted with
//! [`reading_from_wit`], which checks the device id and the wire rules
//! ([`gatewayd_model::wire::validate`]) and stamps the app as the source.

use std::collections::BTreeMap;

use gatewayd_model::{wire, DeviceId, Measurement, Metadata, Reading, Timestamp, Value};

use crate::bindings::gatewayd::edge::types as wit;

pub fn reading_to_wit(r: &Reading) -> wit::Reading {
    wit::Reading {
        device: r.device.as_str().to_owned(),
        time_us: r.time.as_micros(),
        measurements: r.measurements.iter().map(measurement_to_wit).collect(),
        meta: wit::Metadata {
            rssi: r.meta.rssi,
            snr: r.meta.snr,
            battery: r.meta.battery,
            gateway_eui: r.meta.gateway_eui.clone(),
            source: r.meta.source.clone(),
            extra: r
                .meta
                .extra
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
    }
}

fn measurement_to_wit(m: &Measurement) -> wit::Measurement {
    wit::Measurement {
        name: m.name.clone(),
        unit: m.unit.clone(),
        value: m.value.as_ref().map(|v| match v {
            Value::Float(f) => wit::Value::Float(*f),
            Value::Bool(b) => wit::Value::Boolean(*b),
            Value::String(s) => wit::Value::Text(s.clone()),
            Value::Data(d) => wit::Value::Data(d.clone()),
        }),
        sum: m.sum,
    }
}

/// Converts an app's reading, validating it. `app` is stamped as the source
/// (an app cannot claim to be an adapter).
pub fn reading_from_wit(r: wit::Reading, app: &str) -> Result<Reading, String> {
    let device: DeviceId = r
        .device
        .parse()
        .map_err(|e| format!("invalid device id: {e}"))?;
    let mut extra = BTreeMap::new();
    for (k, v) in r.meta.extra {
        extra.insert(k, v);
    }
    let reading = Reading {
        device,
        time: Timestamp(r.time_us),
        measurements: r
            .measurements
            .into_iter()
            .map(|m| Measurement {
                name: m.name,
                unit: m.unit,
                value: m.value.map(|v| match v {
                    wit::Value::Float(f) => Value::Float(f),
                    wit::Value::Boolean(b) => Value::Bool(b),
                    wit::Value::Text(s) => Value::String(s),
                    wit::Value::Data(d) => Value::Data(d),
                }),
                sum: m.sum,
            })
            .collect(),
        meta: Metadata {
            rssi: r.meta.rssi,
            snr: r.meta.snr,
            battery: r.meta.battery,
            gateway_eui: r.meta.gateway_eui,
            source: Some(format!("app:{app}")),
            extra,
        },
    };
    wire::validate(&reading).map_err(|e| e.to_string())?;
    Ok(reading)
}

/// An alert becomes a reading of its device (see the WIT's `alert` docs).
pub fn alert_to_reading(a: wit::Alert, app: &str) -> Result<Reading, String> {
    let device: DeviceId = a
        .device
        .parse()
        .map_err(|e| format!("invalid device id in alert: {e}"))?;
    if a.code.is_empty() {
        return Err("alert without a code".into());
    }
    let severity = match a.severity {
        wit::Severity::Info => "info",
        wit::Severity::Warning => "warning",
        wit::Severity::Critical => "critical",
    };
    let mut meta = Metadata {
        source: Some(format!("app:{app}")),
        ..Metadata::default()
    };
    meta.extra.insert("kind".into(), "alert".into());
    Ok(Reading {
        device,
        time: Timestamp(a.time_us),
        measurements: vec![
            Measurement {
                name: "alert".into(),
                unit: None,
                value: Some(Value::String(a.code)),
                sum: None,
            },
            Measurement {
                name: "severity".into(),
                unit: None,
                value: Some(Value::String(severity.into())),
                sum: None,
            },
            Measurement {
                name: "message".into(),
                unit: None,
                value: Some(Value::String(a.message)),
                sum: None,
            },
        ],
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reading {
        let mut r = Reading::new(
            "coap:s1".parse().unwrap(),
            Timestamp(1_700_000_000_000_000),
            vec![
                Measurement::float("temperature", Some("Cel"), 21.5),
                Measurement {
                    name: "raw".into(),
                    unit: None,
                    value: Some(Value::Data(vec![1, 2, 3])),
                    sum: None,
                },
            ],
        );
        r.meta.rssi = Some(-70.0);
        r.meta.extra.insert("fw".into(), "1.2".into());
        r
    }

    #[test]
    fn roundtrip_keeps_everything_but_the_source() {
        let r = sample();
        let back = reading_from_wit(reading_to_wit(&r), "x").unwrap();
        assert_eq!(back.measurements, r.measurements);
        assert_eq!(back.meta.extra, r.meta.extra);
        assert_eq!(back.meta.source.as_deref(), Some("app:x"));
        assert_eq!(back.time, r.time);
    }

    #[test]
    fn app_output_with_bad_device_or_values_is_refused() {
        let mut w = reading_to_wit(&sample());
        w.device = "no-prefix".into();
        assert!(reading_from_wit(w, "x").unwrap_err().contains("device"));
        let mut w = reading_to_wit(&sample());
        w.measurements[0].value = Some(wit::Value::Float(f64::NAN));
        assert!(reading_from_wit(w, "x").unwrap_err().contains("finite"));
        let mut w = reading_to_wit(&sample());
        w.measurements.clear();
        assert!(reading_from_wit(w, "x").is_err());
    }

    #[test]
    fn alert_becomes_a_reading_of_its_device() {
        let r = alert_to_reading(
            wit::Alert {
                device: "coap:s1".into(),
                time_us: 5,
                severity: wit::Severity::Critical,
                code: "over-temperature".into(),
                message: "41 > 40".into(),
            },
            "thr",
        )
        .unwrap();
        assert_eq!(r.device.as_str(), "coap:s1");
        assert_eq!(r.meta.extra.get("kind").map(String::as_str), Some("alert"));
        assert_eq!(
            r.measurements[1].value,
            Some(Value::String("critical".into()))
        );
    }
}
