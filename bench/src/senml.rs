//! Simulated sensors: plausible drifting temperature / humidity and a
//! per-sensor counter `seq`, as SenML JSON packs.

use std::fmt::Write as _;

/// xorshift64*: small, deterministic per sensor, good enough for noise.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }
}

/// One reading of a simulated sensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub seq: u64,
    pub time_us: i64,
    pub temperature: f64,
    pub humidity: f64,
}

/// A simulated sensor `sim-<index>`: temperature and humidity follow slow
/// mean-reverting random walks around a per-sensor set point.
#[derive(Clone, Debug)]
pub struct Sensor {
    pub index: usize,
    pub name: String,
    rng: Rng,
    seq: u64,
    last_time_us: i64,
    temp_base: f64,
    temp: f64,
    hum_base: f64,
    hum: f64,
}

impl Sensor {
    pub fn new(index: usize, seed: u64) -> Sensor {
        let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x1000_0000_01B3));
        let temp_base = 18.0 + 8.0 * rng.unit();
        let hum_base = 35.0 + 30.0 * rng.unit();
        Sensor {
            index,
            name: format!("sim-{index}"),
            temp: temp_base + rng.signed(),
            hum: hum_base + 3.0 * rng.signed(),
            temp_base,
            hum_base,
            rng,
            seq: 0,
            last_time_us: 0,
        }
    }

    /// The next reading, measured at `time_us` (made strictly later than
    /// the previous one, so two readings never merge).
    pub fn measure(&mut self, time_us: i64) -> Reading {
        let time_us = time_us.max(self.last_time_us + 1);
        self.last_time_us = time_us;
        self.temp += 0.02 * (self.temp_base - self.temp) + 0.05 * self.rng.signed();
        self.hum += 0.02 * (self.hum_base - self.hum) + 0.2 * self.rng.signed();
        self.hum = self.hum.clamp(0.0, 100.0);
        let r = Reading {
            seq: self.seq,
            time_us,
            temperature: (self.temp * 100.0).round() / 100.0,
            humidity: (self.hum * 10.0).round() / 10.0,
        };
        self.seq += 1;
        r
    }
}

/// Microseconds as decimal seconds, shortest form (`1.5`, `0.000001`, `3`).
fn seconds(us: i64) -> String {
    let whole = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:06}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// A SenML JSON pack (RFC 8428) of `readings` of sensor `name`: base name
/// `<name>/`, base time the first reading's time (seconds, microsecond
/// precision), later readings relative to it.
pub fn pack(name: &str, readings: &[Reading]) -> Vec<u8> {
    let mut s = String::with_capacity(40 + readings.len() * 120);
    s.push('[');
    let bt_us = readings.first().map_or(0, |r| r.time_us);
    for (i, r) in readings.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // `t` is not a base field: every record of a later reading carries
        // it, or it would resolve to `bt` and merge with the first reading.
        let t = if i == 0 {
            format!(r#""bn":"{name}/","bt":{},"#, seconds(bt_us))
        } else {
            format!(r#""t":{},"#, seconds(r.time_us - bt_us))
        };
        let t_rest = if i == 0 { "" } else { t.as_str() };
        let _ = write!(
            s,
            r#"{{{t}"n":"temperature","u":"Cel","v":{}}},{{{t_rest}"n":"humidity","u":"%RH","v":{}}},{{{t_rest}"n":"seq","u":"count","v":{}}}"#,
            r.temperature, r.humidity, r.seq
        );
    }
    s.push(']');
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_is_senml_json() {
        let mut s = Sensor::new(3, 42);
        let a = s.measure(1_732_476_000_123_456);
        let b = s.measure(1_732_476_000_123_456); // same time: bumped by 1 µs
        assert_eq!(b.time_us, a.time_us + 1);
        assert_eq!((a.seq, b.seq), (0, 1));
        let v: serde_json::Value = serde_json::from_slice(&pack(&s.name, &[a, b])).unwrap();
        let recs = v.as_array().unwrap();
        assert_eq!(recs.len(), 6);
        assert_eq!(recs[0]["bn"], "sim-3/");
        assert_eq!(recs[0]["bt"].as_f64().unwrap(), 1_732_476_000.123456);
        assert_eq!(recs[0]["u"], "Cel");
        assert_eq!(recs[1]["u"], "%RH");
        assert_eq!(recs[2]["n"], "seq");
        assert_eq!(recs[2]["v"], 0);
        assert!(recs[1].get("t").is_none() && recs[2].get("t").is_none());
        for rec in &recs[3..6] {
            assert_eq!(rec["t"].as_f64().unwrap(), 0.000001, "{rec}");
            assert!(rec.get("bn").is_none());
        }
        assert_eq!(recs[5]["v"], 1);
    }

    #[test]
    fn seconds_are_short_and_exact() {
        assert_eq!(seconds(1_500_000), "1.5");
        assert_eq!(seconds(1), "0.000001");
        assert_eq!(seconds(3_000_000), "3");
        assert_eq!(seconds(1_732_476_000_123_450), "1732476000.12345");
    }

    #[test]
    fn values_stay_plausible() {
        let mut s = Sensor::new(0, 1);
        for i in 0..100_000 {
            let r = s.measure(i);
            assert!((10.0..35.0).contains(&r.temperature), "{r:?}");
            assert!((0.0..=100.0).contains(&r.humidity), "{r:?}");
        }
    }
}
