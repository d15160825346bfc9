//! Links: one authenticated connection to a partner, from the Hello exchange to
//! the goodbye.
//!
//! - [`hello`]: the Hello exchange after the TLS handshake;
//! - [`session`]: every rule of a running link (window, group commit, acks and
//!   epochs, pings, CRL offers, idle and dead links), without I/O;
//! - [`driver`]: registers the link and runs its session with the socket, the
//!   timer and the store;
//! - [`writer`]: the write half in a task of its own, so that no write can hold
//!   off the dead-link decision;
//! - [`handle`]: what the rest of the gateway holds of a link.
//!
//! Sending: messages leave our outbox in sequence order, at most
//! `window_frames` / `window_bytes` unacknowledged; an `Ack` removes them from
//! the outbox. Receiving: every `Message` frame that is ready is stored in one
//! transaction (group commit), then acknowledged cumulatively. A link that
//! drops resends from the last acknowledged sequence number; the receiver
//! drops what it already stored. Every message thus lands in the peer's inbox
//! exactly once.

pub mod driver;
mod error;
pub mod handle;
pub mod hello;
pub mod session;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::LinkConfig;
use crate::crl_store::CrlStore;
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::signals::Signals;
use crate::store::Store;
use crate::trust::TrustHandle;

pub use driver::run;
pub use error::LinkError;
pub use handle::{LinkCommand, LinkHandle, PingError, PingReply};
pub use hello::{exchange_hello, presented_chain, PeerHello, SetupError};

/// What a link needs from the rest of the gateway: the peer table (to
/// register), the trust (our id, CRLs), the store, counters, the partners' CRL
/// store, the wake-ups, the link settings and the shutdown signal.
#[derive(Clone)]
pub struct LinkContext {
    /// Where the link registers and reports its state.
    pub peers: Arc<PeerTable>,
    /// The trust in force.
    pub trust: Arc<TrustHandle>,
    /// Durable messages.
    pub store: Arc<Store>,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// Partners' CRLs received over links.
    pub crls: Arc<CrlStore>,
    /// Outbox, inbox and reload wake-ups.
    pub signals: Arc<Signals>,
    /// `[link]` settings.
    pub settings: Arc<LinkConfig>,
    /// Which partners speak swpt-stomp, and how.
    pub stomp: Arc<crate::config::StompSettings>,
    /// Cancelled when the gateway stops.
    pub shutdown: CancellationToken,
}

impl LinkContext {
    /// Counts a refused handshake (metrics and status), and shows it on the
    /// partner's status when it concerns a known partner without a healthy link.
    pub fn record_refusal(&self, reason: &str, peer: Option<&str>, detail: &str) {
        self.metrics.handshake_refused(reason);
        self.peers.record_refusal(reason, peer, detail);
    }
}

/// What the dialer learns from a link that was registered and has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// How long it was up.
    pub up_for: Duration,
    /// The partner closed it as a duplicate of a link it keeps. When we hold no
    /// other link to it, that kept link leads to a dead process (a replica of
    /// ours that stopped answering), which the partner drops once it has been
    /// silent for [`LinkConfig::stale_after`]: redialing on a short fixed
    /// cadence until then takes over as soon as it can, where the growing
    /// backoff could add seconds.
    pub partner_kept_another: bool,
}
