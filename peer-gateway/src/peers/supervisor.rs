//! When to dial a partner: the decisions of its supervisor, without I/O.
//!
//! Each partner has one supervisor task ([`crate::dialer`]). It asks a
//! [`Supervisor`] what to do next, given what it sees of the partner (a
//! [`View`]) or the outcome of what it did last (taking the link lease,
//! dialing), and gets a [`Plan`]: the status to show, and the next step (stop,
//! wait for a wake-up, sleep, take the lease, dial). The rules:
//!
//! - a partner removed from the trust, or a gateway stopping: stop;
//! - a partner with a link, or closed for idleness: wait for a wake-up;
//! - a partner we may not dial (revoked, deactivated, or without the
//!   cross-certificate it issued us): `inactive`, wait;
//! - the first dial of a partner whose own dial would win the tie-break waits
//!   [`FIRST_DIAL_DEFERRAL`], which avoids most simultaneous dials;
//! - another replica holds the link lease: `standby`, retry after about a second;
//! - failures back off exponentially with jitter (`backing-off`, or `refused`
//!   when the handshake was refused); a link that stayed up `stable_after`
//!   resets the backoff;
//! - a link that just dropped is redialed after the backoff delay, not earlier
//!   (its own wake-ups would make a link the partner closes at once redial in a
//!   tight loop), except while the partner closes our links as duplicates of
//!   one it keeps: then every [`LinkConfig::duplicate_redial`], at most
//!   [`MAX_DUPLICATE_RETRIES`] times in a row.

use std::time::Duration;

use rand_core::RngCore;

use super::LinkState;
use crate::backoff::{self, Backoff};
use crate::config::LinkConfig;
use crate::link::Ended;

/// How long the side whose dial would lose the tie-break waits before its first
/// dial, when both start together.
pub const FIRST_DIAL_DEFERRAL: Duration = Duration::from_millis(300);

/// How many times in a row a supervisor redials every
/// [`LinkConfig::duplicate_redial`] while the partner keeps another link of
/// ours (see [`Ended::partner_kept_another`]): two heartbeats' worth, past the
/// 1.6 after which the partner drops a silent link; after that the partner
/// evidently keeps a live one and the usual backoff applies.
pub const MAX_DUPLICATE_RETRIES: u32 = 10;

/// How often a standby replica tries to take a partner's lease, plus up to
/// [`STANDBY_JITTER_MS`] of jitter.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// Jitter of [`STANDBY_RETRY`], so that standbys do not retry in lockstep.
pub const STANDBY_JITTER_MS: u64 = 250;

/// Whether we may dial a partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialable {
    /// Yes.
    Yes,
    /// No, and why (shown in status).
    No(&'static str),
}

/// What the supervisor sees of its partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The gateway is stopping.
    pub shutdown: bool,
    /// The partner is still in the trust.
    pub in_trust: bool,
    /// The partner has a link (either direction).
    pub has_link: bool,
    /// Its link was closed for idleness and nobody asked for it since.
    pub idle: bool,
    /// Whether we may dial it.
    pub dialable: Dialable,
    /// Its dial would win the tie-break ([`crate::tiebreak::preferred_dialer`]).
    pub partner_preferred: bool,
}

/// What came of taking the link lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// We hold it (always, on a store no replica shares).
    Held,
    /// Another replica holds it.
    Elsewhere(Option<String>),
    /// The store could not say.
    Failed(String),
}

/// What came of a dial.
#[derive(Debug, Clone, PartialEq)]
pub enum Dialed {
    /// A link was set up and has ended (None: the tie-break dropped it at once).
    Linked(Option<Ended>),
    /// No link: why, and the stable reason when the handshake was refused.
    Failed {
        /// What went wrong, for status.
        error: String,
        /// The refusal reason (e.g. `unknown_issuer`), if it was one.
        refusal: Option<&'static str>,
    },
}

/// A status to show for the partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The state.
    pub state: LinkState,
    /// Why (replaces the last error when Some).
    pub error: Option<String>,
    /// The refusal reason, with `error`.
    pub refusal: Option<&'static str>,
    /// Reconnect attempts since the last stable link.
    pub attempts: u32,
}

/// The supervisor's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The partner is gone or the gateway stops.
    Stop,
    /// Look again at once.
    Check,
    /// Wait for a wake-up (a link ended, a reload, demand), then look again.
    WaitForWake,
    /// Sleep, then look again; `wake_early`: a wake-up cuts the sleep short.
    Sleep {
        /// How long.
        delay: Duration,
        /// Whether a wake-up ends it.
        wake_early: bool,
    },
    /// Take the partner's link lease; report with [`Supervisor::leased`].
    TakeLease,
    /// Dial the partner's endpoints; report with [`Supervisor::dialed`].
    Dial,
}

/// A status to show (if any) and the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to show.
    pub status: Option<Status>,
    /// What to do.
    pub step: Step,
}

impl Plan {
    fn step(step: Step) -> Plan {
        Plan { status: None, step }
    }
}

/// One partner's supervisor state: its backoff, whether it has dialed yet, and
/// how often the partner closed our links as duplicates in a row.
pub struct Supervisor<R> {
    backoff: Backoff,
    stable_after: Duration,
    duplicate_redial: Duration,
    first: bool,
    duplicate_retries: u32,
    rng: R,
}

impl<R: RngCore> Supervisor<R> {
    /// A supervisor with the link settings' backoff, drawing jitter from `rng`.
    pub fn new(settings: &LinkConfig, rng: R) -> Supervisor<R> {
        Supervisor {
            backoff: Backoff::new(
                Duration::from_millis(settings.backoff_base_ms),
                Duration::from_millis(settings.backoff_cap_ms),
            ),
            stable_after: Duration::from_millis(settings.stable_after_ms),
            duplicate_redial: settings.duplicate_redial(),
            first: true,
            duplicate_retries: 0,
            rng,
        }
    }

    /// What to do given what the partner looks like now.
    pub fn check(&mut self, view: &View) -> Plan {
        if view.shutdown || !view.in_trust {
            return Plan::step(Step::Stop);
        }
        if view.has_link || view.idle {
            return Plan::step(Step::WaitForWake);
        }
        if let Dialable::No(why) = view.dialable {
            return Plan {
                status: Some(Status {
                    state: LinkState::Inactive,
                    error: Some(why.to_string()),
                    refusal: None,
                    attempts: 0,
                }),
                step: Step::WaitForWake,
            };
        }
        if std::mem::take(&mut self.first) && view.partner_preferred {
            return Plan::step(Step::Sleep {
                delay: FIRST_DIAL_DEFERRAL,
                wake_early: true,
            });
        }
        Plan::step(Step::TakeLease)
    }

    /// What to do after trying to take the link lease.
    pub fn leased(&mut self, lease: Lease) -> Plan {
        match lease {
            Lease::Held => Plan {
                status: Some(Status {
                    state: LinkState::Connecting,
                    error: None,
                    refusal: None,
                    attempts: self.backoff.attempts(),
                }),
                step: Step::Dial,
            },
            Lease::Elsewhere(owner) => {
                let jitter = self.rng.next_u64() % STANDBY_JITTER_MS;
                Plan {
                    status: Some(Status {
                        state: LinkState::Standby,
                        error: Some(format!(
                            "the link is owned by replica {}",
                            owner.as_deref().unwrap_or("?")
                        )),
                        refusal: None,
                        attempts: 0,
                    }),
                    step: Step::Sleep {
                        delay: STANDBY_RETRY + Duration::from_millis(jitter),
                        wake_early: true,
                    },
                }
            }
            Lease::Failed(error) => self.back_off(LinkState::BackingOff, error, None),
        }
    }

    /// What to do after a dial. `wanted`: the gateway is not stopping and the
    /// partner's link was not closed for idleness.
    pub fn dialed(&mut self, dialed: Dialed, wanted: bool) -> Plan {
        match dialed {
            Dialed::Linked(ended) => {
                if ended.is_some_and(|e| backoff::is_stable(e.up_for, self.stable_after)) {
                    self.backoff.reset();
                }
                let kept_another = ended.is_some_and(|e| e.partner_kept_another);
                self.duplicate_retries = if kept_another {
                    self.duplicate_retries + 1
                } else {
                    0
                };
                if ended.is_none() || !wanted {
                    return Plan::step(Step::Check);
                }
                let delay = if kept_another && self.duplicate_retries <= MAX_DUPLICATE_RETRIES {
                    self.duplicate_redial
                } else {
                    self.backoff.next_delay_with(&mut self.rng)
                };
                Plan::step(Step::Sleep {
                    delay,
                    wake_early: false,
                })
            }
            Dialed::Failed { error, refusal } => {
                let state = if refusal.is_some() {
                    LinkState::Refused
                } else {
                    LinkState::BackingOff
                };
                self.back_off(state, error, refusal)
            }
        }
    }

    fn back_off(&mut self, state: LinkState, error: String, refusal: Option<&'static str>) -> Plan {
        let delay = self.backoff.next_delay_with(&mut self.rng);
        Plan {
            status: Some(Status {
                state,
                error: Some(error),
                refusal,
                attempts: self.backoff.attempts(),
            }),
            step: Step::Sleep {
                delay,
                wake_early: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::test_rng::Fixed;

    fn settings() -> LinkConfig {
        LinkConfig {
            heartbeat_ms: 500,
            backoff_base_ms: 100,
            backoff_cap_ms: 1_000,
            stable_after_ms: 2_000,
            ..LinkConfig::default()
        }
    }

    /// Jitter pinned to the top of every range.
    fn supervisor() -> Supervisor<Fixed> {
        Supervisor::new(&settings(), Fixed(u64::MAX))
    }

    fn view() -> View {
        View {
            shutdown: false,
            in_trust: true,
            has_link: false,
            idle: false,
            dialable: Dialable::Yes,
            partner_preferred: false,
        }
    }

    fn failed() -> Dialed {
        Dialed::Failed {
            error: "connect failed: refused".into(),
            refusal: None,
        }
    }

    fn linked(up_for_ms: u64, partner_kept_another: bool) -> Dialed {
        Dialed::Linked(Some(Ended {
            up_for: Duration::from_millis(up_for_ms),
            partner_kept_another,
        }))
    }

    fn sleep_of(plan: &Plan) -> Duration {
        match plan.step {
            Step::Sleep { delay, .. } => delay,
            other => panic!("expected a sleep, got {other:?}"),
        }
    }

    #[test]
    fn a_partner_gone_or_a_gateway_stopping_stops_the_supervisor() {
        let mut s = supervisor();
        let gone = View {
            in_trust: false,
            ..view()
        };
        assert_eq!(s.check(&gone).step, Step::Stop);
        let stopping = View {
            shutdown: true,
            ..view()
        };
        assert_eq!(s.check(&stopping).step, Step::Stop);
    }

    #[test]
    fn a_linked_or_idle_partner_is_not_dialed() {
        let mut s = supervisor();
        for v in [
            View {
                has_link: true,
                ..view()
            },
            View {
                idle: true,
                ..view()
            },
        ] {
            assert_eq!(s.check(&v), Plan::step(Step::WaitForWake));
        }
    }

    #[test]
    fn an_inactive_partner_shows_why_and_waits() {
        let mut s = supervisor();
        let plan = s.check(&View {
            dialable: Dialable::No("revoked or deactivated by our operator"),
            ..view()
        });
        assert_eq!(plan.step, Step::WaitForWake);
        let status = plan.status.expect("a status");
        assert_eq!(status.state, LinkState::Inactive);
        assert_eq!(
            status.error.as_deref(),
            Some("revoked or deactivated by our operator")
        );
    }

    #[test]
    fn the_side_whose_dial_would_lose_defers_its_first_dial_only() {
        let mut s = supervisor();
        let v = View {
            partner_preferred: true,
            ..view()
        };
        assert_eq!(
            s.check(&v).step,
            Step::Sleep {
                delay: FIRST_DIAL_DEFERRAL,
                wake_early: true
            }
        );
        assert_eq!(s.check(&v).step, Step::TakeLease);
        // The preferred side dials at once.
        assert_eq!(supervisor().check(&view()).step, Step::TakeLease);
    }

    #[test]
    fn a_held_lease_dials_and_shows_connecting() {
        let mut s = supervisor();
        let plan = s.leased(Lease::Held);
        assert_eq!(plan.step, Step::Dial);
        assert_eq!(plan.status.map(|st| st.state), Some(LinkState::Connecting));
    }

    #[test]
    fn a_lease_held_elsewhere_means_standby_and_a_retry_in_about_a_second() {
        let mut s = supervisor();
        let plan = s.leased(Lease::Elsewhere(Some("r2".into())));
        let status = plan.status.clone().expect("status");
        assert_eq!(status.state, LinkState::Standby);
        assert_eq!(
            status.error.as_deref(),
            Some("the link is owned by replica r2")
        );
        let d = sleep_of(&plan);
        assert!(d >= STANDBY_RETRY && d < STANDBY_RETRY + Duration::from_millis(STANDBY_JITTER_MS));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let mut s = supervisor();
        let delays: Vec<u128> = (0..6)
            .map(|_| sleep_of(&s.dialed(failed(), true)).as_millis())
            .collect();
        // base 100 ms, doubling, cap 1 s; jitter pinned to the top.
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        let plan = s.dialed(failed(), true);
        let status = plan.status.expect("status");
        assert_eq!(status.state, LinkState::BackingOff);
        assert_eq!(status.attempts, 7);
        assert!(matches!(
            plan.step,
            Step::Sleep {
                wake_early: true,
                ..
            }
        ));
    }

    #[test]
    fn a_refused_handshake_shows_refused_with_its_reason() {
        let mut s = supervisor();
        let plan = s.dialed(
            Dialed::Failed {
                error: "refused: unknown_issuer".into(),
                refusal: Some("unknown_issuer"),
            },
            true,
        );
        let status = plan.status.expect("status");
        assert_eq!(status.state, LinkState::Refused);
        assert_eq!(status.refusal, Some("unknown_issuer"));
    }

    #[test]
    fn a_stable_link_resets_the_backoff_and_a_short_one_does_not() {
        let mut s = supervisor();
        for _ in 0..4 {
            s.dialed(failed(), true);
        }
        // Up 1 s (< stable_after 2 s): the delay keeps growing.
        assert_eq!(
            sleep_of(&s.dialed(linked(1_000, false), true)).as_millis(),
            1000
        );
        // Up 2 s: reset, the next delay starts again at the base.
        assert_eq!(
            sleep_of(&s.dialed(linked(2_000, false), true)).as_millis(),
            100
        );
    }

    #[test]
    fn a_dropped_link_is_redialed_after_the_backoff_not_on_a_wake_up() {
        let mut s = supervisor();
        let plan = s.dialed(linked(10, false), true);
        assert!(matches!(
            plan.step,
            Step::Sleep {
                wake_early: false,
                ..
            }
        ));
        assert_eq!(plan.status, None, "the link's end already set the status");
    }

    #[test]
    fn a_link_dropped_by_the_tie_break_or_at_shutdown_is_looked_at_again_at_once() {
        let mut s = supervisor();
        assert_eq!(s.dialed(Dialed::Linked(None), true).step, Step::Check);
        assert_eq!(s.dialed(linked(10, false), false).step, Step::Check);
    }

    #[test]
    fn duplicates_closed_by_the_partner_are_redialed_quickly_ten_times_then_backed_off() {
        let mut s = supervisor();
        let redial = settings().duplicate_redial();
        for _ in 0..MAX_DUPLICATE_RETRIES {
            assert_eq!(sleep_of(&s.dialed(linked(10, true), true)), redial);
        }
        assert_eq!(sleep_of(&s.dialed(linked(10, true), true)).as_millis(), 100);
        // A link the partner keeps resets the count.
        s.dialed(linked(10, false), true);
        assert_eq!(sleep_of(&s.dialed(linked(10, true), true)), redial);
    }

    #[test]
    fn a_lease_error_backs_off() {
        let mut s = supervisor();
        let plan = s.leased(Lease::Failed("cannot take the link lease: db down".into()));
        assert_eq!(plan.status.map(|st| st.state), Some(LinkState::BackingOff));
        assert_eq!(
            sleep_of(&s.leased(Lease::Failed("x".into()))).as_millis(),
            200
        );
    }
}
