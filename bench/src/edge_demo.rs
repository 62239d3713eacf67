//! `--edge-demo`: two more simulated devices, for the edge apps `make run`
//! deploys (see `.ci/demo.sh`):
//!
//! * `coap:boiler-1`: one temperature a second, mostly ~26 °C, but every
//!   minute it heats up to ~34 °C for about 25 s (crossing 30 °C: the
//!   `threshold-alert` app raises an alert), starting 15 s after start;
//! * `coap:pump-1`: machine vibration, one window of 32 samples (1 kHz,
//!   the tones the `vibration-ae` model was fitted on, see
//!   `edge-apps/models/vibration-ae/README.md`) every 2 s, sent as two POSTs
//!   of 16; every 5th window carries a spike (the `vibration-anomaly` app
//!   scores each window and raises a critical alert for those).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::coap::{self, Client, Outcome};
use crate::now_us;
use crate::senml::Rng;

pub const BOILER: &str = "boiler-1";
pub const PUMP: &str = "pump-1";
/// Samples per window (the model's input) and per POST.
const WINDOW: usize = 32;
const PER_POST: usize = 16;
const WINDOW_PERIOD: Duration = Duration::from_secs(2);
/// Every ANOMALY_EVERY-th window (1-based) is anomalous.
const ANOMALY_EVERY: u64 = 5;

pub fn describe() -> String {
    format!(
        "edge demo devices: coap:{BOILER} (temperature, above 30 °C for ~25 s of every minute, \
         from 15 s on), coap:{PUMP} (vibration, a 32-sample window every {}s, every \
         {ANOMALY_EVERY}th with a spike)",
        WINDOW_PERIOD.as_secs()
    )
}

/// The boiler's temperature `secs` after start: a 60 s cycle.
pub fn boiler_temperature(secs: f64) -> f64 {
    let (low, high) = (26.0, 34.0);
    let p = secs.rem_euclid(60.0);
    match p {
        p if p < 15.0 => low,
        p if p < 25.0 => low + (high - low) * (p - 15.0) / 10.0,
        p if p < 40.0 => high,
        p if p < 50.0 => high - (high - low) * (p - 40.0) / 10.0,
        _ => low,
    }
}

/// One window of vibration samples: the healthy tones with random phases
/// and amplitudes and a little noise; `spike` adds one large sample.
pub fn vibration_window(rng: &mut Rng, spike: bool) -> Vec<f64> {
    let tau = std::f64::consts::TAU;
    let tones: Vec<(f64, f64, f64)> = [(25.0, 0.9), (50.0, 0.6), (120.0, 0.35)]
        .iter()
        .map(|&(f, a)| (f, a * (1.0 + 0.2 * rng.signed()), tau * rng.unit()))
        .collect();
    let mut w: Vec<f64> = (0..WINDOW)
        .map(|i| {
            let t = i as f64 / 1000.0;
            let s: f64 = tones
                .iter()
                .map(|&(f, a, ph)| a * (tau * f * t + ph).sin())
                .sum();
            // Uniform noise with σ ≈ 0.02.
            s + 0.0346 * rng.signed()
        })
        .collect();
    if spike {
        let i = 4 + (rng.next_u64() % (WINDOW as u64 - 8)) as usize;
        w[i] += if rng.unit() < 0.5 { 2.0 } else { -2.0 };
    }
    w
}

fn seconds(us: i64) -> String {
    format!(
        "{}.{:06}",
        us.div_euclid(1_000_000),
        us.rem_euclid(1_000_000)
    )
}

/// SenML JSON: `values` of measurement `n` (unit `u`) of device `name`, the
/// first at `t0_us`, then one every `step_us`.
pub fn pack(name: &str, n: &str, u: &str, t0_us: i64, step_us: i64, values: &[f64]) -> Vec<u8> {
    let mut s = String::from("[");
    for (i, v) in values.iter().enumerate() {
        if i == 0 {
            let _ = write!(
                s,
                r#"{{"bn":"{name}/","bt":{},"n":"{n}","u":"{u}","v":{v:.5}}}"#,
                seconds(t0_us)
            );
        } else {
            let _ = write!(
                s,
                r#",{{"t":{},"n":"{n}","u":"{u}","v":{v:.5}}}"#,
                seconds(step_us * i as i64)
            );
        }
    }
    s.push(']');
    s.into_bytes()
}

async fn post(client: &Client, payload: Vec<u8>, what: &str, errors: &mut u64) {
    let outcome = client.exchange(Client::request(true, payload)).await;
    let ok = matches!(&outcome, Outcome::Response { code, .. } if coap::is_success(*code));
    if !ok {
        *errors += 1;
        // The first few only: a stopped gatewayd would flood the terminal.
        if *errors <= 3 {
            eprintln!("edge demo: {what} not acknowledged: {outcome:?}");
        }
    }
}

/// Sleeps until `due`; false when asked to stop or past `end`.
async fn wait(due: Instant, end: Option<Instant>, stop: &mut watch::Receiver<bool>) -> bool {
    if end.is_some_and(|e| due >= e) || *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(due.into()) => true,
        _ = stop.changed() => false,
    }
}

pub async fn boiler_task(
    client: Arc<Client>,
    start: Instant,
    end: Option<Instant>,
    mut stop: watch::Receiver<bool>,
) {
    let mut errors = 0;
    for k in 0u64.. {
        if !wait(start + Duration::from_secs(k), end, &mut stop).await {
            break;
        }
        let v = boiler_temperature(k as f64);
        let payload = pack(BOILER, "temperature", "Cel", now_us(), 0, &[v]);
        post(&client, payload, "boiler temperature", &mut errors).await;
    }
}

pub async fn pump_task(
    client: Arc<Client>,
    seed: u64,
    start: Instant,
    end: Option<Instant>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng::new(seed ^ 0x5055_4d50);
    let mut errors = 0;
    let mut last_us = 0i64;
    for k in 1u64.. {
        if !wait(start + WINDOW_PERIOD * k as u32, end, &mut stop).await {
            break;
        }
        let w = vibration_window(&mut rng, k % ANOMALY_EVERY == 0);
        // 1 kHz samples ending now (strictly after the previous window).
        let t0 = (now_us() - (WINDOW as i64 - 1) * 1000).max(last_us + 1000);
        last_us = t0 + (WINDOW as i64 - 1) * 1000;
        for (j, chunk) in w.chunks(PER_POST).enumerate() {
            let t = t0 + (j * PER_POST) as i64 * 1000;
            let payload = pack(PUMP, "vibration", "m/s2", t, 1000, chunk);
            post(&client, payload, "pump vibration", &mut errors).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boiler_crosses_30_once_a_minute() {
        let hot: Vec<u32> = (0..120)
            .filter(|&s| boiler_temperature(s as f64) > 30.0)
            .collect();
        let expected: Vec<u32> = (21..=44).chain(81..=104).collect();
        assert_eq!(hot, expected);
    }

    #[test]
    fn vibration_pack_is_senml_and_fits_a_datagram() {
        let mut rng = Rng::new(1);
        let w = vibration_window(&mut rng, true);
        assert_eq!(w.len(), WINDOW);
        let p = pack(
            PUMP,
            "vibration",
            "m/s2",
            1_732_476_000_123_456,
            1000,
            &w[..16],
        );
        let req = Client::request(true, p.clone());
        assert!(Client::encoded_len(&req) <= 1280);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        let recs = v.as_array().unwrap();
        assert_eq!(recs.len(), 16);
        assert_eq!(recs[0]["bn"], "pump-1/");
        assert_eq!(recs[0]["bt"].as_f64().unwrap(), 1_732_476_000.123456);
        assert_eq!(recs[15]["t"].as_f64().unwrap(), 0.015);
    }

    /// Healthy windows change by well under 1 between samples; a spike
    /// window jumps by about 2 (the model scores that far above threshold).
    #[test]
    fn a_spike_stands_out() {
        let mut rng = Rng::new(7);
        let healthy = vibration_window(&mut rng, false);
        let spiky = vibration_window(&mut rng, true);
        let jump = |w: &[f64]| {
            w.windows(2)
                .map(|p| (p[1] - p[0]).abs())
                .fold(0.0f64, f64::max)
        };
        assert!(jump(&healthy) < 1.0, "{healthy:?}");
        assert!(jump(&spiky) > 1.0, "{spiky:?}");
    }
}
