//! What operators see of a partner: its link state and the facts around it.

use serde::Serialize;
use time::OffsetDateTime;

/// What a partner's link is doing, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// A link is up.
    Connected,
    /// Dialing now.
    Connecting,
    /// Waiting before the next attempt.
    BackingOff,
    /// The last attempt was refused (by us or by the partner); retrying with backoff.
    Refused,
    /// Revoked, deactivated or missing the cross-cert it issued us: not dialed, refused.
    Inactive,
    /// Closed for lack of traffic (`idle_close_ms`); reopened on demand by either side.
    Idle,
    /// Another replica of this node owns the link (shared PostgreSQL store).
    Standby,
}

impl LinkState {
    /// Every state with its name in status and metrics (`peerlink_link_state`).
    pub const ALL: [(LinkState, &'static str); 7] = [
        (LinkState::Connected, "connected"),
        (LinkState::Connecting, "connecting"),
        (LinkState::BackingOff, "backing-off"),
        (LinkState::Refused, "refused"),
        (LinkState::Inactive, "inactive"),
        (LinkState::Idle, "idle"),
        (LinkState::Standby, "standby"),
    ];
}

/// Status of one partner.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Partner node id.
    pub node_id: String,
    /// Link state.
    pub state: LinkState,
    /// Since when (RFC 3339).
    pub since: String,
    /// The last error or refusal, if any.
    pub last_error: Option<String>,
    /// Stable reason identifier of the last refusal.
    pub last_refusal: Option<String>,
    /// Round-trip time of the last ping on the current link, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Who dialed the current link (`inbound` or `outbound`).
    pub direction: Option<&'static str>,
    /// Reconnect attempts since the last stable link.
    pub attempts: u32,
    /// Endpoints dialed.
    pub endpoints: Vec<String>,
    /// Expiry of the cross-cert this partner issued us.
    pub cross_cert_not_after: Option<String>,
}

impl PeerStatus {
    /// A partner just added: about to be dialed.
    pub fn new(node_id: &str) -> PeerStatus {
        PeerStatus {
            node_id: node_id.to_string(),
            state: LinkState::Connecting,
            since: now_text(),
            last_error: None,
            last_refusal: None,
            rtt_ms: None,
            direction: None,
            attempts: 0,
            endpoints: Vec::new(),
            cross_cert_not_after: None,
        }
    }
}

/// RFC 3339 of now, to the millisecond (the `since` of a state).
pub fn now_text() -> String {
    let now = OffsetDateTime::now_utc();
    let millis = now.nanosecond() / 1_000_000 * 1_000_000;
    peerlink_pki::timefmt::rfc3339(now.replace_nanosecond(millis).unwrap_or(now))
}
