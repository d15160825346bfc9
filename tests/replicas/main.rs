//! End-to-end test of gateway scale-out on PostgreSQL: node a runs two
//! `peer-gateway` replicas (a1, a2) sharing one fresh PostgreSQL database (same
//! node directory, server certificate and key; own ports and state directories),
//! node b runs one gateway (SQLite) that knows both replicas' endpoints.
//!
//! - at start, b's link to a is owned by exactly one replica (`connected`), the
//!   other shows `standby`, and the lease row in `link_leases` names the owner;
//! - under traffic both ways (a -> b submitted alternately through both replicas'
//!   APIs, a's inbox read alternately through both), the owning replica is killed
//!   -9: the other must show b `connected` within 10 seconds (measured, printed);
//! - the killed replica is restarted: it comes back as `standby` and the link
//!   stays where it is (checked over a window longer than the lease);
//! - at no sampled moment do both replicas report b `connected`, and the link
//!   owner changes exactly once (at the kill);
//! - at the end every message arrived exactly once each way, in per-sender order.
//!
//! Two more tests: the silent loss of the owning replica (SIGSTOP, as a lost
//! host) with the default `[link]` settings fails over within 10 seconds; a
//! message submitted to the standby replica's API while nothing else moves is
//! delivered by the owner.
//!
//! | module | what |
//! |---|---|
//! | `failover` | the failover under traffic (the scenario above) |
//! | `standby` | the silent loss of the owner; a message submitted to the standby |
//! | `cluster` | (helper) node a as two replica processes on one database, node b |
//! | `status` | (helper) link states, leases, and the sampler of link owners |
//!
//! PostgreSQL is required: the tests fail when it is unreachable and `CI=true`,
//! and are skipped with a message otherwise. Run `cargo build --workspace --bins`
//! first, then `cargo test --test replicas`. Every wait is a bounded poll. `PEERLINK_REPLICAS_MESSAGES` changes the
//! number of messages each way (default 5,000); `PEERLINK_CHAOS_SEED` replays the
//! moment of the kill.

use std::sync::Mutex;
use std::time::Duration;

use peerlink_e2e::traffic::env_count;

mod cluster;
mod failover;
mod standby;
mod status;

/// Messages per batch request.
const CHUNK: usize = 50;
/// Size of every message body.
const BODY_BYTES: usize = 512;
/// Media type of the test messages (checked on arrival).
const TYPE: &str = "application/x-peerlink-replicas; v=1";
/// Producers submit at most one batch per this interval until the failover
/// scenario is over, so that traffic flows during the kill, the takeover and the
/// restart; afterwards they go at full speed.
const PACE: Duration = Duration::from_millis(250);
/// The kill happens once this fraction of all progress (accepting plus receiving,
/// both ways) is done.
const KILL_AT: f64 = 0.2;
/// The takeover bound of the requirement.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);
/// How long a takeover is waited for at most (to measure a slow one).
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);
/// Traffic between the takeover and the restart of the killed replica.
const BEFORE_RESTART: Duration = Duration::from_secs(2);
/// How long the link must stay put after the killed replica is back (longer than
/// a lease, so a lease that moved back would show).
const STABILITY_WINDOW: Duration = Duration::from_secs(8);
/// Interval of the status sampler.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Bound on getting one batch accepted (across the failover).
const BATCH_DEADLINE: Duration = Duration::from_secs(60);
/// Bound on the drain after the producers and the failover scenario are done.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Long-poll wait of the consumers, seconds.
const CONSUMER_WAIT_S: u64 = 1;

fn messages_per_side() -> usize {
    env_count("PEERLINK_REPLICAS_MESSAGES", 5_000)
}

const NAMES: [&str; 2] = ["a1", "a2"];
/// The two nodes, as the test messages name their senders.
const NODES: [&str; 2] = ["a", "b"];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
