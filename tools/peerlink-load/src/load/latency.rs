//! `peerlink-load latency`: end-to-end latency at fixed offered loads. Open
//! loop: message *i* is due at start + *i*/rate and carries its due time, so a
//! sender that falls behind shows up in the figures (no coordinated omission).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{ack, drain, messages, Pair};
use crate::baseline::echo_rtt;
use crate::error::{Error, Result};
use crate::http::Http;
use crate::stats::summary_ms;

/// The `latency` arguments.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: Pair,
    /// Offered loads in messages/s; the first is the low-load baseline and is
    /// repeated at the end.
    #[arg(long, default_value = "10,1000,2000,5000")]
    rates: String,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Concurrent API connections of the sender.
    #[arg(long, default_value_t = 64)]
    senders: usize,
}

/// What each message carries at the start of its body: when it was due (ns
/// since the run's epoch), its phase and its number in the phase.
#[derive(Debug, PartialEq)]
struct Stamp {
    due_ns: u64,
    phase: u32,
    seq: u32,
}

impl Stamp {
    /// The stamp's 16 bytes (big-endian) padded to `size` bytes.
    fn body(&self, size: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(size.max(16));
        body.extend_from_slice(&self.due_ns.to_be_bytes());
        body.extend_from_slice(&self.phase.to_be_bytes());
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.resize(size.max(16), 0x5a);
        body
    }

    /// The stamp of a received body (none in a body shorter than a stamp).
    fn read(body: &[u8]) -> Option<Stamp> {
        Some(Stamp {
            due_ns: u64::from_be_bytes(body.get(0..8)?.try_into().ok()?),
            phase: u32::from_be_bytes(body.get(8..12)?.try_into().ok()?),
            seq: u32::from_be_bytes(body.get(12..16)?.try_into().ok()?),
        })
    }
}

/// Nanoseconds since the process's epoch.
fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// One phase: `rate` messages/s for `seconds`, sent by `senders` connections,
/// received by long-poll with an acknowledgement per page.
async fn latency_phase(
    pair: &Pair,
    epoch: Instant,
    phase: u32,
    rate: f64,
    seconds: f64,
    size: usize,
    senders: usize,
) -> Result<Value> {
    let total = ((rate * seconds).round() as usize).max(1);
    let path = format!("/v1/peers/{}/messages", pair.peer);
    let failures = Arc::new(AtomicU64::new(0));
    // Messages the receiver waits for: all, minus POSTs that failed.
    let expected = Arc::new(AtomicU64::new(total as u64));
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    // Beyond the machine's capacity the queue grows without end: what is still
    // queued one second after the schedule ends is dropped (and counted).
    let start = Instant::now() + Duration::from_millis(50);
    let stop_at = start + Duration::from_secs_f64(seconds + 1.0);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut sender_tasks = Vec::new();
    for _ in 0..senders.min(total) {
        let rx = rx.clone();
        let path = path.clone();
        let api = pair.a_api;
        let failures = failures.clone();
        let expected = expected.clone();
        let dropped = dropped.clone();
        sender_tasks.push(tokio::spawn(async move {
            let mut http = Http::new(api);
            loop {
                let next = rx.lock().await.recv().await;
                let Some(body) = next else { return };
                if Instant::now() > stop_at {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    expected.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                match http
                    .request(
                        Method::POST,
                        &path,
                        Some("application/octet-stream"),
                        body.into(),
                    )
                    .await
                {
                    Ok((202, _)) => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        expected.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Receiver: long-poll B's inbox, record latency, acknowledge (part of the path).
    let b_api = pair.b_api;
    let expected_rx = expected.clone();
    let receiver = tokio::spawn(async move {
        let mut http = Http::new(b_api);
        let mut acks = Http::new(b_api);
        let mut samples: Vec<f64> = Vec::with_capacity(total);
        let mut seen: HashSet<u32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds + 60.0);
        while (samples.len() as u64) < expected_rx.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            let v = http
                .json(Method::GET, "/v1/inbox?limit=1000&wait=1", None)
                .await?;
            let arrived = now_ns(epoch);
            let msgs = messages(&v);
            if msgs.is_empty() {
                continue;
            }
            for m in &msgs {
                let body = base64::engine::general_purpose::STANDARD
                    .decode(m["body_base64"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                let Some(stamp) = Stamp::read(&body) else {
                    continue;
                };
                if stamp.phase == phase && seen.insert(stamp.seq) {
                    samples.push(arrived.saturating_sub(stamp.due_ns) as f64 / 1e6);
                }
            }
            ack(&mut acks, &msgs).await?;
        }
        Ok::<_, Error>(samples)
    });
    // Open-loop schedule: message i is due at start + i / rate; latency counts from
    // the due time, so a sender that falls behind shows up in the figures.
    let start_ns = start.duration_since(epoch).as_nanos() as u64;
    let interval_ns = 1e9 / rate;
    for i in 0..total {
        let due_ns = start_ns + (i as f64 * interval_ns) as u64;
        let due = start + Duration::from_nanos(due_ns - start_ns);
        tokio::time::sleep_until(due.into()).await;
        let stamp = Stamp {
            due_ns,
            phase,
            seq: i as u32,
        };
        tx.send(stamp.body(size)).map_err(|_| Error::SendersGone)?;
    }
    drop(tx);
    for t in sender_tasks {
        t.await?;
    }
    let send_seconds = start.elapsed().as_secs_f64();
    let samples = receiver.await??;
    let received = samples.len();
    let dropped = dropped.load(Ordering::Relaxed);
    let sent = total as u64 - dropped;
    let mut v = summary_ms(samples);
    v["offered_per_s"] = json!(rate);
    v["scheduled"] = json!(total);
    v["sent"] = json!(sent);
    v["dropped"] = json!(dropped);
    v["achieved_send_per_s"] = json!(sent as f64 / send_seconds);
    v["received"] = json!(received);
    v["failed_posts"] = json!(failures.load(Ordering::Relaxed));
    eprintln!(
        "  {rate} msg/s offered: sent {sent} at {:.0}/s ({dropped} dropped), received {received}, p50 {:.2} ms, p99 {:.2} ms",
        sent as f64 / send_seconds,
        v["p50_ms"].as_f64().unwrap_or(f64::NAN),
        v["p99_ms"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(v)
}

/// A warm-up, then one phase per offered load and the first load again, then
/// the TLS echo's round trip for scale.
pub async fn run(args: &Args) -> Result<Value> {
    let (pair, seconds, size, senders) = (&args.pair, args.seconds, args.size, args.senders);
    let rates: Vec<f64> = args
        .rates
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()?;
    let epoch = Instant::now();
    drain(pair.b_api, 1000).await?;
    // Warm-up.
    latency_phase(pair, epoch, 0, 200.0, 1.0, size, senders).await?;
    let mut phases = Vec::new();
    let mut order: Vec<f64> = rates.clone();
    if let Some(first) = rates.first() {
        order.push(*first); // the low-load baseline again at the end
    }
    for (k, rate) in order.iter().enumerate() {
        let v = latency_phase(pair, epoch, k as u32 + 1, *rate, seconds, size, senders).await?;
        phases.push(v);
    }
    let rtt = echo_rtt(size, 2000).await?;
    eprintln!(
        "  TLS echo RTT ({size} B): p50 {:.3} ms, p99 {:.3} ms",
        rtt["p50_ms"].as_f64().unwrap_or(f64::NAN),
        rtt["p99_ms"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(
        json!({ "size": size, "seconds": seconds, "senders": senders, "phases": phases, "echo_rtt": rtt }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_the_body() {
        let stamp = Stamp {
            due_ns: 1_234_567_890_123,
            phase: 3,
            seq: 41,
        };
        let body = stamp.body(1024);
        assert_eq!(body.len(), 1024);
        assert_eq!(Stamp::read(&body), Some(stamp));
        assert_eq!(Stamp::read(&body[..15]), None);
        assert_eq!(
            Stamp {
                due_ns: 0,
                phase: 0,
                seq: 0
            }
            .body(4)
            .len(),
            16
        );
    }
}
