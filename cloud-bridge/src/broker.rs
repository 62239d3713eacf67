//! The embedded MQTT broker (rumqttd 0.20), for single-machine installs.
//!
//! Notes on rumqttd 0.20 behaviour:
//! * it supports `$share/{group}/{filter}`, but its router panics when the
//!   last member of a group with a persistent session disconnects while
//!   messages are in flight (`routing.rs`, "group must exists"), so
//!   cloud-bridge subscribes to the embedded broker without `$share`;
//! * it cannot be stopped: its threads live until the process exits;
//! * sessions and queued messages are kept in memory only, up to
//!   `SEGMENT_BYTES * SEGMENT_COUNT` per topic.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{
    Config as BrokerSettings, ConnectionSettings, RouterConfig, ServerSettings, Strategy,
};

use crate::config::Config;

const SEGMENT_BYTES: usize = 16 * 1024 * 1024;
const SEGMENT_COUNT: usize = 8;
const MAX_INFLIGHT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the embedded broker thread: {0}")]
    Spawn(std::io::Error),
}

fn server(name: &str, listen: SocketAddr, config: &Config) -> ServerSettings {
    let auth = (!config.broker.users.is_empty()).then(|| {
        config
            .broker
            .users
            .iter()
            .map(|(u, p)| (u.clone(), p.clone()))
            .collect()
    });
    ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: config.mqtt.max_payload_bytes,
            max_inflight_count: MAX_INFLIGHT,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// The rumqttd configuration for `config.broker`.
pub fn settings(config: &Config) -> BrokerSettings {
    let mut v4 = HashMap::new();
    v4.insert("1".to_owned(), server("v4", config.broker.listen, config));
    let v5 = config.broker.listen_v5.map(|listen| {
        let mut v5 = HashMap::new();
        v5.insert("1".to_owned(), server("v5", listen, config));
        v5
    });
    BrokerSettings {
        id: 0,
        router: RouterConfig {
            max_connections: config.broker.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Strategy::RoundRobin,
        },
        v4: Some(v4),
        v5,
        ..Default::default()
    }
}

/// Starts the broker on its own threads. The listen addresses are probed
/// first so that "address in use" is a startup error, not a log line.
pub fn start(config: &Config) -> Result<(), BrokerError> {
    let mut addrs = vec![("broker.listen", config.broker.listen)];
    if let Some(v5) = config.broker.listen_v5 {
        addrs.push(("broker.listen_v5", v5));
    }
    for (key, addr) in addrs {
        TcpListener::bind(addr).map_err(|source| BrokerError::Bind { key, addr, source })?;
    }
    let settings = settings(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(settings);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Spawn)?;
    tracing::info!(listen = %config.broker.listen, v5 = ?config.broker.listen_v5, "embedded MQTT broker started");
    Ok(())
}
