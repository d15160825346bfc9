//! Consumers: inbox pages read and acknowledged, every first arrival checked, and
//! the exactly-once / in-order verdict of one direction.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{AbortOnPanic, Traffic};
use crate::messaging::{parse_test_body, test_id, Api, Received};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_report_counts_missing_reordered_and_gaps() {
        assert_eq!(order_report(&[0, 1, 2, 3], 4), (0, 0, 0, vec![]));
        // 2 missing, 4 and 9 after gaps, 3 out of order, 9 unknown.
        assert_eq!(order_report(&[0, 1, 4, 3, 9], 5), (1, 1, 2, vec![2]));
        assert_eq!(order_report(&[1, 0], 2), (0, 1, 1, vec![]));
    }
}
