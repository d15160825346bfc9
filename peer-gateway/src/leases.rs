//! Link ownership across replicas of one node.
//!
//! Several gateway replicas may share one PostgreSQL store. Each partner's link
//! belongs to the replica holding that partner's lease in the database: only it
//! dials the partner and only it accepts the partner's connections (the others
//! answer `Goodbye(NotOwner)` so the partner tries its next endpoint). The
//! owner renews its leases every [`RENEW_EVERY`]; if it dies they expire after
//! [`LEASE_TTL`] and a standby replica takes the links over. A SQLite store
//! is locked to one process ([`crate::store::lock`]), which owns every link:
//! no lease is written, so accepting a link costs no fsync.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::frame::GoodbyeCode;
use crate::peers::supervisor::Lease;
use crate::peers::PeerTable;
use crate::store::{Store, StoreError};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the owner renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

fn ttl_ms() -> i64 {
    LEASE_TTL.as_millis() as i64
}

/// Why the lease could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("cannot take the link lease: {0}")]
pub struct LeaseError(#[from] StoreError);

/// This replica's leases in the store.
pub struct Leases {
    store: Arc<Store>,
    /// This process's replica id (random per start): the owner name in leases.
    pub replica_id: String,
}

impl Leases {
    /// The leases of replica `replica_id` in `store`.
    pub fn new(store: Arc<Store>, replica_id: String) -> Leases {
        Leases { store, replica_id }
    }

    /// A random replica id for this process.
    pub fn random_replica_id() -> String {
        use rand_core::RngCore;
        let mut b = [0u8; 8];
        rand_core::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    }

    /// Takes or keeps the lease on `peer`'s link; Ok(false) when another replica holds it.
    pub async fn acquire(&self, peer: &str) -> Result<bool, LeaseError> {
        if !self.store.shared_by_replicas() {
            return Ok(true);
        }
        Ok(self
            .store
            .acquire_lease(peer, &self.replica_id, ttl_ms())
            .await?)
    }

    /// What the supervisor learns from taking the lease: held, or who holds it.
    pub async fn take(&self, peer: &str) -> Lease {
        match self.acquire(peer).await {
            Ok(true) => Lease::Held,
            Ok(false) => Lease::Elsewhere(self.store.lease_owner(peer).await.ok().flatten()),
            Err(e) => Lease::Failed(e.to_string()),
        }
    }

    /// Renews our leases until shutdown; closes links whose lease we no longer hold.
    pub async fn renew(self: Arc<Self>, peers: Arc<PeerTable>, shutdown: CancellationToken) {
        if !self.store.shared_by_replicas() {
            return;
        }
        let mut last_ok = Instant::now();
        let mut every = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            match self.store.renew_leases(&self.replica_id, ttl_ms()).await {
                Ok(held) => {
                    last_ok = Instant::now();
                    let held: BTreeSet<String> = held.into_iter().collect();
                    for (peer, link) in peers.links() {
                        if !held.contains(&peer) {
                            tracing::warn!(peer = %peer, "lost the link lease to another replica; closing the link");
                            link.close(
                                GoodbyeCode::NotOwner,
                                "link lease moved to another replica",
                            );
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew link leases");
                    if last_ok.elapsed() >= LEASE_TTL {
                        // Another replica may own these links by now: stop using them.
                        for (peer, link) in peers.links() {
                            tracing::warn!(peer = %peer, "link lease expired unrenewed; closing the link");
                            link.close(GoodbyeCode::NotOwner, "cannot renew the link lease");
                        }
                    }
                }
            }
        }
    }

    /// Gives up our leases at shutdown so a standby replica takes over at once.
    pub async fn release(&self) {
        if !self.store.shared_by_replicas() {
            return;
        }
        if let Err(e) = self.store.release_leases(&self.replica_id).await {
            tracing::warn!(error = %e, "cannot release link leases; they expire by themselves");
        }
    }
}
