//! Floods against admission control: from another address, from the partner's
//! own address, a slowloris from many addresses that fills the global cap, and
//! the accept queue bounded by `accept_backlog`.
//!
//! Run: `cargo test --test hostile admission::`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::flood::{connect_from, heavy, wait_flood_refused, Flood, FloodPlan};
use super::*;

// ---------------------------------------------------------------------------
// 1. A flood from another address does not stop a partner from linking
// ---------------------------------------------------------------------------

#[test]
fn flood_from_one_address_does_not_stop_another_partner_from_linking() {
    let _serial = serial();
    let mut net = Net::mesh(&["a", "b"]);
    // a never dials b: the link can only come through a's (flooded) listener.
    let a_listen = start_a_not_dialing_b(&mut net, ADMISSION);

    // From 127.0.0.5: slow handshakes that hold the address's slots, and connect/close
    // on top. With its 8 slots held, everything else from it is refused as
    // too_many_from_source before it costs a token, so the rate limit shows with
    // connections that finish fast: connect/close alone from 127.0.0.6.
    let flood = Flood::start(FLOOD_SOURCE, a_listen, heavy(Duration::from_secs(60)));
    let rapid = Flood::start(
        RAPID_SOURCE,
        a_listen,
        FloodPlan {
            slow: 0,
            ..heavy(Duration::from_secs(60))
        },
    );
    wait_flood_refused(&mut net, "a", &["too_many_from_source"]);
    let before_b = wait_flood_refused(&mut net, "a", &["rate_limited"]);
    eprintln!("flood under way; a's counters: {before_b:?}");

    // b dials a from 127.0.0.1 while the flood goes on.
    net.start("b");
    let (_, took) = net.wait("b to link to a through the flooded listener", WAIT, |net| {
        net.assert_alive("a");
        let p = net.check_state("a", "b", &["connected"])?;
        net.check_state("b", "a", &["connected"])?;
        Ok(p)
    });
    assert!(
        flood.running() && rapid.running(),
        "the flood ended before b linked: the test proved nothing ({}; {})",
        flood.report(),
        rapid.report()
    );
    let p = net.peer_status("a", "b");
    assert_eq!(field(&p, "direction"), "inbound", "{p:#}");
    let since = field(&p, "since").to_string();
    eprintln!(
        "b linked to a {:.2} s after starting, during the flood",
        took.as_secs_f64()
    );
    let during = refusals(&net.status("a"));
    for reason in ["rate_limited", "too_many_from_source"] {
        assert!(
            count(&during, reason) > count(&before_b, reason),
            "a stopped refusing the flood for {reason} while b linked: before {before_b:?}, now {during:?}"
        );
    }
    // Pings both ways, still during the flood.
    let rtt = ping(&net, "a", "b").expect("ping a -> b during the flood");
    ping(&net, "b", "a").expect("ping b -> a during the flood");
    eprintln!("ping a -> b during the flood: {rtt:.1} ms");
    // Slow handshakes are cut by the handshake timeout (1 s) while the flood holds them.
    net.wait("a to time out the flood's slow handshakes", WAIT, |net| {
        let got = refusals(&net.try_status("a")?);
        if count(&got, "handshake_timeout") > 0 {
            Ok(())
        } else {
            Err(format!("refused_handshakes = {got:?}"))
        }
    });
    // The flood goes on for several seconds in all; the link stays the same link.
    while flood.started.elapsed() < FLOOD_AT_LEAST {
        net.assert_alive("a");
        assert_same_link(&net, &since);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        flood.running() && rapid.running(),
        "the flood ended early: {}; {}",
        flood.report(),
        rapid.report()
    );
    eprintln!("flood from {FLOOD_SOURCE}: {}", flood.stop());
    eprintln!("flood from {RAPID_SOURCE}: {}", rapid.stop());

    let after = refusals(&net.status("a"));
    eprintln!("a's refused_handshakes after the flood: {after:?}");
    for reason in ["rate_limited", "too_many_from_source", "handshake_timeout"] {
        assert!(count(&after, reason) > 0, "no {reason} refusals: {after:?}");
    }
    // The same counts in /metrics.
    let m = metrics(&net, "a");
    for reason in ["rate_limited", "too_many_from_source", "handshake_timeout"] {
        let v = refused_metric(&m, reason);
        assert!(
            v > 0 && v <= count(&refusals(&net.status("a")), reason),
            "peerlink_handshakes_refused_total{{reason={reason:?}}} = {v}, status says {after:?}"
        );
    }
    // Admission refusals are counted, not logged one by one (a flood must not also
    // flood the log).
    let logged = net.log_lines("a", &["too_many_from_source"]).len()
        + net.log_lines("a", &["rate_limited"]).len();
    assert!(
        logged <= 5,
        "a logged {logged} admission refusals one by one"
    );

    // a is healthy: health check, status, the same link, pings.
    let (code, body) = http(net.node("a").admin(), "GET", "/healthz").unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    assert_same_link(&net, &since);
    ping(&net, "a", "b").expect("ping a -> b after the flood");

    // The flooding address gets its budget back: a connection from it reaches the
    // TLS layer again (counted as a TLS error, not refused by admission control).
    let rt = runtime();
    net.wait(
        "a connection from the flooding address to be admitted again",
        WAIT,
        |net| {
            let before = refusals(&net.try_status("a")?);
            rt.block_on(async {
                let mut s = connect_from(FLOOD_SOURCE, a_listen)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                Ok::<(), String>(())
            })?;
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let now = refusals(&net.try_status("a")?);
                if count(&now, "tls_error") > count(&before, "tls_error") {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(format!("not admitted: {before:?} -> {now:?}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
    net.terminate_all();
}

/// a still shows b connected on the link that came up at `since`.
#[track_caller]
fn assert_same_link(net: &Net, since: &str) {
    let p = net.peer_status("a", "b");
    assert_eq!(field(&p, "state"), "connected", "{p:#}");
    assert_eq!(
        field(&p, "since"),
        since,
        "the a–b link was replaced: {p:#}"
    );
}

// ---------------------------------------------------------------------------
// 2. The same flood from the partner's own address
// ---------------------------------------------------------------------------

/// A partner behind the flooding address (e.g. the same NAT) shares that address's
/// handshake budget: while the flood lasts its dials compete with the flood's for
/// the same tokens and slots. Required: the gateway does not crash, its admin API
/// keeps answering, and the partner links once the flood stops. Whether it links
/// during the flood is printed, not asserted.
#[test]
fn flood_from_the_partners_own_address_does_no_lasting_harm() {
    let _serial = serial();
    let mut net = Net::mesh(&["a", "b"]);
    let a_listen = start_a_not_dialing_b(&mut net, ADMISSION);

    let flood = Flood::start(Ipv4Addr::LOCALHOST, a_listen, heavy(Duration::from_secs(8)));
    wait_flood_refused(&mut net, "a", &["rate_limited", "too_many_from_source"]);
    net.start("b");
    let mut linked_during: Option<Duration> = None;
    let mut slowest_status = Duration::ZERO;
    let started = Instant::now();
    while flood.running() {
        net.assert_alive("a");
        net.assert_alive("b");
        let t = Instant::now();
        let status = net
            .try_status("a")
            .unwrap_or_else(|e| panic!("a's admin API failed during the flood: {e}"));
        slowest_status = slowest_status.max(t.elapsed());
        if linked_during.is_none() && shows_b_connected(&net, &status) {
            linked_during = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = flood.stop();
    let b_view = net.peer_status("b", "a");
    eprintln!("flood from 127.0.0.1 (b's own address): {report}");
    eprintln!("a's counters: {:?}", refusals(&net.status("a")));
    eprintln!(
        "slowest status answer during the flood: {:.0} ms",
        slowest_status.as_secs_f64() * 1000.0
    );
    match linked_during {
        Some(t) => eprintln!(
            "OBSERVED: b linked to a {:.1} s into the flood from its own address",
            t.as_secs_f64()
        ),
        None => eprintln!(
            "OBSERVED: b did not link while its own address flooded a (b's view: state {}, last_error {:?})",
            field(&b_view, "state"),
            b_view["last_error"]
        ),
    }
    let (_, took) = net.wait("b to link to a after the flood", WAIT, |net| {
        net.check_state("a", "b", &["connected"])?;
        net.check_state("b", "a", &["connected"])
    });
    eprintln!(
        "b linked {:.2} s after the flood stopped",
        took.as_secs_f64()
    );
    ping(&net, "a", "b").expect("ping a -> b after the flood");
    ping(&net, "b", "a").expect("ping b -> a after the flood");
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 3. The global cap on concurrent handshakes: a slowloris from many addresses
// ---------------------------------------------------------------------------

/// Nine addresses each holding their 8 handshakes exceed the global cap of 64:
/// further connections from them are refused as `too_many_handshakes`, but a
/// partner, holding fewer handshakes than the busiest address, takes the slot of
/// that address's oldest one and links while the flood goes on. The handshake
/// timeout outlasts the flood here, so no slot frees up by itself: without the
/// displacement the partner could not link before the flood ends.
#[test]
fn slowloris_from_many_addresses_hits_the_global_cap_and_recovers() {
    let _serial = serial();
    let mut net = Net::mesh(&["a", "b"]);
    let admission = ADMISSION.replace(
        "handshake_timeout_ms = 1000",
        "handshake_timeout_ms = 30000",
    );
    assert_ne!(admission, ADMISSION);
    let a_listen = start_a_not_dialing_b(&mut net, &admission);
    let floods: Vec<Flood> = (10..19)
        .map(|i| {
            Flood::start(
                Ipv4Addr::new(127, 0, 0, i),
                a_listen,
                FloodPlan {
                    slow: 2_000,
                    slow_every: Duration::from_millis(5),
                    rapid: 0,
                    rapid_every: Duration::ZERO,
                    max_duration: Duration::from_secs(8),
                },
            )
        })
        .collect();
    wait_flood_refused(&mut net, "a", &["too_many_handshakes"]);
    net.start("b");
    let started = Instant::now();
    let mut linked_during = None;
    while floods.iter().any(Flood::running) {
        net.assert_alive("a");
        let status = net
            .try_status("a")
            .unwrap_or_else(|e| panic!("a's admin API failed during the flood: {e}"));
        if linked_during.is_none() && shows_b_connected(&net, &status) {
            linked_during = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for f in floods {
        eprintln!("slow flood: {}", f.stop());
    }
    let got = refusals(&net.status("a"));
    eprintln!("a's counters: {got:?}");
    let linked_during = linked_during.unwrap_or_else(|| {
        panic!(
            "with the global cap full, b did not link during the flood:\n{}",
            net.node("a").log_text()
        )
    });
    eprintln!(
        "with the global cap full, b linked {:.1} s after it started dialing",
        linked_during.as_secs_f64()
    );
    assert!(count(&got, "too_many_handshakes") > 0, "{got:?}");
    assert!(count(&got, "handshake_displaced") > 0, "{got:?}");
    let exported = metrics(&net, "a");
    for reason in ["too_many_handshakes", "handshake_displaced"] {
        assert!(
            refused_metric(&exported, reason) > 0,
            "{reason} missing from /metrics"
        );
    }
    net.wait(
        "b to link to a once the slow handshakes are gone",
        WAIT,
        |net| {
            net.check_state("a", "b", &["connected"])?;
            net.check_state("b", "a", &["connected"])
        },
    );
    ping(&net, "a", "b").expect("ping a -> b");
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 6. The accept queue is bounded by accept_backlog
// ---------------------------------------------------------------------------

/// Sends SIGCONT to a stopped gateway when dropped (also when the test fails).
struct Resume<'a>(&'a Net, &'a str);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.signal(self.1, "CONT");
    }
}

/// While the gateway does not accept (stopped with SIGSTOP), the kernel completes
/// at most about `accept_backlog` connections on its behalf; the others are not
/// accepted (their connects time out). Once it runs again it drains the queue and
/// partners link.
#[test]
fn accept_queue_is_bounded_by_accept_backlog() {
    let _serial = serial();
    let mut net = Net::mesh(&["a", "b"]);
    let link = ADMISSION.replace("accept_backlog = 256", "accept_backlog = 4");
    let a_listen = start_a_not_dialing_b(&mut net, &link);
    let rt = runtime();
    let (completed, held) = {
        net.signal("a", "STOP");
        let _resume = Resume(&net, "a");
        rt.block_on(async {
            let mut held = Vec::new();
            let mut completed = 0;
            for _ in 0..20 {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket
                    .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)), 0))
                    .unwrap();
                if let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_millis(300), socket.connect(a_listen)).await
                {
                    completed += 1;
                    held.push(s);
                }
            }
            (completed, held)
        })
    };
    eprintln!("connections completed while a was stopped (accept_backlog = 4): {completed} of 20");
    assert!(
        (1..=6).contains(&completed),
        "{completed} connections completed with a stopped gateway and accept_backlog = 4"
    );
    drop(held);
    net.wait_admin("a");
    net.start("b");
    net.wait("b to link to a", WAIT, |net| {
        net.check_state("a", "b", &["connected"])?;
        net.check_state("b", "a", &["connected"])
    });
    ping(&net, "a", "b").expect("ping a -> b");
    net.terminate_all();
}
