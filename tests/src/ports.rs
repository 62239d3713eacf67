//! Free loopback ports and waiting for listeners.
//!
//! Ports are picked at random *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so that a port we hand out
//! cannot be grabbed in the meantime as the source port of some outgoing
//! connection, and a port is never handed out twice by one test process.
//! Several test processes (or engineers) on one machine are unlikely to
//! collide: the choice is random and checked by binding.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::bail;

static HANDED_OUT: Mutex<Option<HashSet<(bool, u16)>>> = Mutex::new(None);

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// The range we pick from: [10000, start of the ephemeral range).
fn port_range() -> (u16, u16) {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 12000 {
        (10000, low)
    } else {
        // Unusual configuration: fall back to the range above the ephemeral one.
        (61000, 65000)
    }
}

fn free_port(tcp: bool) -> u16 {
    let (lo, hi) = port_range();
    for _ in 0..2000 {
        let port = lo + (random_u64() % u64::from(hi - lo)) as u16;
        {
            let mut set = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
            let set = set.get_or_insert_with(HashSet::new);
            if set.contains(&(tcp, port)) {
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let ok = if tcp {
                TcpListener::bind(addr).is_ok()
            } else {
                UdpSocket::bind(addr).is_ok()
            };
            if ok {
                set.insert((tcp, port));
                return port;
            }
        }
    }
    // Practically unreachable; let the kernel choose.
    let port = if tcp {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr())
    } else {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| s.local_addr())
    }
    .expect("cannot bind any port on 127.0.0.1")
    .port();
    HANDED_OUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert((tcp, port));
    port
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_tcp_port() -> u16 {
    free_port(true)
}

/// A UDP port on 127.0.0.1 that nothing is bound to right now.
pub fn free_udp_port() -> u16 {
    free_port(false)
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_tcp(port: u16, timeout: Duration) -> anyhow::Result<()> {
    wait_for_tcp_while(port, timeout, || Ok(()))
}

/// Like [`wait_for_tcp`], calling `alive` between attempts; an error from
/// it (say, "the server exited") ends the wait early.
pub fn wait_for_tcp_while(
    port: u16,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) => {
                alive()?;
                if start.elapsed() >= timeout {
                    bail!("nothing is listening on {addr} after {timeout:?} (last error: {e})");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
