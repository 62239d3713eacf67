//! Counters of a CoAP source, shared between its tasks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request was refused, for [`CoapStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// 4.00: malformed SenML, bad block option, empty payload, …
    BadRequest,
    /// 4.02: an unrecognised critical option.
    BadOption,
    /// 4.04
    NotFound,
    /// 4.05
    MethodNotAllowed,
    /// 4.08: Block1 blocks out of order or missing.
    Incomplete,
    /// 4.13
    TooLarge,
    /// 4.15
    UnsupportedContentFormat,
    /// 5.03: pipeline full or closed, or too many requests in flight.
    Unavailable,
    /// 5.00: the buffer failed to store the readings.
    Storage,
    /// 5.05: a Proxy-Uri / Proxy-Scheme request.
    ProxyingNotSupported,
}

/// Counters of one CoAP source. Cheap to read at any time through the
/// `Arc` returned by [`CoapSource::stats`](crate::CoapSource::stats).
#[derive(Debug, Default)]
pub struct CoapStats {
    /// Datagrams read from the server socket.
    pub datagrams: AtomicU64,
    /// Datagrams that are not CoAP (or not valid CoAP); ignored or reset.
    pub malformed_datagrams: AtomicU64,
    /// Requests (new exchanges, duplicates excluded).
    pub requests: AtomicU64,
    /// Retransmitted requests recognised as duplicates (not re-processed).
    pub duplicates: AtomicU64,
    /// Exchanges forgotten before EXCHANGE_LIFETIME because the dedup cache
    /// was full. Non-zero means a late retransmission could be ingested
    /// twice: raise `dedup_capacity` (≈ request rate × 247 s).
    pub dedup_evicted_early: AtomicU64,
    /// Readings committed from POSTed packs.
    pub accepted_readings: AtomicU64,
    /// Requests answered 2.04.
    pub accepted_requests: AtomicU64,
    /// Intermediate Block1 blocks answered 2.31 Continue.
    pub blocks_continued: AtomicU64,
    pub rejected_bad_request: AtomicU64,
    pub rejected_bad_option: AtomicU64,
    pub rejected_not_found: AtomicU64,
    pub rejected_method_not_allowed: AtomicU64,
    pub rejected_incomplete: AtomicU64,
    pub rejected_too_large: AtomicU64,
    pub rejected_unsupported_content_format: AtomicU64,
    pub rejected_unavailable: AtomicU64,
    pub rejected_storage: AtomicU64,
    pub rejected_proxying: AtomicU64,
    /// Observe: registrations that the server accepted.
    pub observe_registrations: AtomicU64,
    /// Observe: notifications received (fresh ones, duplicates excluded).
    pub observe_notifications: AtomicU64,
    /// Observe: readings committed from notifications.
    pub observe_readings: AtomicU64,
    /// Observe: notifications whose payload could not be decoded or that
    /// the pipeline refused.
    pub observe_rejected: AtomicU64,
}

/// A point-in-time copy of [`CoapStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoapStatsSnapshot {
    pub datagrams: u64,
    pub malformed_datagrams: u64,
    pub requests: u64,
    pub duplicates: u64,
    pub dedup_evicted_early: u64,
    pub accepted_readings: u64,
    pub accepted_requests: u64,
    pub blocks_continued: u64,
    pub rejected_bad_request: u64,
    pub rejected_bad_option: u64,
    pub rejected_not_found: u64,
    pub rejected_method_not_allowed: u64,
    pub rejected_incomplete: u64,
    pub rejected_too_large: u64,
    pub rejected_unsupported_content_format: u64,
    pub rejected_unavailable: u64,
    pub rejected_storage: u64,
    pub rejected_proxying: u64,
    pub observe_registrations: u64,
    pub observe_notifications: u64,
    pub observe_readings: u64,
    pub observe_rejected: u64,
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl CoapStats {
    pub(crate) fn reject(&self, reason: RejectReason) {
        let c = match reason {
            RejectReason::BadRequest => &self.rejected_bad_request,
            RejectReason::BadOption => &self.rejected_bad_option,
            RejectReason::NotFound => &self.rejected_not_found,
            RejectReason::MethodNotAllowed => &self.rejected_method_not_allowed,
            RejectReason::Incomplete => &self.rejected_incomplete,
            RejectReason::TooLarge => &self.rejected_too_large,
            RejectReason::UnsupportedContentFormat => &self.rejected_unsupported_content_format,
            RejectReason::Unavailable => &self.rejected_unavailable,
            RejectReason::Storage => &self.rejected_storage,
            RejectReason::ProxyingNotSupported => &self.rejected_proxying,
        };
        bump(c, 1);
    }

    /// Total of all `rejected_*` counters.
    pub fn rejected_total(&self) -> u64 {
        let s = self.snapshot();
        s.rejected_bad_request
            + s.rejected_bad_option
            + s.rejected_not_found
            + s.rejected_method_not_allowed
            + s.rejected_incomplete
            + s.rejected_too_large
            + s.rejected_unsupported_content_format
            + s.rejected_unavailable
            + s.rejected_storage
            + s.rejected_proxying
    }

    pub fn snapshot(&self) -> CoapStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CoapStatsSnapshot {
            datagrams: g(&self.datagrams),
            malformed_datagrams: g(&self.malformed_datagrams),
            requests: g(&self.requests),
            duplicates: g(&self.duplicates),
            dedup_evicted_early: g(&self.dedup_evicted_early),
            accepted_readings: g(&self.accepted_readings),
            accepted_requests: g(&self.accepted_requests),
            blocks_continued: g(&self.blocks_continued),
            rejected_bad_request: g(&self.rejected_bad_request),
            rejected_bad_option: g(&self.rejected_bad_option),
            rejected_not_found: g(&self.rejected_not_found),
            rejected_method_not_allowed: g(&self.rejected_method_not_allowed),
            rejected_incomplete: g(&self.rejected_incomplete),
            rejected_too_large: g(&self.rejected_too_large),
            rejected_unsupported_content_format: g(&self.rejected_unsupported_content_format),
            rejected_unavailable: g(&self.rejected_unavailable),
            rejected_storage: g(&self.rejected_storage),
            rejected_proxying: g(&self.rejected_proxying),
            observe_registrations: g(&self.observe_registrations),
            observe_notifications: g(&self.observe_notifications),
            observe_readings: g(&self.observe_readings),
            observe_rejected: g(&self.observe_rejected),
        }
    }
}
