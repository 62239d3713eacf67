//! Reconnect backoff: exponential with full jitter.

use std::time::Duration;

use rand::Rng;

/// Attempt `n` (0-based) waits a uniformly random time in
/// `[min, min(max, min * 2^n)]` ("full jitter" with a floor, so a flapping
/// broker is never hammered). [`reset`](Backoff::reset) after a successful
/// CONNACK.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64) -> Self {
        let min_ms = min_ms.max(1);
        Backoff {
            min_ms,
            max_ms: max_ms.max(min_ms),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling_ms(&self) -> u64 {
        let factor = 1u64.checked_shl(self.attempt.min(63)).unwrap_or(u64::MAX);
        self.min_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// The next delay, drawn with `rng`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling_ms();
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(rng.gen_range(self.min_ms..=ceiling))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;
    use rand::SeedableRng;

    #[test]
    fn ceiling_doubles_up_to_max() {
        let mut b = Backoff::new(200, 1000);
        let mut rng = StepRng::new(0, 0);
        let ceilings: Vec<u64> = (0..5)
            .map(|_| {
                let c = b.ceiling_ms();
                b.next_delay(&mut rng);
                c
            })
            .collect();
        assert_eq!(ceilings, vec![200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn delays_stay_within_bounds() {
        let mut b = Backoff::new(200, 30_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let ceiling = b.ceiling_ms();
            let d = b.next_delay(&mut rng).as_millis() as u64;
            assert!((200..=ceiling).contains(&d), "{d} not in 200..={ceiling}");
        }
        assert_eq!(b.ceiling_ms(), 30_000);
    }

    #[test]
    fn reset_after_connack_starts_over() {
        let mut b = Backoff::new(100, 10_000);
        let mut rng = StepRng::new(0, 0);
        for _ in 0..10 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert_eq!(b.ceiling_ms(), 100);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(u64::MAX / 2, u64::MAX);
        b.attempt = u32::MAX;
        assert_eq!(b.ceiling_ms(), u64::MAX);
    }
}
