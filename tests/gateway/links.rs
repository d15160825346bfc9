//! Linking: three gateways link up and ping each other; a crashed gateway is
//! shown down while the others back off, and relinks after a restart;
//! simultaneous starts and forced simultaneous dials keep exactly one link per
//! pair.
//!
//! Run: `cargo test --test gateway links::`.

use super::*;

// ---------------------------------------------------------------------------
// 1. Three gateways link up and ping
// ---------------------------------------------------------------------------

#[test]
fn three_gateways_link_up_and_ping() {
    let mut net = Net::mesh(&ABC);
    net.start_all(&ABC);
    let took = net.wait_all_connected(&ABC, WAIT);
    eprintln!(
        "all three pairs connected {:.2} s after start",
        took.as_secs_f64()
    );

    for x in ABC {
        for y in ABC {
            if x == y {
                continue;
            }
            let out = peer_gateway(args!["ping", net.id(y), "--admin", net.node(x).admin_arg()]);
            out.assert_success().assert_stdout_contains("pong");
        }
    }

    // What the status says about each partner.
    let status = net.status("a");
    assert_eq!(status["node_id"], net.id("a"), "{status:#}");
    assert_eq!(status["listen"], net.node("a").endpoint(), "{status:#}");
    assert!(status["server_cert_not_after"].is_string(), "{status:#}");
    assert_eq!(
        status["peers"].as_array().map(Vec::len),
        Some(2),
        "{status:#}"
    );
    for y in ["b", "c"] {
        let p = peer_entry(&status, &net.id(y)).expect("entry");
        assert_eq!(field(p, "state"), "connected", "{p:#}");
        assert!(
            ["inbound", "outbound"].contains(&field(p, "direction")),
            "{p:#}"
        );
        assert!(p["rtt_ms"].as_f64().is_some(), "no RTT after a ping: {p:#}");
        assert!(p["last_error"].is_null(), "{p:#}");
        assert!(p["cross_cert_not_after"].is_string(), "{p:#}");
        assert_eq!(
            p["endpoints"],
            serde_json::json!([net.node(y).endpoint()]),
            "{p:#}"
        );
    }

    // The human-readable table and the --json output of the CLI.
    let table = peer_gateway(args!["status", "--admin", net.node("a").admin_arg()]);
    table.assert_success();
    for y in ["b", "c"] {
        let line = table
            .stdout
            .lines()
            .find(|l| l.starts_with(&net.id(y)))
            .unwrap_or_else(|| panic!("no line for {y} in\n{}", table.stdout));
        assert!(line.contains("connected"), "{line}");
    }
    let json = peer_gateway(args![
        "status",
        "--admin",
        net.node("b").admin_arg(),
        "--json"
    ]);
    json.assert_success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json is JSON");
    assert_eq!(v["node_id"], net.id("b"));

    // Pinging somebody who is not a partner is an error, not a hang.
    let stranger = "0123456789abcdef0123456789abcdef";
    peer_gateway(args![
        "ping",
        stranger,
        "--admin",
        net.node("a").admin_arg()
    ])
    .assert_failure_with("unknown peer");

    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 2. A crashed gateway is shown down, the others back off, a restart relinks
// ---------------------------------------------------------------------------

#[test]
fn crashed_gateway_is_shown_down_and_relinks_after_restart() {
    let mut net = Net::mesh(&ABC);
    net.start_all(&ABC);
    net.wait_all_connected(&ABC, WAIT);
    let ab = since(&net, "a", "b");
    let ba = since(&net, "b", "a");

    net.kill9("c");
    let (_, took) = net.wait("a and b to show c down", WAIT, |net| {
        for x in ["a", "b"] {
            net.check_state(x, "c", &DOWN)?;
        }
        Ok(())
    });
    eprintln!("c shown down {:.2} s after kill -9", took.as_secs_f64());
    for x in ["a", "b"] {
        let p = net.peer_status(x, "c");
        assert!(!field(&p, "last_error").is_empty(), "no last_error: {p:#}");
        assert!(p["direction"].is_null(), "{p:#}");
    }

    // While c is down, a keeps retrying with backoff (at least backoff_base_ms = 100 ms
    // apart) and does not spin: a bounded observation window.
    let pid = net.node("a").pid();
    let attempts = |net: &Net| net.peer_status("a", "c")["attempts"].as_u64().unwrap_or(0);
    let (att0, cpu0, t0) = (attempts(&net), cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (att1, cpu1, window) = (attempts(&net), cpu_time(pid), t0.elapsed());
    let max_attempts = window.as_millis() as u64 / 100 + 2;
    eprintln!(
        "over {:.2} s with c down: {} dial attempts by a, {} ms of CPU",
        window.as_secs_f64(),
        att1.saturating_sub(att0),
        (cpu1 - cpu0).as_millis()
    );
    assert!(
        att1.saturating_sub(att0) <= max_attempts,
        "a dialed c {} times in {window:?}: no backoff",
        att1 - att0
    );
    assert!(
        (cpu1 - cpu0).as_secs_f64() < window.as_secs_f64() * 0.3,
        "a used {:?} of CPU in {window:?} while c was down: spinning?",
        cpu1 - cpu0
    );

    // The a–b link did not notice.
    net.check_state("a", "b", &["connected"]).unwrap();
    net.check_state("b", "a", &["connected"]).unwrap();
    assert_eq!(since(&net, "a", "b"), ab);
    assert_eq!(since(&net, "b", "a"), ba);

    // Restart c with the same config: everything relinks within a few seconds.
    net.start("c");
    let took = net.wait_all_connected(&ABC, Duration::from_secs(15));
    eprintln!("relinked {:.2} s after restarting c", took.as_secs_f64());
    assert_eq!(since(&net, "a", "b"), ab, "the a–b link was replaced");
    assert_eq!(since(&net, "b", "a"), ba, "the a–b link was replaced");
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 3. Simultaneous start: exactly one stable link per pair
// ---------------------------------------------------------------------------

/// `link up` minus `link down` lines of `x`'s log for partner `y`.
fn live_links(net: &Net, x: &str, y: &str) -> (usize, usize) {
    let peer = format!("peer={}", net.id(y));
    (
        net.log_lines(x, &["link up", &peer]).len(),
        net.log_lines(x, &["link down", &peer]).len(),
    )
}

#[test]
fn simultaneous_start_keeps_exactly_one_link_per_pair() {
    let mut net = Net::mesh(&ABC);
    net.start_all(&ABC);
    let took = net.wait_all_connected(&ABC, WAIT);
    eprintln!(
        "connected {:.2} s after a simultaneous start",
        took.as_secs_f64()
    );

    // Every side ends up with exactly one live link per partner (replaced duplicates
    // are logged as down; the tie-break may take a moment to close them).
    net.wait("one live link per partner on every side", WAIT, |net| {
        for x in ABC {
            for y in ABC {
                if x != y {
                    let (up, down) = live_links(net, x, y);
                    if up != down + 1 {
                        return Err(format!("{x}'s log: {up} links up and {down} down for {y}"));
                    }
                }
            }
        }
        Ok(())
    });
    let duplicates: usize = ABC
        .iter()
        .map(|x| net.log_lines(x, &["duplicate"]).len())
        .sum();
    eprintln!("duplicate links closed by the tie-break: {duplicates}");

    // Both ends agree on who dialed the surviving link.
    for (x, y) in [("a", "b"), ("a", "c"), ("b", "c")] {
        let dx = field(&net.peer_status(x, y), "direction").to_string();
        let dy = field(&net.peer_status(y, x), "direction").to_string();
        let consistent =
            (dx == "outbound" && dy == "inbound") || (dx == "inbound" && dy == "outbound");
        assert!(
            consistent,
            "{x} sees its link to {y} as {dx:?}, {y} sees it as {dy:?}"
        );
    }

    // No flapping: over a bounded observation window every link stays up, with the
    // same `since`, and no new link comes up.
    let pairs: Vec<(&str, &str)> = ABC
        .iter()
        .flat_map(|x| ABC.iter().filter(move |y| *y != x).map(move |y| (*x, *y)))
        .collect();
    let before: Vec<(String, (usize, usize))> = pairs
        .iter()
        .map(|(x, y)| (since(&net, x, y), live_links(&net, x, y)))
        .collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        for ((x, y), (s, _)) in pairs.iter().zip(&before) {
            let p = net.peer_status(x, y);
            assert_eq!(field(&p, "state"), "connected", "{x} -> {y} flapped: {p:#}");
            assert_eq!(field(&p, "since"), s, "{x} -> {y} was replaced: {p:#}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for ((x, y), (_, links)) in pairs.iter().zip(&before) {
        assert_eq!(&live_links(&net, x, y), links, "{x}'s links to {y} changed");
    }
    net.terminate_all();
}

#[test]
fn forced_simultaneous_dials_resolve_to_the_same_single_link() {
    // Each gateway dials the other through a proxy that holds the first connection
    // until the other side's first dial has arrived too: both handshakes run at once,
    // so both gateways authenticate two links and the tie-break must pick the same one.
    let mut net = Net::mesh(&["a", "b"]);
    let proxies = GatedProxy::group(
        &[net.node("a").port, net.node("b").port],
        Duration::from_secs(2),
    );
    let (to_a, to_b) = (proxies[0].port, proxies[1].port);
    net.set_config_extra(
        "a",
        &format!(
            "[peers.\"{}\"]\nendpoints = [\"127.0.0.1:{to_b}\"]\n",
            net.id("b")
        ),
    );
    net.set_config_extra(
        "b",
        &format!(
            "[peers.\"{}\"]\nendpoints = [\"127.0.0.1:{to_a}\"]\n",
            net.id("a")
        ),
    );
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    net.wait("one live link per partner on both sides", WAIT, |net| {
        for (x, y) in [("a", "b"), ("b", "a")] {
            let (up, down) = live_links(net, x, y);
            if up != down + 1 {
                return Err(format!("{x}'s log: {up} links up and {down} down for {y}"));
            }
        }
        Ok(())
    });
    let duplicates: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|x| {
            net.log_lines(x, &["duplicate"])
                .into_iter()
                .chain(net.log_lines(x, &["DuplicateLink"]))
        })
        .collect();
    eprintln!("tie-break log lines:\n{}", duplicates.join("\n"));
    assert!(
        !duplicates.is_empty(),
        "no duplicate link was ever seen: the dials were not simultaneous"
    );

    // The surviving link is the one dialed by the node with the smaller id, on both sides.
    let (small, large) = if net.id("a") < net.id("b") {
        ("a", "b")
    } else {
        ("b", "a")
    };
    assert_eq!(
        field(&net.peer_status(small, large), "direction"),
        "outbound"
    );
    assert_eq!(
        field(&net.peer_status(large, small), "direction"),
        "inbound"
    );

    // And it stays: no flapping over a bounded observation window.
    let s1 = since(&net, small, large);
    let s2 = since(&net, large, small);
    let links = (live_links(&net, "a", "b"), live_links(&net, "b", "a"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            since(&net, small, large),
            s1,
            "{small}'s link to {large} was replaced"
        );
        assert_eq!(
            since(&net, large, small),
            s2,
            "{large}'s link to {small} was replaced"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        (live_links(&net, "a", "b"), live_links(&net, "b", "a")),
        links
    );
    net.terminate_all();
    drop(proxies);
}
