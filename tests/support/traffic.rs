//! The traffic of the crash tests (`tests/messaging.rs` kills gateways -9,
//! `tests/replicas.rs` fails a replicated node over): producers that submit
//! numbered [`test_body`] messages in batches and retry with the same Message-Ids,
//! consumers that check and acknowledge every arrival, the drain that waits for
//! both directions to be through, and the exactly-once / in-order verdict.
//!
//! Both tests judge delivery the same way, so the machinery lives here once; what
//! each test varies (batch size, retry pauses, pacing, how acks name messages) is
//! a field of [`ProducerPlan`] or [`ConsumerPlan`].

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use crate::messaging::{
    batch_json, parse_test_body, test_body, test_id, Api, Outgoing, Received, Rng,
};

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

// ---------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------

/// What a producer sends and how it retries.
#[derive(Debug, Clone)]
pub struct ProducerPlan<'a> {
    /// Sender name in the Message-Ids and bodies ([`test_id`], [`test_body`]).
    pub sender: &'a str,
    /// Node id of the peer the messages go to.
    pub peer_id: &'a str,
    /// Messages to send.
    pub n: usize,
    /// Messages per batch request.
    pub chunk: usize,
    /// Size of every body.
    pub body_bytes: usize,
    /// Media type of every message.
    pub content_type: &'a str,
    /// Bound on getting one batch accepted (across retries).
    pub batch_deadline: Duration,
    /// Pause after a 503 answer.
    pub busy_pause: Duration,
    /// Pause after a failed request, in ms, drawn from the seeded generator.
    pub error_pause_ms: RangeInclusive<u64>,
    /// Fraction of accepted batches submitted again (drawn from the seeded
    /// generator): the answer must be all duplicates. 0: never.
    pub probe_rate: f64,
    /// Until the chaos schedule is over, at most one batch per `pace` (zero: no pacing).
    pub pace: Duration,
    /// Seed of the retry pauses and probes.
    pub seed: u64,
}

/// What a producer did.
#[derive(Debug, Default)]
pub struct ProducerReport {
    /// Sender name.
    pub sender: String,
    /// Messages accepted.
    pub accepted: usize,
    /// Batches accepted by each API.
    pub batches_by_api: Vec<usize>,
    /// Of those, accepted after a killed gateway was restarted.
    pub batches_after_restart: Vec<usize>,
    /// Requests that failed (connection refused/reset, 503) and were retried,
    /// through the next API.
    pub failed_attempts: usize,
    /// Retries answered "all duplicates": the failed attempt had been committed.
    pub retries_found_committed: usize,
    /// Accepted batches deliberately submitted again (must be all duplicates).
    pub probes: usize,
    /// What went wrong (each also aborted the traffic).
    pub problems: Vec<String>,
    /// When it submitted its last batch.
    pub finished_at: Option<f64>,
    /// Whether batches were still being submitted when the killed gateway came back.
    pub busy_at_restart: bool,
}

impl ProducerReport {
    /// Adds this producer's problems, and a failure unless all `n` messages were accepted.
    pub fn add_failures(&self, n: usize, failures: &mut Vec<String>) {
        failures.extend(
            self.problems
                .iter()
                .map(|e| format!("producer {}: {e}", self.sender)),
        );
        if self.accepted != n {
            failures.push(format!(
                "producer {} got only {} of {n} accepted",
                self.sender, self.accepted
            ));
        }
    }

    /// One summary line.
    pub fn summary(&self) -> String {
        format!(
            "producer {}: {} accepted in {} batches, by API {:?} ({:?} after a restart); {} failed attempts retried through the next API, {} retries found the batch already committed, {} resubmission probes; done at {}",
            self.sender,
            self.accepted,
            self.batches_by_api.iter().sum::<usize>(),
            self.batches_by_api,
            self.batches_after_restart,
            self.failed_attempts,
            self.retries_found_committed,
            self.probes,
            self.finished_at.map_or("-".into(), |t| format!("{t:.1} s"))
        )
    }
}

/// Checks a 202 answer to the batch of `ids`: Ok(true) when every message was a
/// duplicate (an attempt that seemed to fail had been committed), Ok(false) when
/// none was; otherwise what is wrong (ids, duplicates on a first submission, a
/// retry that found the batch stored partly).
fn check_accepted(
    v: &serde_json::Value,
    ids: &[String],
    attempt: usize,
    start: usize,
    api: usize,
) -> Result<bool, String> {
    let got: Vec<String> = v["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let dups = v["duplicates"].as_u64().unwrap_or(u64::MAX) as usize;
    if got != ids {
        Err(format!(
            "batch at {start}: answered ids differ from the Message-Ids sent: {v}"
        ))
    } else if attempt == 0 && dups != 0 {
        Err(format!(
            "batch at {start}: first submission reported {dups} duplicates"
        ))
    } else if dups != 0 && dups != ids.len() {
        Err(format!(
            "batch at {start}: retry through API {api} reported {dups} of {} duplicates: the failed attempt was stored partly (not atomic)",
            ids.len()
        ))
    } else {
        Ok(dups == ids.len())
    }
}

/// Submits `plan.n` messages, batch k through `apis[k % len]`; a failed request is
/// retried with the same Message-Ids through the next API (the same one when
/// there is one). A problem is reported, aborts the traffic and ends the producer.
pub fn produce(apis: &[Api], plan: &ProducerPlan<'_>, t: &Traffic) -> ProducerReport {
    let _guard = AbortOnPanic(&t.abort);
    let (sender, peer_id, n) = (plan.sender, plan.peer_id, plan.n);
    let mut rng = Rng::new(plan.seed);
    let mut rep = ProducerReport {
        sender: sender.to_string(),
        batches_by_api: vec![0; apis.len()],
        batches_after_restart: vec![0; apis.len()],
        ..ProducerReport::default()
    };
    let problem = |rep: &mut ProducerReport, p: String| {
        eprintln!("[{:7.2}s] producer {sender}: {p}", t.secs());
        rep.problems.push(p);
        t.abort.store(true, Ordering::SeqCst);
    };
    for (k, start) in (0..n).step_by(plan.chunk).enumerate() {
        let began = Instant::now();
        let batch: Vec<Outgoing> = (start..n.min(start + plan.chunk))
            .map(|i| Outgoing {
                id: Some(test_id(sender, i)),
                content_type: Some(plan.content_type.to_string()),
                body: test_body(sender, i, plan.body_bytes),
            })
            .collect();
        let ids: Vec<String> = batch.iter().filter_map(|m| m.id.clone()).collect();
        let body = batch_json(&batch);
        let mut r = k % apis.len();
        let mut attempt = 0usize;
        let mut last_error = String::new();
        loop {
            if t.aborted() {
                return rep;
            }
            if began.elapsed() > plan.batch_deadline {
                problem(
                    &mut rep,
                    format!(
                        "batch at index {start} not accepted within {:?} ({attempt} attempts); last: {last_error}",
                        plan.batch_deadline
                    ),
                );
                return rep;
            }
            let pause = match apis[r].send_batch_raw(peer_id, body.as_bytes()) {
                Ok(resp) if resp.code == 202 => {
                    match resp
                        .json()
                        .and_then(|v| check_accepted(&v, &ids, attempt, start, r))
                    {
                        Ok(committed) => rep.retries_found_committed += usize::from(committed),
                        Err(e) => {
                            problem(&mut rep, e);
                            return rep;
                        }
                    }
                    break;
                }
                Ok(resp) if resp.code == 503 => {
                    last_error = format!("API {r}: {}", resp.describe());
                    plan.busy_pause
                }
                Ok(resp) => {
                    problem(
                        &mut rep,
                        format!("batch at {start}: unexpected answer {}", resp.describe()),
                    );
                    return rep;
                }
                Err(e) => {
                    // Killed or restarting: the same Message-Ids through the next API.
                    last_error = format!("API {r}: {e}");
                    let (lo, hi) = plan.error_pause_ms.clone().into_inner();
                    Duration::from_millis(rng.range(lo, hi))
                }
            };
            rep.failed_attempts += 1;
            r = (r + 1) % apis.len();
            std::thread::sleep(pause);
            attempt += 1;
        }
        rep.accepted += ids.len();
        rep.batches_by_api[r] += 1;
        if t.restarted.load(Ordering::SeqCst) {
            rep.batches_after_restart[r] += 1;
            if start + plan.chunk < n {
                rep.busy_at_restart = true;
            }
        }
        t.progress.fetch_add(ids.len(), Ordering::SeqCst);
        t.batches.fetch_add(1, Ordering::SeqCst);
        // Now and then resubmit an accepted batch: it must be all duplicates.
        if plan.probe_rate > 0.0 && rng.unit() < plan.probe_rate {
            if let Ok(resp) = apis[r].send_batch_raw(peer_id, body.as_bytes()) {
                if resp.code == 202 {
                    rep.probes += 1;
                    let dups = resp.json().ok().and_then(|v| v["duplicates"].as_u64());
                    if dups != Some(ids.len() as u64) {
                        problem(
                            &mut rep,
                            format!(
                                "batch at {start} resubmitted after acceptance: expected {} duplicates, got {}",
                                ids.len(),
                                resp.describe()
                            ),
                        );
                        return rep;
                    }
                }
            }
        }
        if !t.chaos_finished.load(Ordering::SeqCst) {
            let spent = began.elapsed();
            if spent < plan.pace {
                std::thread::sleep(plan.pace - spent);
            }
        }
    }
    rep.finished_at = Some(t.secs());
    rep
}

// ---------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------

/// What a consumer expects and how it acknowledges.
#[derive(Debug, Clone)]
pub struct ConsumerPlan<'a> {
    /// Name of the receiving node.
    pub receiver: &'a str,
    /// Its counter in [`Traffic::received`].
    pub slot: usize,
    /// Sender name of the messages ([`test_body`]) and its node id.
    pub sender: &'a str,
    /// Node id of the sender.
    pub sender_id: &'a str,
    /// Media type every message must have.
    pub content_type: &'a str,
    /// Long-poll wait, seconds.
    pub wait_s: u64,
    /// Acknowledge (from, id) pairs instead of bare ids.
    pub ack_with_sender: bool,
}

/// What a consumer saw.
#[derive(Debug, Default)]
pub struct ConsumerReport {
    /// Name of the receiving node.
    pub receiver: String,
    /// Indices of the messages in the order they first arrived.
    pub first_arrivals: Vec<usize>,
    /// Messages returned again before their ack succeeded (allowed).
    pub redeliveries: usize,
    /// Ids returned again after a successful ack (duplicates).
    pub after_ack: Vec<String>,
    /// Messages that are not what was sent (wrong sender, body, type, id).
    pub bad: Vec<String>,
    /// Non-empty pages served by each API.
    pub pages_by_api: Vec<usize>,
    /// Inbox requests.
    pub polls: usize,
    /// Inbox requests that failed.
    pub failed_polls: usize,
    /// Acks that succeeded.
    pub acks: usize,
    /// Acks that failed (lost with a killed gateway).
    pub failed_acks: usize,
}

impl ConsumerReport {
    /// Writes this direction's summary line to `summary` and its failures (missing
    /// messages, duplicates, order broken, wrong messages) to `failures`.
    pub fn judge(&self, n: usize, summary: &mut String, failures: &mut Vec<String>) {
        let c = self;
        let sender = if c.receiver == "a" { "b" } else { "a" };
        let (unknown, out_of_order, gaps, missing) = order_report(&c.first_arrivals, n);
        let _ = writeln!(
            summary,
            "  {sender} -> {}: {} distinct received, {} missing, {} returned again after ack (duplicates), {} out of order, {} gaps, {} bad, {} unknown; {} redeliveries of unacknowledged messages; non-empty pages by API {:?}; {} polls ({} failed), {} acks ({} lost)",
            c.receiver,
            c.first_arrivals.len(),
            missing.len(),
            c.after_ack.len(),
            out_of_order,
            gaps,
            c.bad.len(),
            unknown,
            c.redeliveries,
            c.pages_by_api,
            c.polls,
            c.failed_polls,
            c.acks,
            c.failed_acks
        );
        if !missing.is_empty() {
            failures.push(format!(
                "{sender} -> {}: {} of {n} messages never arrived, e.g. indices {:?}",
                c.receiver,
                missing.len(),
                &missing[..missing.len().min(20)]
            ));
        }
        if !c.after_ack.is_empty() {
            failures.push(format!(
                "{sender} -> {}: {} messages delivered again after they were acknowledged (duplicates), e.g. {:?}",
                c.receiver,
                c.after_ack.len(),
                &c.after_ack[..c.after_ack.len().min(20)]
            ));
        }
        if out_of_order > 0 || gaps > 0 {
            let head: Vec<usize> = c.first_arrivals.iter().take(40).copied().collect();
            failures.push(format!(
                "{sender} -> {}: FIFO order broken: {out_of_order} arrivals out of order, {gaps} gaps; first arrivals {head:?}",
                c.receiver
            ));
        }
        if !c.bad.is_empty() || unknown > 0 || c.first_arrivals.len() > n {
            failures.push(format!(
                "{sender} -> {}: {} wrong messages, {unknown} unknown indices, {} distinct arrivals for {n} sent; e.g. {:?}",
                c.receiver,
                c.bad.len(),
                c.first_arrivals.len(),
                &c.bad[..c.bad.len().min(10)]
            ));
        }
    }
}

/// Reads the inbox through `apis`, alternating, checks every first arrival with
/// [`check_message`] and acknowledges each page through the API that served it.
/// Stops when the traffic aborts, or once [`Traffic::stop`] is set and every API
/// found the inbox empty.
pub fn consume(apis: &[Api], plan: &ConsumerPlan<'_>, t: &Traffic) -> ConsumerReport {
    let _guard = AbortOnPanic(&t.abort);
    let mut rep = ConsumerReport {
        receiver: plan.receiver.to_string(),
        pages_by_api: vec![0; apis.len()],
        ..ConsumerReport::default()
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut acked: HashSet<String> = HashSet::new();
    let mut r = 0usize;
    let mut empty_in_a_row = 0usize;
    loop {
        if t.aborted() {
            return rep;
        }
        let stopping = t.stop.load(Ordering::SeqCst);
        rep.polls += 1;
        let page = match apis[r].inbox(500, if stopping { 0 } else { plan.wait_s }) {
            Ok(p) => p,
            Err(_) => {
                rep.failed_polls += 1;
                r = (r + 1) % apis.len();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if page.is_empty() {
            empty_in_a_row += 1;
            // When stopping, every API must have found the inbox empty.
            if stopping && empty_in_a_row >= apis.len() {
                return rep;
            }
            r = (r + 1) % apis.len();
            continue;
        }
        empty_in_a_row = 0;
        rep.pages_by_api[r] += 1;
        // Bare ids are unique per page only per sender: the key is what the ack names.
        let mut in_page = HashSet::new();
        for m in &page {
            let from = if plan.ack_with_sender {
                m.from.as_str()
            } else {
                ""
            };
            if !in_page.insert((from, m.id.as_str())) {
                rep.bad.push(format!("id {} twice in one inbox page", m.id));
            }
            if acked.contains(&m.id) {
                rep.after_ack.push(m.id.clone());
                continue;
            }
            if !seen.insert(m.id.clone()) {
                rep.redeliveries += 1;
                continue;
            }
            match check_message(m, plan.content_type, plan.sender, plan.sender_id) {
                Ok(index) => rep.first_arrivals.push(index),
                Err(e) => rep.bad.push(e),
            }
            t.received[plan.slot].fetch_add(1, Ordering::SeqCst);
            t.progress.fetch_add(1, Ordering::SeqCst);
        }
        let unique = in_page.len();
        let (acked_now, what) = if plan.ack_with_sender {
            let pairs: Vec<(&str, &str)> = page
                .iter()
                .map(|m| (m.from.as_str(), m.id.as_str()))
                .collect();
            (apis[r].ack_from(&pairs), "(from, id) pairs")
        } else {
            let ids: Vec<String> = page.iter().map(|m| m.id.clone()).collect();
            (apis[r].ack(&ids), "ids")
        };
        match acked_now {
            Ok(count) => {
                rep.acks += 1;
                if count != unique as u64 {
                    rep.bad.push(format!(
                        "ack of {unique} {what} just returned by the inbox removed {count}"
                    ));
                }
                acked.extend(page.iter().map(|m| m.id.clone()));
            }
            // Lost with a killed gateway: the messages come again (or, if the ack
            // was committed, never again). Both are fine.
            Err(_) => rep.failed_acks += 1,
        }
        r = (r + 1) % apis.len();
    }
}

/// The index of a test message that is exactly what `sender` (node id
/// `sender_id`) sent with media type `content_type`.
pub fn check_message(
    m: &Received,
    content_type: &str,
    sender: &str,
    sender_id: &str,
) -> Result<usize, String> {
    if m.from != sender_id {
        return Err(format!("{} from {} (expected {sender_id})", m.id, m.from));
    }
    if m.content_type != content_type {
        return Err(format!("{} has content type {:?}", m.id, m.content_type));
    }
    match parse_test_body(&m.body) {
        Some((s, index)) if s == sender && m.id == test_id(sender, index) => Ok(index),
        Some((s, index)) => Err(format!(
            "{} carries the body of message {index} from {s}",
            m.id
        )),
        None => Err(format!(
            "{}: body of {} bytes is not a message that was sent",
            m.id,
            m.body.len()
        )),
    }
}

/// (unknown indices, arrivals out of order, gaps, missing indices) of one
/// direction, from the indices in the order they first arrived.
pub fn order_report(first: &[usize], n: usize) -> (usize, usize, usize, Vec<usize>) {
    let mut got = vec![false; n];
    let mut unknown = 0;
    for &i in first {
        if i < n {
            got[i] = true;
        } else {
            unknown += 1;
        }
    }
    let missing: Vec<usize> = (0..n).filter(|&i| !got[i]).collect();
    let mut out_of_order = 0;
    let mut gaps = 0;
    let mut max: Option<usize> = None;
    for &i in first {
        match max {
            Some(m) if i < m => out_of_order += 1,
            Some(m) if i > m + 1 => gaps += 1,
            None if i != 0 => gaps += 1,
            _ => {}
        }
        max = Some(max.map_or(i, |m| m.max(i)));
    }
    (unknown, out_of_order, gaps, missing)
}
