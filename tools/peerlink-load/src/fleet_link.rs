//! `peerlink-load fleet-link`: N in-process partners (made by `fleet-gen`,
//! cross-signed by the gateway's `ca-tool sign-peer`) link to one gateway, each
//! from its own loopback address; measures the gateway's memory per idle link,
//! the time to link all, idle CPU and status API latency, next to the same
//! partners against an in-process `PeerTls` acceptor.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use peer_gateway::frame::{self, Frame, FrameCodec, GoodbyeCode};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Framed;

use crate::error::{Error, Result};
use crate::http::{Http, HttpError};
use crate::stats::{cpu_over, median, rss_kib, spread_ms};

/// The `fleet-link` arguments.
#[derive(clap::Args)]
pub struct Args {
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
            stomp: None,
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
            Some(Ok(other)) => Err(Error::NoHello(format!("{other:?}"))),
            Some(Err(e)) => Err(e.into()),
            None => Err(Error::ClosedBeforeHello),
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
    let mut failures: Vec<String> = Vec::new();
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
        return Err(Error::LinkFailures {
            failed: failures.len(),
            total: partners.len(),
            example: failures.swap_remove(0),
        });
    }
    Ok((elapsed, setup_ms, stop_tx))
}

/// Partners the gateway's status shows connected.
async fn connected_count(admin: &mut Http) -> Result<usize> {
    let s = admin.json(Method::GET, "/v1/status", None).await?;
    Ok(s["peers"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["state"] == "connected").count())
        .unwrap_or(0))
}

/// `samples` timings (ms) of each GET in `paths`, interleaved, on one kept-alive connection.
async fn timed_gets(admin: SocketAddr, paths: &[&str], samples: usize) -> Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::with_capacity(samples); paths.len()];
    let mut http = Http::new(admin);
    http.request(Method::GET, "/healthz", None, Bytes::new())
        .await?; // connect outside the clock
    for _ in 0..samples {
        for (k, path) in paths.iter().enumerate() {
            let t = Instant::now();
            let (status, body) = http.request(Method::GET, path, None, Bytes::new()).await?;
            out[k].push(t.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                return Err(HttpError::status(Method::GET, path, status, &body).into());
            }
        }
    }
    Ok(out)
}

/// Partners linked to the gateway, then to the in-process baseline acceptor;
/// the gateway's memory, CPU and status latency before and after.
pub async fn run(a: Args) -> Result<Value> {
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
        return Err(Error::FleetTooSmall {
            found: dirs.len(),
            dir: a.fleet,
        });
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
        return Err(Error::NotAllConnected { seen, n: a.n });
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
        "link_setup_ms": spread_ms(&setup),
        "baseline_link_setup_ms": spread_ms(&base_setup),
        "idle_cpu_cores_no_links": idle_cpu_0,
        "idle_cpu_cores_links": idle_cpu_1,
        "status_ms_no_links": spread_ms(&before[0]),
        "healthz_ms_no_links": spread_ms(&before[1]),
        "status_ms_links": spread_ms(&after[0]),
        "healthz_ms_links": spread_ms(&after[1]),
        "still_connected": still,
    }))
}
