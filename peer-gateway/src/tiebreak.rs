//! One logical link per peer: which link survives when two are established.
//!
//! When two nodes dial each other at the same time, each ends up with two
//! links to the other: the one it dialed (outbound) and the one it accepted
//! (inbound). Both must close the same one, without talking about it (any
//! negotiation could itself race), and the decision must never flip-flop.
//!
//! The rule is a pure function of facts both sides share: *keep the link dialed
//! by the node with the smaller node id* (byte-wise comparison). Node A sees
//! the link dialed by A as outbound and B sees it as inbound, so both sides
//! select the same physical link. When both candidates were dialed by the same
//! node (a reconnect replacing a link whose loss this side has not noticed
//! yet), the newer one is kept: the peer dialed again because the old one is
//! dead to it.

use std::cmp::Ordering;

/// Who dialed a link, from the local node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    /// We dialed the peer.
    Outbound,
}

impl Direction {
    /// The same link seen from the other end.
    #[cfg(test)]
    fn reversed(self) -> Direction {
        match self {
            Direction::Inbound => Direction::Outbound,
            Direction::Outbound => Direction::Inbound,
        }
    }

    /// A stable lowercase name, for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which of two established links to the same peer survives; the other one is
/// closed with `Goodbye(DuplicateLink)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Keep the link that was already registered; close the new one.
    Existing,
    /// Keep the new link; close the one that was registered.
    New,
}

/// The direction of the link that wins a tie-break between this node and a
/// peer: `Outbound` if the local id is smaller, so the gateway can let the
/// other side (whose dial would lose anyway) wait a little before dialing and
/// make simultaneous dials rare.
///
/// Equal ids (a node talking to itself, which the gateway must refuse earlier)
/// give `Inbound`.
pub fn preferred_dialer(local_id: &str, remote_id: &str) -> Direction {
    if local_id.as_bytes() < remote_id.as_bytes() {
        Direction::Outbound
    } else {
        Direction::Inbound
    }
}

/// Decides which of two established links to `remote_id` survives: the
/// `existing` one (already registered) or the `new` one (just authenticated).
///
/// - Different directions (a simultaneous dial): keep the link dialed by the
///   node with the smaller id. Both nodes reach the same physical link, and a
///   third link arriving later is judged by the same rule, so the winner never
///   flips back and forth.
/// - Same direction (the same node dialed twice): keep the new one.
/// - Equal ids cannot be told apart, so no rule lets both sides agree; such a
///   link must be refused before it gets here. Should it happen anyway, the
///   existing link is kept (no churn) unless it is a same-direction
///   replacement.
pub fn resolve(local_id: &str, remote_id: &str, existing: Direction, new: Direction) -> Keep {
    if existing == new {
        return Keep::New;
    }
    match local_id.as_bytes().cmp(remote_id.as_bytes()) {
        Ordering::Equal => Keep::Existing,
        _ if new == preferred_dialer(local_id, remote_id) => Keep::New,
        _ => Keep::Existing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A physical link, named by the node that dialed it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Link {
        DialedByA,
        DialedByB,
    }

    /// How `local` sees `link` between `a` and `b`.
    fn direction(link: Link, local_is_a: bool) -> Direction {
        match (link, local_is_a) {
            (Link::DialedByA, true) | (Link::DialedByB, false) => Direction::Outbound,
            (Link::DialedByA, false) | (Link::DialedByB, true) => Direction::Inbound,
        }
    }

    /// The physical link `local` keeps when `existing` is registered and `new`
    /// arrives.
    fn kept(local: &str, remote: &str, local_is_a: bool, existing: Link, new: Link) -> Link {
        match resolve(
            local,
            remote,
            direction(existing, local_is_a),
            direction(new, local_is_a),
        ) {
            Keep::Existing => existing,
            Keep::New => new,
        }
    }

    struct Noise(crate::backoff::test_rng::XorShift);

    impl Noise {
        fn next(&mut self) -> u64 {
            rand_core::RngCore::next_u64(&mut self.0)
        }

        /// A node id: hex like the default ids, or a short explicit one.
        fn node_id(&mut self) -> String {
            const CHARS: &[u8] = b"0123456789abcdefABCDEF.-xyz";
            let len = if self.next() & 1 == 0 {
                32
            } else {
                1 + (self.next() % 64) as usize
            };
            let mut id = String::new();
            while id.len() < len {
                let c = CHARS[(self.next() % CHARS.len() as u64) as usize];
                if !id.is_empty() || c.is_ascii_alphanumeric() {
                    id.push(char::from(c));
                }
            }
            id
        }
    }

    #[test]
    fn both_sides_keep_the_same_link() {
        let mut rng = Noise(crate::backoff::test_rng::XorShift(0xDEAD_BEEF_CAFE_F00D));
        for _ in 0..10_000 {
            let a = rng.node_id();
            let b = rng.node_id();
            if a == b {
                continue;
            }
            let winner = if a.as_bytes() < b.as_bytes() {
                Link::DialedByA
            } else {
                Link::DialedByB
            };
            // Each side may have registered either link first.
            for a_first in [Link::DialedByA, Link::DialedByB] {
                for b_first in [Link::DialedByA, Link::DialedByB] {
                    let a_second = other(a_first);
                    let b_second = other(b_first);
                    let a_keeps = kept(&a, &b, true, a_first, a_second);
                    let b_keeps = kept(&b, &a, false, b_first, b_second);
                    assert_eq!(a_keeps, b_keeps, "a={a} b={b}");
                    assert_eq!(a_keeps, winner, "a={a} b={b}");
                }
            }
        }
    }

    fn other(link: Link) -> Link {
        match link {
            Link::DialedByA => Link::DialedByB,
            Link::DialedByB => Link::DialedByA,
        }
    }

    #[test]
    fn preferred_dialer_matches_resolution() {
        let mut rng = Noise(crate::backoff::test_rng::XorShift(7));
        for _ in 0..1_000 {
            let (a, b) = (rng.node_id(), rng.node_id());
            if a == b {
                continue;
            }
            // Exactly one side is the preferred dialer, and its outbound link wins.
            let a_pref = preferred_dialer(&a, &b);
            let b_pref = preferred_dialer(&b, &a);
            assert_ne!(a_pref, b_pref, "a={a} b={b}");
            assert_eq!(a_pref.reversed(), b_pref);
            assert_eq!(resolve(&a, &b, a_pref.reversed(), a_pref), Keep::New);
            assert_eq!(resolve(&a, &b, a_pref, a_pref.reversed()), Keep::Existing);
        }
        assert_eq!(preferred_dialer("a", "b"), Direction::Outbound);
        assert_eq!(preferred_dialer("b", "a"), Direction::Inbound);
        // Byte-wise, not numeric or case-insensitive.
        assert_eq!(preferred_dialer("B", "a"), Direction::Outbound);
        assert_eq!(preferred_dialer("10", "9"), Direction::Outbound);
        assert_eq!(preferred_dialer("ab", "abc"), Direction::Outbound);
    }

    #[test]
    fn same_direction_replacement_keeps_new() {
        for (local, remote) in [("a", "b"), ("b", "a"), ("same", "same")] {
            for dir in [Direction::Inbound, Direction::Outbound] {
                assert_eq!(resolve(local, remote, dir, dir), Keep::New);
            }
        }
    }

    #[test]
    fn no_flapping() {
        // A stream of links arriving in alternating directions: once the
        // preferred-direction link is registered, a non-preferred arrival never
        // displaces it.
        for (local, remote) in [("a", "b"), ("b", "a")] {
            let preferred = preferred_dialer(local, remote);
            let mut current = Direction::Inbound;
            let mut history = Vec::new();
            for i in 0..20 {
                let new = if i % 2 == 0 {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                if resolve(local, remote, current, new) == Keep::New {
                    current = new;
                }
                history.push(current);
            }
            let first = history.iter().position(|d| *d == preferred);
            let Some(first) = first else {
                panic!("preferred link never kept");
            };
            assert!(history[first..].iter().all(|d| *d == preferred));
        }
    }

    #[test]
    fn equal_ids_are_deterministic() {
        // Should never happen (the gateway refuses its own id), but the answer
        // is fixed: keep what is there.
        assert_eq!(
            resolve("n", "n", Direction::Inbound, Direction::Outbound),
            Keep::Existing
        );
        assert_eq!(
            resolve("n", "n", Direction::Outbound, Direction::Inbound),
            Keep::Existing
        );
        assert_eq!(preferred_dialer("n", "n"), Direction::Inbound);
    }

    #[test]
    fn names() {
        assert_eq!(Direction::Inbound.as_str(), "inbound");
        assert_eq!(Direction::Outbound.as_str(), "outbound");
    }
}
