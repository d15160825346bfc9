//! Which wire each partner speaks, and the STOMP settings for partners that
//! speak Swaptacular's swpt-stomp (STOMP 1.2 over the same mutual TLS, one
//! direction per connection; see docs/swaptacular.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

/// What a partner's links carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// `peerlink/1`: one link both ways, durable messages, exactly once.
    #[default]
    Peerlink,
    /// Swaptacular's STOMP: we dial the partner's STOMP servers to send, it
    /// dials our `stomp_listen` to send to us.
    SwptStomp,
}

impl Protocol {
    /// The name in config and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Peerlink => "peerlink",
            Protocol::SwptStomp => "swpt-stomp",
        }
    }
}

/// `[stomp]` and the per-partner STOMP overrides, checked.
#[derive(Debug, Clone, Default)]
pub struct StompSettings {
    /// Where partners speaking swpt-stomp connect to send us messages (no ALPN).
    pub listen: Option<SocketAddr>,
    /// The `destination` their SENDs must name; None: by our node type
    /// (`/exchange/accounts_in`, `/exchange/creditors_in`, `/exchange/debtors_in`,
    /// as swpt_stomp's server expects), else `/exchange/smp`.
    pub destination: Option<String>,
    /// The protocol of partners without their own `protocol`, if set; unset,
    /// a partner that published a STOMP manifest (a Swaptacular info-bundle's
    /// `stomp.toml`) speaks swpt-stomp and the others peerlink/1.
    pub default_protocol: Option<Protocol>,
    /// Per partner: protocol and STOMP client settings.
    pub peers: BTreeMap<String, PeerStomp>,
    /// Heart-beat we send at least every this many ms, and want from the partner.
    pub heartbeat_ms: u32,
    /// Messages sent and not yet confirmed by a RECEIPT, at most.
    pub window: usize,
}

/// One partner's wire and, for swpt-stomp, what to put in CONNECT and SEND
/// (overriding the partner's published stomp.toml).
#[derive(Debug, Clone, Default)]
pub struct PeerStomp {
    /// Its protocol, if set for it.
    pub protocol: Option<Protocol>,
    /// CONNECT `host` (`${NODE_ID}` is our node id).
    pub host: Option<String>,
    /// SEND `destination` (`${NODE_ID}` is our node id).
    pub destination: Option<String>,
    /// CONNECT `login`.
    pub login: Option<String>,
    /// CONNECT `passcode`.
    pub passcode: Option<String>,
}

/// Default heart-beat (ms): what swpt_stomp sends at least.
pub const DEFAULT_STOMP_HEARTBEAT_MS: u32 = 5_000;
/// Default window: swpt_stomp's own buffer size.
pub const DEFAULT_STOMP_WINDOW: usize = 100;

impl StompSettings {
    /// The protocol partner `peer_id` speaks: its own `protocol`, else
    /// `[stomp] default_protocol`, else swpt-stomp exactly when it published a
    /// STOMP manifest (`has_manifest`): a Swaptacular node's partners all do.
    pub fn protocol_of(&self, peer_id: &str, has_manifest: bool) -> Protocol {
        self.peers
            .get(peer_id)
            .and_then(|p| p.protocol)
            .or(self.default_protocol)
            .unwrap_or(if has_manifest {
                Protocol::SwptStomp
            } else {
                Protocol::Peerlink
            })
    }

    /// The destination our STOMP server accepts, for a node of organizational
    /// unit `our_unit` when none is configured.
    pub fn destination_for(&self, our_unit: &str) -> String {
        if let Some(d) = &self.destination {
            return d.clone();
        }
        format!("/exchange/{}", crate::stomp::exchange_of(our_unit))
    }
}

/// `[stomp]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStomp {
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub destination: Option<String>,
    #[serde(default)]
    pub default_protocol: Option<Protocol>,
    #[serde(default)]
    pub heartbeat_ms: Option<u32>,
    #[serde(default)]
    pub window: Option<usize>,
}
