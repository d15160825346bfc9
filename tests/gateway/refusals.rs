//! Refused handshakes are counted with their reason (status, log), without
//! touching the status of a partner an unauthenticated certificate merely names;
//! revoking a peer (by node or by the serial of its cross-certificate) cuts its
//! link on reload, without a restart.
//!
//! Run: `cargo test --test gateway refusals::`.

use super::*;

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
