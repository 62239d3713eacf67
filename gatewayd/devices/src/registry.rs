//! [`DeviceRegistry`]: the in-memory map, its events, and its persistence.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatewayd_model::{DeviceId, Reading, Transport, Value};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::db::{Db, Row};
use crate::{DevicesConfig, DevicesError};

/// Capacity of the [`events`](DeviceRegistry::events) channel: a receiver
/// more than this many events behind loses the oldest ones.
pub const EVENTS_CAPACITY: usize = 1024;

/// An eviction warning is logged at most this often (ms).
const EVICT_WARN_EVERY_MS: u64 = 60_000;

/// Milliseconds since the UNIX epoch by the system clock (0 if the clock is
/// before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One device as [`list`](DeviceRegistry::list) and
/// [`get`](DeviceRegistry::get) return it: the fields of D-Bus
/// `ListDevices` (docs/dbus.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// `<transport>:<name>`, e.g. `coap:boiler-1`.
    pub id: String,
    /// The id's transport prefix (`coap`, `lora`, `ble`, …).
    pub transport: String,
    /// Adapter instance that last delivered a reading naming itself.
    pub source: Option<String>,
    /// When its first reading was committed (unix ms).
    pub first_seen_ms: u64,
    /// When its last reading was committed (unix ms).
    pub last_seen_ms: u64,
    /// Readings committed from it (since it was first seen, or since it
    /// was last evicted).
    pub readings: u64,
    /// Nothing committed from it for `devices.lost_after_secs` (as of the
    /// last [`check_lost`](DeviceRegistry::check_lost)).
    pub lost: bool,
    /// Last received signal strength, dBm.
    pub rssi: Option<f64>,
    /// Last signal-to-noise ratio, dB.
    pub snr: Option<f64>,
    /// Last battery level, percent.
    pub battery: Option<f64>,
    /// Last firmware version reported (`meta.extra["firmware"]`).
    pub firmware: Option<String>,
}

impl DeviceInfo {
    /// D-Bus `state`: `"lost"` or `"active"`.
    pub fn state(&self) -> &'static str {
        if self.lost {
            "lost"
        } else {
            "active"
        }
    }
}

/// A change in a device's presence, as the D-Bus `Device*` signals carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DeviceEvent {
    /// `DeviceFirstSeen`: the first committed reading of a device the
    /// registry does not know (never seen, or evicted since).
    FirstSeen {
        id: String,
        transport: String,
        /// The reading's `meta.source`, `""` if it has none.
        source: String,
    },
    /// `DeviceLost`: nothing committed from it for `lost_after_secs`.
    Lost { id: String, last_seen_ms: u64 },
    /// `DeviceReturned`: a lost device's reading was committed;
    /// `lost_for_ms` is the silence, `now - last_seen`.
    Returned { id: String, lost_for_ms: u64 },
}

/// What the registry keeps per device.
#[derive(Debug, Clone)]
struct Entry {
    transport: Transport,
    source: Option<Arc<str>>,
    first_seen_ms: u64,
    last_seen_ms: u64,
    readings: u64,
    lost: bool,
    rssi: Option<f64>,
    snr: Option<f64>,
    battery: Option<f64>,
    firmware: Option<Arc<str>>,
    /// Changed since the last persist took it.
    dirty: bool,
    /// The file may hold a row for this id (so evicting it needs a delete).
    in_db: bool,
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// Replaces `slot` by `v`, allocating only when the value changes.
fn set_str(slot: &mut Option<Arc<str>>, v: &str) {
    if slot.as_deref() != Some(v) {
        *slot = Some(Arc::from(v));
    }
}

/// `meta.battery`, else the last `battery` measurement in `%EL` with a
/// float value. Non-finite values count as absent.
fn battery_of(r: &Reading) -> Option<f64> {
    finite(r.meta.battery).or_else(|| {
        r.measurements.iter().rev().find_map(|m| match m.value {
            Some(Value::Float(v))
                if v.is_finite() && m.name == "battery" && m.unit.as_deref() == Some("%EL") =>
            {
                Some(v)
            }
            _ => None,
        })
    })
}

impl Entry {
    fn new(r: &Reading, now_ms: u64, in_db: bool) -> Entry {
        let mut e = Entry {
            transport: r.device.transport(),
            source: None,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            readings: 0,
            lost: false,
            rssi: None,
            snr: None,
            battery: None,
            firmware: None,
            dirty: true,
            in_db,
        };
        e.apply(r, now_ms);
        e
    }

    /// Records one committed reading. Allocates only when `source` or
    /// `firmware` changes.
    fn apply(&mut self, r: &Reading, now_ms: u64) {
        self.last_seen_ms = now_ms;
        self.readings = self.readings.saturating_add(1);
        self.dirty = true;
        if let Some(s) = r.meta.source.as_deref() {
            set_str(&mut self.source, s);
        }
        if let Some(v) = finite(r.meta.rssi) {
            self.rssi = Some(v);
        }
        if let Some(v) = finite(r.meta.snr) {
            self.snr = Some(v);
        }
        if let Some(v) = battery_of(r) {
            self.battery = Some(v);
        }
        if let Some(fw) = r.meta.extra.get("firmware") {
            set_str(&mut self.firmware, fw);
        }
    }

    fn row(&self, id: &Arc<str>) -> Row {
        Row {
            id: id.clone(),
            source: self.source.clone(),
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            readings: self.readings,
            lost: self.lost,
            rssi: self.rssi,
            snr: self.snr,
            battery: self.battery,
            firmware: self.firmware.clone(),
        }
    }

    fn info(&self, id: &str) -> DeviceInfo {
        DeviceInfo {
            id: id.to_owned(),
            transport: self.transport.prefix().to_owned(),
            source: self.source.as_deref().map(str::to_owned),
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            readings: self.readings,
            lost: self.lost,
            rssi: self.rssi,
            snr: self.snr,
            battery: self.battery,
            firmware: self.firmware.as_deref().map(str::to_owned),
        }
    }
}

/// Everything behind the registry's one lock.
#[derive(Debug, Default)]
struct State {
    devices: HashMap<Arc<str>, Entry>,
    /// Evicted ids whose row may still be in the file. A subset of the
    /// file's rows, so never more than the file holds.
    pending_deletes: HashSet<Arc<str>>,
    evicted: u64,
    evicted_unreported: u64,
    last_evict_warn_ms: Option<u64>,
}

impl State {
    /// Removes the entry silent the longest (oldest `last_seen`, then
    /// smallest id). O(n): only when a new device arrives at the bound.
    fn evict_oldest(&mut self, now_ms: u64, max_devices: usize) {
        let Some(id) = self
            .devices
            .iter()
            .min_by(|(a_id, a), (b_id, b)| {
                (a.last_seen_ms, &***a_id).cmp(&(b.last_seen_ms, &***b_id))
            })
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        let Some(entry) = self.devices.remove(&id) else {
            return;
        };
        if entry.in_db {
            self.pending_deletes.insert(id.clone());
        }
        self.evicted = self.evicted.saturating_add(1);
        self.evicted_unreported += 1;
        let due = self
            .last_evict_warn_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= EVICT_WARN_EVERY_MS);
        if due {
            warn!(
                max_devices,
                evicted = self.evicted_unreported,
                evicted_total = self.evicted,
                last_evicted = %id,
                last_seen_ms = entry.last_seen_ms,
                "device registry full (devices.max_devices): forgot the devices silent the longest"
            );
            self.evicted_unreported = 0;
            self.last_evict_warn_ms = Some(now_ms);
        }
    }

    /// Takes what `persist` must write: dirty entries (marked clean and
    /// `in_db`) and pending deletes.
    fn take_pending(&mut self) -> (Vec<Row>, Vec<Arc<str>>) {
        let mut rows = Vec::new();
        for (id, e) in self.devices.iter_mut().filter(|(_, e)| e.dirty) {
            e.dirty = false;
            e.in_db = true;
            rows.push(e.row(id));
        }
        let deletes = self.pending_deletes.drain().collect();
        (rows, deletes)
    }

    /// Undoes [`take_pending`](Self::take_pending) after a failed write,
    /// taking into account what changed since.
    fn restore_pending(&mut self, rows: Vec<Row>, deletes: Vec<Arc<str>>) {
        for row in rows {
            // Gone since: its eviction queued the delete (it was in_db).
            if let Some(e) = self.devices.get_mut(&row.id) {
                e.dirty = true;
            }
        }
        for id in deletes {
            match self.devices.get_mut(&id) {
                // Seen again since: the stale row is overwritten instead.
                Some(e) => {
                    e.dirty = true;
                    e.in_db = true;
                }
                None => {
                    self.pending_deletes.insert(id);
                }
            }
        }
    }
}

struct Inner {
    cfg: DevicesConfig,
    state: Mutex<State>,
    /// `None` for [`DeviceRegistry::in_memory`].
    db: Option<Mutex<Db>>,
    events: broadcast::Sender<DeviceEvent>,
}

impl Inner {
    /// Nothing under the lock panics, so a poisoned lock still guards a
    /// consistent state.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: DeviceEvent) {
        // Err only means nobody is subscribed.
        let _ = self.events.send(event);
    }
}

/// The devices gatewayd has seen. Cheap to clone (shared).
///
/// See the [crate documentation](crate) for what is persisted when.
#[derive(Clone)]
pub struct DeviceRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeviceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRegistry")
            .field("devices", &self.len())
            .field("persistent", &self.inner.db.is_some())
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl DeviceRegistry {
    fn with(cfg: DevicesConfig, state: State, db: Option<Db>) -> DeviceRegistry {
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        DeviceRegistry {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(state),
                db: db.map(Mutex::new),
                events,
            }),
        }
    }

    /// Opens (creating if missing) the SQLite file at `path` and loads
    /// every persisted device. Blocking.
    ///
    /// Rows beyond `cfg.max_devices` (a smaller bound than when they were
    /// written) are evicted, oldest first, and counted in
    /// [`evicted`](Self::evicted). Rows whose id this build cannot parse
    /// (written by a newer gatewayd with more transports) are ignored and
    /// left in the file.
    ///
    /// Errors name the file: not an SQLite database, damaged, another
    /// SQLite file, a newer schema, locked by another process, or a
    /// `cfg` that [`DevicesConfig::validate`] refuses. The daemon then
    /// runs with [`in_memory`](Self::in_memory).
    pub fn open(path: &Path, cfg: DevicesConfig) -> Result<DeviceRegistry, DevicesError> {
        if let Err((key, message)) = cfg.validate() {
            return Err(DevicesError::InvalidConfig {
                path: path.to_owned(),
                key,
                message,
            });
        }
        let (db, mut rows) = Db::open(path)?;
        let mut state = State::default();
        let mut unparsable = 0usize;
        if rows.len() > cfg.max_devices {
            // Eviction order (oldest last_seen, then smallest id) first.
            rows.sort_unstable_by(|a, b| (a.last_seen_ms, &*a.id).cmp(&(b.last_seen_ms, &*b.id)));
            let keep = rows.split_off(rows.len() - cfg.max_devices);
            let excess = std::mem::replace(&mut rows, keep);
            state.evicted = excess.len() as u64;
            warn!(
                path = %path.display(),
                max_devices = cfg.max_devices,
                evicted = excess.len(),
                "device registry holds more devices than devices.max_devices: forgot the \
                 devices silent the longest"
            );
            state
                .pending_deletes
                .extend(excess.into_iter().map(|r| r.id));
        }
        state.devices.reserve(rows.len());
        for r in rows {
            let Ok(device) = r.id.parse::<DeviceId>() else {
                unparsable += 1;
                continue;
            };
            state.devices.insert(
                r.id,
                Entry {
                    transport: device.transport(),
                    source: r.source,
                    first_seen_ms: r.first_seen_ms,
                    last_seen_ms: r.last_seen_ms,
                    readings: r.readings,
                    lost: r.lost,
                    rssi: r.rssi,
                    snr: r.snr,
                    battery: r.battery,
                    firmware: r.firmware,
                    dirty: false,
                    in_db: true,
                },
            );
        }
        if unparsable > 0 {
            warn!(
                path = %path.display(),
                rows = unparsable,
                "device registry: ignoring rows with ids this gatewayd does not understand"
            );
        }
        debug!(path = %path.display(), devices = state.devices.len(), "device registry opened");
        Ok(DeviceRegistry::with(cfg, state, Some(db)))
    }

    /// A registry that is never persisted: the fallback when
    /// [`open`](Self::open) fails. [`persist`](Self::persist) is a no-op
    /// returning `Ok(0)`. Out-of-range `cfg` values are clamped into the
    /// ranges [`DevicesConfig::validate`] accepts.
    pub fn in_memory(cfg: DevicesConfig) -> DeviceRegistry {
        DeviceRegistry::with(cfg.clamped(), State::default(), None)
    }

    /// The configuration in effect.
    pub fn config(&self) -> &DevicesConfig {
        &self.inner.cfg
    }

    /// Whether [`persist`](Self::persist) writes to a file (false for
    /// [`in_memory`](Self::in_memory)).
    pub fn is_persistent(&self) -> bool {
        self.inner.db.is_some()
    }

    /// Records committed readings, `now_ms` being the commit time (it
    /// becomes `last_seen`). Emits [`DeviceEvent::FirstSeen`] for unknown
    /// devices and [`DeviceEvent::Returned`] for lost ones.
    ///
    /// Cheap and non-blocking: one lock for the whole slice, no I/O; for a
    /// known device no allocation unless its `source` or `firmware`
    /// changes. A new device at the `max_devices` bound costs an O(n) scan
    /// to evict the one silent the longest.
    pub fn observe(&self, readings: &[Reading], now_ms: u64) {
        if readings.is_empty() {
            return;
        }
        let max = self.inner.cfg.max_devices;
        let mut st = self.inner.state();
        for r in readings {
            let id = r.device.as_str();
            if let Some(e) = st.devices.get_mut(id) {
                if e.lost {
                    e.lost = false;
                    self.inner.emit(DeviceEvent::Returned {
                        id: id.to_owned(),
                        lost_for_ms: now_ms.saturating_sub(e.last_seen_ms),
                    });
                }
                e.apply(r, now_ms);
                continue;
            }
            if st.devices.len() >= max {
                st.evict_oldest(now_ms, max);
            }
            let in_db = st.pending_deletes.remove(id);
            let entry = Entry::new(r, now_ms, in_db);
            st.devices.insert(Arc::from(id), entry);
            self.inner.emit(DeviceEvent::FirstSeen {
                id: id.to_owned(),
                transport: r.device.transport().prefix().to_owned(),
                source: r.meta.source.clone().unwrap_or_default(),
            });
        }
    }

    /// Every device, sorted by id.
    pub fn list(&self) -> Vec<DeviceInfo> {
        // Copy out under the lock (reference counts, no string copies),
        // build the owned records after releasing it.
        let entries: Vec<(Arc<str>, Entry)> = self
            .inner
            .state()
            .devices
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        let mut out: Vec<DeviceInfo> = entries.iter().map(|(id, e)| e.info(id)).collect();
        out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// One device.
    pub fn get(&self, id: &str) -> Option<DeviceInfo> {
        let entry = self.inner.state().devices.get(id).cloned();
        entry.map(|e| e.info(id))
    }

    /// Devices known.
    pub fn len(&self) -> usize {
        self.inner.state().devices.len()
    }

    /// No device known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Devices forgotten to stay within `max_devices` since this registry
    /// was opened.
    pub fn evicted(&self) -> u64 {
        self.inner.state().evicted
    }

    /// Subscribes to [`DeviceEvent`]s from now on.
    ///
    /// The channel is bounded ([`EVENTS_CAPACITY`] events) and never slows
    /// the registry down: a receiver that falls further behind loses the
    /// oldest events and its next `recv` returns
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) with the
    /// number lost. State is always available from [`list`](Self::list).
    pub fn events(&self) -> broadcast::Receiver<DeviceEvent> {
        self.inner.events.subscribe()
    }

    /// Marks devices silent for `lost_after_secs` or longer
    /// (`now_ms - last_seen_ms >= lost_after`) as lost, emitting
    /// [`DeviceEvent::Lost`] once for each. No I/O; O(n) under the lock.
    pub fn check_lost(&self, now_ms: u64) {
        let lost_after = self.inner.cfg.lost_after_ms();
        let mut st = self.inner.state();
        for (id, e) in st.devices.iter_mut() {
            if !e.lost && now_ms.saturating_sub(e.last_seen_ms) >= lost_after {
                e.lost = true;
                e.dirty = true;
                self.inner.emit(DeviceEvent::Lost {
                    id: id.to_string(),
                    last_seen_ms: e.last_seen_ms,
                });
            }
        }
    }

    /// Writes the entries changed since the last persist and deletes the
    /// rows of evicted devices, in one transaction. Returns the number of
    /// rows written (inserted, replaced or deleted); 0 when nothing
    /// changed, and always for [`in_memory`](Self::in_memory).
    ///
    /// Blocking (SQLite I/O): call it from `spawn_blocking`. The registry's
    /// lock is held only to copy the changed entries, never during I/O, so
    /// `observe` is not held up. On error nothing is lost from memory: the
    /// entries stay pending for the next call.
    pub fn persist(&self) -> Result<usize, DevicesError> {
        let Some(db) = &self.inner.db else {
            return Ok(0);
        };
        // Serialises persists; taken before the state lock, never the
        // other way round.
        let mut db = db.lock().unwrap_or_else(PoisonError::into_inner);
        let (rows, deletes) = self.inner.state().take_pending();
        if rows.is_empty() && deletes.is_empty() {
            return Ok(0);
        }
        match db.write(&rows, &deletes) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.inner.state().restore_pending(rows, deletes);
                Err(e)
            }
        }
    }

    /// The background task: [`check_lost`](Self::check_lost) every
    /// `lost_after_secs / 4` clamped to 1–10 s, [`persist`](Self::persist)
    /// every `persist_interval_secs` on tokio's blocking pool. When `stop`
    /// is cancelled it persists one last time and returns; await it before
    /// the runtime shuts down. Persist errors are logged and retried at
    /// the next interval; it never panics.
    pub async fn run(self, stop: CancellationToken) {
        let check_every =
            Duration::from_millis((self.inner.cfg.lost_after_ms() / 4).clamp(1000, 10_000));
        let persist_every = Duration::from_secs(self.inner.cfg.persist_interval_secs.max(1));
        let start = Instant::now();
        let mut check = tokio::time::interval_at(start + check_every, check_every);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut persist = tokio::time::interval_at(start + persist_every, persist_every);
        persist.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = check.tick() => self.check_lost(now_ms()),
                _ = persist.tick() => self.persist_on_blocking_pool(false).await,
            }
        }
        self.persist_on_blocking_pool(true).await;
    }

    async fn persist_on_blocking_pool(&self, last: bool) {
        if self.inner.db.is_none() {
            return;
        }
        let reg = self.clone();
        match tokio::task::spawn_blocking(move || reg.persist()).await {
            Ok(Ok(rows)) => debug!(rows, last, "device registry persisted"),
            Ok(Err(e)) if last => {
                error!(error = %e, "cannot persist the device registry at shutdown; changes since the last persist are lost")
            }
            Ok(Err(e)) => warn!(error = %e, "cannot persist the device registry; will retry"),
            Err(e) => error!(error = %e, "device registry persist task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(id: &str) -> Reading {
        Reading::new(id.parse().unwrap(), gatewayd_model::Timestamp(0), vec![])
    }

    fn insert(st: &mut State, id: &str, now: u64) {
        let in_db = st.pending_deletes.remove(id);
        st.devices
            .insert(Arc::from(id), Entry::new(&reading(id), now, in_db));
    }

    /// A failed write puts back what it took, allowing for what changed
    /// while it ran (an entry evicted, an evicted device seen again).
    #[test]
    fn failed_persist_keeps_changes_pending() {
        let mut st = State::default();
        insert(&mut st, "coap:a", 1);
        insert(&mut st, "coap:b", 2);
        insert(&mut st, "coap:c", 3);
        let (rows, deletes) = st.take_pending();
        assert_eq!((rows.len(), deletes.len()), (3, 0));
        // Written: b is evicted (its row needs a delete), c is clean.
        st.evict_oldest(10, 3); // a
        st.evict_oldest(10, 3); // b
        assert_eq!(st.pending_deletes.len(), 2);
        insert(&mut st, "coap:d", 11);

        let (rows, deletes) = st.take_pending();
        assert_eq!((rows.len(), deletes.len()), (1, 2));
        // While the write runs: a is seen again, d is evicted.
        insert(&mut st, "coap:a", 12);
        assert!(!st.devices["coap:a"].in_db);
        st.evict_oldest(12, 3); // c (last_seen 3)
        st.restore_pending(rows, deletes);

        // d (new, never written) is dirty again; a's stale row will be
        // overwritten; b's delete is retried; c's delete is queued.
        assert!(st.devices["coap:d"].dirty);
        let a = &st.devices["coap:a"];
        assert!(a.dirty && a.in_db);
        let mut pending: Vec<&str> = st.pending_deletes.iter().map(|s| &**s).collect();
        pending.sort_unstable();
        assert_eq!(pending, ["coap:b", "coap:c"]);
        assert_eq!(st.evicted, 3);
    }

    #[test]
    fn battery_ignores_other_units_and_non_float_values() {
        let mut r = reading("ble:x");
        r.measurements.push(gatewayd_model::Measurement {
            name: "battery".into(),
            unit: Some("%EL".into()),
            value: Some(Value::String("full".into())),
            sum: None,
        });
        r.measurements.push(gatewayd_model::Measurement::float(
            "battery",
            Some("V"),
            3.0,
        ));
        assert_eq!(battery_of(&r), None);
        r.measurements.push(gatewayd_model::Measurement::float(
            "battery",
            Some("%EL"),
            55.0,
        ));
        assert_eq!(battery_of(&r), Some(55.0));
    }
}
