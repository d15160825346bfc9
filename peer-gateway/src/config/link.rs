//! `[link]`: link tuning, and the link timers as fractions of the heartbeat.

use std::time::Duration;

use serde::Deserialize;

/// Link tuning (`[link]`), all optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Send a Ping after this long without sending anything.
    pub heartbeat_ms: u64,
    /// A link with nothing received for this many heartbeat intervals is dead.
    pub dead_after_heartbeats: u32,
    /// TLS handshake plus Hello exchange must finish within this.
    pub handshake_timeout_ms: u64,
    /// TCP connect timeout per endpoint.
    pub connect_timeout_ms: u64,
    /// First reconnect delay (lower bound of every delay).
    pub backoff_base_ms: u64,
    /// Largest reconnect delay.
    pub backoff_cap_ms: u64,
    /// A link up this long resets the backoff.
    pub stable_after_ms: u64,
    /// Close links idle (no application traffic) this long; 0 = never. Reopened on demand.
    pub idle_close_ms: u64,
    /// Largest frame payload accepted.
    pub max_frame_bytes: u32,
    /// How often node_dir and the certificate files are checked for changes.
    pub reload_poll_ms: u64,
    /// Most handshakes in progress at once on the listener.
    pub max_concurrent_handshakes: usize,
    /// Most messages sent on a link and not yet acknowledged.
    pub window_frames: usize,
    /// Most bytes sent on a link and not yet acknowledged.
    pub window_bytes: usize,
    /// Handshakes per second allowed from one source address (sustained).
    pub handshakes_per_source_per_second: f64,
    /// Handshakes allowed from one source address in a burst.
    pub handshake_burst_per_source: f64,
    /// Handshakes in progress at once from one source address.
    pub max_handshakes_per_source: usize,
    /// Length of the listener's accept queue (TCP backlog).
    pub accept_backlog: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        LinkConfig {
            heartbeat_ms: u64::from(crate::frame::DEFAULT_HEARTBEAT_MS),
            dead_after_heartbeats: crate::frame::DEAD_AFTER_HEARTBEATS,
            handshake_timeout_ms: ms(crate::frame::HANDSHAKE_TIMEOUT),
            connect_timeout_ms: 5_000,
            backoff_base_ms: ms(crate::backoff::DEFAULT_BASE),
            backoff_cap_ms: ms(crate::backoff::DEFAULT_CAP),
            stable_after_ms: ms(crate::backoff::STABLE_AFTER),
            idle_close_ms: 0,
            max_frame_bytes: crate::frame::DEFAULT_MAX_PAYLOAD,
            reload_poll_ms: 1_000,
            max_concurrent_handshakes: 64,
            window_frames: 512,
            window_bytes: 16 * 1024 * 1024,
            handshakes_per_source_per_second: 20.0,
            handshake_burst_per_source: 40.0,
            max_handshakes_per_source: 8,
            accept_backlog: 256,
        }
    }
}

/// The link's timers, as fractions of the heartbeat interval, in one place.
///
/// - [`LinkConfig::tick`]: every quarter heartbeat a link checks its rules, so
///   a ping leaves at most 1.25 intervals after the last frame sent and a dead
///   link is declared at most a quarter interval late;
/// - [`LinkConfig::stale_after`]: a link silent for 1.6 intervals (a live one
///   carries a frame at least every 1.25) loses the tie-break to a fresh link;
/// - [`LinkConfig::duplicate_redial`]: while the partner keeps a link of ours
///   that we do not hold (a replica that froze), redial every fifth of an
///   interval until that link turns stale;
/// - [`LinkConfig::dead_after`]: `dead_after_heartbeats` (3) intervals with
///   nothing received, or nothing written while frames wait;
/// - [`LinkConfig::goodbye_bound`]: a goodbye may take a quarter interval (at
///   most 1 s);
/// - [`LinkConfig::tcp_user_timeout`]: the kernel gives up on unacknowledged
///   data half an interval after the dead-link bound.
pub const TICKS_PER_HEARTBEAT: u32 = 4;
/// Numerator of the stale-link bound (fifths of a heartbeat).
pub const STALE_AFTER_FIFTHS: u32 = 8;
/// Redials per heartbeat while the partner keeps a link we do not hold.
pub const DUPLICATE_REDIALS_PER_HEARTBEAT: u32 = 5;
/// Longest goodbye, whatever the heartbeat.
pub const MAX_GOODBYE: Duration = Duration::from_secs(1);

impl LinkConfig {
    /// Heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
    /// Time without receiving anything (or without the partner accepting what
    /// we send) after which a link is dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat() * self.dead_after_heartbeats
    }
    /// How often a link checks its timers.
    pub fn tick(&self) -> Duration {
        self.heartbeat() / TICKS_PER_HEARTBEAT
    }
    /// A registered link silent this long loses the tie-break to a fresh one.
    pub fn stale_after(&self) -> Duration {
        self.heartbeat() * STALE_AFTER_FIFTHS / 5
    }
    /// Redial delay while the partner keeps a link of ours we do not hold.
    pub fn duplicate_redial(&self) -> Duration {
        self.heartbeat() / DUPLICATE_REDIALS_PER_HEARTBEAT
    }
    /// Longest a goodbye (and the TLS close after it) may take.
    pub fn goodbye_bound(&self) -> Duration {
        self.tick().min(MAX_GOODBYE)
    }
    /// TCP_USER_TIMEOUT of peer sockets.
    pub fn tcp_user_timeout(&self) -> Duration {
        self.dead_after() + self.heartbeat() / 2
    }
    /// Handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}
