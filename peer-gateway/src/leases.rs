//! Link ownership across replicas of one node.
//!
//! Several gateway replicas may share one PostgreSQL store. Each partner's link
//! belongs to the replica holding that partner's lease in the database: only it
//! dials the partner and only it accepts the partner's connections (the others
//! answer `Goodbye(NotOwner)` so the partner tries its next endpoint). The
//! owner renews its leases every [`RENEW_EVERY`]; if it dies they expire after
//! [`LEASE_TTL`] and a standby replica takes the links over. A SQLite store
//! is locked to one process ([`crate::store_lock`]), which owns every link:
//! no lease is written, so accepting a link costs no fsync.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::frame::GoodbyeCode;
use crate::gateway::{Gateway, LinkCommand};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the owner renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a standby replica tries to take a partner's lease.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

fn ttl_ms() -> i64 {
    LEASE_TTL.as_millis() as i64
}

/// Takes or keeps the lease on `peer`'s link; Ok(false) when another replica holds it.
pub async fn acquire(gw: &Gateway, peer: &str) -> Result<bool, String> {
    if !gw.store.shared_by_replicas() {
        return Ok(true);
    }
    gw.store
        .acquire_lease(peer, &gw.replica_id, ttl_ms())
        .await
        .map_err(|e| format!("cannot take the link lease: {e}"))
}

/// Renews our leases until shutdown; closes links whose lease we no longer hold.
pub async fn renew(gw: Arc<Gateway>) {
    if !gw.store.shared_by_replicas() {
        return;
    }
    let mut last_ok = Instant::now();
    let mut every = tokio::time::interval(RENEW_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = gw.shutdown.cancelled() => return,
        }
        match gw.store.renew_leases(&gw.replica_id, ttl_ms()).await {
            Ok(held) => {
                last_ok = Instant::now();
                let held: BTreeSet<String> = held.into_iter().collect();
                for (peer, link) in gw.links() {
                    if !held.contains(&peer) {
                        tracing::warn!(peer = %peer, "lost the link lease to another replica; closing the link");
                        let _ = link.commands.try_send(LinkCommand::Close(
                            GoodbyeCode::NotOwner,
                            "link lease moved to another replica".into(),
                        ));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew link leases");
                if last_ok.elapsed() >= LEASE_TTL {
                    // Another replica may own these links by now: stop using them.
                    for (peer, link) in gw.links() {
                        tracing::warn!(peer = %peer, "link lease expired unrenewed; closing the link");
                        let _ = link.commands.try_send(LinkCommand::Close(
                            GoodbyeCode::NotOwner,
                            "cannot renew the link lease".into(),
                        ));
                    }
                }
            }
        }
    }
}

/// Gives up our leases at shutdown so a standby replica takes over at once.
pub async fn release(gw: &Gateway) {
    if !gw.store.shared_by_replicas() {
        return;
    }
    if let Err(e) = gw.store.release_leases(&gw.replica_id).await {
        tracing::warn!(error = %e, "cannot release link leases; they expire by themselves");
    }
}

/// Time to wait before a standby replica retries.
pub fn standby_retry() -> Duration {
    STANDBY_RETRY
        + Duration::from_millis(u64::from(
            rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 250,
        ))
}
