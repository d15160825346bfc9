//! Wakes links for messages that other replicas accepted.
//!
//! A message submitted to this gateway's API wakes the partner's link at once.
//! With replicas sharing a PostgreSQL store, a message may instead be accepted
//! by another replica's API while this one owns the link, and no wake-up
//! crosses processes. Rather than every link querying its outbox on each
//! heartbeat tick (800 queries a second at 1,000 idle links), one task reads
//! the per-partner sequence heads every heartbeat/4 and wakes the links whose
//! outbox grew. With SQLite (one process) it does nothing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::gateway::Gateway;

/// Runs until shutdown.
pub async fn watch(gw: Arc<Gateway>) {
    if !gw.store.shared_by_replicas() {
        return;
    }
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(gw.config.link.heartbeat() / 4);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = gw.shutdown.cancelled() => return,
        }
        match gw.store.outbox_heads().await {
            Ok(heads) => {
                for (peer, head) in heads {
                    if seen.insert(peer.clone(), head) != Some(head) {
                        gw.outbox_waker(&peer).notify_one();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the outbox heads; retrying"),
        }
    }
}
