//! [`GatedProxy`]: loopback proxies that make two gateways' dials arrive at once.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A loopback TCP proxy whose first connection is held until every proxy of its group
/// has received its first connection (or `hold` has passed), then all are forwarded
/// at once. Put one in front of each gateway of a pair (as their `[peers]` endpoint
/// overrides) and both dials are in flight together: a true simultaneous open that
/// the tie-break must resolve. Later connections are forwarded at once.
pub struct GatedProxy {
    /// The port to dial.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Gate = Arc<(Mutex<usize>, Condvar)>;

impl GatedProxy {
    /// One proxy per target port, sharing one gate.
    pub fn group(targets: &[u16], hold: Duration) -> Vec<GatedProxy> {
        let gate: Gate = Arc::new((Mutex::new(0), Condvar::new()));
        let members = targets.len();
        targets
            .iter()
            .map(|&target| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
                listener.set_nonblocking(true).expect("nonblocking");
                let port = listener.local_addr().expect("addr").port();
                let stop = Arc::new(AtomicBool::new(false));
                let thread = {
                    let (stop, gate) = (stop.clone(), gate.clone());
                    std::thread::spawn(move || {
                        proxy_loop(listener, target, &stop, &gate, members, hold)
                    })
                };
                GatedProxy {
                    port,
                    stop,
                    thread: Some(thread),
                }
            })
            .collect()
    }
}

fn proxy_loop(
    listener: TcpListener,
    target: u16,
    stop: &AtomicBool,
    gate: &Gate,
    members: usize,
    hold: Duration,
) {
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => return,
        };
        let gated = std::mem::replace(&mut first, false);
        let gate = gate.clone();
        std::thread::spawn(move || {
            if gated {
                let (count, cv) = &*gate;
                let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
                *n += 1;
                cv.notify_all();
                let deadline = Instant::now() + hold;
                while *n < members && Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    n = cv
                        .wait_timeout(n, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            let _ = client.set_nonblocking(false);
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            pipe(client, upstream);
        });
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one = std::thread::spawn(move || copy_then_shutdown(a, b));
    copy_then_shutdown(b2, a2);
    let _ = one.join();
}

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_nodelay(true);
    let _ = to.set_nodelay(true);
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
