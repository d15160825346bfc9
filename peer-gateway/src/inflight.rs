//! The global cap on concurrent handshakes, shared fairly between sources.
//!
//! Per-source admission ([`crate::admission`]) stops one address from holding
//! more than its share, but a few addresses holding slow handshakes together
//! could still fill the global cap until the handshake timeout, and refill it
//! as fast as slots free up, so a partner would never get in. So when the cap
//! is full, a connection from a source that holds fewer handshakes than the
//! busiest source takes the slot of that source's oldest handshake, which is
//! cancelled. Sources holding equal shares never displace each other, so
//! partners linking normally are not disturbed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

struct Entry {
    ip: IpAddr,
    started: Instant,
    cancel: CancellationToken,
    permit: Option<OwnedSemaphorePermit>,
}

/// The handshakes in progress and the permits of the global cap.
pub struct InFlight {
    permits: Arc<Semaphore>,
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
}

/// One admitted handshake: holds its share of the cap until dropped, and is
/// cancelled when a connection from a less busy source takes its slot.
pub struct Ticket {
    id: u64,
    registry: Arc<InFlight>,
    cancel: CancellationToken,
    /// Whether admitting it displaced another handshake (for the log and counters).
    pub evicted_another: bool,
}

impl Ticket {
    /// Completes when another connection has taken this handshake's slot.
    pub async fn displaced(&self) {
        self.cancel.cancelled().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Dropping the entry drops its permit, if it still holds one.
        self.registry.entries().remove(&self.id);
    }
}

impl InFlight {
    /// A cap of `max` concurrent handshakes (at least one).
    pub fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            permits: Arc::new(Semaphore::new(max.max(1))),
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a handshake from `ip`, displacing the oldest handshake of the
    /// busiest source if the cap is full and that source holds more than `ip`
    /// would; `None` when the cap is full and shared evenly.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Option<Ticket> {
        let mut entries = self.entries();
        let mut evicted_another = false;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
                for entry in entries.values().filter(|e| e.permit.is_some()) {
                    *per_source.entry(entry.ip).or_default() += 1;
                }
                let ours = per_source.get(&ip).copied().unwrap_or(0) + 1;
                let (busiest, held) = per_source
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(ip, n)| (*ip, *n))?;
                if held <= ours {
                    return None;
                }
                let victim = entries
                    .values_mut()
                    .filter(|e| e.ip == busiest && e.permit.is_some())
                    .min_by_key(|e| e.started)?;
                victim.cancel.cancel();
                evicted_another = true;
                victim.permit.take()?
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        entries.insert(
            id,
            Entry {
                ip,
                started: now,
                cancel: cancel.clone(),
                permit: Some(permit),
            },
        );
        Some(Ticket {
            id,
            registry: self.clone(),
            cancel,
            evicted_another,
        })
    }

    /// Handshakes holding a slot of the cap.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.entries()
            .values()
            .filter(|e| e.permit.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_quieter_source_takes_the_oldest_slot_of_the_busiest() {
        let cap = InFlight::new(3);
        let t0 = Instant::now();
        let oldest = cap.admit(ip(5), t0).unwrap();
        let newer = cap.admit(ip(5), t0 + Duration::from_millis(1)).unwrap();
        let other = cap.admit(ip(6), t0).unwrap();
        assert_eq!(cap.held(), 3);
        // Full: 127.0.0.7 holds none, 127.0.0.5 holds two.
        let partner = cap.admit(ip(7), t0).expect("partner admitted");
        assert!(partner.evicted_another);
        assert!(
            oldest.cancel.is_cancelled(),
            "the oldest of the busiest source"
        );
        assert!(!newer.cancel.is_cancelled() && !other.cancel.is_cancelled());
        assert_eq!(cap.held(), 3, "never more than the cap");
        // The displaced handshake ends; its ticket gives nothing back twice.
        drop(oldest);
        assert_eq!(cap.held(), 3);
        assert_eq!(cap.permits.available_permits(), 0);
    }

    #[test]
    fn even_shares_do_not_displace_each_other() {
        let cap = InFlight::new(2);
        let t0 = Instant::now();
        let a = cap.admit(ip(5), t0).unwrap();
        let _b = cap.admit(ip(6), t0).unwrap();
        // 127.0.0.5 would hold two against 127.0.0.6's one: refused.
        assert!(cap.admit(ip(5), t0).is_none());
        // A third source would hold one, as many as the busiest: refused too.
        assert!(cap.admit(ip(7), t0).is_none());
        assert!(!a.cancel.is_cancelled());
        // A slot freed by a finished handshake is available again.
        drop(a);
        let c = cap.admit(ip(7), t0).unwrap();
        assert!(!c.evicted_another);
    }

    #[tokio::test]
    async fn a_displaced_ticket_learns_it() {
        let cap = InFlight::new(2);
        let t0 = Instant::now();
        let x = cap.admit(ip(5), t0).unwrap();
        let y = cap.admit(ip(5), t0 + Duration::from_millis(1)).unwrap();
        assert!(
            cap.admit(ip(5), t0).is_none(),
            "no displacing its own source"
        );
        let _z = cap.admit(ip(6), t0).unwrap();
        tokio::time::timeout(Duration::from_secs(1), x.displaced())
            .await
            .expect("the displaced handshake is told");
        assert!(!y.cancel.is_cancelled());
    }
}
