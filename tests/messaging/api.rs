//! The API's answers to bad input: a missing or wrong token (401), an unknown
//! peer (404), a body over `max_message_bytes` (413), bad JSON, fields, ids and
//! limits (400), a full outbox (503 with Retry-After); refused requests store
//! nothing. A duplicate Message-Id is answered with the original id and stored
//! once, before and after delivery; the outbox drains in order, once.
//!
//! Run: `cargo test --test messaging api::`.

use super::*;

// ---------------------------------------------------------------------------
// 2. The API's answers to bad input
// ---------------------------------------------------------------------------

#[test]
fn api_rejects_bad_input_and_deduplicates() {
    let mut pg = Vec::new();
    let mut net = setup(Backend::Sqlite, &mut pg, |_| String::new(), MESSAGING_LINK);
    require_token(
        &net,
        "a",
        "max_message_bytes = 65536\nmax_outbox_messages = 5\n",
    );
    write_messaging_config(
        net.node("b"),
        &sqlite_url(&net, "b"),
        "max_message_bytes = 65536\n",
        MESSAGING_LINK,
    );
    let (aid, bid) = (net.id("a"), net.id("b"));
    let anon = Api::of(net.node("a"));
    let api = anon.with_token(TOKEN);
    let b_api = Api::of(net.node("b"));

    // Only a runs: its messages to b wait in the outbox.
    net.start("a");
    wait_api(&mut net, "a", &api, &bid);

    // --- 401: missing or wrong token, on every endpoint; nothing stored.
    let wrong = anon.with_token("e2e-token-0123456789abcdeX");
    let prefix = anon.with_token(&TOKEN[..TOKEN.len() - 1]);
    let batch = batch_json(&[Outgoing::new("unauth-1", b"x")]);
    for (client, who) in [
        (&anon, "no token"),
        (&wrong, "a wrong token"),
        (&prefix, "a prefix of the token"),
    ] {
        let what = |e: &str| format!("{e} with {who}");
        expect_error(
            &client.send(&bid, None, Some("unauth-1"), b"x"),
            401,
            &what("send"),
        );
        expect_error(
            &client.send_batch_raw(&bid, batch.as_bytes()),
            401,
            &what("batch"),
        );
        expect_error(&client.inbox_raw(10, 0), 401, &what("inbox"));
        expect_error(&client.ack_raw(br#"{"ids":["x"]}"#), 401, &what("ack"));
        expect_error(&client.peer_raw(&bid), 401, &what("peer status"));
    }
    for header in [
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
        format!("Bearer  {TOKEN}x"),
        "Bearer ".to_string(),
    ] {
        let r = anon.request("GET", "/v1/inbox", &[("Authorization", &header)], b"");
        expect_error(&r, 401, &format!("Authorization: {header:?}"));
    }
    // The right token works, and the refused requests stored nothing.
    assert_depth(&api, &bid, 0, "after refused requests");
    let page = expect_status(&api.inbox_raw(10, 0), 200, "inbox with the token");
    assert_eq!(
        parse_inbox(&page.json().expect("json"))
            .expect("inbox")
            .len(),
        0
    );

    // --- 404: unknown peer.
    let unknown = "0123456789abcdef0123456789abcdef";
    let msg = expect_error(
        &api.send(unknown, None, None, b"x"),
        404,
        "send to an unknown peer",
    );
    assert!(msg.contains(unknown), "the 404 names the peer: {msg}");
    expect_error(
        &api.send_batch_raw(unknown, batch.as_bytes()),
        404,
        "batch to an unknown peer",
    );
    expect_error(&api.peer_raw(unknown), 404, "status of an unknown peer");
    expect_error(
        &api.send("not-a-node-id", None, None, b"x"),
        404,
        "send to a malformed peer id",
    );
    // A node's own id is not a peer either.
    expect_error(&api.send(&aid, None, None, b"x"), 404, "send to ourselves");
    assert_depth(&api, &bid, 0, "after 404s");

    // --- 413: larger than max_message_bytes (65536); exactly the limit is fine.
    let limit_body = test_body("a", 65536, 65536);
    let over = vec![b'x'; 65537];
    expect_error(
        &api.send(&bid, None, None, &over),
        413,
        "a body of max_message_bytes + 1",
    );
    expect_status(
        &api.send(&bid, None, None, &vec![b'x'; 300_000]),
        413,
        "a body far above max_message_bytes",
    );
    let big_batch = batch_json(&[
        Outgoing::new("small-1", b"small"),
        Outgoing::new("big-1", over.clone()),
    ]);
    expect_error(
        &api.send_batch_raw(&bid, big_batch.as_bytes()),
        413,
        "a batch with one message over the limit",
    );
    assert_depth(&api, &bid, 0, "after 413s (the batch is all or nothing)");
    let v = expect_accepted(
        &api.send(&bid, Some("application/x-limit"), None, &limit_body),
        "a body of exactly max_message_bytes",
    );
    let limit_id = v["id"].as_str().expect("generated id").to_string();
    assert_eq!(v["duplicate"], false, "{v}");
    assert!(!limit_id.is_empty());
    assert_depth(&api, &bid, 1, "after the first message");

    // --- 400: bad JSON and bad fields in batches and acks, bad Message-Id, bad limit.
    let bad_batches: [(&str, &str); 9] = [
        ("not JSON", "this is not json"),
        ("truncated JSON", r#"{"messages":[{"body_base64":"eA=="}"#),
        ("no messages member", "{}"),
        (
            "messages not a list",
            r#"{"messages":{"body_base64":"eA=="}}"#,
        ),
        ("an empty batch", r#"{"messages":[]}"#),
        (
            "body_base64 not base64",
            r#"{"messages":[{"body_base64":"@@not base64@@"}]}"#,
        ),
        (
            "a message without body_base64",
            r#"{"messages":[{"id":"m-no-body"}]}"#,
        ),
        (
            "an unknown field",
            r#"{"messages":[{"body_base64":"eA==","bdoy":1}]}"#,
        ),
        (
            "a good message then a bad id",
            r#"{"messages":[{"id":"good-1","body_base64":"eA=="},{"id":"has space","body_base64":"eA=="}]}"#,
        ),
    ];
    for (what, body) in bad_batches {
        expect_error(
            &api.send_batch_raw(&bid, body.as_bytes()),
            400,
            &format!("batch with {what}"),
        );
    }
    // More than 1000 messages in one batch.
    let too_many: Vec<Outgoing> = (0..1001)
        .map(|i| Outgoing::new(&format!("many-{i}"), Vec::new()))
        .collect();
    expect_error(
        &api.send_batch(&bid, &too_many),
        400,
        "a batch of 1001 messages",
    );
    let long_id = "i".repeat(129);
    for (what, id) in [("a space", "a b"), ("129 characters", long_id.as_str())] {
        expect_error(
            &api.send(&bid, None, Some(id), b"x"),
            400,
            &format!("Message-Id with {what}"),
        );
    }
    for (what, body) in [
        ("not JSON", "nope"),
        ("no ids", "{}"),
        ("ids not a list", r#"{"ids":"x"}"#),
        ("numbers as ids", r#"{"ids":[1,2]}"#),
    ] {
        expect_error(
            &api.ack_raw(body.as_bytes()),
            400,
            &format!("ack with {what}"),
        );
    }
    for q in ["limit=0", "limit=1001", "limit=abc", "wait=-1"] {
        let r = api.request("GET", &format!("/v1/inbox?{q}"), &[], b"");
        expect_status(&r, 400, &format!("GET /v1/inbox?{q}"));
    }
    assert_eq!(
        api.ack(&["no-such-id".to_string()])
            .expect("ack of an unknown id"),
        0,
        "acknowledging an unknown id removes nothing"
    );
    assert_depth(&api, &bid, 1, "after 400s");

    // --- Duplicate Message-Id: the original id, duplicate=true, nothing new stored.
    expect_dedup(
        &api.send(
            &bid,
            Some("text/plain; charset=utf-8"),
            Some("dup-1"),
            b"the original",
        ),
        "first send of dup-1",
        "dup-1",
        false,
    );
    assert_depth(&api, &bid, 2, "after dup-1");
    expect_dedup(
        &api.send(
            &bid,
            Some("application/json"),
            Some("dup-1"),
            b"{\"changed\":true}",
        ),
        "second send of dup-1",
        "dup-1",
        true,
    );
    assert_depth(&api, &bid, 2, "after resending dup-1");
    let mixed = [
        Outgoing::new("dup-1", b"third body for dup-1"),
        Outgoing::new("batch-1", b"batch one").typed("application/x-batch"),
    ];
    expect_batch_dedup(
        &api.send_batch(&bid, &mixed),
        "batch with dup-1 and a new id",
        &["dup-1", "batch-1"],
        1,
    );
    assert_depth(&api, &bid, 3, "after the mixed batch");
    let twice = [
        Outgoing::new("twice", b"first twice"),
        Outgoing::new("twice", b"second twice"),
    ];
    expect_batch_dedup(
        &api.send_batch(&bid, &twice),
        "a batch with one id twice",
        &["twice", "twice"],
        1,
    );
    assert_depth(&api, &bid, 4, "after the batch with one id twice");

    // --- Full outbox (max_outbox_messages = 5, b is down): 503 with Retry-After.
    let pair = batch_json(&[
        Outgoing::new("pair-1", b"p1"),
        Outgoing::new("pair-2", b"p2"),
    ]);
    let r = api.send_batch_raw(&bid, pair.as_bytes());
    expect_error(&r, 503, "a batch of 2 with room for 1");
    assert_depth(&api, &bid, 4, "after the refused batch (all or nothing)");
    let v = expect_accepted(
        &api.send(&bid, Some("text/plain"), Some("fifth"), b"fifth"),
        "the 5th message",
    );
    assert_eq!(v["id"], "fifth");
    assert_depth(&api, &bid, 5, "full");
    let r = api.send(&bid, Some("text/plain"), Some("sixth"), b"sixth");
    expect_error(&r, 503, "the 6th message");
    let retry_after = r
        .as_ref()
        .ok()
        .and_then(|r| r.header("retry-after").map(str::to_string));
    let secs: Option<u64> = retry_after.as_deref().and_then(|v| v.parse().ok());
    assert!(
        secs.is_some_and(|s| s >= 1),
        "503 without a Retry-After of whole seconds: {:?}",
        r.as_ref().map(Response::describe)
    );
    assert_depth(&api, &bid, 5, "after the refused 6th message");

    // --- b comes up: everything drains, in order, each message once.
    net.start("b");
    wait_outboxes_empty("a's outbox to b to drain", &[(&api, &bid)]);
    let got = b_api.peek_all().expect("b's inbox");
    let summary: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|m| (m.id.as_str(), m.content_type.as_str(), m.from.as_str()))
        .collect();
    let expected = vec![
        (limit_id.as_str(), "application/x-limit", aid.as_str()),
        ("dup-1", "text/plain; charset=utf-8", aid.as_str()),
        ("batch-1", "application/x-batch", aid.as_str()),
        ("twice", "application/octet-stream", aid.as_str()),
        ("fifth", "text/plain", aid.as_str()),
    ];
    assert_eq!(
        summary, expected,
        "b's inbox: each accepted message once, in order"
    );
    assert_eq!(got[0].body, limit_body, "the 64 KiB body arrived intact");
    assert_eq!(
        got[1].body, b"the original",
        "a duplicate never replaces the original"
    );
    assert_eq!(got[3].body, b"first twice");
    // After delivery the id is still remembered: nothing new is stored or sent.
    expect_dedup(
        &api.send(&bid, None, Some("dup-1"), b"late retry"),
        "dup-1 after delivery",
        "dup-1",
        true,
    );
    assert_depth(&api, &bid, 0, "after resending a delivered id");
    let ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
    assert_eq!(b_api.ack(&ids).expect("ack"), 5);
    assert!(
        b_api.peek_all().expect("inbox").is_empty(),
        "acknowledged messages are gone"
    );
    // b has no token configured: its API answers without one.
    let v = expect_accepted(
        &b_api.send(&aid, None, Some("from-b"), b"hi a"),
        "send on b without a token",
    );
    assert_eq!(v["duplicate"], false);
    let got = wait_for("b's message in a's inbox", WAIT, || match api.peek_all() {
        Ok(m) if !m.is_empty() => Ok(m),
        other => Err(format!("{other:?}")),
    })
    .0;
    assert_eq!(
        got.iter()
            .map(|m| (m.id.as_str(), m.from.as_str()))
            .collect::<Vec<_>>(),
        vec![("from-b", bid.as_str())]
    );
    assert_eq!(inbox_depth(&net, "b").expect("b's inbox depth"), 0);
    net.terminate_all();
}
