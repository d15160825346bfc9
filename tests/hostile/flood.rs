//! The flooding client: TCP connections from one loopback source address that
//! are held without sending a byte (slowloris) or closed at once, bounded in
//! count and duration, with what happened to them counted.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{refusals, Net, WAIT};
use tokio::io::AsyncReadExt;

use super::count;

/// How hard and how long a flood goes. Every count and the duration are bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloodPlan {
    /// Connections that are opened and then held without sending anything.
    pub(crate) slow: u64,
    /// Pause between two slow connections.
    pub(crate) slow_every: Duration,
    /// Connections that are opened and closed at once.
    pub(crate) rapid: u64,
    /// Pause between two rapid connections.
    pub(crate) rapid_every: Duration,
    /// The flood stops by itself after this long.
    pub(crate) max_duration: Duration,
}

#[derive(Debug, Default)]
struct FloodStats {
    attempts: AtomicU64,
    connected: AtomicU64,
    connect_errors: AtomicU64,
    /// Slow connections the gateway closed (refused at once, or timed out).
    closed_by_server: AtomicU64,
    /// Slow connections open right now, and the most at once.
    open_now: AtomicU64,
    open_max: AtomicU64,
}

/// A running flood against one address from one source address.
pub(crate) struct Flood {
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
    pub(crate) started: Instant,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    pub(crate) fn start(source: Ipv4Addr, target: SocketAddr, plan: FloodPlan) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FloodStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("flood runtime");
                rt.block_on(flood(source, target, plan, stop, stats));
            })
        };
        Flood {
            stop,
            stats,
            started: Instant::now(),
            thread: Some(thread),
        }
    }

    /// Whether the flood is still going (not stopped and not past its plan).
    pub(crate) fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the flood, closes every connection it holds and reports what it did.
    pub(crate) fn stop(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("flood thread");
        }
        self.report()
    }

    pub(crate) fn report(&self) -> String {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} connection attempts in {:.1} s ({} connected, {} connect errors); \
             slow connections closed by the gateway: {}, most held open at once: {}",
            l(&s.attempts),
            self.started.elapsed().as_secs_f64(),
            l(&s.connected),
            l(&s.connect_errors),
            l(&s.closed_by_server),
            l(&s.open_max),
        )
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) async fn connect_from(
    source: Ipv4Addr,
    target: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    match tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        )),
    }
}

/// One connection attempt of the flood, counted; the stream when it connected.
async fn attempt(
    source: Ipv4Addr,
    target: SocketAddr,
    stats: &FloodStats,
) -> Option<tokio::net::TcpStream> {
    stats.attempts.fetch_add(1, Ordering::Relaxed);
    match connect_from(source, target).await {
        Ok(stream) => {
            stats.connected.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
        Err(_) => {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

async fn flood(
    source: Ipv4Addr,
    target: SocketAddr,
    plan: FloodPlan,
    stop: Arc<AtomicBool>,
    stats: Arc<FloodStats>,
) {
    let deadline = tokio::time::Instant::now() + plan.max_duration;
    let over = {
        let stop = stop.clone();
        move || stop.load(Ordering::Relaxed) || tokio::time::Instant::now() >= deadline
    };
    let slow = {
        let (stats, stop, over) = (stats.clone(), stop.clone(), over.clone());
        tokio::spawn(async move {
            let mut holders = Vec::new();
            for _ in 0..plan.slow {
                if over() {
                    break;
                }
                if let Some(stream) = attempt(source, target, &stats).await {
                    let now = stats.open_now.fetch_add(1, Ordering::Relaxed) + 1;
                    stats.open_max.fetch_max(now, Ordering::Relaxed);
                    holders.push(tokio::spawn(hold(stream, stop.clone(), stats.clone())));
                }
                holders.retain(|h| !h.is_finished());
                tokio::time::sleep(plan.slow_every).await;
            }
            // Keep holding what is open until the flood is over.
            while !over() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.store(true, Ordering::Relaxed);
            for h in holders {
                let _ = h.await;
            }
        })
    };
    let rapid = {
        let (stats, over) = (stats.clone(), over.clone());
        tokio::spawn(async move {
            for _ in 0..plan.rapid {
                if over() {
                    break;
                }
                drop(attempt(source, target, &stats).await);
                tokio::time::sleep(plan.rapid_every).await;
            }
        })
    };
    let _ = rapid.await;
    let _ = slow.await;
}

/// Holds a connection without sending a byte until the gateway closes it or the
/// flood stops.
async fn hold(mut stream: tokio::net::TcpStream, stop: Arc<AtomicBool>, stats: Arc<FloodStats>) {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    stats.open_now.fetch_sub(1, Ordering::Relaxed);
}

/// A flood that lasts until stopped (at most `max`): 200 slow connections a second
/// and 500 connect/close a second, at most 30,000 connections in all.
pub(crate) fn heavy(max: Duration) -> FloodPlan {
    FloodPlan {
        slow: 6_000,
        slow_every: Duration::from_millis(5),
        rapid: 24_000,
        rapid_every: Duration::from_millis(2),
        max_duration: max,
    }
}

/// Waits until `name`'s counters show that admission control is refusing the flood.
#[track_caller]
pub(crate) fn wait_flood_refused(
    net: &mut Net,
    name: &str,
    reasons: &[&str],
) -> BTreeMap<String, u64> {
    net.wait(
        &format!("{name} to refuse the flood ({reasons:?})"),
        WAIT,
        |net| {
            let got = refusals(&net.try_status(name)?);
            if reasons.iter().any(|r| count(&got, r) > 0) {
                Ok(got)
            } else {
                Err(format!("refused_handshakes = {got:?}"))
            }
        },
    )
    .0
}
