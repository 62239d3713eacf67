//! Sans-IO bookkeeping of publishes awaiting PUBACK: which batch a packet
//! id belongs to, and what to re-send, in which order, after a reconnect.
//!
//! The I/O loop reports what rumqttc tells it; this struct decides. It never
//! blocks, allocates at most one entry per admitted publish, and is driven
//! by four inputs:
//!
//! * [`submit`](InflightTracker::next_submission): a publish was handed to
//!   rumqttc. rumqttc processes requests strictly in order (its pending
//!   queue first, then the request channel) and reports each as
//!   `Event::Outgoing(Outgoing::Publish(pkid))` when it is written, so the
//!   tracker keeps a FIFO of submitted entries and gives the packet id to
//!   the oldest one ([`on_written`](InflightTracker::on_written)). A packet
//!   id collision (`Outgoing::AwaitAck`) only delays that event; the FIFO
//!   still holds because rumqttc takes no further requests until it is
//!   resolved.
//! * [`on_puback`](InflightTracker::on_puback): the entry written with that
//!   packet id is done. A PUBACK for a packet id that is not currently
//!   written is ignored (reported as `Unknown`), so an ack can never be
//!   attributed to a publish that was not on the wire yet, and each batch is
//!   acknowledged at most once.
//! * [`on_connection_lost`](InflightTracker::on_connection_lost): everything
//!   not acknowledged is queued again, in admission order, remembering the
//!   packet id it was written with.
//! * [`resume`](InflightTracker::resume): on CONNACK. With a session present
//!   the entries that had been written are re-sent first with their
//!   original packet ids (MQTT-4.4.0-1) and DUP set; everything else follows
//!   in admission order with fresh ids. Without a session the old ids mean
//!   nothing and every entry is simply re-sent in order.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

/// What a tracked publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A telemetry batch from the daemon.
    Batch {
        id: u64,
        first_seq: u64,
        last_seq: u64,
    },
    /// The retained status message. Never re-sent: a fresh one is published
    /// on every connect.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to be handed to rumqttc; `prev_pkid` is the packet id it was
    /// written with on an earlier connection.
    Queued { prev_pkid: Option<u16> },
    /// Handed to rumqttc, not yet written. `expect` is the preset packet id
    /// of a session resend.
    Submitted { expect: Option<u16> },
    /// Written with this packet id, awaiting its PUBACK.
    Written(u16),
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    payload: Bytes,
    state: State,
}

/// A publish to hand to rumqttc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub kind: Kind,
    pub payload: Bytes,
    /// `Some` for a session resend: publish with this packet id and DUP set.
    pub pkid: Option<u16>,
}

/// The outcome of a PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    Batch {
        id: u64,
        first_seq: u64,
        last_seq: u64,
    },
    Status,
    /// No publish is currently written with this packet id.
    Unknown,
}

/// rumqttc and the tracker disagree; the connection must be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    #[error("rumqttc wrote packet id {0} but no publish was awaiting one")]
    NothingSubmitted(u16),
    #[error("rumqttc wrote packet id {got} for a resend preset to {expected}")]
    PkidMismatch { expected: u16, got: u16 },
    #[error("rumqttc wrote packet id {0} while it is still awaiting a PUBACK")]
    PkidInUse(u16),
}

/// See the module docs.
#[derive(Debug)]
pub struct InflightTracker {
    window: usize,
    next_key: u64,
    /// Admission order.
    entries: BTreeMap<u64, Entry>,
    /// Submitted entries, in submission order.
    awaiting_pkid: VecDeque<u64>,
    written: HashMap<u16, u64>,
    batches: usize,
}

impl InflightTracker {
    /// `window`: how many batches may be tracked (admitted, not yet acked)
    /// at once.
    pub fn new(window: usize) -> Self {
        InflightTracker {
            window: window.max(1),
            next_key: 0,
            entries: BTreeMap::new(),
            awaiting_pkid: VecDeque::new(),
            written: HashMap::new(),
            batches: 0,
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Lowers (or raises) the batch window, e.g. to an MQTT 5 broker's
    /// Receive Maximum. Batches already admitted stay.
    pub fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }

    /// Whether another batch may be admitted.
    pub fn can_admit(&self) -> bool {
        self.batches < self.window
    }

    /// Batches admitted and not yet acknowledged.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Publishes of any kind not yet acknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Admits a batch; it is queued behind everything admitted before.
    pub fn admit(&mut self, kind: Kind, payload: Bytes) {
        if matches!(kind, Kind::Batch { .. }) {
            self.batches += 1;
        }
        self.entries.insert(
            self.next_key,
            Entry {
                kind,
                payload,
                state: State::Queued { prev_pkid: None },
            },
        );
        self.next_key += 1;
    }

    /// Takes the oldest queued entry for submission through rumqttc's
    /// request channel (rumqttc assigns the packet id).
    pub fn next_submission(&mut self) -> Option<Submission> {
        let (&key, entry) = self
            .entries
            .iter_mut()
            .find(|(_, e)| matches!(e.state, State::Queued { .. }))?;
        entry.state = State::Submitted { expect: None };
        self.awaiting_pkid.push_back(key);
        Some(Submission {
            kind: entry.kind,
            payload: entry.payload.clone(),
            pkid: None,
        })
    }

    /// On CONNACK: with `session_present`, returns the entries written on
    /// the previous connection, in admission order, to re-send with their
    /// original packet ids before anything else. Without a session, forgets
    /// the old packet ids and returns nothing: every entry is then re-sent
    /// through [`next_submission`](Self::next_submission) in order.
    pub fn resume(&mut self, session_present: bool) -> Vec<Submission> {
        let mut out = Vec::new();
        for (&key, entry) in self.entries.iter_mut() {
            if let State::Queued { prev_pkid } = &mut entry.state {
                match (*prev_pkid, session_present) {
                    (Some(pkid), true) => {
                        entry.state = State::Submitted { expect: Some(pkid) };
                        self.awaiting_pkid.push_back(key);
                        out.push(Submission {
                            kind: entry.kind,
                            payload: entry.payload.clone(),
                            pkid: Some(pkid),
                        });
                    }
                    (Some(_), false) => *prev_pkid = None,
                    (None, _) => {}
                }
            }
        }
        out
    }

    /// rumqttc wrote the oldest submitted publish with `pkid`.
    pub fn on_written(&mut self, pkid: u16) -> Result<(), TrackerError> {
        let Some(key) = self.awaiting_pkid.pop_front() else {
            return Err(TrackerError::NothingSubmitted(pkid));
        };
        if self.written.contains_key(&pkid) {
            return Err(TrackerError::PkidInUse(pkid));
        }
        let entry = self
            .entries
            .get_mut(&key)
            .expect("awaiting_pkid only holds keys of live entries");
        if let State::Submitted {
            expect: Some(expected),
        } = entry.state
        {
            if expected != pkid {
                return Err(TrackerError::PkidMismatch {
                    expected,
                    got: pkid,
                });
            }
        }
        entry.state = State::Written(pkid);
        self.written.insert(pkid, key);
        Ok(())
    }

    /// A PUBACK for `pkid` arrived.
    pub fn on_puback(&mut self, pkid: u16) -> AckOutcome {
        let Some(key) = self.written.remove(&pkid) else {
            return AckOutcome::Unknown;
        };
        let entry = self
            .entries
            .remove(&key)
            .expect("written only holds keys of live entries");
        match entry.kind {
            Kind::Batch {
                id,
                first_seq,
                last_seq,
            } => {
                self.batches -= 1;
                AckOutcome::Batch {
                    id,
                    first_seq,
                    last_seq,
                }
            }
            Kind::Status => AckOutcome::Status,
        }
    }

    /// The kind of the publish currently written with `pkid`.
    pub fn written_kind(&self, pkid: u16) -> Option<Kind> {
        let key = self.written.get(&pkid)?;
        self.entries.get(key).map(|e| e.kind)
    }

    /// Removes queued (not submitted) entries whose payload matches, e.g.
    /// batches that no longer fit the broker's packet size. Returns their
    /// kinds and payload sizes.
    pub fn drop_queued_where(
        &mut self,
        mut pred: impl FnMut(&Bytes) -> bool,
    ) -> Vec<(Kind, usize)> {
        let mut dropped = Vec::new();
        self.entries.retain(|_, e| {
            if matches!(e.state, State::Queued { .. }) && pred(&e.payload) {
                dropped.push((e.kind, e.payload.len()));
                false
            } else {
                true
            }
        });
        self.batches -= dropped
            .iter()
            .filter(|(k, _)| matches!(k, Kind::Batch { .. }))
            .count();
        dropped
    }

    /// The connection is gone: status publishes are dropped, every batch is
    /// queued again in admission order. Returns how many batches will be
    /// re-sent.
    pub fn on_connection_lost(&mut self) -> usize {
        self.awaiting_pkid.clear();
        self.written.clear();
        self.entries
            .retain(|_, e| matches!(e.kind, Kind::Batch { .. }));
        for entry in self.entries.values_mut() {
            let prev_pkid = match entry.state {
                State::Queued { prev_pkid } => prev_pkid,
                State::Submitted { expect } => expect,
                State::Written(pkid) => Some(pkid),
            };
            entry.state = State::Queued { prev_pkid };
        }
        self.batches
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(id: u64) -> Kind {
        Kind::Batch {
            id,
            first_seq: id * 10,
            last_seq: id * 10 + 9,
        }
    }

    fn acked(id: u64) -> AckOutcome {
        AckOutcome::Batch {
            id,
            first_seq: id * 10,
            last_seq: id * 10 + 9,
        }
    }

    fn payload(id: u64) -> Bytes {
        Bytes::from(format!("batch-{id}"))
    }

    #[test]
    fn ack_goes_to_the_batch_written_with_that_pkid() {
        let mut t = InflightTracker::new(4);
        for id in 1..=3 {
            t.admit(batch(id), payload(id));
            assert!(t.next_submission().is_some());
        }
        t.on_written(7).unwrap();
        t.on_written(3).unwrap();
        t.on_written(5).unwrap();
        assert_eq!(t.on_puback(5), acked(3));
        assert_eq!(t.on_puback(7), acked(1));
        assert_eq!(t.on_puback(3), acked(2));
        assert!(t.is_empty());
    }

    #[test]
    fn puback_before_write_is_not_attributed() {
        let mut t = InflightTracker::new(2);
        t.admit(batch(1), payload(1));
        t.next_submission().unwrap();
        assert_eq!(t.on_puback(1), AckOutcome::Unknown);
        t.on_written(1).unwrap();
        assert_eq!(t.on_puback(1), acked(1));
    }

    #[test]
    fn duplicate_puback_acks_once() {
        let mut t = InflightTracker::new(2);
        t.admit(batch(1), payload(1));
        t.next_submission().unwrap();
        t.on_written(1).unwrap();
        assert_eq!(t.on_puback(1), acked(1));
        assert_eq!(t.on_puback(1), AckOutcome::Unknown);
    }

    #[test]
    fn window_limits_admission() {
        let mut t = InflightTracker::new(2);
        t.admit(batch(1), payload(1));
        t.admit(Kind::Status, Bytes::from_static(b"s"));
        assert!(t.can_admit(), "status publishes do not use the window");
        t.admit(batch(2), payload(2));
        assert!(!t.can_admit());
        t.next_submission().unwrap();
        t.on_written(1).unwrap();
        t.on_puback(1);
        assert!(t.can_admit());
    }

    #[test]
    fn reconnect_resends_unacked_first() {
        let mut t = InflightTracker::new(8);
        for id in 1..=4 {
            t.admit(batch(id), payload(id));
        }
        // 1 and 2 written, 3 submitted but not written, 4 still queued.
        for _ in 0..3 {
            t.next_submission().unwrap();
        }
        t.on_written(1).unwrap();
        t.on_written(2).unwrap();
        assert_eq!(t.on_puback(1), acked(1));
        assert_eq!(t.on_connection_lost(), 3);
        // A new batch arrives while disconnected.
        t.admit(batch(5), payload(5));

        let resent = t.resume(true);
        assert_eq!(
            resent,
            vec![Submission {
                kind: batch(2),
                payload: payload(2),
                pkid: Some(2)
            }]
        );
        let rest: Vec<_> = std::iter::from_fn(|| t.next_submission())
            .map(|s| s.kind)
            .collect();
        assert_eq!(rest, vec![batch(3), batch(4), batch(5)]);
        // rumqttc writes the preset resend first, then the channel in order.
        t.on_written(2).unwrap();
        t.on_written(1).unwrap();
        t.on_written(3).unwrap();
        t.on_written(4).unwrap();
        assert_eq!(t.on_puback(2), acked(2));
        assert_eq!(t.on_puback(1), acked(3));
        assert_eq!(t.on_puback(4), acked(5));
        assert_eq!(t.on_puback(3), acked(4));
        assert!(t.is_empty());
    }

    #[test]
    fn reconnect_without_session_resends_everything_in_order_with_fresh_ids() {
        let mut t = InflightTracker::new(8);
        for id in 1..=3 {
            t.admit(batch(id), payload(id));
            t.next_submission().unwrap();
        }
        t.on_written(1).unwrap();
        t.on_written(2).unwrap();
        t.on_connection_lost();
        assert!(t.resume(false).is_empty());
        let order: Vec<_> = std::iter::from_fn(|| t.next_submission())
            .map(|s| (s.kind, s.pkid))
            .collect();
        assert_eq!(
            order,
            vec![(batch(1), None), (batch(2), None), (batch(3), None)]
        );
    }

    #[test]
    fn status_is_not_resent() {
        let mut t = InflightTracker::new(2);
        t.admit(Kind::Status, Bytes::from_static(b"online"));
        t.next_submission().unwrap();
        t.on_written(1).unwrap();
        assert_eq!(t.on_connection_lost(), 0);
        assert!(t.is_empty());
        assert!(t.resume(true).is_empty());
        assert!(t.next_submission().is_none());
    }

    #[test]
    fn inconsistent_rumqttc_reports_are_errors() {
        let mut t = InflightTracker::new(2);
        assert_eq!(t.on_written(1), Err(TrackerError::NothingSubmitted(1)));
        t.admit(batch(1), payload(1));
        t.admit(batch(2), payload(2));
        t.next_submission().unwrap();
        t.next_submission().unwrap();
        t.on_written(1).unwrap();
        assert_eq!(t.on_written(1), Err(TrackerError::PkidInUse(1)));
        t.on_connection_lost();
        let resent = t.resume(true);
        assert_eq!(resent.len(), 1);
        assert_eq!(
            t.on_written(9),
            Err(TrackerError::PkidMismatch {
                expected: 1,
                got: 9
            })
        );
    }

    /// A model of rumqttc + broker for the property test: requests are
    /// processed pending-first, then channel, in order; a free packet id is
    /// chosen (or the preset one); the broker acknowledges written publishes
    /// in any order; connections drop at any time.
    #[derive(Debug, Clone)]
    enum Op {
        Admit,
        Process,
        Ack(usize),
        Drop,
        Reconnect(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Admit),
            4 => Just(Op::Process),
            4 => (0usize..16).prop_map(Op::Ack),
            1 => Just(Op::Drop),
            1 => any::<bool>().prop_map(Op::Reconnect),
        ]
    }

    proptest! {
        #[test]
        fn every_batch_acked_exactly_once_and_resends_precede_new(
            ops in proptest::collection::vec(op(), 1..200),
            window in 1usize..6,
        ) {
            let mut t = InflightTracker::new(window);
            let mut connected = true;
            let mut next_id = 1u64;
            // rumqttc model: queue of (batch id, preset pkid).
            let mut rumq: VecDeque<(u64, Option<u16>)> = VecDeque::new();
            // Broker view: pkid -> batch id actually on the wire.
            let mut wire: Vec<(u16, u64)> = Vec::new();
            let mut acked: Vec<u64> = Vec::new();
            let mut submitted_order: Vec<u64> = Vec::new();
            let id_of = |k: Kind| match k { Kind::Batch { id, .. } => id, Kind::Status => 0 };

            let pump = |t: &mut InflightTracker, rumq: &mut VecDeque<(u64, Option<u16>)>, order: &mut Vec<u64>| {
                while let Some(s) = t.next_submission() {
                    order.push(id_of(s.kind));
                    rumq.push_back((id_of(s.kind), s.pkid));
                }
            };

            for op in ops {
                match op {
                    Op::Admit if connected && t.can_admit() => {
                        t.admit(batch(next_id), payload(next_id));
                        next_id += 1;
                        pump(&mut t, &mut rumq, &mut submitted_order);
                    }
                    Op::Process if connected => {
                        if let Some((id, preset)) = rumq.pop_front() {
                            let pkid = preset.unwrap_or_else(|| {
                                (1..=u16::MAX).find(|p| wire.iter().all(|(w, _)| w != p)).unwrap()
                            });
                            wire.push((pkid, id));
                            t.on_written(pkid).unwrap();
                        }
                    }
                    Op::Ack(i) if connected && !wire.is_empty() => {
                        let (pkid, id) = wire.remove(i % wire.len());
                        match t.on_puback(pkid) {
                            AckOutcome::Batch { id: got, .. } => {
                                prop_assert_eq!(got, id, "ack attributed to the wrong batch");
                                prop_assert!(!acked.contains(&got), "batch {} acked twice", got);
                                acked.push(got);
                            }
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    Op::Drop if connected => {
                        connected = false;
                        rumq.clear();
                        t.on_connection_lost();
                    }
                    Op::Reconnect(session) if !connected => {
                        connected = true;
                        // Without a session the broker forgets in-flight ids.
                        wire.clear();
                        let before = submitted_order.len();
                        let unacked: Vec<u64> = t.entries.values().map(|e| id_of(e.kind)).collect();
                        for s in t.resume(session) {
                            submitted_order.push(id_of(s.kind));
                            rumq.push_back((id_of(s.kind), s.pkid));
                        }
                        pump(&mut t, &mut rumq, &mut submitted_order);
                        // Everything unacked is re-submitted, in admission order.
                        prop_assert_eq!(&submitted_order[before..], &unacked[..]);
                    }
                    _ => {}
                }
                prop_assert!(t.batches() <= window);
            }
            // Drain: reconnect and let everything complete.
            if !connected {
                wire.clear();
                for s in t.resume(false) {
                    rumq.push_back((id_of(s.kind), s.pkid));
                }
                pump(&mut t, &mut rumq, &mut submitted_order);
            }
            while let Some((id, preset)) = rumq.pop_front() {
                let pkid = preset.unwrap_or_else(|| {
                    (1..=u16::MAX).find(|p| wire.iter().all(|(w, _)| w != p)).unwrap()
                });
                wire.push((pkid, id));
                t.on_written(pkid).unwrap();
            }
            while let Some((pkid, id)) = wire.pop() {
                prop_assert_eq!(t.on_puback(pkid), acked_kind(id));
                acked.push(id);
            }
            acked.sort_unstable();
            let all: Vec<u64> = (1..next_id).collect();
            prop_assert_eq!(acked, all);
            prop_assert!(t.is_empty());
            prop_assert_eq!(t.len(), 0);
        }
    }

    fn acked_kind(id: u64) -> AckOutcome {
        acked(id)
    }
}
