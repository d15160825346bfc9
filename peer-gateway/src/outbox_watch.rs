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
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::signals::Signals;
use crate::store::Store;

/// Runs until shutdown, looking every `every` (a link's tick).
pub async fn watch(
    store: Arc<Store>,
    signals: Arc<Signals>,
    every: Duration,
    shutdown: CancellationToken,
) {
    if !store.shared_by_replicas() {
        return;
    }
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.outbox_heads().await {
            Ok(heads) => {
                for (peer, head) in heads {
                    if seen.insert(peer.clone(), head) != Some(head) {
                        signals.outbox(&peer).notify_one();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the outbox heads; retrying"),
        }
    }
}
