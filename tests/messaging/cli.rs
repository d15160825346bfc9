//! The command-line helpers `peer-gateway send` (a file, stdin, a batch) and
//! `peer-gateway recv` (with `--ack --json`, a token file), both ways.
//!
//! Run: `cargo test --test messaging cli::`.

use super::*;

// ---------------------------------------------------------------------------
// 3. `peer-gateway send` and `recv`
// ---------------------------------------------------------------------------

/// Runs `peer-gateway args` with `stdin` as standard input.
fn gateway_cli(args: &[std::ffi::OsString], stdin: Option<&[u8]>) -> Outcome {
    let mut cmd = Command::new(peer_gateway_path());
    cmd.args(args);
    match stdin {
        None => run(&mut cmd),
        Some(input) => {
            let command = format!("peer-gateway {args:?} < ({} bytes)", input.len());
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn peer-gateway");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("write stdin");
            let out = child.wait_with_output().expect("wait");
            Outcome {
                command,
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    }
}

/// Runs `peer-gateway send --peer <peer> --api <api> <rest>` with `stdin`.
fn cli_send(peer: &str, api: &str, rest: Vec<std::ffi::OsString>, stdin: Option<&[u8]>) -> Outcome {
    let mut all = args!["send", "--peer", peer, "--api", api];
    all.extend(rest);
    gateway_cli(&all, stdin)
}

/// Receives with `recv --ack --json` until `count` messages came, bounded.
fn recv_all(api: &str, token: Option<&Path>, count: usize) -> Vec<Received> {
    let mut got: Vec<Received> = Vec::new();
    wait_for(
        &format!("{count} messages through `recv --ack --json`"),
        WAIT,
        || {
            let mut a = args!["recv", "--api", api, "--wait", "2", "--ack", "--json"];
            if let Some(t) = token {
                a.extend(args!["--token-file", t]);
            }
            let out = gateway_cli(&a, None);
            out.assert_success();
            let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
                .unwrap_or_else(|e| panic!("recv --json printed no JSON ({e}): {}", out.stdout));
            got.extend(parse_inbox(&v).expect("inbox JSON"));
            if got.len() >= count {
                Ok(())
            } else {
                Err(format!("{} so far", got.len()))
            }
        },
    );
    got
}

#[test]
fn cli_send_and_recv_round_trip() {
    let mut pg = Vec::new();
    let mut net = setup(Backend::Sqlite, &mut pg, |_| String::new(), MESSAGING_LINK);
    // b requires a token; a does not.
    let token_file = require_token(&net, "b", "");
    net.start_all(&AB);
    net.wait_all_connected(&AB, WAIT);
    let (aid, bid) = (net.id("a"), net.id("b"));
    let a_api = format!("127.0.0.1:{}", net.node("a").api_port);
    let b_api = format!("127.0.0.1:{}", net.node("b").api_port);

    // a -> b: from a file with a Message-Id, from stdin with the default type, and
    // a binary body with a parameterised type.
    let text = "Grüße aus A, ✓ été\nline two\n".as_bytes();
    let file = net.path("message.txt");
    std::fs::write(&file, text).expect("write message");
    let out = cli_send(
        &bid,
        &a_api,
        args![
            "--content-type",
            "text/plain; charset=utf-8",
            "--message-id",
            "cli-1",
            &file
        ],
        None,
    );
    out.assert_success();
    assert_eq!(out.stdout.trim(), "cli-1", "send prints the message id");
    let raw = b"from stdin, default type".to_vec();
    let out = cli_send(&bid, &a_api, args!["-"], Some(&raw));
    out.assert_success();
    let stdin_id = out.stdout.trim().to_string();
    assert!(
        !stdin_id.is_empty() && stdin_id != "cli-1",
        "generated id {stdin_id:?}"
    );
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let out = cli_send(
        &bid,
        &a_api,
        args![
            "--content-type",
            "application/vnd.example+octets; version=\"2\""
        ],
        Some(&binary),
    );
    out.assert_success();
    let binary_id = out.stdout.trim().to_string();
    // Retrying with the same Message-Id prints the same id and stores nothing new.
    let out = cli_send(&bid, &a_api, args!["--message-id", "cli-1", &file], None);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "cli-1");

    // b's API wants the token: recv without it fails cleanly.
    gateway_cli(&args!["recv", "--api", &b_api, "--wait", "0"], None).assert_failure_with("401");

    let got = recv_all(&b_api, Some(&token_file), 3);
    let summary: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|m| (m.id.as_str(), m.from.as_str(), m.content_type.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("cli-1", aid.as_str(), "text/plain; charset=utf-8"),
            (stdin_id.as_str(), aid.as_str(), "application/octet-stream"),
            (
                binary_id.as_str(),
                aid.as_str(),
                "application/vnd.example+octets; version=\"2\""
            ),
        ],
        "ids, senders and content types kept end to end, in order, once"
    );
    assert_eq!(got[0].body, text);
    assert_eq!(got[1].body, raw);
    assert_eq!(got[2].body, binary);
    for m in &got {
        assert!(
            m.received_at.len() >= 20 && m.received_at.ends_with('Z'),
            "received_at is RFC 3339 UTC: {:?}",
            m.received_at
        );
    }
    // --ack removed them.
    let out = gateway_cli(
        &args![
            "recv",
            "--api",
            &b_api,
            "--token-file",
            &token_file,
            "--json"
        ],
        None,
    );
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert!(
        parse_inbox(&v).expect("inbox").is_empty(),
        "recv --ack left: {v}"
    );

    // b -> a with the token, read by the plain-text recv.
    let out = cli_send(
        &aid,
        &b_api,
        args![
            "--token-file",
            &token_file,
            "--content-type",
            "text/x-reply",
            "--message-id",
            "reply-1"
        ],
        Some(b"thanks, B"),
    );
    out.assert_success();
    let printed = wait_for("the reply in a's inbox", WAIT, || {
        let out = gateway_cli(
            &args!["recv", "--api", &a_api, "--wait", "2", "--ack"],
            None,
        );
        out.assert_success();
        if out.stdout.trim().is_empty() {
            Err("nothing yet".into())
        } else {
            Ok(out.stdout)
        }
    })
    .0;
    for part in ["reply-1", bid.as_str(), "text/x-reply", "thanks, B"] {
        assert!(
            printed.contains(part),
            "recv output lacks {part:?}: {printed}"
        );
    }

    // Errors are clean: unknown peer, unreadable file, nobody listening.
    cli_send(
        "0123456789abcdef0123456789abcdef",
        &a_api,
        args![&file],
        None,
    )
    .assert_failure_with("404");
    cli_send(&bid, &a_api, args![net.path("no-such-file")], None)
        .assert_failure_with("no-such-file");
    let closed = format!("127.0.0.1:{}", peerlink_e2e::gateway::free_port());
    cli_send(&bid, &closed, args![&file], None).assert_failure_with("cannot reach");
    net.terminate_all();
}
