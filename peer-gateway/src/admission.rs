//! Admission control for the peer listener: a per-source-address handshake
//! rate limit (token bucket) and a cap on concurrent handshakes per source, on
//! top of the global cap. A flood of connections or slow handshakes from one
//! address then costs that address its own budget only, and other partners
//! keep linking.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Sources tracked before idle entries are pruned.
const PRUNE_ABOVE: usize = 4096;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The source exceeded its handshake rate.
    RateLimited,
    /// The source has too many handshakes in progress.
    TooManyFromSource,
}

impl Rejection {
    /// Stable reason for metrics and status.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::TooManyFromSource => "too_many_from_source",
        }
    }
}

struct Source {
    tokens: f64,
    last: Instant,
    in_flight: usize,
}

/// Per-source admission state.
pub struct Admission {
    sources: Mutex<HashMap<IpAddr, Source>>,
    rate_per_second: f64,
    burst: f64,
    max_in_flight: usize,
}

/// Holds one in-flight handshake slot of a source; released on drop.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut sources = self
            .admission
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sources.get_mut(&self.ip) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }
}

impl Admission {
    /// `rate_per_second` handshakes per source on average, bursts of `burst`, at most
    /// `max_in_flight` at once per source.
    pub fn new(rate_per_second: f64, burst: f64, max_in_flight: usize) -> Arc<Admission> {
        Arc::new(Admission {
            sources: Mutex::new(HashMap::new()),
            rate_per_second,
            burst: burst.max(1.0),
            max_in_flight: max_in_flight.max(1),
        })
    }

    /// Admits a new connection from `ip` or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Slot, Rejection> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate_per_second, self.burst);
            sources.retain(|_, s| {
                s.in_flight > 0
                    || s.tokens + now.duration_since(s.last).as_secs_f64() * rate < burst
            });
        }
        let source = sources.entry(ip).or_insert(Source {
            tokens: self.burst,
            last: now,
            in_flight: 0,
        });
        let elapsed = now.saturating_duration_since(source.last).as_secs_f64();
        source.tokens = (source.tokens + elapsed * self.rate_per_second).min(self.burst);
        source.last = now;
        if source.in_flight >= self.max_in_flight {
            return Err(Rejection::TooManyFromSource);
        }
        if source.tokens < 1.0 {
            return Err(Rejection::RateLimited);
        }
        source.tokens -= 1.0;
        source.in_flight += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn bursts_then_rate_limits_one_source_only() {
        let a = Admission::new(10.0, 5.0, 100);
        let t0 = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..5 {
            slots.push(a.admit(ip(2), t0).unwrap());
        }
        assert_eq!(a.admit(ip(2), t0).err(), Some(Rejection::RateLimited));
        // Another source is unaffected.
        assert!(a.admit(ip(3), t0).is_ok());
        // Tokens come back at the configured rate.
        assert!(a.admit(ip(2), t0 + Duration::from_millis(150)).is_ok());
    }

    #[test]
    fn caps_concurrent_handshakes_per_source_and_releases_on_drop() {
        let a = Admission::new(1000.0, 1000.0, 2);
        let t0 = Instant::now();
        let first = a.admit(ip(2), t0).unwrap();
        let _second = a.admit(ip(2), t0).unwrap();
        assert_eq!(a.admit(ip(2), t0).err(), Some(Rejection::TooManyFromSource));
        drop(first);
        assert!(a.admit(ip(2), t0).is_ok());
    }

    #[test]
    fn many_sources_are_pruned_not_accumulated() {
        let a = Admission::new(1.0, 1.0, 1);
        let t0 = Instant::now();
        for i in 0..(PRUNE_ABOVE as u32 + 10) {
            let addr = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            drop(a.admit(addr, t0));
        }
        let later = t0 + Duration::from_secs(5);
        drop(a.admit(ip(9), later));
        assert!(
            a.sources.lock().unwrap().len() < 10,
            "idle sources were not pruned"
        );
    }
}
