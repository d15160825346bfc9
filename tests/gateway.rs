//! End-to-end tests of `peer-gateway`: gateways run as separate processes on
//! loopback, with CAs made and cross-signed by the real `ca-tool`, and `openssl`
//! as a TLS stack we did not write. Run `cargo build --workspace --bins` first.
//!
//! Every wait is bounded (poll the admin API until a condition holds, with a
//! deadline); nothing assumes the machine's speed. On failure the gateways' logs
//! and last status are printed (see `peerlink_e2e::gateway::Net`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{
    config_text, field, peer_entry, peer_gateway, read_lossy, refusals, wait_for, GatedProxy, Net,
    WAIT,
};
use peerlink_e2e::{args, mode_of, openssl, read_bytes, run, Outcome};

const ABC: [&str; 3] = ["a", "b", "c"];

/// States of a partner that is not linked.
const DOWN: [&str; 3] = ["backing-off", "connecting", "refused"];

fn since(net: &Net, x: &str, y: &str) -> String {
    field(&net.peer_status(x, y), "since").to_string()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// Waits until `name`'s refused-handshake counters are exactly `expected`.
#[track_caller]
fn wait_refusals(net: &mut Net, name: &str, expected: &BTreeMap<String, u64>) {
    let what = format!("{name}'s refused_handshakes to be {expected:?}");
    net.wait(&what, WAIT, |net| {
        let got = refusals(&net.try_status(name)?);
        if &got == expected {
            Ok(())
        } else {
            Err(format!("refused_handshakes = {got:?}"))
        }
    });
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz: u64 = run(Command::new("getconf").arg("CLK_TCK"))
        .stdout
        .trim()
        .parse()
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

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

// ---------------------------------------------------------------------------
// 4. Refused handshakes, with the reason in status and log
// ---------------------------------------------------------------------------

#[test]
fn refused_handshakes_are_counted_with_their_reason() {
    let mut net = Net::mesh(&ABC);
    net.add_node("d"); // a node that nobody cross-signed
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let ab = since(&net, "a", "b");
    assert_eq!(refusals(&net.status("a")), counts(&[]));
    let refused_line = |net: &Net, reason: &str| {
        let lines = net.log_lines("a", &["refused handshake", &format!("reason=\"{reason}\"")]);
        assert!(
            !lines.is_empty(),
            "a did not log a refused handshake with reason {reason}"
        );
    };

    // (1) No client certificate. The TLS 1.3 handshake completes from the client's point
    // of view; the server refuses the client's (empty) certificate afterwards.
    let out = net.s_client("a", &[]);
    eprintln!("s_client without a certificate: {}", out.status);
    wait_refusals(&mut net, "a", &counts(&[("no_certificate", 1)]));
    refused_line(&net, "no_certificate");

    // (2) An expired certificate that b's root really issued (made with `openssl ca`:
    // `ca-tool sign-server` cannot backdate), with b's genuine cross-cert.
    let (key, csr) = net.keygen("b", "expired", "b-expired");
    let expired = net.path("b-expired.crt");
    net.openssl_sign_leaf_dated("b", &csr, &expired, "20200101000000Z", "20200201000000Z");
    let out = net.s_client(
        "a",
        &args![
            "-cert",
            &expired,
            "-key",
            &key,
            "-cert_chain",
            net.cross_cert("b", "a")
        ],
    );
    assert!(
        !out.all_output().to_lowercase().contains("expired"),
        "the reason leaked to the client:\n{}",
        out.all_output()
    );
    wait_refusals(
        &mut net,
        "a",
        &counts(&[("no_certificate", 1), ("expired", 1)]),
    );
    refused_line(&net, "expired");
    // Counted and logged only: an expired chain proves nothing about who sent it,
    // so b's status (its link is healthy) is untouched.
    let p = net.peer_status("a", "b");
    assert!(p["last_refusal"].is_null(), "{p:#}");
    assert_eq!(field(&p, "state"), "connected", "{p:#}");
    assert_eq!(field(&p, "since"), ab, "{p:#}");

    // (3) A partner nobody registered: d's gateway certificate, no cross-cert.
    let d = net.node("d");
    let (d_cert, d_key) = (d.server_cert.clone(), d.server_key.clone());
    net.s_client("a", &args!["-cert", &d_cert, "-key", &d_key]);
    let mut expected = counts(&[("no_certificate", 1), ("expired", 1), ("unknown_issuer", 1)]);
    wait_refusals(&mut net, "a", &expected);
    refused_line(&net, "unknown_issuer");

    // (3b) d with a genuine cross-cert from a's root, issued on a copy of a's CA that
    // the gateway's node_dir never saw: the chain validates, the partner is unknown.
    let laptop = net.node("a").ca.copy_to(&net.path("a-laptop-copy"));
    let d_by_a = net.path("d-by-a-copy.crt");
    laptop
        .sign_peer(&net.node("d").bundle, &d_by_a, None)
        .assert_success();
    net.s_client(
        "a",
        &args!["-cert", &d_cert, "-key", &d_key, "-cert_chain", &d_by_a],
    );
    expected.insert("unknown_peer".into(), 1);
    wait_refusals(&mut net, "a", &expected);
    refused_line(&net, "unknown_peer");

    // (4) A gateway presenting a certificate for another node: c's root signs a
    // certificate with b's DN (openssl: ca-tool refuses to), and c's gateway presents it.
    // Dialing a, its chain [leaf "b", c-by-a] violates the name constraint of c-by-a;
    // dialed by a, its leaf is not c's DN.
    let (evil_key, evil_csr) = net.keygen("b", "evil", "c-claims-b");
    let evil_cert = net.path("c-claims-b.crt");
    net.openssl_sign_leaf("c", &evil_csr, &evil_cert);
    let evil_config = net.path("c-evil.toml");
    fs::write(
        &evil_config,
        config_text(net.node("c"), &evil_cert, &evil_key, ""),
    )
    .unwrap();
    net.start_with_config("c", &evil_config);
    net.wait("a to refuse the impostor both ways", WAIT, |net| {
        let got = refusals(&net.try_status("a")?);
        let n = |k: &str| got.get(k).copied().unwrap_or(0);
        if n("name_constraint") >= 1 && n("wrong_peer") >= 1 {
            Ok(())
        } else {
            Err(format!("refused_handshakes = {got:?}"))
        }
    });
    refused_line(&net, "name_constraint");
    let dial_refusals = net.log_lines(
        "a",
        &["reason=\"wrong_peer\"", &format!("peer={}", net.id("c"))],
    );
    assert!(
        !dial_refusals.is_empty(),
        "a did not log refusing c's server certificate"
    );
    net.wait("a to show c refused for wrong_peer", WAIT, |net| {
        let p = net.check_state("a", "c", &["refused"])?;
        if field(&p, "last_refusal") == "wrong_peer" {
            Ok(())
        } else {
            Err(format!("{p:#}"))
        }
    });
    net.check_state("b", "c", &DOWN).unwrap();
    // Whose status shows the inbound name_constraint refusal (the leaf claims b; the
    // chain came through c's cross-cert): print it for the record.
    let p = net.peer_status("a", "b");
    eprintln!(
        "a's entry for b after c's impostor attempts: state {}, last_refusal {:?}",
        field(&p, "state"),
        p["last_refusal"]
    );
    assert_eq!(field(&p, "state"), "connected", "{p:#}");
    assert_eq!(field(&p, "since"), ab, "the a–b link was disturbed: {p:#}");
    eprintln!("a's counters: {:?}", refusals(&net.status("a")));
    net.terminate_all();
}

/// A refused handshake must not be attributed to the partner whose DN an
/// unauthenticated leaf merely claims: anybody who can reach the listener could
/// otherwise rewrite that partner's status with a self-signed certificate.
#[test]
fn unauthenticated_refusals_do_not_touch_a_partners_status() {
    let mut net = Net::mesh(&["a", "b"]);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let (key, cert) = (net.path("fake.key"), net.path("fake.crt"));
    let subject = net.node("b").ca.openssl_subject(Some("anyone"));
    let mut a = args!["req", "-x509", "-days", "1", "-nodes", "-keyout", &key, "-out", &cert];
    a.extend(args![
        "-subj",
        subject,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256"
    ]);
    openssl(&a).assert_success();
    net.s_client("a", &args!["-cert", &cert, "-key", &key]);
    wait_refusals(&mut net, "a", &counts(&[("unknown_issuer", 1)]));
    let p = net.peer_status("a", "b");
    assert!(
        p["last_refusal"].is_null() && p["last_error"].is_null(),
        "a stranger's self-signed certificate changed b's status: {p:#}"
    );
}

// ---------------------------------------------------------------------------
// 5. Revoking a peer cuts its link on reload, without a restart
// ---------------------------------------------------------------------------

#[test]
fn revoking_a_peer_cuts_its_link_without_restart() {
    let mut net = Net::mesh(&ABC);
    net.start_all(&ABC);
    net.wait_all_connected(&ABC, WAIT);
    let kept: Vec<((&str, &str), String)> = [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]
        .into_iter()
        .map(|(x, y)| ((x, y), since(&net, x, y)))
        .collect();

    let c_id = net.id("c");
    net.node("a")
        .ca
        .cmd_with_pass("revoke", &args!["--peer", &c_id])
        .assert_success();
    let (_, took) = net.wait("a to show c inactive and c to show a down", WAIT, |net| {
        net.check_state("a", "c", &["inactive"])?;
        net.check_state("c", "a", &DOWN)?;
        Ok(())
    });
    eprintln!(
        "link cut {:.2} s after `ca-tool revoke`",
        took.as_secs_f64()
    );
    let closing = net.log_lines("a", &["closing link", &format!("peer={c_id}")]);
    assert!(!closing.is_empty(), "a did not log why it closed c's link");

    // c keeps dialing and is refused (its cross-cert is on a's CRL); a keeps c inactive.
    net.wait("a to refuse c's redial as revoked", WAIT, |net| {
        let got = refusals(&net.try_status("a")?);
        if got.get("revoked").copied().unwrap_or(0) >= 1 {
            Ok(())
        } else {
            Err(format!("refused_handshakes = {got:?}"))
        }
    });
    net.check_state("a", "c", &["inactive"]).unwrap();
    net.check_state("c", "a", &DOWN).unwrap();

    // a offered its new CRL to b over their link; b stored it and reloaded without
    // dropping anything.
    net.wait_log_line("b", &["newer CRL", &format!("peer={}", net.id("a"))], WAIT);
    for ((x, y), s) in &kept {
        let p = net.peer_status(x, y);
        assert_eq!(field(&p, "state"), "connected", "{x} -> {y}: {p:#}");
        assert_eq!(field(&p, "since"), s, "{x} -> {y} was replaced: {p:#}");
    }
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 6. Interop with openssl, both directions
// ---------------------------------------------------------------------------

#[test]
fn openssl_completes_handshakes_with_the_right_certificates() {
    let mut net = Net::mesh(&["a", "b"]);
    net.start("a");
    net.wait_admin("a");
    let (b_id, a_id) = (net.id("b"), net.id("a"));
    let b = net.node("b");
    let (b_cert, b_key) = (b.server_cert.clone(), b.server_key.clone());

    // openssl s_client as b's gateway: [b's server cert, b-by-a], a's root as anchor.
    let out = net.s_client(
        "a",
        &args![
            "-cert",
            &b_cert,
            "-key",
            &b_key,
            "-cert_chain",
            net.cross_cert("b", "a"),
            "-verify_return_error"
        ],
    );
    for expected in [
        "Verify return code: 0 (ok)",
        "ALPN protocol: peerlink/1",
        "TLSv1.3",
    ] {
        assert!(
            out.stdout.contains(expected),
            "no {expected:?} in\n{}",
            out.all_output()
        );
    }
    // a authenticated it as b (then gave up waiting for a Hello), and refused nothing.
    net.wait_log_line("a", &["set-up failed", &format!("peer={b_id}")], WAIT);
    assert_eq!(refusals(&net.status("a")), counts(&[]));

    // Without a certificate: refused.
    net.s_client("a", &[]);
    wait_refusals(&mut net, "a", &counts(&[("no_certificate", 1)]));

    // TLS 1.2: refused.
    let a_endpoint = net.node("a").endpoint();
    let out = run(Command::new("timeout").args(args![
        "10",
        "openssl",
        "s_client",
        "-connect",
        &a_endpoint,
        "-tls1_2",
        "-cert",
        &b_cert,
        "-key",
        &b_key,
        "-cert_chain",
        net.cross_cert("b", "a")
    ]));
    assert!(
        out.all_output().contains("protocol version"),
        "{}",
        out.all_output()
    );
    wait_refusals(
        &mut net,
        "a",
        &counts(&[("no_certificate", 1), ("tls_error", 1)]),
    );

    // The other direction: a dials an openssl s_server that presents b's server
    // certificate and requires a client certificate chaining to b's root. openssl
    // validates a's chain [a's server cert, a-by-b], name constraint included.
    let transcript = net.path("s_server.out");
    // stdbuf: s_server's stdout goes to a file and must not sit in a buffer.
    let mut server = Command::new("stdbuf")
        .args(args![
            "-o0",
            "openssl",
            "s_server",
            "-accept",
            net.node("b").port.to_string(),
            "-tls1_3",
            "-alpn",
            "peerlink/1",
            "-cert",
            &b_cert,
            "-key",
            &b_key,
            "-CAfile",
            net.node("b").ca.root_cert(),
            "-Verify",
            "2",
            "-verify_return_error",
            "-naccept",
            "1"
        ])
        .stdin(Stdio::piped()) // kept open: s_server stops at end of input
        .stdout(fs::File::create(&transcript).unwrap())
        .stderr(fs::File::create(net.path("s_server.err")).unwrap())
        .spawn()
        .expect("start openssl s_server");
    let result = std::panic::catch_unwind(|| {
        wait_for("openssl s_server to accept a's gateway", WAIT, || {
            let text = read_lossy(&transcript);
            if text.contains("ALPN protocols selected: peerlink/1")
                && text.contains("CIPHER is TLS_")
            {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .0
    });
    let _ = server.kill();
    let _ = server.wait();
    // The verify callback's lines (depth=...) go to stderr.
    let errors = read_lossy(&net.path("s_server.err"));
    let text = match result {
        Ok(text) => format!("{text}\n{errors}"),
        Err(e) => {
            eprintln!("s_server stderr:\n{errors}");
            std::panic::resume_unwind(e)
        }
    };
    assert!(!text.contains("verify error"), "{text}");
    let leaf = format!("depth=0 O = Net, OU = a, serialNumber = {a_id}, CN = gw1");
    assert!(
        text.contains(&leaf),
        "s_server did not verify a's leaf:\n{text}"
    );
    assert!(text.contains("depth=1 O = Net, OU = a"), "{text}");
    assert!(text.contains("depth=2 O = Net, OU = b"), "{text}");
    // a accepted openssl's server certificate (TLS 1.3: the client verifies the server
    // before it sends its own certificate), so a counted no refusal for it.
    assert_eq!(
        refusals(&net.status("a")),
        counts(&[("no_certificate", 1), ("tls_error", 1)])
    );
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 7. Graceful shutdown
// ---------------------------------------------------------------------------

#[test]
fn sigterm_says_goodbye_and_exits_zero() {
    let mut net = Net::mesh(&["a", "b"]);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let (a_id, b_id) = (net.id("a"), net.id("b"));

    let t0 = Instant::now();
    net.terminate("a"); // asserts exit code 0
    eprintln!(
        "a exited 0 {:.2} s after SIGTERM",
        t0.elapsed().as_secs_f64()
    );
    net.wait_log_line("a", &["stopped"], WAIT);
    let line = net.wait_log_line(
        "b",
        &["link down", &format!("peer={a_id}"), "goodbye"],
        Duration::from_secs(5),
    );
    eprintln!("b: {line}");
    net.wait("b to show a down", Duration::from_secs(5), |net| {
        net.check_state("b", "a", &DOWN)
    });

    // SIGINT works the same way.
    net.start("a");
    net.wait_all_connected(&["a", "b"], WAIT);
    let status = net.stop_with("b", "INT");
    assert_eq!(
        status.code(),
        Some(0),
        "b did not exit 0 on SIGINT: {status}"
    );
    net.wait_log_line(
        "a",
        &["link down", &format!("peer={b_id}"), "goodbye"],
        Duration::from_secs(5),
    );
    net.terminate_all();
}

#[test]
fn a_second_gateway_on_the_same_sqlite_store_refuses_to_start() {
    let mut net = Net::mesh(&["a", "b"]);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let a_b = since(&net, "a", "b");

    // The same config (same store, state and CA) on ports of its own, as when an
    // operator runs the gateway by hand beside the service.
    let node = net.node("a");
    let mut text = config_text(node, &node.server_cert, &node.server_key, "");
    for port in [node.port, node.admin_port, node.api_port] {
        let fresh = peerlink_e2e::gateway::free_port();
        text = text.replace(
            &format!("127.0.0.1:{port}\""),
            &format!("127.0.0.1:{fresh}\""),
        );
    }
    assert!(!text.contains(&node.endpoint()), "{text}");
    let out = run_config(&net.dir, "a-second.toml", &text);
    out.assert_stderr_contains("in use by another peer-gateway process")
        .assert_stderr_contains("a-gateway.db");

    // The running gateway did not notice.
    net.assert_alive("a");
    net.check_state("a", "b", &["connected"]).unwrap();
    assert_eq!(since(&net, "a", "b"), a_b, "the a–b link was replaced");
    let ping = peer_gateway(args![
        "ping",
        net.id("b"),
        "--admin",
        net.node("a").admin_arg()
    ]);
    ping.assert_success();

    // Once it has stopped, the store opens again (kill -9 leaves no stale lock).
    net.kill9("a");
    net.start("a");
    net.wait_all_connected(&["a", "b"], WAIT);
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 8. Configuration errors and keygen
// ---------------------------------------------------------------------------

/// `timeout 20 peer-gateway run --config <file with text>`; must fail by itself.
fn run_config(dir: &Path, file: &str, text: &str) -> Outcome {
    let path = dir.join(file);
    fs::write(&path, text).unwrap();
    let out = run(Command::new("timeout").args(args![
        "20",
        peerlink_e2e::gateway::peer_gateway_path(),
        "run",
        "--config",
        &path
    ]));
    assert_ne!(
        out.code(),
        Some(124),
        "the gateway started with {file}:\n{text}"
    );
    out.assert_failure();
    out
}

#[test]
fn config_errors_name_the_key_and_the_line() {
    let mut net = Net::empty();
    net.add_node("a");
    let node = net.node("a");
    let good = config_text(node, &node.server_cert, &node.server_key, "");
    let dir = net.dir.as_path();
    let line_of = |text: &str, start: &str| {
        text.lines()
            .position(|l| l.starts_with(start))
            .expect("line")
            + 1
    };

    // Unknown top-level key.
    let text = good.replacen("listen =", "lisen = \"x\"\nlisten =", 1);
    let n = line_of(&text, "lisen");
    let out = run_config(dir, "unknown.toml", &text);
    out.assert_stderr_contains("lisen")
        .assert_stderr_contains(&format!("line {n}"));

    // Unknown key under [link].
    let text = good.replace("heartbeat_ms = 500", "heartbeat_ms = 500\nheartbeat = 5");
    let n = line_of(&text, "heartbeat =");
    run_config(dir, "unknown-link.toml", &text)
        .assert_stderr_contains("heartbeat")
        .assert_stderr_contains(&format!("line {n}"));

    // Bad listen address.
    let text = good.replacen(
        &format!("listen = \"{}\"", node.endpoint()),
        "listen = \"localhost:7443\"",
        1,
    );
    assert_ne!(text, good);
    let n = line_of(&text, "listen =");
    run_config(dir, "listen.toml", &text)
        .assert_stderr_contains("listen")
        .assert_stderr_contains(&format!("line {n}"));

    // Bad admin address (no port).
    let text = good.replacen(
        &format!("admin_listen = \"{}\"", node.admin()),
        "admin_listen = \"127.0.0.1\"",
        1,
    );
    assert_ne!(text, good);
    let n = line_of(&text, "admin_listen");
    run_config(dir, "admin.toml", &text)
        .assert_stderr_contains("admin_listen")
        .assert_stderr_contains(&format!("line {n}"));

    // A zero where a positive value is needed.
    let text = good.replace("heartbeat_ms = 500", "heartbeat_ms = 0");
    let n = line_of(&text, "heartbeat_ms");
    run_config(dir, "zero.toml", &text)
        .assert_stderr_contains("heartbeat_ms")
        .assert_stderr_contains(&format!("line {n}"));

    // A wrong type.
    let text = good.replace("heartbeat_ms = 500", "heartbeat_ms = \"500\"");
    let n = line_of(&text, "heartbeat_ms");
    run_config(dir, "type.toml", &text)
        .assert_stderr_contains("heartbeat_ms")
        .assert_stderr_contains(&format!("line {n}"));

    // A missing required key.
    let text: String = good
        .lines()
        .filter(|l| !l.starts_with("server_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    run_config(dir, "missing.toml", &text).assert_stderr_contains("server_key");

    // Well-formed, but node_dir is not a CA directory.
    let text = good.replacen(
        &format!("{:?}", node.ca.dir.display().to_string()),
        "\"nowhere\"",
        1,
    );
    assert_ne!(text, good);
    run_config(dir, "nodedir.toml", &text).assert_stderr_contains("nowhere");
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let mut net = Net::empty();
    net.add_node("a");
    let node = net.node("a");
    assert_eq!(
        mode_of(&node.server_key) & 0o077,
        0,
        "the key is readable by others"
    );

    // The CSR carries the node's DN plus the CN.
    let csr = net.path("a-gw.csr");
    let subject = openssl(args![
        "req", "-in", &csr, "-noout", "-subject", "-nameopt", "RFC2253"
    ]);
    subject.assert_success();
    let expected = format!("subject=CN=gw1,serialNumber={},OU=a,O=Net", node.id());
    assert_eq!(subject.stdout.trim(), expected);

    let key_before = read_bytes(&node.server_key);
    let other_csr = net.path("again.csr");
    let out = peer_gateway(args![
        "keygen",
        "--node-dir",
        &node.ca.dir,
        "--out-key",
        &node.server_key,
        "--out-csr",
        &other_csr
    ]);
    out.assert_failure_with_any(&["exists", "overwrite"]);
    assert_eq!(
        read_bytes(&node.server_key),
        key_before,
        "the key was changed"
    );
    assert!(
        !other_csr.exists(),
        "a CSR was written for a refused keygen"
    );
}

// ---------------------------------------------------------------------------
// 9. Heartbeats detect a frozen partner
// ---------------------------------------------------------------------------

#[test]
fn heartbeats_detect_a_frozen_partner() {
    // SIGSTOP keeps b's sockets open, so only heartbeats can tell that it is gone
    // (heartbeat_ms = 500, dead after 3 intervals).
    let mut net = Net::mesh(&["a", "b"]);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    net.signal("b", "STOP");
    let (entry, took) = net.wait("a to declare the link to frozen b dead", WAIT, |net| {
        net.check_state("a", "b", &DOWN)
    });
    net.signal("b", "CONT");
    eprintln!(
        "a noticed the frozen partner after {:.2} s: {}",
        took.as_secs_f64(),
        field(&entry, "last_error")
    );
    let dead = net.log_lines("a", &["link down", &format!("peer={}", net.id("b"))]);
    assert!(
        dead.iter()
            .any(|l| l.contains("dead link") || l.contains("nothing received")),
        "a did not log a heartbeat timeout: {dead:?}"
    );
    let took = net.wait_all_connected(&["a", "b"], WAIT);
    eprintln!("relinked {:.2} s after SIGCONT", took.as_secs_f64());
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 10. Reload: a new partner and a renewed server certificate, no link dropped
// ---------------------------------------------------------------------------

#[test]
fn reload_picks_up_a_new_partner_and_a_renewed_certificate() {
    let mut net = Net::mesh(&["a", "b"]);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let ab = since(&net, "a", "b");
    let ba = since(&net, "b", "a");

    // c joins while a and b run: cross-signed with both, then started. a and b read the
    // change from their CA directories and link up with c, without a restart.
    net.add_node("c");
    net.cross_sign("a", "c");
    net.cross_sign("b", "c");
    net.start("c");
    let took = net.wait_all_connected(&ABC, WAIT);
    eprintln!(
        "new partner c linked {:.2} s after starting it",
        took.as_secs_f64()
    );

    // a's server certificate is renewed in place (new certificate, same key, written
    // to a temporary name and renamed over the old one as an operator would).
    let old_not_after = net.status("a")["server_cert_not_after"].clone();
    let renewed = net.path("a-gw-renewed.crt");
    net.node("a")
        .ca
        .cmd_with_pass(
            "sign-server",
            &args![
                "--csr",
                net.path("a-gw.csr"),
                "--out",
                &renewed,
                "--days",
                "30"
            ],
        )
        .assert_success();
    fs::rename(&renewed, &net.node("a").server_cert).unwrap();
    net.wait("a to use the renewed certificate", WAIT, |net| {
        let now = net.try_status("a")?["server_cert_not_after"].clone();
        if now != old_not_after {
            Ok(())
        } else {
            Err(format!("server_cert_not_after still {now}"))
        }
    });
    // New handshakes present it.
    let out = net.s_client(
        "a",
        &args![
            "-cert",
            &net.node("b").server_cert,
            "-key",
            &net.node("b").server_key,
            "-cert_chain",
            net.cross_cert("b", "a")
        ],
    );
    let presented = peerlink_e2e::pem_block(&out.stdout, "CERTIFICATE");
    let expected = peerlink_e2e::pem_block(
        &peerlink_e2e::read_text(&net.node("a").server_cert),
        "CERTIFICATE",
    );
    assert!(
        presented == expected,
        "a still presents its old certificate:\n{}",
        out.stdout
    );

    // Healthy links stayed up throughout.
    assert_eq!(since(&net, "a", "b"), ab, "the a–b link was replaced");
    assert_eq!(since(&net, "b", "a"), ba, "the a–b link was replaced");
    net.check_state("a", "c", &["connected"]).unwrap();
    net.terminate_all();
}

/// Revoking a partner's cross-certificate by serial (not `--peer`) also stops us
/// from dialing it: a partner we no longer vouch for is not trusted either way.
#[test]
fn revoking_a_cross_cert_by_serial_makes_the_partner_inactive() {
    let mut net = Net::mesh(&["a", "b"]);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let cross = net.cross_cert("b", "a");
    let out = openssl(["x509", "-noout", "-serial", "-in", cross.to_str().unwrap()]);
    out.assert_success();
    let serial = out.stdout.trim().trim_start_matches("serial=").to_string();
    net.node("a")
        .ca
        .cmd_with_pass("revoke", &args!["--serial", &serial])
        .assert_success();
    net.wait("a to show b inactive and b to show a down", WAIT, |net| {
        net.check_state("a", "b", &["inactive"])?;
        net.check_state("b", "a", &DOWN)?;
        Ok(())
    });
    net.terminate_all();
}

/// With `idle_close_ms`, a link without traffic closes on both sides (state
/// `idle`, not redialed), and a ping (demand) reopens it.
#[test]
fn idle_links_close_and_reopen_on_demand() {
    let mut net = Net::mesh(&["a", "b"]);
    for n in ["a", "b"] {
        net.set_config_extra(n, "");
        let config = net.node(n).config.clone();
        let mut text = fs::read_to_string(&config).expect("config");
        text.push_str("\nidle_close_ms = 1500\n");
        fs::write(&config, text).expect("write config");
    }
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    net.wait("both sides to close the idle link", WAIT, |net| {
        net.check_state("a", "b", &["idle"])?;
        net.check_state("b", "a", &["idle"])?;
        Ok(())
    });
    let out = peer_gateway(args![
        "ping",
        net.id("b"),
        "--admin",
        net.node("a").admin_arg()
    ]);
    out.assert_success();
    assert!(out.stdout.contains("pong"), "{}", out.all_output());
    net.check_state("a", "b", &["connected"]).unwrap();
    net.terminate_all();
}
