//! STOMP 1.2 heart-beating: each side says in CONNECT/CONNECTED how often it
//! can send (`cx`) and how often it wants to receive (`cy`); the agreed send
//! interval is the larger of our `cx` and their `cy` (0 on either side: none),
//! and likewise for receiving. A side that hears nothing for the receive
//! interval plus a network delay allowance considers the connection dead.

use std::time::{Duration, Instant};

/// How much later than agreed a peer's data may arrive before the connection
/// is dead (swpt_stomp allows 10 s).
pub const MAX_NETWORK_DELAY: Duration = Duration::from_secs(10);

/// Our side of the heart-beat negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// How often we can send at least, ms (`cx`).
    pub send_min_ms: u32,
    /// How often we want to receive, ms (`cy`).
    pub recv_desired_ms: u32,
}

impl Offer {
    /// The `heart-beat` header value we send.
    pub fn header(&self) -> String {
        format!("{},{}", self.send_min_ms, self.recv_desired_ms)
    }
}

/// The agreed intervals of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeats {
    /// We send something at least this often (None: never needed).
    pub send: Option<Duration>,
    /// We expect something at least this often (None: no expectation).
    pub recv: Option<Duration>,
}

/// Why a peer's `heart-beat` header cannot be used (swpt_stomp's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Received invalid heart-beat value.")]
pub struct InvalidHeartbeat;

fn agreed(ours: u32, theirs: u32) -> Option<Duration> {
    if ours == 0 || theirs == 0 {
        None
    } else {
        Some(Duration::from_millis(u64::from(ours.max(theirs))))
    }
}

impl Heartbeats {
    /// Agrees on intervals with a peer whose `heart-beat` header is `theirs`
    /// (absent: `0,0`).
    pub fn negotiate(ours: Offer, theirs: Option<&str>) -> Result<Heartbeats, InvalidHeartbeat> {
        let text = theirs.unwrap_or("0,0");
        let (cx, cy) = text.split_once(',').ok_or(InvalidHeartbeat)?;
        let cx: u32 = cx.trim().parse().map_err(|_| InvalidHeartbeat)?;
        let cy: u32 = cy.trim().parse().map_err(|_| InvalidHeartbeat)?;
        Ok(Heartbeats {
            send: agreed(ours.send_min_ms, cy),
            recv: agreed(cx, ours.recv_desired_ms),
        })
    }

    /// Whether we must send a heart-beat now.
    pub fn send_due(&self, last_tx: Instant, now: Instant) -> bool {
        self.send
            .is_some_and(|every| now.saturating_duration_since(last_tx) >= every)
    }

    /// How long the peer has been silent beyond what was agreed plus the
    /// allowance, if it has.
    pub fn silent_too_long(&self, last_rx: Instant, now: Instant) -> Option<Duration> {
        let limit = self.recv? + MAX_NETWORK_DELAY;
        let silent = now.saturating_duration_since(last_rx);
        (silent > limit).then_some(silent)
    }

    /// When the next heart-beat rule needs a look.
    pub fn next_deadline(&self, last_rx: Instant, last_tx: Instant) -> Option<Instant> {
        let send = self.send.map(|every| last_tx + every);
        let recv = self.recv.map(|every| last_rx + every + MAX_NETWORK_DELAY);
        match (send, recv) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Offer = Offer {
        send_min_ms: 5_000,
        recv_desired_ms: 30_000,
    };

    #[test]
    fn intervals_are_the_larger_of_what_each_side_offers_and_zero_means_none() {
        let hb = Heartbeats::negotiate(OURS, Some("10000,2000")).expect("valid");
        assert_eq!(hb.send, Some(Duration::from_secs(5)));
        assert_eq!(hb.recv, Some(Duration::from_secs(30)));
        let hb = Heartbeats::negotiate(OURS, Some("0,60000")).expect("valid");
        assert_eq!(hb.send, Some(Duration::from_secs(60)));
        assert_eq!(hb.recv, None);
        assert_eq!(
            Heartbeats::negotiate(OURS, None).expect("absent is 0,0"),
            Heartbeats {
                send: None,
                recv: None
            }
        );
    }

    #[test]
    fn malformed_heart_beat_headers_are_refused() {
        for bad in ["", "5000", "a,b", "-1,0", "1,2,3"] {
            assert_eq!(
                Heartbeats::negotiate(OURS, Some(bad)),
                Err(InvalidHeartbeat),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_peer_is_dead_after_its_interval_plus_the_allowance() {
        let hb = Heartbeats::negotiate(OURS, Some("5000,5000")).expect("valid");
        let t0 = Instant::now();
        let limit = Duration::from_secs(30) + MAX_NETWORK_DELAY;
        assert_eq!(hb.silent_too_long(t0, t0 + limit), None);
        assert!(hb
            .silent_too_long(t0, t0 + limit + Duration::from_millis(1))
            .is_some());
        assert!(!hb.send_due(t0, t0 + Duration::from_millis(4_999)));
        assert!(hb.send_due(t0, t0 + Duration::from_secs(5)));
        assert_eq!(hb.next_deadline(t0, t0), Some(t0 + Duration::from_secs(5)));
    }
}
