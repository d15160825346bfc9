//! Load through two linked gateways, A -> B: durable throughput
//! ([`throughput`]) and end-to-end latency at fixed offered loads ([`latency`]),
//! plus what both read from the gateways' APIs.

pub mod latency;
pub mod throughput;

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::http::Http;

/// The two gateways under load: A sends, B receives.
#[derive(clap::Args, Clone)]
pub struct Pair {
    /// A's API (sender).
    #[arg(long)]
    pub a_api: SocketAddr,
    #[arg(long)]
    pub a_admin: SocketAddr,
    /// B's API (receiver).
    #[arg(long)]
    pub b_api: SocketAddr,
    #[arg(long)]
    pub b_admin: SocketAddr,
    /// B's node id.
    #[arg(long)]
    pub peer: String,
}

/// The Prometheus text of an admin API's /metrics.
async fn metrics(admin: &mut Http) -> Result<String> {
    let (status, body) = admin
        .request(Method::GET, "/metrics", None, Bytes::new())
        .await?;
    if status != 200 {
        return Err(Error::MetricsStatus(status));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Store commits so far (`peerlink_store_commit_duration_seconds_count`), from
/// an admin /metrics.
async fn commits(admin: SocketAddr) -> Result<u64> {
    const METRIC: &str = "peerlink_store_commit_duration_seconds_count";
    metrics(&mut Http::new(admin))
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(METRIC))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or(Error::NoMetric(METRIC))
}

/// Messages B has durably stored from its partners so far
/// (`peerlink_messages_received_total`, counted after the store commit). Cheaper
/// to poll than the status' inbox depth, a COUNT over the whole inbox.
async fn received_total(admin: &mut Http) -> Result<u64> {
    Ok(metrics(admin)
        .await?
        .lines()
        .filter(|l| l.starts_with("peerlink_messages_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// The messages of an inbox page (`GET /v1/inbox`).
fn messages(page: &Value) -> Vec<Value> {
    page["messages"].as_array().cloned().unwrap_or_default()
}

/// Acknowledges `msgs` (`POST /v1/inbox/ack`).
async fn ack(http: &mut Http, msgs: &[Value]) -> Result<()> {
    let ids: Vec<Value> = msgs
        .iter()
        .map(|m| json!({"from": m["from"], "id": m["id"]}))
        .collect();
    http.json(Method::POST, "/v1/inbox/ack", Some(&json!({ "ids": ids })))
        .await?;
    Ok(())
}

/// Acknowledges everything in the inbox behind `api`, `page` messages at a time;
/// returns how many.
async fn drain(api: SocketAddr, page: usize) -> Result<usize> {
    let mut http = Http::new(api);
    let mut total = 0;
    loop {
        let msgs = messages(
            &http
                .json(Method::GET, &format!("/v1/inbox?limit={page}"), None)
                .await?,
        );
        if msgs.is_empty() {
            return Ok(total);
        }
        total += msgs.len();
        ack(&mut http, &msgs).await?;
    }
}
