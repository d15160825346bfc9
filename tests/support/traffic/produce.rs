//! Producers: numbered test messages submitted in batches, retried with the same
//! Message-Ids through the next API until accepted.

use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{AbortOnPanic, Traffic};
use crate::messaging::{batch_json, test_body, test_id, Api, Outgoing, Rng};

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
