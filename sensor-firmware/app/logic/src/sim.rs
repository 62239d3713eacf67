//! Simulated sensors for boards without real ones (QEMU).
//!
//! **Simulated values, not measurements.** Deterministic slow waves of the
//! uptime plus a small pseudo-random jitter from an xorshift generator
//! seeded per boot:
//!
//! * temperature: 21 °C ± 3 °C, period 10 min, jitter ±0.05 °C;
//! * humidity: 45 %RH ± 10 %RH, period 15 min (phase-shifted), jitter
//!   ±0.2 %RH, clamped to 0..=100.
//!
//! No libm: the sine is Bhaskara I's rational approximation (error below
//! 0.2 % of full scale), plenty for a fake sensor.

use crate::board::SensorSample;

/// xorshift32 (Marsaglia 2003); a zero seed is replaced by a constant.
#[derive(Debug, Clone)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u32) -> Self {
        Self(if seed == 0 { 0x9E37_79B9 } else { seed })
    }

    /// The next value (never 0).
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// A value in -1.0..=1.0.
    pub fn next_signed_unit(&mut self) -> f32 {
        let v = (self.next_u32() >> 8) as f32 / ((1u32 << 24) - 1) as f32; // 0..=1
        v * 2.0 - 1.0
    }
}

/// sin(2π · `phase_ms` / `period_ms`), approximated.
pub fn sin_cycle(phase_ms: u64, period_ms: u64) -> f32 {
    if period_ms == 0 {
        return 0.0;
    }
    let p = phase_ms % period_ms;
    let half = period_ms / 2;
    let (p, sign) = if p < half { (p, 1.0) } else { (p - half, -1.0) };
    // x in degrees within 0..180.
    let x = p as f32 * 180.0 / half.max(1) as f32;
    let y = 4.0 * x * (180.0 - x) / (40_500.0 - x * (180.0 - x));
    sign * y
}

/// The simulated temperature and humidity sensors.
#[derive(Debug, Clone)]
pub struct SimSensors {
    rng: XorShift32,
}

impl SimSensors {
    /// Sensors whose jitter sequence is seeded with `seed` (vary it per
    /// boot and per device).
    pub const fn new(seed: u32) -> Self {
        Self {
            rng: XorShift32::new(seed),
        }
    }

    /// The sample at `now_ms` after boot.
    pub fn sample(&mut self, now_ms: u64) -> SensorSample {
        let t = 21.0 + 3.0 * sin_cycle(now_ms, 600_000) + 0.05 * self.rng.next_signed_unit();
        let h =
            45.0 + 10.0 * sin_cycle(now_ms + 200_000, 900_000) + 0.2 * self.rng.next_signed_unit();
        SensorSample {
            temperature_c: Some(t),
            humidity_rh: Some(h.clamp(0.0, 100.0)),
        }
    }
}
