//! Reconnect delays: capped exponential backoff with jitter and a floor.
//!
//! A peer that is down must cost (almost) nothing, and a thousand gateways
//! whose peer comes back must not reconnect in lockstep. So each delay is drawn
//! uniformly from `[base, min(cap, base * 2^attempt)]`: "full jitter" spreads
//! the reconnects, and the floor at `base` (instead of the textbook zero) means
//! no attempt ever follows the previous one immediately, so a refusing peer can
//! never make the dialer spin.

use std::time::Duration;

use rand_core::{OsRng, RngCore};

/// Default first delay.
pub const DEFAULT_BASE: Duration = Duration::from_millis(250);

/// Default longest delay.
pub const DEFAULT_CAP: Duration = Duration::from_secs(30);

/// A link that stayed up this long proves the peer healthy, so the backoff is
/// reset; a link that drops sooner keeps growing the delay (a peer that accepts
/// and then closes at once must not be hammered).
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The smallest base accepted: a zero base would allow zero delays.
const MIN_BASE: Duration = Duration::from_millis(1);

/// Reconnect delay state for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose delays start in `[base, base]` and grow to at most `cap`.
    ///
    /// A zero `base` is raised to 1 ms and a `cap` below `base` is raised to
    /// `base`, so that no configuration can produce a busy loop.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let base = base.max(MIN_BASE);
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, using the operating system's RNG.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut OsRng)
    }

    /// The delay before the next attempt, drawn from `rng` (tests inject a
    /// deterministic one).
    pub fn next_delay_with(&mut self, rng: &mut impl RngCore) -> Duration {
        let upper = self.upper_bound();
        self.attempt = self.attempt.saturating_add(1);
        let spread = nanos(upper.saturating_sub(self.base));
        // Map a uniform u64 onto 0..=spread by widening multiplication: no
        // modulo, no overflow, bias below 2^-64 per value.
        let offset = (u128::from(rng.next_u64()) * (u128::from(spread) + 1)) >> 64;
        let offset = u64::try_from(offset).unwrap_or(spread);
        self.base.saturating_add(Duration::from_nanos(offset))
    }

    /// Forgets past failures: the next delay is drawn from `[base, base]`
    /// again. Called once a link has been up for [`STABLE_AFTER`].
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset (for status).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The largest delay the next call may return: `min(cap, base * 2^attempt)`.
    fn upper_bound(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

impl Default for Backoff {
    /// [`DEFAULT_BASE`] to [`DEFAULT_CAP`].
    fn default() -> Self {
        Backoff::new(DEFAULT_BASE, DEFAULT_CAP)
    }
}

/// Whether a link that has been up for `up_for` counts as stable, i.e. its
/// backoff may be reset (see [`STABLE_AFTER`]).
pub fn is_stable(up_for: Duration, threshold: Duration) -> bool {
    up_for >= threshold
}

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Deterministic random numbers for tests of delays.
#[cfg(test)]
pub(crate) mod test_rng {
    use rand_core::RngCore;

    /// xorshift64: deterministic noise, no extra crates.
    pub struct XorShift(pub u64);

    impl RngCore for XorShift {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }

        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let bytes = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }

        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    /// Always returns the same value: pins the delay to an end of the range.
    pub struct Fixed(pub u64);

    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }

        fn next_u64(&mut self) -> u64 {
            self.0
        }

        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(self.0 as u8);
        }

        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_rng::{Fixed, XorShift};

    /// The default backoff after `attempt` failures.
    fn at_attempt(attempt: u32) -> Backoff {
        Backoff {
            attempt,
            ..Backoff::default()
        }
    }

    fn expected_upper(attempt: u32) -> Duration {
        let factor = 2f64.powi(attempt.min(100) as i32);
        let upper = DEFAULT_BASE.as_secs_f64() * factor;
        if upper >= DEFAULT_CAP.as_secs_f64() {
            DEFAULT_CAP
        } else {
            DEFAULT_BASE * (1u32 << attempt)
        }
    }

    #[test]
    fn delays_within_bounds() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..50 {
            let mut b = Backoff::default();
            for attempt in 0..64u32 {
                assert_eq!(b.attempts(), attempt);
                let d = b.next_delay_with(&mut rng);
                assert!(d >= DEFAULT_BASE, "attempt {attempt}: {d:?} below base");
                assert!(
                    d <= expected_upper(attempt),
                    "attempt {attempt}: {d:?} above {:?}",
                    expected_upper(attempt)
                );
            }
        }
    }

    #[test]
    fn range_ends_are_reachable() {
        for attempt in 0..64u32 {
            let mut low = at_attempt(attempt);
            assert_eq!(low.next_delay_with(&mut Fixed(0)), DEFAULT_BASE);
            let mut high = at_attempt(attempt);
            assert_eq!(
                high.next_delay_with(&mut Fixed(u64::MAX)),
                expected_upper(attempt),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn reaches_the_cap_and_stays() {
        let mut b = Backoff::default();
        let mut maxed = Vec::new();
        for _ in 0..200 {
            maxed.push(b.next_delay_with(&mut Fixed(u64::MAX)));
        }
        // 250 ms * 2^7 = 32 s > 30 s: capped from the 8th attempt on.
        assert!(maxed[..7].iter().all(|d| *d < DEFAULT_CAP));
        assert!(maxed[7..].iter().all(|d| *d == DEFAULT_CAP));
        // Growth is monotonic up to the cap.
        assert!(maxed.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn reset_goes_back_to_base() {
        let mut b = Backoff::default();
        for _ in 0..20 {
            b.next_delay();
        }
        assert_eq!(b.attempts(), 20);
        b.reset();
        assert_eq!(b.attempts(), 0);
        // Attempt 0 draws from [base, base].
        assert_eq!(b.next_delay(), DEFAULT_BASE);
        let second = b.next_delay();
        assert!(second >= DEFAULT_BASE && second <= DEFAULT_BASE * 2);
    }

    #[test]
    fn jitter_is_present() {
        let mut rng = XorShift(42);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let mut b = at_attempt(10);
            seen.insert(b.next_delay_with(&mut rng));
        }
        assert!(seen.len() > 90, "only {} distinct delays", seen.len());
        let lowest = seen.iter().next().copied().unwrap_or_default();
        let highest = seen.iter().next_back().copied().unwrap_or_default();
        assert!(
            highest - lowest > Duration::from_secs(20),
            "{lowest:?}..{highest:?}"
        );

        // The real RNG jitters too.
        let delays: std::collections::BTreeSet<_> =
            (0..20).map(|_| at_attempt(10).next_delay()).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = at_attempt(u32::MAX - 1);
        assert_eq!(b.next_delay_with(&mut Fixed(u64::MAX)), DEFAULT_CAP);
        assert_eq!(b.attempts(), u32::MAX);
        assert_eq!(b.next_delay_with(&mut Fixed(u64::MAX)), DEFAULT_CAP);
        assert_eq!(b.attempts(), u32::MAX, "saturates");

        // Extreme configurations saturate instead of overflowing.
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        huge.attempt = 40;
        assert_eq!(huge.next_delay_with(&mut Fixed(u64::MAX)), Duration::MAX);
        let mut wide = Backoff::new(Duration::from_millis(1), Duration::MAX);
        wide.attempt = 200;
        let d = wide.next_delay_with(&mut Fixed(u64::MAX));
        assert!(d >= Duration::from_millis(1));
    }

    #[test]
    fn degenerate_configuration_never_spins() {
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(zero.next_delay_with(&mut Fixed(0)) >= MIN_BASE);
        let mut inverted = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        for _ in 0..10 {
            assert_eq!(
                inverted.next_delay_with(&mut Fixed(u64::MAX)),
                Duration::from_secs(5)
            );
        }
    }

    #[test]
    fn stability_threshold() {
        assert!(!is_stable(Duration::from_secs(9), STABLE_AFTER));
        assert!(is_stable(STABLE_AFTER, STABLE_AFTER));
        assert!(is_stable(Duration::from_secs(3600), STABLE_AFTER));
    }
}
