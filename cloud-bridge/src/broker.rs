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

/// The embedded broker, started: rumqttd listens on an internal loopback
/// port; the configured public listeners are bound (so "address in use" is a
/// startup error) but accept nothing until [`EmbeddedBroker::open_gate`].
///
/// Why the gate: MQTT drops a message that has no subscriber yet, and
/// rumqttd starts serving at once. Gateways reconnect within milliseconds
/// of a (re)start and publish their backlog; without the gate those
/// batches would be acknowledged by the broker before cloud-bridge's own
/// consumer has subscribed, and lost. Connections wait in the kernel's
/// accept backlog meanwhile, then each is proxied to rumqttd.
pub struct EmbeddedBroker {
    /// Where cloud-bridge's consumer connects (rumqttd's v4 listener).
    pub internal: SocketAddr,
    public: Vec<(SocketAddr, std::net::TcpListener)>,
    max_connections: usize,
}

fn internal_port() -> Result<SocketAddr, BrokerError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let l = TcpListener::bind(addr).map_err(|source| BrokerError::Bind {
        key: "broker (internal listener)",
        addr,
        source,
    })?;
    l.local_addr().map_err(|source| BrokerError::Bind {
        key: "broker (internal listener)",
        addr,
        source,
    })
}

/// Starts the broker on its own threads (see [`EmbeddedBroker`]).
pub fn start(config: &Config) -> Result<EmbeddedBroker, BrokerError> {
    let mut public = Vec::new();
    let mut addrs = vec![("broker.listen", config.broker.listen)];
    if let Some(v5) = config.broker.listen_v5 {
        addrs.push(("broker.listen_v5", v5));
    }
    for (key, addr) in addrs {
        let l =
            TcpListener::bind(addr).map_err(|source| BrokerError::Bind { key, addr, source })?;
        l.set_nonblocking(true)
            .map_err(|source| BrokerError::Bind { key, addr, source })?;
        public.push((addr, l));
    }
    let internal = internal_port()?;
    let mut internal_config = config.clone();
    internal_config.broker.listen = internal;
    let internal_v5 = match config.broker.listen_v5 {
        Some(_) => Some(internal_port()?),
        None => None,
    };
    internal_config.broker.listen_v5 = internal_v5;
    let settings = settings(&internal_config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(settings);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Spawn)?;
    // Pair each public listener with its internal target.
    let mut targets = vec![internal];
    if let Some(v5) = internal_v5 {
        targets.push(v5);
    }
    let public = public
        .into_iter()
        .zip(targets)
        .map(|((_, l), target)| (target, l))
        .collect();
    tracing::info!(
        listen = %config.broker.listen,
        v5 = ?config.broker.listen_v5,
        %internal,
        "embedded MQTT broker started; gateways are let in once cloud-bridge has subscribed"
    );
    Ok(EmbeddedBroker {
        internal,
        public,
        max_connections: config.broker.max_connections,
    })
}

impl EmbeddedBroker {
    /// Waits for `ready` (cloud-bridge's subscriptions hold), then accepts
    /// on the public listeners and proxies each connection to rumqttd, at
    /// most `broker.max_connections` at once, until `shutdown`.
    pub async fn open_gate(
        self,
        ready: impl std::future::Future<Output = ()>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        tokio::select! {
            _ = ready => {}
            _ = shutdown.cancelled() => return,
        }
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_connections.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (target, listener) in self.public {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "embedded broker: cannot use listener");
                    continue;
                }
            };
            tasks.spawn(accept_loop(
                listener,
                target,
                permits.clone(),
                shutdown.clone(),
            ));
        }
        tracing::info!("embedded MQTT broker open to gateways");
        while tasks.join_next().await.is_some() {}
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    target: SocketAddr,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let (conn, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "embedded broker: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "embedded broker: broker.max_connections reached; refusing");
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = conn;
            let _ = conn.set_nodelay(true);
            match tokio::net::TcpStream::connect(target).await {
                Ok(mut upstream) => {
                    let _ = upstream.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "embedded broker: internal listener unreachable")
                }
            }
        });
    }
}
