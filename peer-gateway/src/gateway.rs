//! The gateway's shared state: the current trust, one entry per partner with
//! its link (at most one) and status, and the refused-handshake counters.
//!
//! Locks are only held for short, non-async sections; the link tasks and the
//! per-peer dialers talk to each other through this state and [`Notify`]s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use peerlink_tls::PeerTls;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::crl_store::CrlStore;
use crate::frame::GoodbyeCode;
use crate::tiebreak::{self, Direction, Keep};

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

/// Where a link answers an operator's ping: the round trip, or why there is none
/// (the link is stalled, or ended before the pong).
pub type PingReply = oneshot::Sender<Result<Duration, String>>;

/// Orders a link task can receive.
#[derive(Debug)]
pub enum LinkCommand {
    /// Measure a round trip.
    Ping(PingReply),
    /// Say goodbye with this code and close.
    Close(GoodbyeCode, String),
    /// Offer our newest CRL.
    SendCrl(Vec<u8>),
}

/// The registered link of a partner.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    /// Unique id of this link in this process.
    pub id: u64,
    /// Who dialed.
    pub direction: Direction,
    /// When it came up.
    pub since: Instant,
    /// Commands to the link task.
    pub commands: mpsc::Sender<LinkCommand>,
    /// The certificate chain the partner presented (leaf first), re-checked on reload.
    pub peer_chain: Vec<Vec<u8>>,
    /// When the link last received anything; a link silent for longer than
    /// 1.6 heartbeat intervals loses the tie-break to a fresh one (its far end is
    /// probably gone, e.g. a replica that froze without closing its sockets).
    pub last_rx: Arc<Mutex<Instant>>,
}

impl LinkHandle {
    /// How long since the link last received anything.
    pub fn silent_for(&self) -> Duration {
        lock(&self.last_rx).elapsed()
    }
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

struct PeerEntry {
    status: PeerStatus,
    link: Option<LinkHandle>,
    wake: Arc<Notify>,
    idle: bool,
}

/// The gateway.
pub struct Gateway {
    /// Configuration.
    pub config: Config,
    tls: RwLock<Arc<PeerTls>>,
    peers: Mutex<BTreeMap<String, PeerEntry>>,
    refused: Mutex<BTreeMap<String, u64>>,
    next_link_id: AtomicU64,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Partners' CRLs received over links.
    pub crls: CrlStore,
    /// Serialises reloads.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Asks the reload watcher for a reload (e.g. after a partner's newer CRL).
    pub reload_request: Notify,
    /// Durable message storage.
    pub store: Arc<crate::store::Store>,
    /// Counters and histograms for /metrics.
    pub metrics: crate::metrics::Metrics,
    /// This process's replica id (random per start): the owner name in link leases.
    pub replica_id: String,
    /// Signalled when messages land in the inbox (wakes long polls).
    pub inbox_arrived: Notify,
    outbox_wakers: Mutex<BTreeMap<String, Arc<Notify>>>,
}

/// RFC 3339 of now.
pub fn now_text() -> String {
    let now = OffsetDateTime::now_utc();
    let millis = now.nanosecond() / 1_000_000 * 1_000_000;
    peerlink_pki::timefmt::rfc3339(now.replace_nanosecond(millis).unwrap_or(now))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gateway {
    /// Creates the gateway state for a first TLS snapshot.
    pub fn new(
        config: Config,
        tls: PeerTls,
        crls: CrlStore,
        store: Arc<crate::store::Store>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            config,
            tls: RwLock::new(Arc::new(tls)),
            peers: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            next_link_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            crls,
            reload_lock: tokio::sync::Mutex::new(()),
            reload_request: Notify::new(),
            store,
            metrics: crate::metrics::Metrics::default(),
            replica_id: {
                use rand_core::RngCore;
                let mut b = [0u8; 8];
                rand_core::OsRng.fill_bytes(&mut b);
                hex::encode(b)
            },
            inbox_arrived: Notify::new(),
            outbox_wakers: Mutex::new(BTreeMap::new()),
        })
    }

    /// The current TLS configuration and trust snapshot.
    pub fn tls(&self) -> Arc<PeerTls> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs a new TLS snapshot (after a reload).
    pub fn set_tls(&self, tls: PeerTls) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
    }

    /// The signal a link waits on for new outbox messages to `peer_id`.
    pub fn outbox_waker(&self, peer_id: &str) -> Arc<Notify> {
        lock(&self.outbox_wakers)
            .entry(peer_id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Our node id.
    pub fn node_id(&self) -> String {
        self.tls().trust().identity.node_id.clone()
    }

    /// Endpoints to dial for a partner: config override, else its bundle's.
    pub fn endpoints_of(&self, peer_id: &str) -> Vec<String> {
        if let Some(o) = self.config.peers.get(peer_id) {
            if !o.endpoints.is_empty() {
                return o.endpoints.clone();
            }
        }
        self.tls()
            .trust()
            .peers
            .get(peer_id)
            .map(|p| p.endpoints.clone())
            .unwrap_or_default()
    }

    /// Ensures an entry exists for a partner; returns whether it was created.
    pub fn ensure_peer(&self, peer_id: &str) -> bool {
        let mut peers = lock(&self.peers);
        if peers.contains_key(peer_id) {
            return false;
        }
        peers.insert(
            peer_id.to_string(),
            PeerEntry {
                status: PeerStatus {
                    node_id: peer_id.to_string(),
                    state: LinkState::Connecting,
                    since: now_text(),
                    last_error: None,
                    last_refusal: None,
                    rtt_ms: None,
                    direction: None,
                    attempts: 0,
                    endpoints: Vec::new(),
                    cross_cert_not_after: None,
                },
                link: None,
                wake: Arc::new(Notify::new()),
                idle: false,
            },
        );
        true
    }

    /// Removes a partner no longer in the trust, closing its link.
    pub fn remove_peer(&self, peer_id: &str) {
        let removed = lock(&self.peers).remove(peer_id);
        if let Some(entry) = removed {
            if let Some(link) = entry.link {
                let _ = link.commands.try_send(LinkCommand::Close(
                    GoodbyeCode::Revoked,
                    "partner removed".into(),
                ));
            }
            entry.wake.notify_one();
        }
    }

    /// Partners with an entry.
    pub fn peer_ids(&self) -> Vec<String> {
        lock(&self.peers).keys().cloned().collect()
    }

    /// The wake-up handle of a partner's dialer.
    pub fn wake_handle(&self, peer_id: &str) -> Option<Arc<Notify>> {
        lock(&self.peers).get(peer_id).map(|e| e.wake.clone())
    }

    /// Wakes every dialer (after a reload).
    pub fn wake_all(&self) {
        for entry in lock(&self.peers).values() {
            entry.wake.notify_one();
        }
    }

    /// Whether a partner currently has a link.
    pub fn has_link(&self, peer_id: &str) -> bool {
        lock(&self.peers)
            .get(peer_id)
            .is_some_and(|e| e.link.is_some())
    }

    /// The partner's current link, if any.
    pub fn link(&self, peer_id: &str) -> Option<LinkHandle> {
        lock(&self.peers).get(peer_id).and_then(|e| e.link.clone())
    }

    /// Every current link.
    pub fn links(&self) -> Vec<(String, LinkHandle)> {
        lock(&self.peers)
            .iter()
            .filter_map(|(id, e)| e.link.clone().map(|l| (id.clone(), l)))
            .collect()
    }

    /// Allocates a link id.
    pub fn next_link_id(&self) -> u64 {
        self.next_link_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a freshly authenticated link, applying the tie-break rule when the
    /// partner already has one. Returns false when the new link must be closed.
    pub fn register_link(&self, peer_id: &str, handle: LinkHandle) -> bool {
        let local = self.node_id();
        let mut peers = lock(&self.peers);
        let Some(entry) = peers.get_mut(peer_id) else {
            return false;
        };
        if let Some(existing) = &entry.link {
            let stale = existing.silent_for() > self.config.link.heartbeat() * 8 / 5;
            let keep = if stale {
                Keep::New
            } else {
                tiebreak::resolve(&local, peer_id, existing.direction, handle.direction)
            };
            match keep {
                Keep::Existing => return false,
                Keep::New if stale => {
                    let _ = existing.commands.try_send(LinkCommand::Close(
                        GoodbyeCode::HeartbeatTimeout,
                        "replaced by a new link: nothing received on this one".into(),
                    ));
                }
                Keep::New => {
                    let _ = existing.commands.try_send(LinkCommand::Close(
                        GoodbyeCode::DuplicateLink,
                        "replaced by a simultaneous link".into(),
                    ));
                }
            }
        }
        entry.status.state = LinkState::Connected;
        entry.status.since = now_text();
        entry.status.last_error = None;
        entry.status.last_refusal = None;
        entry.status.rtt_ms = None;
        entry.idle = false;
        entry.status.direction = Some(handle.direction.as_str());
        entry.link = Some(handle);
        entry.wake.notify_one();
        true
    }

    /// Unregisters a link that ended; returns how long it was up if it was the current one.
    pub fn link_ended(
        &self,
        peer_id: &str,
        link_id: u64,
        error: Option<String>,
        idle: bool,
    ) -> Option<Duration> {
        let mut peers = lock(&self.peers);
        let entry = peers.get_mut(peer_id)?;
        let current = entry.link.as_ref().filter(|l| l.id == link_id)?.since;
        entry.link = None;
        entry.idle = idle;
        entry.status.state = if idle {
            LinkState::Idle
        } else {
            LinkState::BackingOff
        };
        entry.status.since = now_text();
        entry.status.last_error = error;
        entry.status.rtt_ms = None;
        entry.status.direction = None;
        entry.wake.notify_one();
        Some(current.elapsed())
    }

    /// Whether the partner's link was closed for idleness and nobody asked for it since.
    pub fn is_idle(&self, peer_id: &str) -> bool {
        lock(&self.peers).get(peer_id).is_some_and(|e| e.idle)
    }

    /// Asks for a link to the partner (reopens an idle one).
    pub fn demand(&self, peer_id: &str) {
        if let Some(entry) = lock(&self.peers).get_mut(peer_id) {
            if entry.idle {
                entry.idle = false;
                entry.wake.notify_one();
            }
        }
    }

    /// Updates a partner's state (dialer bookkeeping).
    pub fn set_state(
        &self,
        peer_id: &str,
        state: LinkState,
        error: Option<String>,
        refusal: Option<&str>,
        attempts: u32,
    ) {
        let mut peers = lock(&self.peers);
        if let Some(entry) = peers.get_mut(peer_id) {
            if entry.link.is_some() && state != LinkState::Connected {
                return; // an inbound link came up meanwhile; it wins
            }
            if entry.status.state != state {
                entry.status.since = now_text();
            }
            entry.status.state = state;
            entry.status.attempts = attempts;
            if error.is_some() {
                entry.status.last_error = error;
                entry.status.last_refusal = refusal.map(str::to_string);
            }
        }
    }

    /// Records the RTT measured on a link.
    pub fn set_rtt(&self, peer_id: &str, rtt: Duration) {
        if let Some(entry) = lock(&self.peers).get_mut(peer_id) {
            entry.status.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
        }
    }

    /// Counts a refused handshake, and records it on a partner's status when the
    /// refusal is authenticated as concerning that partner (`peer`) and it has no
    /// healthy link to describe instead.
    pub fn record_refusal(&self, reason: &str, peer: Option<&str>, detail: &str) {
        *lock(&self.refused).entry(reason.to_string()).or_insert(0) += 1;
        self.metrics.handshakes_refused.inc(&[("reason", reason)]);
        if let Some(peer_id) = peer {
            let mut peers = lock(&self.peers);
            if let Some(entry) = peers.get_mut(peer_id) {
                if entry.link.is_some() {
                    return;
                }
                entry.status.last_error = Some(format!("refused: {detail}"));
                entry.status.last_refusal = Some(reason.to_string());
                if entry.status.state != LinkState::Inactive {
                    if entry.status.state != LinkState::Refused {
                        entry.status.since = now_text();
                    }
                    entry.status.state = LinkState::Refused;
                }
            }
        }
    }

    /// Refused-handshake counters by reason.
    pub fn refused_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.refused).clone()
    }

    /// Status of every partner, with endpoints and certificate expiry filled in.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        let tls = self.tls();
        let mut out: Vec<PeerStatus> = lock(&self.peers)
            .values()
            .map(|e| e.status.clone())
            .collect();
        for s in &mut out {
            s.endpoints = self.endpoints_of(&s.node_id);
            s.cross_cert_not_after = tls
                .trust()
                .peers
                .get(&s.node_id)
                .and_then(|p| p.issued_to_us_not_after)
                .map(peerlink_pki::timefmt::rfc3339);
        }
        out
    }
}
