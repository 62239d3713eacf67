//! Counters served by `/healthz`, and a rate limiter for noisy warnings.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Telemetry messages received from the broker.
    pub batches_received: AtomicU64,
    /// Telemetry messages committed to the store.
    pub batches_stored: AtomicU64,
    /// Readings newly inserted.
    pub readings_stored: AtomicU64,
    /// Readings skipped because (gateway, seq) was already stored.
    pub duplicates_skipped: AtomicU64,
    /// Messages rejected (invalid payloads, unexpected topics).
    pub rejected: AtomicU64,
    /// Status messages recorded.
    pub status_updates: AtomicU64,
    /// Failed store attempts (each retried).
    pub store_errors: AtomicU64,
    /// Successful MQTT connections (CONNACKs).
    pub mqtt_connects: AtomicU64,
    /// Connected and subscribed (set on a successful SUBACK).
    pub mqtt_connected: AtomicBool,
}

/// A snapshot for JSON.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub batches_received: u64,
    pub batches_stored: u64,
    pub readings_stored: u64,
    pub duplicates_skipped: u64,
    pub rejected: u64,
    pub status_updates: u64,
    pub store_errors: u64,
    pub mqtt_connects: u64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            batches_received: g(&self.batches_received),
            batches_stored: g(&self.batches_stored),
            readings_stored: g(&self.readings_stored),
            duplicates_skipped: g(&self.duplicates_skipped),
            rejected: g(&self.rejected),
            status_updates: g(&self.status_updates),
            store_errors: g(&self.store_errors),
            mqtt_connects: g(&self.mqtt_connects),
        }
    }

    pub fn is_mqtt_connected(&self) -> bool {
        self.mqtt_connected.load(Ordering::Relaxed)
    }
}

/// Allows `burst` events per `window`; reports how many were suppressed
/// when the next window opens.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    burst: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimit {
    pub fn new(window: Duration, burst: u32) -> Self {
        RateLimit {
            window,
            burst,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(suppressed_since_last_allowed)` if the event may be logged.
    pub fn check(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(s.0) >= self.window {
            s.0 = now;
            s.1 = 0;
        }
        if s.1 < self.burst {
            s.1 += 1;
            let suppressed = std::mem::take(&mut s.2);
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_counts_suppressed() {
        let rl = RateLimit::new(Duration::from_secs(3600), 2);
        assert_eq!(rl.check(), Some(0));
        assert_eq!(rl.check(), Some(0));
        assert_eq!(rl.check(), None);
        assert_eq!(rl.check(), None);
        let rl0 = RateLimit::new(Duration::ZERO, 1);
        assert_eq!(rl0.check(), Some(0));
    }
}
