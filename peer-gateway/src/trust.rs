//! The trust snapshot in force: the node's CA data, the partners and their
//! CRLs, and the TLS configuration built from them ([`PeerTls`]).
//!
//! A reload builds a whole new snapshot and swaps it in; every task reads the
//! current one when it needs it (a handshake, a status page) and keeps that
//! `Arc` for the duration, so a reload never changes trust under a handshake.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use peerlink_pki::swaptacular::StompManifest;
use peerlink_tls::PeerTls;

use crate::config::{PeerOverride, Protocol, StompSettings};

/// The current trust, swapped on reload, and the config that says how to
/// reach each partner.
pub struct TrustHandle {
    current: RwLock<Arc<PeerTls>>,
    /// Endpoint overrides from the config (`[peers."<id>"]`), which win over bundles.
    overrides: BTreeMap<String, PeerOverride>,
    /// Which partners speak swpt-stomp, from the config.
    stomp: Arc<StompSettings>,
}

impl TrustHandle {
    /// The first snapshot, with the config's endpoint overrides and protocols.
    pub fn new(
        tls: PeerTls,
        overrides: BTreeMap<String, PeerOverride>,
        stomp: Arc<StompSettings>,
    ) -> TrustHandle {
        TrustHandle {
            current: RwLock::new(Arc::new(tls)),
            overrides,
            stomp,
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

    /// The STOMP manifest partner `peer_id` published (Swaptacular partners).
    pub fn stomp_manifest_of(&self, peer_id: &str) -> Option<StompManifest> {
        self.current()
            .trust()
            .peers
            .get(peer_id)
            .and_then(|p| p.stomp.clone())
    }

    /// The protocol partner `peer_id` speaks ([`StompSettings::protocol_of`]).
    pub fn protocol_of(&self, peer_id: &str) -> Protocol {
        let has_manifest = self
            .current()
            .trust()
            .peers
            .get(peer_id)
            .is_some_and(|p| p.stomp.is_some());
        self.stomp.protocol_of(peer_id, has_manifest)
    }

    /// Endpoints to dial for a partner: the config's override, else its
    /// bundle's peerlink endpoints, or for a swpt-stomp partner the STOMP
    /// servers of its manifest.
    pub fn endpoints_of(&self, peer_id: &str) -> Vec<String> {
        if let Some(o) = self.overrides.get(peer_id) {
            if !o.endpoints.is_empty() {
                return o.endpoints.clone();
            }
        }
        let protocol = self.protocol_of(peer_id);
        let tls = self.current();
        let Some(peer) = tls.trust().peers.get(peer_id) else {
            return Vec::new();
        };
        match (protocol, &peer.stomp) {
            (Protocol::SwptStomp, Some(manifest)) => manifest.servers.clone(),
            _ => peer.endpoints.clone(),
        }
    }
}
