//! The peer table: one entry per partner with its status, its link (at most
//! one) and the wake-up of its supervisor, plus the refused-handshake counts.
//!
//! Links register here after their handshake and Hello; the tie-break rule
//! ([`crate::tiebreak`]) decides which of two links to the same partner
//! survives. Locks are held only for short, non-async sections.

pub mod status;
pub mod supervisor;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::frame::GoodbyeCode;
use crate::link::LinkHandle;
use crate::tiebreak::{self, Keep};
use crate::trust::TrustHandle;
pub use status::{now_text, LinkState, PeerStatus};

struct PeerEntry {
    status: PeerStatus,
    link: Option<LinkHandle>,
    wake: Arc<Notify>,
    idle: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every partner's entry; shared by the links, the supervisors, the listener,
/// reload and the APIs.
pub struct PeerTable {
    entries: Mutex<BTreeMap<String, PeerEntry>>,
    refused: Mutex<BTreeMap<String, u64>>,
    next_link_id: AtomicU64,
    /// A registered link silent for longer than this loses the tie-break to a
    /// fresh one ([`crate::config::LinkConfig::stale_after`]).
    stale_after: Duration,
}

/// What became of a link that asked to be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// It is the partner's link now.
    Registered,
    /// The partner already has a link that the tie-break keeps: close this one.
    Duplicate,
    /// The partner is not (or no longer) in the table.
    UnknownPeer,
}

impl PeerTable {
    /// An empty table whose tie-break replaces links silent for `stale_after`.
    pub fn new(stale_after: Duration) -> PeerTable {
        PeerTable {
            entries: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            next_link_id: AtomicU64::new(1),
            stale_after,
        }
    }

    /// Ensures an entry exists for a partner; returns whether it was created
    /// (then its supervisor must be started).
    pub fn ensure(&self, peer_id: &str) -> bool {
        let mut entries = lock(&self.entries);
        if entries.contains_key(peer_id) {
            return false;
        }
        entries.insert(
            peer_id.to_string(),
            PeerEntry {
                status: PeerStatus::new(peer_id),
                link: None,
                wake: Arc::new(Notify::new()),
                idle: false,
            },
        );
        true
    }

    /// Removes a partner no longer in the trust, closing its link and waking its
    /// supervisor (which then finds the partner gone and stops).
    pub fn remove(&self, peer_id: &str) {
        let removed = lock(&self.entries).remove(peer_id);
        if let Some(entry) = removed {
            if let Some(link) = entry.link {
                link.close(GoodbyeCode::Revoked, "partner removed");
            }
            entry.wake.notify_one();
        }
    }

    /// Partners with an entry.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.entries).keys().cloned().collect()
    }

    /// The wake-up of a partner's supervisor.
    pub fn wake_handle(&self, peer_id: &str) -> Option<Arc<Notify>> {
        lock(&self.entries).get(peer_id).map(|e| e.wake.clone())
    }

    /// Wakes every supervisor (after a reload).
    pub fn wake_all(&self) {
        for entry in lock(&self.entries).values() {
            entry.wake.notify_one();
        }
    }

    /// Whether a partner currently has a link.
    pub fn has_link(&self, peer_id: &str) -> bool {
        lock(&self.entries)
            .get(peer_id)
            .is_some_and(|e| e.link.is_some())
    }

    /// The partner's current link, if any.
    pub fn link(&self, peer_id: &str) -> Option<LinkHandle> {
        lock(&self.entries)
            .get(peer_id)
            .and_then(|e| e.link.clone())
    }

    /// Every current link.
    pub fn links(&self) -> Vec<(String, LinkHandle)> {
        lock(&self.entries)
            .iter()
            .filter_map(|(id, e)| e.link.clone().map(|l| (id.clone(), l)))
            .collect()
    }

    /// Allocates a link id (unique in this process).
    pub fn next_link_id(&self) -> u64 {
        self.next_link_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a freshly authenticated link of `local_id`'s node, applying the
    /// tie-break rule when the partner already has one: a registered link that
    /// has been silent for [`PeerTable::stale_after`] always loses (its far end is
    /// probably gone, e.g. a replica that froze without closing its sockets);
    /// otherwise [`tiebreak::resolve`] decides. The loser is closed.
    pub fn register(&self, local_id: &str, peer_id: &str, handle: LinkHandle) -> Registration {
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(peer_id) else {
            return Registration::UnknownPeer;
        };
        if let Some(existing) = &entry.link {
            let stale = existing.silent_for() > self.stale_after;
            let keep = if stale {
                Keep::New
            } else {
                tiebreak::resolve(local_id, peer_id, existing.direction, handle.direction)
            };
            match keep {
                Keep::Existing => return Registration::Duplicate,
                Keep::New if stale => existing.close(
                    GoodbyeCode::HeartbeatTimeout,
                    "replaced by a new link: nothing received on this one",
                ),
                Keep::New => existing.close(
                    GoodbyeCode::DuplicateLink,
                    "replaced by a simultaneous link",
                ),
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
        Registration::Registered
    }

    /// Unregisters a link that ended; returns how long it was up if it was the
    /// partner's current one. `idle`: it was closed for lack of traffic and is
    /// reopened only on demand.
    pub fn link_ended(
        &self,
        peer_id: &str,
        link_id: u64,
        error: Option<String>,
        idle: bool,
    ) -> Option<Duration> {
        let mut entries = lock(&self.entries);
        let entry = entries.get_mut(peer_id)?;
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
        lock(&self.entries).get(peer_id).is_some_and(|e| e.idle)
    }

    /// Asks for a link to the partner (reopens an idle one).
    pub fn demand(&self, peer_id: &str) {
        if let Some(entry) = lock(&self.entries).get_mut(peer_id) {
            if entry.idle {
                entry.idle = false;
                entry.wake.notify_one();
            }
        }
    }

    /// Updates a partner's state (supervisor bookkeeping). A link that came up
    /// meanwhile wins: its `Connected` is not overwritten.
    pub fn set_state(
        &self,
        peer_id: &str,
        state: LinkState,
        error: Option<String>,
        refusal: Option<&str>,
        attempts: u32,
    ) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(peer_id) {
            if entry.link.is_some() && state != LinkState::Connected {
                return;
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

    /// Records the round trip measured on a partner's link.
    pub fn set_rtt(&self, peer_id: &str, rtt: Duration) {
        if let Some(entry) = lock(&self.entries).get_mut(peer_id) {
            entry.status.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
        }
    }

    /// Counts a refused handshake, and records it on a partner's status when the
    /// refusal is authenticated as concerning that partner (`peer`) and it has no
    /// healthy link to describe instead. (The caller counts the metric.)
    pub fn record_refusal(&self, reason: &str, peer: Option<&str>, detail: &str) {
        *lock(&self.refused).entry(reason.to_string()).or_insert(0) += 1;
        let Some(peer_id) = peer else {
            return;
        };
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(peer_id) {
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

    /// Refused-handshake counts by reason.
    pub fn refused_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.refused).clone()
    }

    /// Status of every partner, with endpoints and certificate expiry from `trust`.
    pub fn statuses(&self, trust: &TrustHandle) -> Vec<PeerStatus> {
        let tls = trust.current();
        let mut out: Vec<PeerStatus> = lock(&self.entries)
            .values()
            .map(|e| e.status.clone())
            .collect();
        for s in &mut out {
            s.endpoints = trust.endpoints_of(&s.node_id);
            s.cross_cert_not_after = tls
                .trust()
                .peers
                .get(&s.node_id)
                .and_then(|p| p.issued_to_us_not_after)
                .map(peerlink_pki::timefmt::rfc3339);
        }
        out
    }

    /// Status of one partner.
    pub fn status(&self, trust: &TrustHandle, peer_id: &str) -> Option<PeerStatus> {
        self.statuses(trust)
            .into_iter()
            .find(|s| s.node_id == peer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{LinkCommand, LinkHandle};
    use crate::tiebreak::Direction;

    fn table() -> PeerTable {
        let t = PeerTable::new(Duration::from_millis(800));
        t.ensure("b");
        t
    }

    #[test]
    fn a_registered_link_is_the_partners_until_it_ends() {
        let t = table();
        let (link, _commands) = LinkHandle::for_test(t.next_link_id(), Direction::Outbound);
        let id = link.id;
        assert_eq!(t.register("a", "b", link), Registration::Registered);
        assert!(t.has_link("b"));
        assert_eq!(t.statuses_for_test()[0].state, LinkState::Connected);
        // A stale end of another link changes nothing.
        assert_eq!(t.link_ended("b", id + 100, None, false), None);
        assert!(t.link_ended("b", id, Some("gone".into()), false).is_some());
        assert!(!t.has_link("b"));
        let s = &t.statuses_for_test()[0];
        assert_eq!(s.state, LinkState::BackingOff);
        assert_eq!(s.last_error.as_deref(), Some("gone"));
    }

    #[test]
    fn simultaneous_links_keep_the_one_the_smaller_id_dialed() {
        // We are "a" (smaller): our outbound link wins over b's inbound one.
        let t = table();
        let (ours, mut our_commands) = LinkHandle::for_test(t.next_link_id(), Direction::Outbound);
        assert_eq!(t.register("a", "b", ours), Registration::Registered);
        let (theirs, _c) = LinkHandle::for_test(t.next_link_id(), Direction::Inbound);
        assert_eq!(t.register("a", "b", theirs), Registration::Duplicate);
        assert!(
            our_commands.try_recv().is_err(),
            "the kept link is not closed"
        );
        // As "c" (larger than "b"), b's dial wins: the registered outbound one is closed.
        let (theirs, _c) = LinkHandle::for_test(t.next_link_id(), Direction::Inbound);
        assert_eq!(t.register("c", "b", theirs), Registration::Registered);
        assert!(matches!(
            our_commands.try_recv(),
            Ok(LinkCommand::Close(GoodbyeCode::DuplicateLink, _))
        ));
    }

    #[test]
    fn a_silent_link_loses_to_a_fresh_one_whatever_the_tie_break_says() {
        let t = table();
        let (ours, mut our_commands) = LinkHandle::for_test(t.next_link_id(), Direction::Outbound);
        ours.backdate_last_rx(Duration::from_secs(5));
        assert_eq!(t.register("a", "b", ours), Registration::Registered);
        let (theirs, _c) = LinkHandle::for_test(t.next_link_id(), Direction::Inbound);
        assert_eq!(t.register("a", "b", theirs), Registration::Registered);
        assert!(matches!(
            our_commands.try_recv(),
            Ok(LinkCommand::Close(GoodbyeCode::HeartbeatTimeout, _))
        ));
    }

    #[test]
    fn an_idle_link_is_reopened_on_demand_only() {
        let t = table();
        let (link, _c) = LinkHandle::for_test(t.next_link_id(), Direction::Outbound);
        let id = link.id;
        t.register("a", "b", link);
        t.link_ended("b", id, Some("idle".into()), true);
        assert!(t.is_idle("b"));
        assert_eq!(t.statuses_for_test()[0].state, LinkState::Idle);
        t.demand("b");
        assert!(!t.is_idle("b"));
    }

    #[test]
    fn supervisor_states_never_hide_a_live_link() {
        let t = table();
        let (link, _c) = LinkHandle::for_test(t.next_link_id(), Direction::Inbound);
        t.register("a", "b", link);
        t.set_state(
            "b",
            LinkState::BackingOff,
            Some("dial failed".into()),
            None,
            3,
        );
        assert_eq!(t.statuses_for_test()[0].state, LinkState::Connected);
    }

    #[test]
    fn refusals_are_counted_and_shown_on_a_partner_without_a_link() {
        let t = table();
        t.record_refusal("expired", Some("b"), "certificate expired");
        t.record_refusal("expired", None, "unknown sender");
        assert_eq!(t.refused_counts().get("expired"), Some(&2));
        let s = &t.statuses_for_test()[0];
        assert_eq!(s.state, LinkState::Refused);
        assert_eq!(s.last_refusal.as_deref(), Some("expired"));
    }

    #[test]
    fn removing_a_partner_closes_its_link() {
        let t = table();
        let (link, mut commands) = LinkHandle::for_test(t.next_link_id(), Direction::Inbound);
        t.register("a", "b", link);
        t.remove("b");
        assert!(t.ids().is_empty());
        assert!(matches!(
            commands.try_recv(),
            Ok(LinkCommand::Close(GoodbyeCode::Revoked, _))
        ));
    }

    impl PeerTable {
        fn statuses_for_test(&self) -> Vec<PeerStatus> {
            lock(&self.entries)
                .values()
                .map(|e| e.status.clone())
                .collect()
        }
    }
}
