//! The packet forwarders (gateways) talking to this server, by gateway EUI.
//!
//! Owns, per forwarder: the address its PUSH_DATA comes from, the address
//! of its last PULL_DATA (where PULL_RESP downlinks go), when each was last
//! seen, its protocol version, counters and its last `stat`. A forwarder is
//! **alive** while its last PULL_DATA is younger than the timeout; a
//! downlink for a forwarder that is not alive is refused (the caller logs
//! it). The table holds at most `max` forwarders: a new one beyond that is
//! refused until an offline one can be evicted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gatewayd_semtech_udp::{Eui, ProtocolVersion, Stat};

/// Counters of one forwarder.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ForwarderCounters {
    pub push_data: u64,
    pub pull_data: u64,
    pub rxpk: u64,
    pub rxpk_bad_crc: u64,
    pub stat: u64,
    pub tx_ack_ok: u64,
    pub tx_ack_err: u64,
    pub downlinks_sent: u64,
}

/// One forwarder.
#[derive(Debug, Clone)]
pub struct Forwarder {
    pub eui: Eui,
    pub version: ProtocolVersion,
    pub push_addr: Option<SocketAddr>,
    pub pull_addr: Option<SocketAddr>,
    pub last_push: Option<Instant>,
    pub last_pull: Option<Instant>,
    pub counters: ForwarderCounters,
    pub last_stat: Option<Stat>,
}

/// Why a downlink cannot go to a forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("forwarder {0} unknown")]
    Unknown(Eui),
    #[error("forwarder {0} has sent no PULL_DATA")]
    NoPullAddress(Eui),
    #[error("forwarder {0} offline (no PULL_DATA within the timeout)")]
    Offline(Eui),
}

/// The forwarder table.
#[derive(Debug)]
pub struct Forwarders {
    table: HashMap<Eui, Forwarder>,
    timeout: Duration,
    max: usize,
}

impl Forwarders {
    pub fn new(timeout: Duration, max: usize) -> Self {
        Forwarders {
            table: HashMap::new(),
            timeout,
            max: max.max(1),
        }
    }

    /// The forwarder, created if there is room (an offline one is evicted
    /// to make room). `None`: the table is full of live forwarders.
    pub fn entry(
        &mut self,
        eui: Eui,
        version: ProtocolVersion,
        now: Instant,
    ) -> Option<&mut Forwarder> {
        if !self.table.contains_key(&eui) && self.table.len() >= self.max {
            let victim = self
                .table
                .values()
                .filter(|f| !self.alive_at(f, now))
                .min_by_key(|f| f.last_pull.max(f.last_push))
                .map(|f| f.eui)?;
            self.table.remove(&victim);
        }
        let f = self.table.entry(eui).or_insert_with(|| Forwarder {
            eui,
            version,
            push_addr: None,
            pull_addr: None,
            last_push: None,
            last_pull: None,
            counters: ForwarderCounters::default(),
            last_stat: None,
        });
        f.version = version;
        Some(f)
    }

    /// A known forwarder.
    pub fn get(&self, eui: Eui) -> Option<&Forwarder> {
        self.table.get(&eui)
    }

    /// A known forwarder, mutably.
    pub fn get_mut(&mut self, eui: Eui) -> Option<&mut Forwarder> {
        self.table.get_mut(&eui)
    }

    fn alive_at(&self, f: &Forwarder, now: Instant) -> bool {
        f.last_pull
            .is_some_and(|t| now.saturating_duration_since(t) < self.timeout)
    }

    /// Whether the forwarder sent a PULL_DATA within the timeout.
    pub fn is_alive(&self, eui: Eui, now: Instant) -> bool {
        self.table.get(&eui).is_some_and(|f| self.alive_at(f, now))
    }

    /// How many forwarders are alive.
    pub fn alive_count(&self, now: Instant) -> usize {
        self.table
            .values()
            .filter(|f| self.alive_at(f, now))
            .count()
    }

    /// Where a downlink for this forwarder goes, with its version.
    pub fn route(
        &self,
        eui: Eui,
        now: Instant,
    ) -> Result<(SocketAddr, ProtocolVersion), RouteError> {
        let f = self.table.get(&eui).ok_or(RouteError::Unknown(eui))?;
        let addr = f.pull_addr.ok_or(RouteError::NoPullAddress(eui))?;
        if !self.alive_at(f, now) {
            return Err(RouteError::Offline(eui));
        }
        Ok((addr, f.version))
    }

    /// Every forwarder.
    pub fn iter(&self) -> impl Iterator<Item = &Forwarder> {
        self.table.values()
    }

    /// Number of forwarders known.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_pull_data_and_routes_to_the_pull_address() {
        let mut t = Forwarders::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        let a = Eui::from(1);
        let f = t.entry(a, ProtocolVersion::V2, now).unwrap();
        f.push_addr = Some("127.0.0.1:1".parse().unwrap());
        assert_eq!(t.route(a, now), Err(RouteError::NoPullAddress(a)));
        let f = t.get_mut(a).unwrap();
        f.pull_addr = Some("127.0.0.1:2".parse().unwrap());
        f.last_pull = Some(now);
        assert_eq!(t.route(a, now).unwrap().0.port(), 2);
        assert_eq!(t.alive_count(now), 1);
        let later = now + Duration::from_secs(61);
        assert_eq!(t.route(a, later), Err(RouteError::Offline(a)));
        assert_eq!(
            t.route(Eui::from(9), now),
            Err(RouteError::Unknown(Eui::from(9)))
        );
    }

    #[test]
    fn table_is_bounded_and_evicts_offline_forwarders_only() {
        let mut t = Forwarders::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        for i in 1..=2u64 {
            t.entry(Eui::from(i), ProtocolVersion::V2, now)
                .unwrap()
                .last_pull = Some(now);
        }
        assert!(t.entry(Eui::from(3), ProtocolVersion::V2, now).is_none());
        let later = now + Duration::from_secs(120);
        assert!(t.entry(Eui::from(3), ProtocolVersion::V2, later).is_some());
        assert_eq!(t.len(), 2);
    }
}
