//! Hostile input against the peer listener and the link (issue 6, "Hostile input").
//!
//! - A flood of TCP connections from one source address (slowloris connections that
//!   never send a ClientHello, plus rapid connect/close; and connect/close alone from
//!   a second address) must not stop another partner from linking through the
//!   flooded listener (the gateway is configured not to dial it); the refusals are
//!   counted (`rate_limited`, `too_many_from_source`, `handshake_timeout`, in status
//!   and /metrics, not logged one by one) and the gateway stays healthy afterwards.
//! - The same flood from the partner's own address: the partner shares that
//!   address's budget (what happens is printed), nothing breaks, and it links once
//!   the flood stops.
//! - A slowloris from nine addresses exceeds the global cap on concurrent
//!   handshakes (`too_many_handshakes`); the partner still links during it, by
//!   taking the slot of the busiest address's oldest handshake (`handshake_displaced`).
//! - Oversized frames on an authenticated link (a header claiming 4 GiB, one byte
//!   over `max_frame_bytes`) close that link only, with Goodbye `frame_too_large`,
//!   without the memory; a frame of exactly the limit is accepted.
//! - The accept queue is bounded by `accept_backlog` (checked with the gateway
//!   stopped by SIGSTOP).
//! - A presented chain with more than `MAX_PRESENTED_INTERMEDIATES` certificates
//!   besides the leaf is refused with `chain_too_long`; exactly that many is not.
//!
//! The flood comes from a loopback address other than 127.0.0.1 (the client socket
//! is bound to it before connecting, with tokio's `TcpSocket`). The raw link client
//! (`peerlink_e2e::raw_peer`) speaks TLS through `peerlink-tls` with a real
//! partner's certificates and then writes frames itself. Every wait is bounded.
//!
//! | module | what |
//! |---|---|
//! | `admission` | floods against admission control (tests 1 to 3), the accept queue |
//! | `link` | oversized frames on an authenticated link, over-long presented chains |
//! | `flood` | (helper) the flooding client |
//!
//! Run `cargo build --workspace --bins` first, then `cargo test --test hostile`.
//! The tests run one at a time (see `serial`).

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{config_text, field, free_port, http, peer_entry, refusals, Net, WAIT};
use serde_json::Value;

mod admission;
mod flood;
mod link;

/// The floods load the machine: run them one at a time, so that the bounded waits
/// of one test are not eaten by another test's flood.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The flooding source address (any 127/8 address is loopback on Linux).
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// The shortest flood of the main test.
const FLOOD_AT_LEAST: Duration = Duration::from_secs(6);
/// A second flooding address, for connections that close at once.
const RAPID_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// The admission settings under test, spelled out (they are the documented
/// defaults, except a short handshake timeout so that slow handshakes are cut
/// within the test's time).
const ADMISSION: &str = "\
handshake_timeout_ms = 1000
handshakes_per_source_per_second = 20
handshake_burst_per_source = 40
max_handshakes_per_source = 8
max_concurrent_handshakes = 64
accept_backlog = 256
";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Writes `name`'s config with `[link]` tuning `link` (replacing the harness's
/// handshake timeout) and top-level/peer tables `extra`; returns its path.
fn write_config(net: &Net, name: &str, extra: &str, link: &str) -> PathBuf {
    let node = net.node(name);
    let text = config_text(node, &node.server_cert, &node.server_key, extra);
    let needle = "handshake_timeout_ms = 3000\n";
    assert!(text.contains(needle), "unexpected harness config:\n{text}");
    let text = text.replace(needle, link);
    let path = net.path(&format!("{name}-hostile.toml"));
    fs::write(&path, text).expect("write config");
    path
}

/// `[peers."<id of peer>"]` pointing at a port where nobody listens: the gateway
/// never reaches `peer` by dialing, so a link can only come from `peer` dialing in.
fn no_dial_to(net: &Net, peer: &str) -> String {
    format!(
        "[peers.\"{}\"]\nendpoints = [\"127.0.0.1:{}\"]\n",
        net.id(peer),
        free_port()
    )
}

fn count(counters: &BTreeMap<String, u64>, reason: &str) -> u64 {
    counters.get(reason).copied().unwrap_or(0)
}

/// `POST /v1/peers/<peer>/ping` on `name`'s admin API; Ok(rtt_ms).
fn ping(net: &Net, name: &str, peer: &str) -> Result<f64, String> {
    let (code, body) = http(
        net.node(name).admin(),
        "POST",
        &format!("/v1/peers/{}/ping", net.id(peer)),
    )?;
    if code != 200 {
        return Err(format!("ping {peer} from {name}: HTTP {code}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    v["rtt_ms"]
        .as_f64()
        .ok_or_else(|| format!("no rtt_ms in {body}"))
}

/// `GET /metrics` of `name`.
fn metrics(net: &Net, name: &str) -> String {
    let (code, body) = http(net.node(name).admin(), "GET", "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of `peerlink_handshakes_refused_total{reason="<reason>"}` (0 if absent).
fn refused_metric(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("peerlink_handshakes_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Starts gateway a of `net` (nodes a and b) with the `[link]` settings `link`,
/// never dialing b, so that a link with b can only come through a's listener;
/// returns a's listen address once its admin API answers.
fn start_a_not_dialing_b(net: &mut Net, link: &str) -> SocketAddr {
    let a_config = write_config(net, "a", &no_dial_to(net, "b"), link);
    net.start_with_config("a", &a_config);
    net.wait_admin("a");
    net.node("a").endpoint().parse().unwrap()
}

/// Whether `status` (of a) shows b connected.
fn shows_b_connected(net: &Net, status: &Value) -> bool {
    peer_entry(status, &net.id("b")).is_some_and(|p| field(p, "state") == "connected")
}
