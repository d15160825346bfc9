//! Load generator for `scripts/bench` (see docs/benchmarks.md): drives running
//! gateways through their HTTP API and peer port, and measures in-process
//! baselines (a raw tokio-rustls echo, the disk's fsync rate) in the same run.
//!
//! Every subcommand prints one JSON object on stdout (progress goes to stderr).
//! This is a measuring tool, not a test: it checks only what it needs to count.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Framed;
use x509_parser::prelude::FromDer;

use peer_gateway::frame::{self, Frame, FrameCodec, GoodbyeCode};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

#[derive(Parser)]
#[command(about = "Load generator and in-process baselines for scripts/bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw TLS 1.3 echo over loopback TCP: pipelined throughput and sequential RTT.
    Echo {
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 20_000)]
        count: usize,
    },
    /// Rate of 1 KiB write + fsync appended to one file in DIR.
    Fsync {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Durable end-to-end throughput A -> B through the batch API, with the
    /// fsync rate and the TLS echo measured before and after.
    Throughput {
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
    },
    /// End-to-end latency at fixed offered loads (open loop, single-message POSTs
    /// on A, long-poll + ack on B).
    Latency {
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
    },
    /// Makes N partner identities in memory with peerlink_ca::profiles (what `ca-tool
    /// init`, `export-bundle` and `sign-server` do), for `ca-tool sign-peer`.
    FleetGen {
        #[arg(long)]
        n: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Links N in-process partners to one gateway; measures memory per idle link,
    /// time to link all, idle CPU and status API latency.
    FleetLink(FleetArgs),
}

#[derive(clap::Args, Clone)]
struct Pair {
    /// A's API (sender).
    #[arg(long)]
    a_api: SocketAddr,
    #[arg(long)]
    a_admin: SocketAddr,
    /// B's API (receiver).
    #[arg(long)]
    b_api: SocketAddr,
    #[arg(long)]
    b_admin: SocketAddr,
    /// B's node id.
    #[arg(long)]
    peer: String,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Echo { size, count } => {
                let (tput, rtt) = (
                    echo_throughput(size, count).await?,
                    echo_rtt(size, 2000).await?,
                );
                Ok(json!({"size": size, "echo_msgs_per_s": tput, "rtt": rtt}))
            }
            Command::Fsync { dir, seconds } => {
                Ok(json!({"fsync_per_s": fsync_rate(&dir, seconds).await?}))
            }
            Command::Throughput {
                pair,
                runs,
                batch,
                concurrency,
                single_concurrency,
                single_count,
                fsync_dir,
            } => {
                throughput(
                    &pair,
                    &runs,
                    batch,
                    concurrency,
                    single_concurrency,
                    single_count,
                    &fsync_dir,
                )
                .await
            }
            Command::Latency {
                pair,
                rates,
                seconds,
                size,
                senders,
            } => latency(&pair, &rates, seconds, size, senders).await,
            Command::FleetGen { n, out } => fleet_gen(n, &out).await,
            Command::FleetLink(args) => fleet_link(args).await,
        }
    });
    match result {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap()),
        Err(e) => {
            eprintln!("peerlink-load: {e}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------- helpers

fn err(msg: impl Into<String>) -> Error {
    msg.into().into()
}

/// p-th percentile (0..=100) of sorted samples, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary_ms(mut samples: Vec<f64>) -> Value {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({
        "n": samples.len(),
        "p50_ms": percentile(&samples, 50.0),
        "p99_ms": percentile(&samples, 99.0),
        "max_ms": samples.last().copied().unwrap_or(f64::NAN),
    })
}

/// Resident set size of a process, KiB.
fn rss_kib(pid: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err("no VmRSS"))
}

/// On-CPU seconds of all threads of a process (`/proc/PID/task/*/schedstat`, ns).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(ns as f64 / 1e9)
}

/// A minimal HTTP/1.1 keep-alive client (the workspace has no HTTP client).
struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http { addr, conn: None }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        let mut wire = Vec::with_capacity(head.len() + body.len());
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(body);
        // A kept-alive connection the server closed meanwhile fails once: reconnect.
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                let s = TcpStream::connect(self.addr).await?;
                s.set_nodelay(true)?;
                self.conn = Some(BufReader::with_capacity(64 * 1024, s));
            }
            match self.exchange(&wire).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conn = None;
                    if !reused || attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!()
    }

    async fn exchange(&mut self, wire: &[u8]) -> Result<(u16, Vec<u8>)> {
        let conn = self.conn.as_mut().ok_or_else(|| err("no connection"))?;
        conn.get_mut().write_all(wire).await?;
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(err("connection closed"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err(format!("bad status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                return Err(err("connection closed in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| err("bad chunk size"))?;
                let start = body.len();
                body.resize(start + n, 0);
                conn.read_exact(&mut body[start..]).await?;
                line.clear();
                conn.read_line(&mut line).await?;
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        } else {
            conn.read_to_end(&mut body).await?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }

    async fn json(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let ct = body.map(|_| "application/json");
        let (status, resp) = self.request(method, path, ct, &bytes).await?;
        if !(200..300).contains(&status) {
            return Err(err(format!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&resp)
            )));
        }
        Ok(serde_json::from_slice(&resp)?)
    }
}

/// `peerlink_store_commit_duration_seconds_count` from an admin /metrics.
async fn commits(admin: SocketAddr) -> Result<u64> {
    let (status, body) = Http::new(admin)
        .request("GET", "/metrics", None, b"")
        .await?;
    if status != 200 {
        return Err(err(format!("/metrics: HTTP {status}")));
    }
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("peerlink_store_commit_duration_seconds_count"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| err("no peerlink_store_commit_duration_seconds_count in /metrics"))
}

/// Messages B has durably stored from its partners so far
/// (`peerlink_messages_received_total`, counted after the store commit). Cheaper
/// to poll than the status' inbox depth, a COUNT over the whole inbox.
async fn received_total(admin: &mut Http) -> Result<u64> {
    let (status, body) = admin.request("GET", "/metrics", None, b"").await?;
    if status != 200 {
        return Err(err(format!("/metrics: HTTP {status}")));
    }
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("peerlink_messages_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// Acknowledges everything in the inbox behind `api`.
async fn drain(api: SocketAddr, page: usize) -> Result<usize> {
    let mut http = Http::new(api);
    let mut total = 0;
    loop {
        let v = http
            .json("GET", &format!("/v1/inbox?limit={page}"), None)
            .await?;
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        if msgs.is_empty() {
            return Ok(total);
        }
        let ids: Vec<Value> = msgs
            .iter()
            .map(|m| json!({"from": m["from"], "id": m["id"]}))
            .collect();
        total += ids.len();
        http.json("POST", "/v1/inbox/ack", Some(&json!({ "ids": ids })))
            .await?;
    }
}

// ---------------------------------------------------------------- fsync

async fn fsync_rate(dir: &Path, seconds: f64) -> Result<f64> {
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    tokio::task::spawn_blocking(move || -> Result<f64> {
        use std::io::Write;
        let mut f = std::fs::File::create(&path)?;
        let block = [0x66u8; 1024];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            f.write_all(&block)?;
            f.sync_all()?;
            n += 1;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        drop(f);
        let _ = std::fs::remove_file(&path);
        Ok(rate)
    })
    .await?
}

// ---------------------------------------------------------------- raw TLS echo

/// Accepts any server certificate (the baseline measures the transport, not PKI).
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A loopback TLS 1.3 echo server (ECDSA P-256, ring) and a connected client.
async fn echo_pair() -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert =
        rcgen::CertificateParams::new(vec!["echo.invalid".to_string()])?.self_signed(&key)?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(tls);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = w.shutdown().await;
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("echo.invalid")?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await?)
}

/// Pipelined echo of `count` length-prefixed messages: messages/s.
async fn echo_throughput(size: usize, count: usize) -> Result<f64> {
    let tls = echo_pair().await?;
    let (mut r, w) = tokio::io::split(tls);
    let mut msg = (size as u32).to_be_bytes().to_vec();
    msg.extend(std::iter::repeat_n(0x5au8, size));
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, w);
        for _ in 0..count {
            w.write_all(&msg).await?;
        }
        w.flush().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut body = vec![0u8; size];
    let mut r2 = BufReader::with_capacity(256 * 1024, &mut r);
    for _ in 0..count {
        let mut len = [0u8; 4];
        r2.read_exact(&mut len).await?;
        let n = u32::from_be_bytes(len) as usize;
        if n != size {
            return Err(err("echo framing broke"));
        }
        r2.read_exact(&mut body).await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut w = writer.await??.into_inner();
    let _ = w.shutdown().await;
    Ok(count as f64 / elapsed)
}

/// Sequential echo round trips: latency summary.
async fn echo_rtt(size: usize, count: usize) -> Result<Value> {
    let mut tls = echo_pair().await?;
    let mut msg = (size as u32).to_be_bytes().to_vec();
    msg.extend(std::iter::repeat_n(0x5au8, size));
    let mut back = vec![0u8; size + 4];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        tls.write_all(&msg).await?;
        tls.flush().await?;
        tls.read_exact(&mut back).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = tls.shutdown().await;
    Ok(summary_ms(samples))
}

// ---------------------------------------------------------------- throughput

async fn submit_all(
    api: SocketAddr,
    path: String,
    requests: Vec<(Vec<u8>, &'static str, usize)>,
    concurrency: usize,
) -> Result<usize> {
    let queue = Arc::new(std::sync::Mutex::new(requests));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut http = Http::new(api);
            let mut accepted = 0usize;
            loop {
                let next = queue.lock().unwrap().pop();
                let Some((body, ct, n)) = next else {
                    return Ok::<usize, Error>(accepted);
                };
                let (status, resp) = http.request("POST", &path, Some(ct), &body).await?;
                if status != 202 {
                    return Err(err(format!(
                        "POST {path}: HTTP {status}: {}",
                        String::from_utf8_lossy(&resp)
                    )));
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
    let requests: Vec<(Vec<u8>, &'static str, usize)> = if batch == 0 {
        (0..count)
            .map(|_| (body.clone(), "application/octet-stream", 1))
            .collect()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
        (0..count.div_ceil(batch))
            .map(|k| {
                let n = batch.min(count - k * batch);
                let msgs: Vec<Value> = (0..n).map(|_| json!({ "body_base64": b64 })).collect();
                (
                    serde_json::to_vec(&json!({ "messages": msgs })).unwrap(),
                    "application/json",
                    n,
                )
            })
            .collect()
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
            return Err(err(format!("only {arrived} of {count} messages arrived")));
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

async fn throughput(
    pair: &Pair,
    runs: &str,
    batch: usize,
    concurrency: usize,
    single_concurrency: usize,
    single_count: usize,
    fsync_dir: &Path,
) -> Result<Value> {
    let mut plan: Vec<(usize, usize, usize, usize)> = Vec::new();
    for spec in runs.split(',').filter(|s| !s.is_empty()) {
        let (s, c) = spec
            .split_once(':')
            .ok_or_else(|| err("--runs wants SIZE:COUNT"))?;
        plan.push((s.parse()?, c.parse()?, batch, concurrency));
    }
    if single_concurrency > 0 {
        plan.push((1024, single_count, 0, single_concurrency));
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

// ---------------------------------------------------------------- latency

/// Nanoseconds since the process's epoch.
fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

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
                    .request("POST", &path, Some("application/octet-stream"), &body)
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
        let mut ack = Http::new(b_api);
        let mut samples: Vec<f64> = Vec::with_capacity(total);
        let mut seen: HashSet<u32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds + 60.0);
        while (samples.len() as u64) < expected_rx.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            let v = http
                .json("GET", "/v1/inbox?limit=1000&wait=1", None)
                .await?;
            let arrived = now_ns(epoch);
            let msgs = v["messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                continue;
            }
            let mut ids = Vec::with_capacity(msgs.len());
            for m in &msgs {
                ids.push(json!({"from": m["from"], "id": m["id"]}));
                let body = base64::engine::general_purpose::STANDARD
                    .decode(m["body_base64"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                if body.len() < 16 {
                    continue;
                }
                let sched = u64::from_be_bytes(body[0..8].try_into().unwrap());
                let ph = u32::from_be_bytes(body[8..12].try_into().unwrap());
                let seq = u32::from_be_bytes(body[12..16].try_into().unwrap());
                if ph == phase && seen.insert(seq) {
                    samples.push(arrived.saturating_sub(sched) as f64 / 1e6);
                }
            }
            ack.json("POST", "/v1/inbox/ack", Some(&json!({ "ids": ids })))
                .await?;
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
        let mut body = Vec::with_capacity(size.max(16));
        body.extend_from_slice(&due_ns.to_be_bytes());
        body.extend_from_slice(&phase.to_be_bytes());
        body.extend_from_slice(&(i as u32).to_be_bytes());
        body.resize(size.max(16), 0x5a);
        tx.send(body).map_err(|_| err("senders gone"))?;
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

async fn latency(
    pair: &Pair,
    rates: &str,
    seconds: f64,
    size: usize,
    senders: usize,
) -> Result<Value> {
    let rates: Vec<f64> = rates
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

// ---------------------------------------------------------------- many partners

async fn fleet_gen(n: usize, out: &Path) -> Result<Value> {
    use peerlink_ca::profiles::{issue_root, RootSigner};
    use peerlink_pki::identity::NodeName;
    use peerlink_pki::keys::{KeyType, PrivateKey};
    use peerlink_pki::pemfile::pem_certificate;
    std::fs::create_dir_all(out)?;
    let out = out.to_path_buf();
    let start = Instant::now();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut handles = Vec::new();
    for w in 0..workers {
        let out = out.clone();
        handles.push(tokio::task::spawn_blocking(move || -> Result<()> {
            for i in (w..n).step_by(workers) {
                let dir = out.join(format!("p{i:05}"));
                if dir.join("gw.crt").exists() {
                    continue;
                }
                std::fs::create_dir_all(&dir)?;
                let key = PrivateKey::generate(KeyType::EcdsaP256)?;
                let id = peerlink_pki::identity::node_id_from_spki(&key.public_key_der()?);
                let root = issue_root(&key, &NodeName::new("Bench", &format!("p{i}"), &id)?, 365)?;
                let signer = RootSigner::new(root.clone(), &key)?;
                let bundle =
                    peerlink_ca::bundle::export(&signer, &[], ::time::OffsetDateTime::now_utc())?;
                let gw_key = PrivateKey::generate(KeyType::EcdsaP256)?;
                let (_, subject) =
                    x509_parser::x509::X509Name::from_der(&signer.identity().subject_der)?;
                let mut params = rcgen::CertificateParams::default();
                params.distinguished_name = peerlink_pki::identity::rcgen_name(&subject)?;
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "gw1");
                let csr = params.serialize_request(&gw_key.signing_key()?)?;
                let verified =
                    peerlink_ca::csr::verify_csr(csr.der(), &signer.identity().subject_der)?;
                let gw_cert = signer.issue_server_cert(&verified, 90)?.der;
                std::fs::write(dir.join("bundle.pem"), bundle)?;
                std::fs::write(dir.join("root.crt"), pem_certificate(&root))?;
                std::fs::write(
                    dir.join("fingerprint"),
                    signer.identity().fingerprint.colon_hex(),
                )?;
                std::fs::write(dir.join("gw.key"), gw_key.to_unencrypted_pem().as_bytes())?;
                std::fs::write(dir.join("gw.crt"), pem_certificate(&gw_cert))?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(json!({ "n": n, "seconds": start.elapsed().as_secs_f64() }))
}

/// The `fleet-link` arguments.
#[derive(clap::Args)]
struct FleetArgs {
    #[arg(long)]
    fleet: PathBuf,
    #[arg(long)]
    n: usize,
    /// The gateway's peer listener.
    #[arg(long)]
    gateway: SocketAddr,
    /// The gateway's CA directory (public part) and its server cert and key,
    /// for the in-process baseline acceptor.
    #[arg(long)]
    node_dir: PathBuf,
    #[arg(long)]
    server_cert: PathBuf,
    #[arg(long)]
    server_key: PathBuf,
    #[arg(long)]
    admin: SocketAddr,
    #[arg(long)]
    pid: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of CPU sampling (idle with no links, idle with all links).
    #[arg(long, default_value_t = 10.0)]
    idle_seconds: f64,
    #[arg(long, default_value_t = 20)]
    status_samples: usize,
}

/// One in-process partner: its TLS set-up and node id.
struct Partner {
    tls: peerlink_tls::PeerTls,
    id: String,
}

fn load_partner(
    dir: &Path,
    gw: &peerlink_pki::identity::NodeIdentity,
    gw_root: &[u8],
) -> Result<Partner> {
    use peerlink_pki::pemfile::{load_one, ObjectKind};
    use peerlink_tls::{NodeTrust, PeerStatus, PeerTrust, ServerIdentity};
    let root = load_one(&dir.join("root.crt"), ObjectKind::Certificate)?;
    let cross = load_one(&dir.join("cross.crt"), ObjectKind::Certificate)?;
    let cert = load_one(&dir.join("gw.crt"), ObjectKind::Certificate)?;
    let key = peerlink_tls::parse_unencrypted_key(&std::fs::read(dir.join("gw.key"))?, "gw.key")?;
    let me = peerlink_pki::identity::NodeIdentity::from_root_der(&root)?;
    let mut peers = std::collections::BTreeMap::new();
    peers.insert(
        gw.node_id.clone(),
        PeerTrust {
            node_id: gw.node_id.clone(),
            subject: gw.subject.clone(),
            subject_der: gw.subject_der.clone(),
            root_der: gw_root.to_vec(),
            issued_to_us_der: Some(cross),
            endpoints: vec![],
            status: PeerStatus::Active,
            crl_der: None,
            issued_to_us_not_after: None,
        },
    );
    let id = me.node_id.clone();
    let trust = NodeTrust {
        node_dir: dir.to_path_buf(),
        root_der: root,
        identity: me,
        crl_der: None,
        peers,
    };
    let identity = ServerIdentity {
        not_after: ::time::OffsetDateTime::now_utc() + ::time::Duration::days(90),
        cert_der: cert,
        key,
    };
    Ok(Partner {
        tls: peerlink_tls::PeerTls::new(Arc::new(trust), Arc::new(identity))?,
        id,
    })
}

/// A distinct loopback source address per partner (127.1.0.1, 127.1.0.2, ...), as
/// partners on different hosts would have: the gateway's per-source handshake
/// budget then applies per partner, as in production.
fn source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// Dials the gateway as `p`, exchanges Hello, then answers pings until told to stop.
async fn partner_link(
    p: Arc<Partner>,
    i: usize,
    gateway: SocketAddr,
    gateway_id: String,
    up: mpsc::UnboundedSender<std::result::Result<Duration, String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    permits: Arc<Semaphore>,
) {
    let permit = permits.acquire_owned().await;
    let t = Instant::now();
    let setup = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source_ip(i), 0))?;
        let tcp = socket.connect(gateway).await?;
        tcp.set_nodelay(true)?;
        let tls = p.tls.connect(tcp, &gateway_id).await?;
        let mut framed = Framed::new(tls, FrameCodec::default());
        framed
            .send(Frame::hello(
                p.id.clone(),
                frame::DEFAULT_MAX_PAYLOAD,
                5_000,
                "",
            ))
            .await?;
        match framed.next().await {
            Some(Ok(Frame::Hello { .. })) => Ok::<_, Error>(framed),
            Some(Ok(other)) => Err(err(format!("expected hello, got {other:?}"))),
            Some(Err(e)) => Err(e.into()),
            None => Err(err("closed before hello")),
        }
    };
    let mut framed = match tokio::time::timeout(Duration::from_secs(60), setup).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            let _ = up.send(Err(e.to_string()));
            return;
        }
        Err(_) => {
            let _ = up.send(Err("timed out".into()));
            return;
        }
    };
    drop(permit);
    let _ = up.send(Ok(t.elapsed()));
    loop {
        tokio::select! {
            f = framed.next() => match f {
                Some(Ok(Frame::Ping { nonce })) => {
                    if framed.send(Frame::Pong { nonce }).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Frame::Goodbye { .. })) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => {
                let _ = framed.send(Frame::goodbye(GoodbyeCode::Normal, "benchmark done")).await;
                let _ = framed.close().await;
                return;
            }
        }
    }
}

/// The in-process baseline: the same partners' handshakes + Hello against a
/// `PeerTls` acceptor built from the gateway's own node_dir and certificate.
async fn baseline_acceptor(
    node_dir: &Path,
    cert: &Path,
    key: &Path,
    gateway_id: String,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let trust = Arc::new(peerlink_tls::NodeTrust::load(node_dir, &Default::default()).await?);
    let identity = Arc::new(peerlink_tls::ServerIdentity::load(cert, key, &trust)?);
    let tls = peerlink_tls::PeerTls::new(trust, identity)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            let gateway_id = gateway_id.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok((stream, peer)) = tls.accept(tcp).await else {
                    return;
                };
                let mut framed = Framed::new(stream, FrameCodec::default());
                if !matches!(framed.next().await, Some(Ok(Frame::Hello { ref node_id, .. })) if *node_id == peer)
                {
                    return;
                }
                if framed
                    .send(Frame::hello(
                        gateway_id,
                        frame::DEFAULT_MAX_PAYLOAD,
                        5_000,
                        "",
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
                // Hold the link until the partner leaves.
                while let Some(Ok(_)) = framed.next().await {}
            });
        }
    });
    Ok((addr, task))
}

/// Links every partner to `target`; returns the time until all Hellos were exchanged
/// and the stop switch that closes them.
async fn link_all(
    partners: &[Arc<Partner>],
    target: SocketAddr,
    gateway_id: &str,
    concurrency: usize,
) -> Result<(f64, Vec<f64>, tokio::sync::watch::Sender<bool>)> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    for (i, p) in partners.iter().enumerate() {
        tokio::spawn(partner_link(
            p.clone(),
            i,
            target,
            gateway_id.to_string(),
            up_tx.clone(),
            stop_rx.clone(),
            permits.clone(),
        ));
    }
    drop(up_tx);
    let mut setup_ms = Vec::with_capacity(partners.len());
    let mut failures = Vec::new();
    while let Some(r) = up_rx.recv().await {
        match r {
            Ok(d) => setup_ms.push(d.as_secs_f64() * 1e3),
            Err(e) => failures.push(e),
        }
        if setup_ms.len() + failures.len() == partners.len() {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if !failures.is_empty() {
        return Err(err(format!(
            "{} of {} partners failed to link, e.g. {}",
            failures.len(),
            partners.len(),
            failures[0]
        )));
    }
    Ok((elapsed, setup_ms, stop_tx))
}

async fn connected_count(admin: &mut Http) -> Result<usize> {
    let s = admin.json("GET", "/v1/status", None).await?;
    Ok(s["peers"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["state"] == "connected").count())
        .unwrap_or(0))
}

/// `samples` timings (ms) of each GET in `paths`, interleaved, on one kept-alive connection.
async fn timed_gets(admin: SocketAddr, paths: &[&str], samples: usize) -> Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::with_capacity(samples); paths.len()];
    let mut http = Http::new(admin);
    http.request("GET", "/healthz", None, b"").await?; // connect outside the clock
    for _ in 0..samples {
        for (k, path) in paths.iter().enumerate() {
            let t = Instant::now();
            let (status, _) = http.request("GET", path, None, b"").await?;
            out[k].push(t.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                return Err(err(format!("GET {path}: HTTP {status}")));
            }
        }
    }
    Ok(out)
}

async fn cpu_over(pid: u32, seconds: f64) -> Result<f64> {
    let c0 = cpu_seconds(pid)?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    Ok((cpu_seconds(pid)? - c0) / t.elapsed().as_secs_f64())
}

async fn fleet_link(a: FleetArgs) -> Result<Value> {
    let gw_root = peerlink_pki::pemfile::load_one(
        &a.node_dir.join(peerlink_pki::layout::ROOT_CERT),
        peerlink_pki::pemfile::ObjectKind::Certificate,
    )?;
    let gw = peerlink_pki::identity::NodeIdentity::from_root_der(&gw_root)?;
    let pid = a.pid.to_string();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&a.fleet)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cross.crt").exists())
        .collect();
    dirs.sort();
    dirs.truncate(a.n);
    if dirs.len() < a.n {
        return Err(err(format!(
            "only {} signed partners in {}",
            dirs.len(),
            a.fleet.display()
        )));
    }
    let mut partners = Vec::with_capacity(a.n);
    for d in &dirs {
        partners.push(Arc::new(load_partner(d, &gw, &gw_root)?));
    }
    let mut admin = Http::new(a.admin);

    // Before: N partners registered, none linked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = rss_kib(&pid)?;
    let idle_cpu_0 = cpu_over(a.pid, a.idle_seconds).await?;
    let before = timed_gets(a.admin, &["/v1/status", "/healthz"], a.status_samples).await?;
    eprintln!(
        "  {} partners registered, 0 linked: gateway RSS {} KiB, idle CPU {:.4} cores, status p50 {:.1} ms",
        a.n,
        rss0,
        idle_cpu_0,
        median(before[0].clone())
    );

    // The gateway. Linked first, so that this process's own growth is the
    // client side of N links (allocator reuse would blur it afterwards).
    let self_rss_0 = rss_kib("self")?;
    let start = Instant::now();
    let (t_hello, setup, stop) = link_all(&partners, a.gateway, &gw.node_id, a.concurrency).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = connected_count(&mut admin).await?;
        if seen >= a.n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t_status = start.elapsed().as_secs_f64();
    if seen < a.n {
        return Err(err(format!("gateway shows {seen} of {} connected", a.n)));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss1 = rss_kib(&pid)?;
    let self_rss_1 = rss_kib("self")?;
    let idle_cpu_1 = cpu_over(a.pid, a.idle_seconds).await?;
    let after = timed_gets(a.admin, &["/v1/status", "/healthz"], a.status_samples).await?;
    let still = connected_count(&mut admin).await?;
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Baseline: the same N partners against an in-process PeerTls acceptor.
    let (base_addr, base_task) = baseline_acceptor(
        &a.node_dir,
        &a.server_cert,
        &a.server_key,
        gw.node_id.clone(),
    )
    .await?;
    let (t_base, base_setup, stop) =
        link_all(&partners, base_addr, &gw.node_id, a.concurrency).await?;
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    base_task.abort();
    eprintln!(
        "  baseline (in-process PeerTls acceptor, same partners): {} links in {t_base:.2} s",
        a.n
    );
    let per_link = (rss1 as f64 - rss0 as f64) / a.n as f64;
    eprintln!(
        "  gateway: {} links in {t_hello:.2} s (status shows all after {t_status:.2} s); RSS {rss0} -> {rss1} KiB = {per_link:.1} KiB per link; idle CPU {idle_cpu_1:.4} cores; status p50 {:.1} ms (healthz {:.2} ms); {still} still connected after the idle period",
        a.n,
        median(after[0].clone()),
        median(after[1].clone())
    );
    let stats = |v: &Vec<f64>| {
        let mut s = v.clone();
        s.sort_by(|x, y| x.partial_cmp(y).unwrap());
        json!({"p50_ms": percentile(&s, 50.0), "p99_ms": percentile(&s, 99.0), "max_ms": s.last()})
    };
    Ok(json!({
        "n": a.n,
        "concurrency": a.concurrency,
        "gateway_rss_kib_before": rss0,
        "gateway_rss_kib_after": rss1,
        "gateway_kib_per_link": per_link,
        "client_kib_per_link": (self_rss_1 as f64 - self_rss_0 as f64) / a.n as f64,
        "link_all_seconds": t_hello,
        "link_all_seconds_status": t_status,
        "baseline_link_all_seconds": t_base,
        "link_setup_ms": stats(&setup),
        "baseline_link_setup_ms": stats(&base_setup),
        "idle_cpu_cores_no_links": idle_cpu_0,
        "idle_cpu_cores_links": idle_cpu_1,
        "status_ms_no_links": stats(&before[0]),
        "healthz_ms_no_links": stats(&before[1]),
        "status_ms_links": stats(&after[0]),
        "healthz_ms_links": stats(&after[1]),
        "still_connected": still,
    }))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    percentile(&v, 50.0)
}
