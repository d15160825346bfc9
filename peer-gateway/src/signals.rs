//! Wake-ups between tasks that share no other state: a message accepted for a
//! partner wakes that partner's link; a message stored in the inbox wakes the
//! applications' long polls; a partner's newer CRL asks for a reload.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The gateway's wake-ups.
#[derive(Default)]
pub struct Signals {
    outbox: Mutex<BTreeMap<String, Arc<Notify>>>,
    /// Signalled when messages land in the inbox (wakes long polls).
    pub inbox_arrived: Notify,
    /// Asks the reload watcher for a reload.
    pub reload: Notify,
}

impl Signals {
    /// The wake-up a partner's link waits on for new outbox messages.
    pub fn outbox(&self, peer_id: &str) -> Arc<Notify> {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer_id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }
}
