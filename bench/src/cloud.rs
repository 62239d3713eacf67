//! End-to-end delivery: polls cloud-bridge's HTTP API for each simulated
//! device's readings and matches them (by the `seq` measurement) with what
//! the sensors posted.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::histo::Histogram;

/// One posted reading, by sensor `seq`.
#[derive(Clone, Copy, Debug)]
pub struct Rec {
    pub time_us: i64,
    /// Wall clock of the POST's first transmission.
    pub post_us: i64,
    pub state: State,
    /// Identity of the first stored copy seen (0: not seen yet).
    pub seen_key: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Sent, no answer yet.
    InFlight,
    /// Answered 2.xx: the gateway committed it.
    Acked,
    /// Answered with an error code: the gateway refused it.
    Refused,
    /// Timed out / reset: unknown.
    Unknown,
}

/// What one sensor posted.
pub struct Track {
    pub device: String,
    pub recs: Vec<Rec>,
    /// Records below this index are all seen or refused.
    first_open: usize,
}

impl Track {
    pub fn new(device: String) -> Track {
        Track {
            device,
            recs: Vec::new(),
            first_open: 0,
        }
    }
}

/// Shared results of the poller.
#[derive(Default)]
pub struct CloudStats {
    pub delivered: u64,
    pub duplicates: u64,
    dup_keys: HashSet<(usize, u64)>,
    /// POST → `received_us` of the stored reading (cloud-bridge's clock).
    pub e2e_stored: Histogram,
    /// POST → first poll that saw it.
    pub e2e_visible: Histogram,
    pub first_post_us: Option<i64>,
    pub last_received_us: Option<i64>,
    pub polls: u64,
    pub poll_errors: u64,
    pub last_error: Option<String>,
    /// Readings returned that did not match anything we posted (other runs, …).
    pub foreign: u64,
}

/// A reading as returned by the API, reduced to what we match on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudReading {
    pub gateway: Option<String>,
    pub cloud_seq: Option<i64>,
    pub time_us: Option<i64>,
    pub received_us: Option<i64>,
    /// The value of the `seq` measurement.
    pub sensor_seq: Option<u64>,
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .or_else(|| v.as_str()?.parse().ok())
}

/// Parses a `GET /api/v1/devices/{id}/readings` body:
/// `{"readings":[{"gateway","seq","time_us","received_us","measurements":
/// [{"name","unit","value"}]}],"more":bool}`. Tolerant: a bare array,
/// short keys (`g q t n v`), measurements as an array or a name→value map.
/// Returns the readings and the `more` flag.
pub fn parse_readings(body: &Value) -> (Vec<CloudReading>, bool) {
    let list = body
        .get("readings")
        .and_then(Value::as_array)
        .or_else(|| body.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let more = body.get("more").and_then(Value::as_bool).unwrap_or(false);
    let pick = |o: &Value, keys: &[&str]| keys.iter().find_map(|k| o.get(*k)).cloned();
    let readings = list
        .iter()
        .map(|r| {
            let ms = pick(r, &["measurements", "m", "e"]).unwrap_or(Value::Null);
            let seq_value = match &ms {
                Value::Array(items) => items.iter().find_map(|m| {
                    let name = pick(m, &["name", "n"])?;
                    (name.as_str()? == "seq").then(|| pick(m, &["value", "v"]))?
                }),
                Value::Object(map) => map.get("seq").map(|v| v.get("value").unwrap_or(v).clone()),
                _ => None,
            };
            CloudReading {
                gateway: pick(r, &["gateway", "gw", "g"])
                    .and_then(|v| v.as_str().map(str::to_owned)),
                cloud_seq: pick(r, &["seq", "q"]).as_ref().and_then(as_i64),
                time_us: pick(r, &["time_us", "t"]).as_ref().and_then(as_i64),
                received_us: pick(r, &["received_us"]).as_ref().and_then(as_i64),
                sensor_seq: seq_value
                    .as_ref()
                    .and_then(as_i64)
                    .and_then(|v| u64::try_from(v).ok()),
            }
        })
        .collect();
    (readings, more)
}

/// Tolerance when comparing our reading time with the stored one (the
/// gateway resolves SenML float seconds to microseconds).
const TIME_SLACK_US: i64 = 1000;
const PAGE: usize = 1000;

pub struct Poller {
    pub base: String,
    http: reqwest::Client,
    pub tracks: Arc<Vec<Mutex<Track>>>,
    pub stats: Arc<Mutex<CloudStats>>,
}

impl Poller {
    pub fn new(base: &str, tracks: Arc<Vec<Mutex<Track>>>) -> anyhow::Result<Poller> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(16)
            .build()?;
        Ok(Poller {
            base: base.trim_end_matches('/').to_owned(),
            http,
            tracks,
            stats: Arc::new(Mutex::new(CloudStats::default())),
        })
    }

    /// Checks that the API answers at all.
    pub async fn check(&self) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/devices?limit=1", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !resp.status().is_success() {
            bail!("GET {url}: HTTP {}", resp.status());
        }
        Ok(())
    }

    /// Whether every acknowledged reading has been seen.
    pub fn all_acked_seen(&self) -> bool {
        self.tracks.iter().all(|t| {
            let t = t.lock().unwrap();
            t.recs[t.first_open..]
                .iter()
                .all(|r| r.seen_key != 0 || r.state != State::Acked)
        })
    }

    /// One round over the devices `shard` of `shards`.
    pub async fn round(&self, shard: usize, shards: usize) {
        for i in (shard..self.tracks.len()).step_by(shards) {
            if let Err(e) = self.poll_device(i).await {
                let mut s = self.stats.lock().unwrap();
                s.poll_errors += 1;
                s.last_error = Some(format!("{e:#}"));
            }
        }
    }

    async fn poll_device(&self, i: usize) -> anyhow::Result<()> {
        let (device, mut since) = {
            let mut t = self.tracks[i].lock().unwrap();
            while t.first_open < t.recs.len() {
                let r = t.recs[t.first_open];
                if r.seen_key != 0 || r.state == State::Refused {
                    t.first_open += 1;
                } else {
                    break;
                }
            }
            match t.recs.get(t.first_open) {
                None => return Ok(()),
                Some(r) => (t.device.clone(), r.time_us - TIME_SLACK_US),
            }
        };
        for _page in 0..20 {
            let url = format!("{}/api/v1/devices/{device}/readings", self.base);
            let resp = self
                .http
                .get(&url)
                .query(&[("since", since.to_string()), ("limit", PAGE.to_string())])
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            self.stats.lock().unwrap().polls += 1;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(()); // the cloud has not heard of this device yet
            }
            if !resp.status().is_success() {
                bail!("GET {url}: HTTP {}", resp.status());
            }
            let body: Value = resp
                .json()
                .await
                .with_context(|| format!("GET {url}: not JSON"))?;
            let now = crate::now_us();
            let (readings, more) = parse_readings(&body);
            let last_time = readings.iter().filter_map(|r| r.time_us).max();
            self.absorb(i, &readings, now);
            match last_time {
                Some(t) if more && t > since => since = t,
                _ => break,
            }
        }
        Ok(())
    }

    fn absorb(&self, i: usize, readings: &[CloudReading], now_us: i64) {
        let mut t = self.tracks[i].lock().unwrap();
        let mut s = self.stats.lock().unwrap();
        for r in readings {
            let Some(rec) = r.sensor_seq.and_then(|q| t.recs.get_mut(q as usize)) else {
                s.foreign += 1;
                continue;
            };
            if r.time_us
                .is_some_and(|tu| (tu - rec.time_us).abs() > TIME_SLACK_US)
            {
                s.foreign += 1; // same seq, other run
                continue;
            }
            let mut h = DefaultHasher::new();
            r.gateway.hash(&mut h);
            match r.cloud_seq {
                Some(q) => q.hash(&mut h),
                None => r.time_us.hash(&mut h),
            }
            let key = h.finish() | 1;
            if rec.seen_key == 0 {
                rec.seen_key = key;
                s.delivered += 1;
                s.first_post_us = Some(s.first_post_us.map_or(rec.post_us, |f| f.min(rec.post_us)));
                s.e2e_visible.record((now_us - rec.post_us).max(0) as u64);
                if let Some(rx) = r.received_us {
                    s.e2e_stored.record((rx - rec.post_us).max(0) as u64);
                    s.last_received_us = Some(s.last_received_us.map_or(rx, |l| l.max(rx)));
                }
            } else if rec.seen_key != key && s.dup_keys.insert((i, key)) {
                s.duplicates += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_documented_shape() {
        let body = json!({"device":"coap:sim-0","readings":[
            {"gateway":"gw1","seq":17,"device":"coap:sim-0","time":"…","time_us":1732476000123456i64,
             "received":"…","received_us":1732476000200000i64,
             "measurements":[{"name":"temperature","unit":"Cel","value":21.5},
                             {"name":"seq","unit":"count","value":42.0}],"meta":{}}],
            "more":true});
        let (r, more) = parse_readings(&body);
        assert!(more);
        assert_eq!(
            r,
            vec![CloudReading {
                gateway: Some("gw1".into()),
                cloud_seq: Some(17),
                time_us: Some(1732476000123456),
                received_us: Some(1732476000200000),
                sensor_seq: Some(42),
            }]
        );
    }

    #[test]
    fn tolerates_other_shapes() {
        let body = json!([{"g":"gw","q":"3","t":5,"m":{"seq":7}}, {"nothing":1}]);
        let (r, more) = parse_readings(&body);
        assert!(!more);
        assert_eq!(r[0].sensor_seq, Some(7));
        assert_eq!(r[0].cloud_seq, Some(3));
        assert_eq!(r[1], CloudReading::default());
        assert!(parse_readings(&json!({"error":"x"})).0.is_empty());
    }
}
