//! The trust snapshot in force: the node's CA data, the partners and their
//! CRLs, and the TLS configuration built from them ([`PeerTls`]).
//!
//! A reload builds a whole new snapshot and swaps it in; every task reads the
//! current one when it needs it (a handshake, a status page) and keeps that
//! `Arc` for the duration, so a reload never changes trust under a handshake.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use peerlink_tls::PeerTls;

use crate::config::PeerOverride;

/// The current trust, swapped on reload.
pub struct TrustHandle {
    current: RwLock<Arc<PeerTls>>,
    /// Endpoint overrides from the config (`[peers."<id>"]`), which win over bundles.
    overrides: BTreeMap<String, PeerOverride>,
}

impl TrustHandle {
    /// The first snapshot, with the config's endpoint overrides.
    pub fn new(tls: PeerTls, overrides: BTreeMap<String, PeerOverride>) -> TrustHandle {
        TrustHandle {
            current: RwLock::new(Arc::new(tls)),
            overrides,
        }
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<PeerTls> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs a new snapshot (after a reload).
    pub fn replace(&self, tls: PeerTls) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tls);
    }

    /// Our node id.
    pub fn node_id(&self) -> String {
        self.current().trust().identity.node_id.clone()
    }

    /// Whether `peer_id` is one of our partners.
    pub fn knows(&self, peer_id: &str) -> bool {
        self.current().trust().peers.contains_key(peer_id)
    }

    /// Endpoints to dial for a partner: the config's override, else its bundle's.
    pub fn endpoints_of(&self, peer_id: &str) -> Vec<String> {
        if let Some(o) = self.overrides.get(peer_id) {
            if !o.endpoints.is_empty() {
                return o.endpoints.clone();
            }
        }
        self.current()
            .trust()
            .peers
            .get(peer_id)
            .map(|p| p.endpoints.clone())
            .unwrap_or_default()
    }
}
