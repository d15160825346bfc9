//! The traffic of the crash tests (`tests/messaging/` kills gateways -9,
//! `tests/replicas/` fails a replicated node over): producers that submit
//! numbered [`test_body`](crate::messaging::test_body) messages in batches and
//! retry with the same Message-Ids, consumers that check and acknowledge every
//! arrival, the drain that waits for both directions to be through, and the
//! exactly-once / in-order verdict.
//!
//! Both tests judge delivery the same way, so the machinery lives here once; what
//! each test varies (batch size, retry pauses, pacing, how acks name messages) is
//! a field of [`ProducerPlan`] or [`ConsumerPlan`].
//!
//! Here: the state the threads share ([`Traffic`]) and how they are joined;
//! producers are in `produce.rs`, consumers and the verdict in `consume.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use crate::messaging::Rng;

mod consume;
mod produce;

pub use consume::{check_message, consume, order_report, ConsumerPlan, ConsumerReport};
pub use produce::{produce, ProducerPlan, ProducerReport};

/// State shared by the threads of a crash test (producers, consumers, the chaos
/// thread, samplers), so that one failing thread stops all of them.
#[derive(Debug)]
pub struct Traffic {
    /// Something failed: every thread stops.
    pub abort: AtomicBool,
    /// Messages accepted (first time) plus messages received (first time), both ways.
    pub progress: AtomicUsize,
    /// Batches accepted, both ways.
    pub batches: AtomicUsize,
    /// Distinct messages received by the consumer in slot 0 and in slot 1.
    pub received: [AtomicUsize; 2],
    /// The chaos schedule is over (every killed gateway back up).
    pub chaos_finished: AtomicBool,
    /// A killed gateway has been restarted: producers count the batches after it.
    pub restarted: AtomicBool,
    /// Everything drained: consumers take what is left and stop (samplers too).
    pub stop: AtomicBool,
    /// When the traffic started.
    pub start: Instant,
}

impl Traffic {
    /// Nothing sent, nothing failed; the clock starts now.
    pub fn new() -> Traffic {
        Traffic {
            abort: AtomicBool::new(false),
            progress: AtomicUsize::new(0),
            batches: AtomicUsize::new(0),
            received: [AtomicUsize::new(0), AtomicUsize::new(0)],
            chaos_finished: AtomicBool::new(false),
            restarted: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            start: Instant::now(),
        }
    }

    /// Whether a thread gave up.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// Seconds since the traffic started (the time stamp of progress lines).
    pub fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Distinct messages received in slot 0 and slot 1 so far.
    pub fn received(&self) -> [usize; 2] {
        [
            self.received[0].load(Ordering::SeqCst),
            self.received[1].load(Ordering::SeqCst),
        ]
    }

    /// Once `what` (e.g. "the producers finished"), polls every 200 ms until `n`
    /// messages arrived each way, both outboxes (`depths()`: a->b, b->a) are empty
    /// and the chaos schedule is over. Err describes why it stopped: a thread
    /// aborted, `dead()` named gateways that stopped on their own, or `deadline`
    /// passed. Returns when it drained, in [`Traffic::secs`].
    pub fn drain(
        &self,
        n: usize,
        deadline: Duration,
        what: &str,
        mut depths: impl FnMut() -> [Result<i64, String>; 2],
        mut dead: impl FnMut() -> Option<String>,
    ) -> Result<f64, String> {
        let since = Instant::now();
        eprintln!(
            "[{:7.2}s] {what}; draining (bound {deadline:?})",
            self.secs()
        );
        loop {
            if self.aborted() {
                return Err("a thread reported a problem (see above); stopped".into());
            }
            if let Some(dead) = dead() {
                self.abort.store(true, Ordering::SeqCst);
                return Err(dead);
            }
            let received = self.received();
            let depths = depths();
            let finished = self.chaos_finished.load(Ordering::SeqCst);
            if finished
                && received == [n, n]
                && depths.iter().all(|d| d.as_ref().is_ok_and(|d| *d == 0))
            {
                return Ok(self.secs());
            }
            if since.elapsed() > deadline {
                self.abort.store(true, Ordering::SeqCst);
                return Err(format!(
                    "not drained {deadline:?} after {what}: received by a {}, by b {}; outbox depth a->b {:?}, b->a {:?}; chaos finished {finished}",
                    received[0], received[1], depths[0], depths[1]
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic::new()
    }
}

/// Sets `abort` when the thread holding it unwinds, so that a panicking thread
/// stops the others instead of leaving them waiting for its progress.
pub struct AbortOnPanic<'a>(pub &'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Joins a thread; a panic becomes a failure line (the test reports every failure
/// at once instead of the first panic).
pub fn join_thread<T>(
    h: ScopedJoinHandle<'_, T>,
    what: &str,
    failures: &mut Vec<String>,
) -> Option<T> {
    match h.join() {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("the {what} thread panicked: {msg}"));
            None
        }
    }
}

/// Joins every thread of `handles` (with what each is, for messages) with
/// [`join_thread`]; returns the results of those that did not panic.
pub fn join_all<'s, T>(
    handles: impl IntoIterator<Item = (ScopedJoinHandle<'s, T>, &'static str)>,
    failures: &mut Vec<String>,
) -> Vec<T> {
    handles
        .into_iter()
        .filter_map(|(h, what)| join_thread(h, what, failures))
        .collect()
}

/// The seed of a test's random schedule: `PEERLINK_CHAOS_SEED` (to replay a
/// failure), else a fresh one (the tests print it).
pub fn chaos_seed() -> u64 {
    std::env::var("PEERLINK_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Rng::fresh_seed)
}

/// The number in environment variable `var`, else `default` (message counts).
pub fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The verdict on the traffic both ways: each producer's and consumer's line
/// goes to `summary`, and what went wrong (messages not accepted, missing,
/// duplicated, out of order, wrong) to `failures`.
pub fn judge_directions(
    n: usize,
    producers: &[ProducerReport],
    consumers: &[ConsumerReport],
    summary: &mut String,
    failures: &mut Vec<String>,
) {
    use std::fmt::Write as _;
    for p in producers {
        let _ = writeln!(summary, "  {}", p.summary());
        p.add_failures(n, failures);
    }
    for c in consumers {
        c.judge(n, summary, failures);
    }
}
