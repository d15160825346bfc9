//! Hostile input on an authenticated link and in the handshake: oversized frames
//! close that link only (without the memory), and presented chains longer than
//! `MAX_PRESENTED_INTERMEDIATES` are refused before any signature is checked.
//!
//! Run: `cargo test --test hostile link::`.

use peer_gateway::frame::{Frame, GoodbyeCode, PROTOCOL_VERSION};
use peerlink_e2e::raw_peer::{header, hello, message, raw_frame, RawPeer};
use peerlink_e2e::{args, read_text};
use peerlink_tls::MAX_PRESENTED_INTERMEDIATES;

use super::*;

// ---------------------------------------------------------------------------
// 4. Oversized frames close that link only
// ---------------------------------------------------------------------------

#[test]
fn oversized_frames_close_that_link_only() {
    let _serial = serial();
    let mut net = Net::mesh(&["a", "b", "c"]);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let ab = field(&net.peer_status("a", "b"), "since").to_string();
    let ba = field(&net.peer_status("b", "a"), "since").to_string();
    let rss_before = rss_kib(net.node("a").pid());
    let c_id = net.id("c");
    let rt = runtime();

    // c's gateway is not running; the test speaks for it with its real certificates.
    let mut c = rt
        .block_on(RawPeer::connect(&net, "c", "a"))
        .expect("raw link as c");
    rt.block_on(async {
        c.send_frame(hello(&c_id, PROTOCOL_VERSION)).await?;
        c.expect("a's Hello", |f| matches!(f, Frame::Hello { .. }))
            .await?;
        // At the limit (default max_frame_bytes = 1,114,112): an ignorable frame type
        // (0x80..) of exactly the largest payload is accepted and skipped...
        c.send(&raw_frame(0x80, &vec![0x5a; 1_114_112])).await?;
        // ...and the link still answers a ping afterwards.
        c.send_frame(Frame::Ping { nonce: 77 }).await?;
        c.expect("the Pong to ping 77", |f| *f == Frame::Pong { nonce: 77 })
            .await?;
        Ok::<(), String>(())
    })
    .expect("a frame at the limit");
    net.check_state("a", "c", &["connected"]).unwrap();

    // A header claiming 4 GiB: refused from the header alone, the link closed with
    // Goodbye(frame_too_large).
    let closed = rt
        .block_on(async {
            c.send(&header(message(1, "m", b"").frame_type(), u32::MAX))
                .await?;
            c.until_closed(Duration::from_secs(10)).await
        })
        .expect("reading until a closes the link");
    let (code, reason) = closed.goodbye.expect("a closed the link without a Goodbye");
    assert_eq!(code, GoodbyeCode::FrameTooLarge, "goodbye reason: {reason}");
    assert!(reason.contains("4294967295"), "{reason}");
    let line = net.wait_log_line(
        "a",
        &["link down", &format!("peer={c_id}"), "exceeds the limit"],
        WAIT,
    );
    eprintln!("a logged: {line}");
    // (c's status entry is not checked for the reason: a's dialer, failing to reach
    // c's stopped gateway, overwrites last_error within a backoff period.)
    let p = net.peer_status("a", "c");
    assert_ne!(field(&p, "state"), "connected", "{p:#}");

    // One byte over the limit: the same.
    let mut c = rt
        .block_on(RawPeer::connect(&net, "c", "a"))
        .expect("raw link as c again");
    let closed = rt
        .block_on(async {
            c.send_frame(hello(&c_id, PROTOCOL_VERSION)).await?;
            c.expect("a's Hello", |f| matches!(f, Frame::Hello { .. }))
                .await?;
            c.send(&header(0x80, 1_114_113)).await?;
            c.until_closed(Duration::from_secs(10)).await
        })
        .expect("reading until a closes the link");
    let goodbye = closed.goodbye;
    assert_eq!(
        goodbye.as_ref().map(|g| g.0),
        Some(GoodbyeCode::FrameTooLarge),
        "{goodbye:?}"
    );

    // Nothing else moved: the a–b link is the same one, nothing was refused, a did not
    // allocate the claimed sizes.
    net.assert_alive("a");
    for (x, y, since) in [("a", "b", &ab), ("b", "a", &ba)] {
        let p = net.peer_status(x, y);
        assert_eq!(field(&p, "state"), "connected", "{x} -> {y}: {p:#}");
        assert_eq!(field(&p, "since"), since, "{x} -> {y} was replaced: {p:#}");
    }
    assert_eq!(refusals(&net.status("a")), BTreeMap::new());
    ping(&net, "a", "b").expect("ping a -> b");
    let rss_after = rss_kib(net.node("a").pid());
    eprintln!("a's RSS: {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "a's memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// 5. Presented chain length
// ---------------------------------------------------------------------------

/// At most `MAX_PRESENTED_INTERMEDIATES` (4) certificates besides the leaf: c's
/// genuine chain padded to 4 is still accepted (c is authenticated; the link set-up
/// then fails because openssl sends no Hello), padded to 5 it is refused with
/// `chain_too_long` before any signature is checked.
#[test]
fn presented_chains_longer_than_the_cap_are_refused() {
    let _serial = serial();
    assert_eq!(MAX_PRESENTED_INTERMEDIATES, 4, "update this test");
    let mut net = Net::mesh(&["a", "b", "c"]);
    net.add_node("d");
    net.start("a");
    net.wait_admin("a");
    let c_id = net.id("c");
    let c = net.node("c");
    let (cert, key) = (c.server_cert.clone(), c.server_key.clone());
    // Certificates that are not c's issuer, as padding (openssl sends the file as is).
    let padding: Vec<String> = net.chain_padding().iter().map(|p| read_text(p)).collect();
    let genuine = read_text(&net.cross_cert("c", "a"));
    let chain_file = |n: usize| {
        let path = net.path(&format!("c-chain-{n}.pem"));
        let mut text = genuine.clone();
        for p in &padding[..n - 1] {
            text.push_str(p);
        }
        fs::write(&path, text).unwrap();
        path
    };
    let four = chain_file(4);
    let five = chain_file(5);

    let out = net.s_client(
        "a",
        &args!["-cert", &cert, "-key", &key, "-cert_chain", &four],
    );
    eprintln!("s_client with 4 intermediates: {}", out.status);
    net.wait_log_line("a", &["set-up failed", &format!("peer={c_id}")], WAIT);
    assert_eq!(refusals(&net.status("a")), BTreeMap::new());

    let out = net.s_client(
        "a",
        &args!["-cert", &cert, "-key", &key, "-cert_chain", &five],
    );
    eprintln!("s_client with 5 intermediates: {}", out.status);
    net.wait("a to refuse the long chain", WAIT, |net| {
        let got = refusals(&net.try_status("a")?);
        let want: BTreeMap<String, u64> = [("chain_too_long".to_string(), 1)].into();
        if got == want {
            Ok(())
        } else {
            Err(format!("refused_handshakes = {got:?}"))
        }
    });
    let line = net.wait_log_line(
        "a",
        &["refused handshake", "reason=\"chain_too_long\""],
        WAIT,
    );
    assert!(line.contains("5 certificates presented"), "{line}");
    assert_eq!(refused_metric(&metrics(&net, "a"), "chain_too_long"), 1);
    // An unauthenticated chain does not touch c's status.
    let p = net.peer_status("a", "c");
    assert!(p["last_refusal"].is_null(), "{p:#}");
    net.terminate_all();
}
