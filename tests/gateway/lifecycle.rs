//! A gateway's life: SIGTERM says Goodbye and exits 0, a second gateway on the
//! same SQLite store refuses to start, heartbeats detect a frozen partner, a
//! reload picks up a new partner and a renewed certificate without dropping a
//! link, and idle links close and reopen on demand.
//!
//! Run: `cargo test --test gateway lifecycle::`.

use super::*;

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
