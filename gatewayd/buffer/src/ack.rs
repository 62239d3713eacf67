//! Sans-IO ordered-acknowledgement tracker.
//!
//! The forwarder sends batches in sequence order but the broker may
//! acknowledge them in any order (several in flight, QoS 1). A row may only
//! be deleted once it *and every row before it* was acknowledged, otherwise
//! a crash would lose the unacknowledged gap. [`AckTracker`] turns
//! out-of-order batch acknowledgements into the contiguous acknowledged
//! prefix, expressed as "everything through seq N".

use std::collections::{HashMap, VecDeque};

use tracing::{debug, warn};

/// Why [`AckTracker::try_sent`] refused a registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("batch {batch_id} is already in flight")]
    DuplicateBatch { batch_id: u64 },
    #[error(
        "batch {batch_id} ends at seq {last_seq}, not after the previous batch (seq {previous}); \
         batches must be registered in send order"
    )]
    SeqNotIncreasing {
        batch_id: u64,
        last_seq: u64,
        previous: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    batch_id: u64,
    last_seq: u64,
    acked: bool,
}

/// Tracks batches in send order and reports how far the acknowledged prefix
/// reaches.
///
/// Memory is proportional to the batches registered and not yet released
/// (acknowledged together with everything before them); the caller bounds
/// that with its in-flight window. Every operation is O(1) amortised.
#[derive(Debug, Default)]
pub struct AckTracker {
    /// Registered batches not yet released, in send order.
    queue: VecDeque<Slot>,
    /// Batch id → position (`head + index into queue`).
    index: HashMap<u64, u64>,
    /// Position of `queue[0]`.
    head: u64,
    /// Registered batches not yet acknowledged.
    unacked: usize,
    /// The last seq `ack` returned, since the last reset.
    released: Option<u64>,
}

impl AckTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a batch just sent, ending at `last_seq`. Batches must be
    /// registered in send order with increasing `last_seq` and distinct ids;
    /// a registration breaking that is ignored with a warning (see
    /// [`try_sent`](Self::try_sent) to handle it yourself). An ignored batch
    /// is never reported as acknowledged, so nothing is deleted early.
    pub fn sent(&mut self, batch_id: u64, last_seq: u64) {
        if let Err(e) = self.try_sent(batch_id, last_seq) {
            warn!(error = %e, "ack tracker: registration ignored");
        }
    }

    /// Like [`sent`](Self::sent) but reports a bad registration.
    pub fn try_sent(&mut self, batch_id: u64, last_seq: u64) -> Result<(), AckError> {
        if self.index.contains_key(&batch_id) {
            return Err(AckError::DuplicateBatch { batch_id });
        }
        let previous = self.queue.back().map(|s| s.last_seq).or(self.released);
        if let Some(previous) = previous {
            if last_seq <= previous {
                return Err(AckError::SeqNotIncreasing {
                    batch_id,
                    last_seq,
                    previous,
                });
            }
        }
        let position = self.head + self.queue.len() as u64;
        self.queue.push_back(Slot {
            batch_id,
            last_seq,
            acked: false,
        });
        self.index.insert(batch_id, position);
        self.unacked += 1;
        Ok(())
    }

    /// Records the broker's acknowledgement of `batch_id`. Returns
    /// `Some(seq)` when the contiguous acknowledged prefix advanced:
    /// everything through `seq` may now be deleted. Unknown ids (never
    /// registered, already released, or from before a [`reset`](Self::reset))
    /// and repeated acknowledgements return `None`.
    pub fn ack(&mut self, batch_id: u64) -> Option<u64> {
        let Some(&position) = self.index.get(&batch_id) else {
            debug!(
                batch_id,
                "ack tracker: acknowledgement of an unknown batch ignored"
            );
            return None;
        };
        // Positions in the index are always within the queue.
        let slot = self.queue.get_mut((position - self.head) as usize)?;
        if slot.acked {
            return None;
        }
        slot.acked = true;
        self.unacked -= 1;
        let mut through = None;
        while let Some(front) = self.queue.front() {
            if !front.acked {
                break;
            }
            through = Some(front.last_seq);
            self.index.remove(&front.batch_id);
            self.queue.pop_front();
            self.head += 1;
        }
        let through = through?;
        self.released = Some(through);
        Some(through)
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.unacked
    }

    /// Batches acknowledged but held back behind an unacknowledged one.
    pub fn held(&self) -> usize {
        self.queue.len() - self.unacked
    }

    /// Forgets everything (after a reconnect or restart, when the
    /// unacknowledged batches will be sent again under new ids).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.index.clear();
        self.unacked = 0;
        self.released = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_release_each_batch() {
        let mut t = AckTracker::new();
        t.sent(1, 10);
        t.sent(2, 20);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.ack(1), Some(10));
        assert_eq!(t.ack(2), Some(20));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn out_of_order_ack_waits_for_the_gap_then_releases_the_whole_prefix() {
        let mut t = AckTracker::new();
        t.sent(1, 10);
        t.sent(2, 20);
        t.sent(3, 30);
        t.sent(4, 40);
        assert_eq!(t.ack(3), None, "batch 1 and 2 still open");
        assert_eq!(t.ack(2), None, "batch 1 still open");
        assert_eq!(t.held(), 2);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.ack(1), Some(30));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.ack(4), Some(40));
    }

    #[test]
    fn repeated_and_unknown_acks_are_ignored() {
        let mut t = AckTracker::new();
        t.sent(7, 5);
        t.sent(8, 9);
        assert_eq!(t.ack(99), None);
        assert_eq!(t.ack(8), None);
        assert_eq!(t.ack(8), None);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.ack(7), Some(9));
        assert_eq!(t.ack(7), None, "already released");
    }

    #[test]
    fn reset_forgets_batches_in_flight() {
        let mut t = AckTracker::new();
        t.sent(1, 10);
        t.sent(2, 20);
        t.reset();
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.ack(1), None);
        // After a reset the same rows are sent again under new ids.
        t.sent(3, 20);
        assert_eq!(t.ack(3), Some(20));
    }

    #[test]
    fn bad_registrations_are_refused_and_never_released() {
        let mut t = AckTracker::new();
        t.sent(1, 10);
        assert_eq!(
            t.try_sent(1, 20),
            Err(AckError::DuplicateBatch { batch_id: 1 })
        );
        assert_eq!(
            t.try_sent(2, 10),
            Err(AckError::SeqNotIncreasing {
                batch_id: 2,
                last_seq: 10,
                previous: 10
            })
        );
        t.sent(2, 5);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.ack(2), None);
        assert_eq!(t.ack(1), Some(10));
        // The last released seq still orders later registrations.
        assert!(matches!(
            t.try_sent(3, 10),
            Err(AckError::SeqNotIncreasing { .. })
        ));
    }
}
