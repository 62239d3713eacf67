//! The HTTP JSON API (axum).
//!
//! * `GET /healthz` → 200 `{"status":"ok","mqtt":"connected","store":"ok",
//!   "store_kind":"sqlite","client_id":"…","counters":{…}}`, or 503 with
//!   `"status":"unavailable"` when MQTT is disconnected or the store fails.
//! * `GET /api/v1/gateways?after=&limit=` → `{"gateways":[{"id","status",
//!   "status_time","status_time_us","first_seen","first_seen_us",
//!   "last_seen","last_seen_us"}],"more":bool}` ordered by id.
//! * `GET /api/v1/devices?after=&limit=` → `{"devices":[{"id","gateway",
//!   "transport","first_seen","first_seen_us","last_seen","last_seen_us",
//!   "last_reading","last_reading_us"}],"more":bool}` ordered by id.
//! * `GET /api/v1/devices/{id}/readings?since=&until=&limit=` →
//!   `{"device":"…","readings":[{"gateway","seq","device","time","time_us",
//!   "received","received_us","measurements":[…],"meta":{…}}],"more":bool}`
//!   ascending by time; `since` inclusive, `until` exclusive, each RFC 3339
//!   or integer microseconds since the UNIX epoch; `limit` default 100,
//!   max 10000. A measurement is `{"name","unit"?,"value"?,"sum"?}`; `value`
//!   is a number (SenML `v`), bool (`vb`), string (`vs`) or
//!   `{"data":"<base64url without padding>"}` (`vd`).
//! * `GET /api/v1/rejected?limit=` → `{"rejected":[{"id","received",
//!   "received_us","topic","gateway","reason","payload_excerpt"}]}` newest
//!   first (default 100, max 1000).
//!
//! Errors are JSON: `{"error":"…","parameter":"…"}` (400, naming the query
//! parameter), `{"error":"…"}` (404, 500, 503).
//! Times `*_time`/`first_seen`/… are RFC 3339 UTC strings with microseconds.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::metrics::{Counters, Metrics};
use crate::store::{ListQuery, ReadingQuery, Store, StoreError};
use crate::timefmt;

pub const DEFAULT_READINGS_LIMIT: usize = 100;
pub const MAX_READINGS_LIMIT: usize = 10_000;
pub const DEFAULT_LIST_LIMIT: usize = 1000;
pub const MAX_LIST_LIMIT: usize = 10_000;
pub const DEFAULT_REJECTED_LIMIT: usize = 100;
pub const MAX_REJECTED_LIMIT: usize = 1000;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub client_id: String,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}/readings", get(readings))
        .route("/api/v1/rejected", get(rejected))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

/// An API error, rendered as JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    BadParam { parameter: String, message: String },
    BadQuery(String),
    NotFound(String),
    Store(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadParam { parameter, message } => (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("{parameter}: {message}"), "parameter": parameter })),
            )
                .into_response(),
            ApiError::BadQuery(message) => {
                (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
            }
            ApiError::NotFound(message) => {
                (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response()
            }
            ApiError::Store(message) => {
                tracing::warn!(error = %message, "store query failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": format!("store unavailable: {message}") })),
                )
                    .into_response()
            }
        }
    }
}

fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadParam {
        parameter: parameter.to_owned(),
        message: message.into(),
    }
}

type Pairs = Vec<(String, String)>;

/// Query pairs, rejecting unknown and repeated parameters.
fn params<'a>(
    pairs: &'a [(String, String)],
    allowed: &[&str],
) -> Result<std::collections::HashMap<&'a str, &'a str>, ApiError> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(
                k,
                format!("unknown parameter (allowed: {})", allowed.join(", ")),
            ));
        }
        if out.insert(k.as_str(), v.as_str()).is_some() {
            return Err(bad(k, "given more than once"));
        }
    }
    Ok(out)
}

fn parse_limit(value: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad(
                "limit",
                format!("must be an integer from 1 to {max}, got {v:?}"),
            )),
        },
    }
}

/// Parsed `since`/`until`/`limit` of the readings endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingsParams {
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub limit: usize,
}

pub fn parse_readings_params(pairs: &[(String, String)]) -> Result<ReadingsParams, ApiError> {
    let p = params(pairs, &["since", "until", "limit"])?;
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        p.get(name)
            .map(|v| timefmt::parse_time(v).map_err(|e| bad(name, e)))
            .transpose()
    };
    let since_us = time("since")?;
    let until_us = time("until")?;
    if let (Some(s), Some(u)) = (since_us, until_us) {
        if s > u {
            return Err(bad("until", "must not be before since"));
        }
    }
    let limit = parse_limit(
        p.get("limit").copied(),
        DEFAULT_READINGS_LIMIT,
        MAX_READINGS_LIMIT,
    )?;
    Ok(ReadingsParams {
        since_us,
        until_us,
        limit,
    })
}

pub fn parse_list_params(pairs: &[(String, String)]) -> Result<ListQuery, ApiError> {
    let p = params(pairs, &["after", "limit"])?;
    let limit = parse_limit(p.get("limit").copied(), DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    Ok(ListQuery {
        after: p.get("after").map(|s| (*s).to_owned()),
        limit,
    })
}

fn query_pairs(q: Result<Query<Pairs>, QueryRejection>) -> Result<Pairs, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::BadQuery(format!("invalid query string: {}", e.body_text())))
}

fn opt_time(us: Option<i64>) -> Option<String> {
    us.map(timefmt::format_us)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    mqtt: &'static str,
    store: String,
    store_kind: &'static str,
    client_id: String,
    counters: Counters,
}

async fn healthz(State(s): State<AppState>) -> Response {
    let store = match tokio::time::timeout(HEALTH_TIMEOUT, s.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_owned(),
    };
    let connected = s.metrics.is_mqtt_connected();
    let healthy = connected && store == "ok";
    let body = Health {
        status: if healthy { "ok" } else { "unavailable" },
        mqtt: if connected {
            "connected"
        } else {
            "disconnected"
        },
        store,
        store_kind: s.store.kind(),
        client_id: s.client_id.clone(),
        counters: s.metrics.snapshot(),
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn gateways(
    State(s): State<AppState>,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mut list = parse_list_params(&query_pairs(q)?)?;
    let limit = list.limit;
    list.limit += 1;
    let mut rows = s.store.gateways(list).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let items: Vec<_> = rows
        .into_iter()
        .map(|g| {
            json!({
                "id": g.id,
                "status": g.status,
                "status_time": opt_time(g.status_ts_us),
                "status_time_us": g.status_ts_us,
                "first_seen": timefmt::format_us(g.first_seen_us),
                "first_seen_us": g.first_seen_us,
                "last_seen": timefmt::format_us(g.last_seen_us),
                "last_seen_us": g.last_seen_us,
            })
        })
        .collect();
    Ok(Json(json!({ "gateways": items, "more": more })).into_response())
}

async fn devices(
    State(s): State<AppState>,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mut list = parse_list_params(&query_pairs(q)?)?;
    let limit = list.limit;
    list.limit += 1;
    let mut rows = s.store.devices(list).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let items: Vec<_> = rows
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id,
                "gateway": d.gateway,
                "transport": d.transport,
                "first_seen": timefmt::format_us(d.first_seen_us),
                "first_seen_us": d.first_seen_us,
                "last_seen": timefmt::format_us(d.last_seen_us),
                "last_seen_us": d.last_seen_us,
                "last_reading": opt_time(d.last_reading_us),
                "last_reading_us": d.last_reading_us,
            })
        })
        .collect();
    Ok(Json(json!({ "devices": items, "more": more })).into_response())
}

#[derive(Serialize)]
struct ReadingJson {
    gateway: String,
    seq: i64,
    device: String,
    time: String,
    time_us: i64,
    received: String,
    received_us: i64,
    measurements: Box<RawValue>,
    meta: Box<RawValue>,
}

async fn readings(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = parse_readings_params(&query_pairs(q)?)?;
    if let Err(e) = id.parse::<gatewayd_model::DeviceId>() {
        return Err(bad("id", e.to_string()));
    }
    if s.store.device(id.clone()).await?.is_none() {
        return Err(ApiError::NotFound(format!("unknown device {id:?}")));
    }
    let mut rows = s
        .store
        .readings(ReadingQuery {
            device: id.clone(),
            since_us: p.since_us,
            until_us: p.until_us,
            limit: p.limit + 1,
        })
        .await?;
    let more = rows.len() > p.limit;
    rows.truncate(p.limit);
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let raw = |s: String| {
            RawValue::from_string(s)
                .map_err(|e| ApiError::Store(format!("stored JSON is invalid: {e}")))
        };
        items.push(ReadingJson {
            time: timefmt::format_us(r.time_us),
            received: timefmt::format_us(r.received_us),
            gateway: r.gateway,
            seq: r.seq,
            device: r.device,
            time_us: r.time_us,
            received_us: r.received_us,
            measurements: raw(r.measurements)?,
            meta: raw(r.meta)?,
        });
    }
    Ok(Json(json!({ "device": id, "readings": items, "more": more })).into_response())
}

async fn rejected(
    State(s): State<AppState>,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(q)?;
    let p = params(&pairs, &["limit"])?;
    let limit = parse_limit(
        p.get("limit").copied(),
        DEFAULT_REJECTED_LIMIT,
        MAX_REJECTED_LIMIT,
    )?;
    let rows = s.store.rejected(limit).await?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "received": timefmt::format_us(r.received_us),
                "received_us": r.received_us,
                "topic": r.topic,
                "gateway": r.gateway,
                "reason": r.reason,
                "payload_excerpt": r.payload_excerpt,
            })
        })
        .collect();
    Ok(Json(json!({ "rejected": items })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Pairs {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn param_of(e: ApiError) -> String {
        match e {
            ApiError::BadParam { parameter, .. } => parameter,
            other => panic!("expected a parameter error, got {other:?}"),
        }
    }

    #[test]
    fn readings_params_default_to_limit_100_and_open_range() {
        assert_eq!(
            parse_readings_params(&[]).unwrap(),
            ReadingsParams {
                since_us: None,
                until_us: None,
                limit: 100
            }
        );
    }

    #[test]
    fn since_and_until_accept_rfc3339_and_microseconds() {
        let p = parse_readings_params(&pairs(&[
            ("since", "2024-11-24T19:20:00Z"),
            ("until", "1732476000000001"),
            ("limit", "10000"),
        ]))
        .unwrap();
        assert_eq!(p.since_us, Some(1_732_476_000_000_000));
        assert_eq!(p.until_us, Some(1_732_476_000_000_001));
        assert_eq!(p.limit, 10_000);
    }

    #[test]
    fn bad_params_name_the_parameter() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("since", "yesterday")], "since"),
            (&[("until", "2024-13-01T00:00:00Z")], "until"),
            (&[("limit", "0")], "limit"),
            (&[("limit", "10001")], "limit"),
            (&[("limit", "ten")], "limit"),
            (&[("limit", "-1")], "limit"),
            (&[("since", "10"), ("until", "5")], "until"),
            (&[("colour", "red")], "colour"),
            (&[("limit", "1"), ("limit", "2")], "limit"),
        ];
        for (input, expected) in cases {
            let e = parse_readings_params(&pairs(input)).unwrap_err();
            assert_eq!(param_of(e), *expected, "{input:?}");
        }
    }

    #[test]
    fn list_params_accept_after_and_bounded_limit() {
        let q = parse_list_params(&pairs(&[("after", "gw-01"), ("limit", "5")])).unwrap();
        assert_eq!(q.after.as_deref(), Some("gw-01"));
        assert_eq!(q.limit, 5);
        assert_eq!(parse_list_params(&[]).unwrap().limit, DEFAULT_LIST_LIMIT);
        assert_eq!(
            param_of(parse_list_params(&pairs(&[("limit", "100000")])).unwrap_err()),
            "limit"
        );
    }
}
