//! `peerlink-load throughput`: durable messages/s from A's API until B has
//! stored them all, between baselines (fsync rate, TLS echo) measured before and
//! after each run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::Method;
use serde_json::{json, Value};

use super::{commits, drain, received_total, Pair};
use crate::baseline::{echo_throughput, fsync_rate};
use crate::error::{Error, Result};
use crate::http::{Http, HttpError};

/// The `throughput` arguments.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pair: Pair,
    /// Body sizes and message counts, `SIZE:COUNT` comma-separated.
    #[arg(long, default_value = "1024:20000,65536:2000")]
    runs: String,
    /// Messages per batch request (0: one POST per message).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent API connections.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// One extra run of single-message POSTs (1 KiB) with this many connections; 0 = none.
    #[arg(long, default_value_t = 32)]
    single_concurrency: usize,
    #[arg(long, default_value_t = 10_000)]
    single_count: usize,
    /// Directory on the stores' file system, for the fsync rate.
    #[arg(long)]
    fsync_dir: PathBuf,
}

/// A prepared request: body, content type, messages in it.
type Prepared = (Vec<u8>, &'static str, usize);

/// Posts every request to `api` over `concurrency` kept-alive connections, each
/// taking the next request when its previous one is answered; returns the
/// number of messages accepted.
async fn submit_all(
    api: SocketAddr,
    path: String,
    requests: Vec<Prepared>,
    concurrency: usize,
) -> Result<usize> {
    let queue = Arc::new(Mutex::new(requests));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut http = Http::new(api);
            let mut accepted = 0usize;
            loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let Some((body, ct, n)) = next else {
                    return Ok::<usize, Error>(accepted);
                };
                let (status, resp) = http
                    .request(Method::POST, &path, Some(ct), body.into())
                    .await?;
                if status != 202 {
                    return Err(HttpError::status(Method::POST, &path, status, &resp).into());
                }
                accepted += n;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// Sends `count` messages of `size` bytes A -> B; returns the run's figures.
async fn one_throughput_run(
    pair: &Pair,
    size: usize,
    count: usize,
    batch: usize,
    concurrency: usize,
) -> Result<Value> {
    // Requests are prepared before the clock starts.
    let body = vec![0x5au8; size];
    let requests: Vec<Prepared> = if batch == 0 {
        (0..count)
            .map(|_| (body.clone(), "application/octet-stream", 1))
            .collect()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
        (0..count.div_ceil(batch))
            .map(|k| {
                let n = batch.min(count - k * batch);
                let msgs: Vec<Value> = (0..n).map(|_| json!({ "body_base64": b64 })).collect();
                Ok((
                    serde_json::to_vec(&json!({ "messages": msgs }))?,
                    "application/json",
                    n,
                ))
            })
            .collect::<Result<_>>()?
    };
    let path = if batch == 0 {
        format!("/v1/peers/{}/messages", pair.peer)
    } else {
        format!("/v1/peers/{}/messages/batch", pair.peer)
    };
    let mut b_admin = Http::new(pair.b_admin);
    let base = received_total(&mut b_admin).await?;
    let (ca0, cb0) = (commits(pair.a_admin).await?, commits(pair.b_admin).await?);
    let start = Instant::now();
    let accepted = submit_all(pair.a_api, path, requests, concurrency).await?;
    let t_accept = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let arrived = received_total(&mut b_admin).await?.saturating_sub(base);
        if arrived >= count as u64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::NotArrived { arrived, count });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t_end = start.elapsed().as_secs_f64();
    let (ca1, cb1) = (commits(pair.a_admin).await?, commits(pair.b_admin).await?);
    let drained = drain(pair.b_api, if size > 16 * 1024 { 50 } else { 1000 }).await?;
    eprintln!(
        "  {count} x {size} B (batch {batch}, {concurrency} conns): accepted {:.0}/s, end to end {:.0}/s; commits A {} B {}; drained {drained}",
        accepted as f64 / t_accept,
        count as f64 / t_end,
        ca1 - ca0,
        cb1 - cb0
    );
    Ok(json!({
        "size": size,
        "count": count,
        "batch": batch,
        "concurrency": concurrency,
        "accepted_per_s": accepted as f64 / t_accept,
        "e2e_per_s": count as f64 / t_end,
        "seconds": t_end,
        "commits_a": ca1 - ca0,
        "commits_b": cb1 - cb0,
        "msgs_per_commit_a": count as f64 / (ca1 - ca0).max(1) as f64,
        "msgs_per_commit_b": count as f64 / (cb1 - cb0).max(1) as f64,
    }))
}

/// The runs of `--runs` (then the single-POST run), each between its baselines,
/// after a warm-up.
pub async fn run(args: &Args) -> Result<Value> {
    let (pair, fsync_dir) = (&args.pair, &args.fsync_dir);
    let mut plan: Vec<(usize, usize, usize, usize)> = Vec::new();
    for spec in args.runs.split(',').filter(|s| !s.is_empty()) {
        let (s, c) = spec.split_once(':').ok_or(Error::RunSpec)?;
        plan.push((s.parse()?, c.parse()?, args.batch, args.concurrency));
    }
    if args.single_concurrency > 0 {
        plan.push((1024, args.single_count, 0, args.single_concurrency));
    }
    // Warm-up: the first messages pay for page allocation in fresh stores.
    one_throughput_run(pair, 1024, 2000, 100, 4).await?;
    let mut out = Vec::new();
    for (size, count, batch, conc) in plan {
        // Interleaved: baselines before and after the gateway run.
        let f1 = fsync_rate(fsync_dir, 2.0).await?;
        let e1 = echo_throughput(size, count).await?;
        let run = one_throughput_run(pair, size, count, batch, conc).await?;
        let e2 = echo_throughput(size, count).await?;
        let f2 = fsync_rate(fsync_dir, 2.0).await?;
        let mut run = run;
        run["fsync_per_s"] = json!((f1 + f2) / 2.0);
        run["fsync_samples"] = json!([f1, f2]);
        run["echo_per_s"] = json!((e1 + e2) / 2.0);
        run["echo_samples"] = json!([e1, e2]);
        eprintln!("  fsync {f1:.0}/{f2:.0} per s; TLS echo {e1:.0}/{e2:.0} messages/s");
        out.push(run);
    }
    Ok(json!({ "runs": out }))
}
