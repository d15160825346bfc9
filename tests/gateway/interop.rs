//! Interop with openssl in both directions: `openssl s_client` completes a
//! handshake with the right certificates and is refused with the wrong ones.
//!
//! Run: `cargo test --test gateway interop::`.

use super::*;

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
