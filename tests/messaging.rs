//! End-to-end tests of durable messaging: two `peer-gateway` processes on loopback
//! (CAs made and cross-signed with the real `ca-tool`, gateway keys from
//! `peer-gateway keygen`) move messages between their HTTP APIs for local
//! applications, on SQLite and on PostgreSQL.
//!
//! - exactly once, in order, both ways, while each gateway is killed -9 and
//!   restarted at random moments (seeded; the seed is printed);
//! - the API's answers to bad input (unknown peer, oversized body, bad JSON, bad
//!   token, duplicate Message-Id, full outbox);
//! - the `peer-gateway send` / `recv` helpers;
//! - one Message-Id used with several peers (ids are scoped per peer).
//!
//! Run `cargo build --workspace --bins` first. Every wait is a bounded poll. On
//! failure the gateways are killed and their logs printed (see
//! `peerlink_e2e::gateway::Net`). `PEERLINK_CHAOS_SEED` replays a chaos schedule;
//! `PEERLINK_E2E_MESSAGES` changes the number of messages each way (default 20,000).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{admin_status, peer_gateway_path, wait_for, Net, WAIT};
use peerlink_e2e::messaging::{
    batch_json, parse_inbox, postgres_available, sqlite_url, tail, test_body, wait_outboxes_empty,
    write_messaging_config, Api, Backend, Outgoing, PgDatabase, Received, Response, Rng,
    MESSAGING_LINK,
};
use peerlink_e2e::traffic::{
    chaos_seed, consume, env_count, join_all, join_thread, produce, AbortOnPanic, ConsumerPlan,
    ProducerPlan, Traffic,
};
use peerlink_e2e::{args, run, Outcome};

const AB: [&str; 2] = ["a", "b"];

/// A token for `api_token_file` (at least 16 characters).
const TOKEN: &str = "e2e-token-0123456789abcdef";

/// Sets up nodes a and b (CAs, cross-certs, gateway keys and certificates) with
/// gateway configs on `backend`: `top(name)` adds top-level keys, `link` is the
/// `[link]` table. PostgreSQL databases are pushed to `pg` (declare it before the
/// network, so that the databases are dropped after the gateways are killed).
fn setup(
    backend: Backend,
    pg: &mut Vec<PgDatabase>,
    top: impl Fn(&str) -> String,
    link: &str,
) -> Net {
    let net = Net::mesh(&AB);
    for name in AB {
        let url = match backend {
            Backend::Sqlite => sqlite_url(&net, name),
            Backend::Postgres => {
                let db = PgDatabase::create(name);
                let url = db.url.clone();
                pg.push(db);
                url
            }
        };
        write_messaging_config(net.node(name), &url, &top(name), link);
    }
    net
}

/// Writes [`TOKEN`] to `<name>.token` and rewrites `name`'s config (SQLite store,
/// [`MESSAGING_LINK`]) to require it, after the top-level keys `top`. Returns the
/// token file.
fn require_token(net: &Net, name: &str, top: &str) -> PathBuf {
    let token_file = net.path(&format!("{name}.token"));
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    write_messaging_config(
        net.node(name),
        &sqlite_url(net, name),
        &format!(
            "{top}api_token_file = {:?}\n",
            token_file.display().to_string()
        ),
        MESSAGING_LINK,
    );
    token_file
}

/// Waits until the API of `api` answers `GET /v1/peers/{peer}` (its store is open).
#[track_caller]
fn wait_api(net: &mut Net, name: &str, api: &Api, peer: &str) {
    net.wait(&format!("the API of {name}"), WAIT, |net| {
        net.assert_alive(name);
        api.peer(peer)
    });
}

/// `inbox_depth` of `name`'s admin status.
fn inbox_depth(net: &Net, name: &str) -> Result<i64, String> {
    let status = admin_status(net.node(name).admin())?;
    status["inbox_depth"]
        .as_i64()
        .ok_or_else(|| format!("no inbox_depth in the status of {name}: {status}"))
}

#[track_caller]
fn expect_status(r: &Result<Response, String>, code: u16, what: &str) -> Response {
    match r {
        Ok(r) if r.code == code => r.clone(),
        Ok(r) => panic!("{what}: expected HTTP {code}, got {}", r.describe()),
        Err(e) => panic!("{what}: expected HTTP {code}, request failed: {e}"),
    }
}

/// Asserts HTTP `code` with a JSON `{"error": "..."}` body; returns the message.
#[track_caller]
fn expect_error(r: &Result<Response, String>, code: u16, what: &str) -> String {
    let r = expect_status(r, code, what);
    let v = r
        .json()
        .unwrap_or_else(|e| panic!("{what}: the error is not JSON: {e}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no \"error\" string in {v}"));
    assert!(!msg.is_empty(), "{what}: empty error message");
    msg.to_string()
}

#[track_caller]
fn expect_accepted(r: &Result<Response, String>, what: &str) -> serde_json::Value {
    let r = expect_status(r, 202, what);
    r.json().unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Asserts a 202 that names Message-Id `id` and says whether it was a `duplicate`.
#[track_caller]
fn expect_dedup(r: &Result<Response, String>, what: &str, id: &str, duplicate: bool) {
    let v = expect_accepted(r, what);
    assert_eq!(
        (v["id"].as_str(), v["duplicate"].as_bool()),
        (Some(id), Some(duplicate)),
        "{v}"
    );
}

/// Asserts a 202 to a batch that answers Message-Ids `ids`, `duplicates` of them
/// duplicates.
#[track_caller]
fn expect_batch_dedup(r: &Result<Response, String>, what: &str, ids: &[&str], duplicates: u64) {
    let v = expect_accepted(r, what);
    assert_eq!(v["ids"], serde_json::json!(ids), "{v}");
    assert_eq!(v["duplicates"], duplicates, "{v}");
}

#[track_caller]
fn assert_depth(api: &Api, peer: &str, expected: i64, what: &str) {
    let depth = api
        .outbox_depth(peer)
        .unwrap_or_else(|e| panic!("{what}: outbox depth: {e}"));
    assert_eq!(depth, expected, "{what}: outbox_depth");
}

// ---------------------------------------------------------------------------
// 1. Exactly once, in order, both ways, while the gateways are killed -9
// ---------------------------------------------------------------------------

/// Messages per request in the producers' batches.
const CHUNK: usize = 200;
/// Size of every chaos message body.
const BODY_BYTES: usize = 1024;
/// Media type of the chaos messages (checked on arrival).
const CHAOS_TYPE: &str = "application/x-peerlink-e2e; v=1";
/// Long-poll wait of the consumers, seconds.
const CONSUMER_WAIT_S: u64 = 2;
/// Bound on the drain after the last message was submitted.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);
/// Bound on getting one batch accepted (across gateway restarts).
const BATCH_DEADLINE: Duration = Duration::from_secs(120);

fn messages_per_side() -> usize {
    env_count("PEERLINK_E2E_MESSAGES", 20_000)
}

/// `[link]` of the chaos test: fast timings and a window smaller than a burst, so
/// flow control is exercised too (256 frames or 256 KiB).
fn chaos_link() -> String {
    format!("{MESSAGING_LINK}window_frames = 256\nwindow_bytes = 262144\n")
}

fn chaos(
    net: &Mutex<Net>,
    apis: &[Api; 2],
    ids: &[String; 2],
    seed: u64,
    total: usize,
    sh: &Traffic,
) -> Vec<String> {
    let _guard = AbortOnPanic(&sh.abort);
    let mut rng = Rng::new(seed ^ 0x00c4_a05c_4a05_c4a0);
    let kills = rng.range(4, 6) as usize;
    // Each side at least twice, the rest at random, in random order.
    let mut targets = vec![0usize, 1, 0, 1];
    while targets.len() < kills {
        targets.push(rng.range(0, 1) as usize);
    }
    rng.shuffle(&mut targets);
    let mut log = Vec::new();
    for (k, &t) in targets.iter().enumerate() {
        // One kill per slice of 5%..85% of all progress (accepting plus receiving),
        // at a random point of the slice: spread over the run, whatever its speed.
        let slice = 0.80 / kills as f64;
        let at = ((0.05 + slice * (k as f64 + rng.unit())) * total as f64) as usize;
        while sh.progress.load(Ordering::SeqCst) < at {
            if sh.aborted() {
                return log;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 150)));
        let name = AB[t];
        let progress = sh.progress.load(Ordering::SeqCst);
        net.lock().unwrap_or_else(|p| p.into_inner()).kill9(name);
        let killed_at = sh.secs();
        // Down for a random moment; clients meanwhile get connection refused.
        std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
        net.lock().unwrap_or_else(|p| p.into_inner()).start(name);
        let restarted = Instant::now();
        let other = &ids[1 - t];
        loop {
            if sh.aborted() {
                return log;
            }
            net.lock()
                .unwrap_or_else(|p| p.into_inner())
                .assert_alive(name);
            if apis[t].peer(other).is_ok() {
                break;
            }
            assert!(
                restarted.elapsed() < WAIT,
                "gateway {name} did not answer on its API within {WAIT:?} of a restart"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let line = format!(
            "kill -9 {name} at {killed_at:.2} s (progress {:.0}%), API back {:.2} s after restart",
            100.0 * progress as f64 / total as f64,
            restarted.elapsed().as_secs_f64()
        );
        eprintln!("[{:7.2}s] chaos: {line}", sh.secs());
        log.push(line);
    }
    sh.chaos_finished.store(true, Ordering::SeqCst);
    log
}

fn exactly_once_under_crashes(backend: Backend) {
    let test = format!("exactly_once_under_crashes ({backend:?})");
    if backend == Backend::Postgres && !postgres_available(&test) {
        return;
    }
    let n = messages_per_side();
    let seed = chaos_seed();
    eprintln!(
        "{test}: {n} messages each way; chaos seed {seed} (replay with PEERLINK_CHAOS_SEED={seed})"
    );
    let setup_start = Instant::now();
    let mut pg = Vec::new();
    let mut net = setup(
        backend,
        &mut pg,
        |_| "max_message_bytes = 65536\n".to_string(),
        &chaos_link(),
    );
    net.start_all(&AB);
    net.wait_all_connected(&AB, WAIT);
    let ids = [net.id("a"), net.id("b")];
    let apis = [Api::of(net.node("a")), Api::of(net.node("b"))];
    eprintln!(
        "set-up (CAs, certificates, gateways linked) took {:.1} s",
        setup_start.elapsed().as_secs_f64()
    );
    let net = Mutex::new(net);
    let sh = Traffic::new();
    let total = 4 * n;
    let mut failures: Vec<String> = Vec::new();
    let mut drained_at = None;
    // a sends to b through a's API (seed ^ 1), b to a (seed ^ 2); each retries
    // through its one API after a random 20-80 ms and probes 5% of its batches.
    let producer = |t: usize| ProducerPlan {
        sender: AB[t],
        peer_id: &ids[1 - t],
        n,
        chunk: CHUNK,
        body_bytes: BODY_BYTES,
        content_type: CHAOS_TYPE,
        batch_deadline: BATCH_DEADLINE,
        busy_pause: Duration::from_millis(100),
        error_pause_ms: 20..=80,
        probe_rate: 0.05,
        pace: Duration::ZERO,
        seed: seed ^ (t as u64 + 1),
    };
    // a's consumer receives from b (slot 0), b's from a (slot 1); bare-id acks.
    let consumer = |t: usize| ConsumerPlan {
        receiver: AB[t],
        slot: t,
        sender: AB[1 - t],
        sender_id: &ids[1 - t],
        content_type: CHAOS_TYPE,
        wait_s: CONSUMER_WAIT_S,
        ack_with_sender: false,
    };
    let (producers, consumers, kills) = std::thread::scope(|s| {
        let (sh, apis, ids, net) = (&sh, &apis, &ids, &net);
        let (plan_pa, plan_pb) = (producer(0), producer(1));
        let (plan_ca, plan_cb) = (consumer(0), consumer(1));
        let pa = s.spawn(move || produce(std::slice::from_ref(&apis[0]), &plan_pa, sh));
        let pb = s.spawn(move || produce(std::slice::from_ref(&apis[1]), &plan_pb, sh));
        let ca = s.spawn(move || consume(std::slice::from_ref(&apis[0]), &plan_ca, sh));
        let cb = s.spawn(move || consume(std::slice::from_ref(&apis[1]), &plan_cb, sh));
        let ch = s.spawn(move || chaos(net, apis, ids, seed, total, sh));
        let producers = join_all([(pa, "producer a"), (pb, "producer b")], &mut failures);
        let drained = sh.drain(
            n,
            DRAIN_DEADLINE,
            "the producers finished",
            || [apis[0].outbox_depth(&ids[1]), apis[1].outbox_depth(&ids[0])],
            || {
                if !sh.chaos_finished.load(Ordering::SeqCst) {
                    return None;
                }
                let mut net = net.lock().unwrap_or_else(|p| p.into_inner());
                let dead: Vec<String> = net
                    .nodes
                    .iter_mut()
                    .filter_map(|node| (!node.is_running()).then(|| node.name.clone()))
                    .collect();
                (!dead.is_empty()).then(|| {
                    format!("gateway(s) {dead:?} stopped running on their own while draining")
                })
            },
        );
        match drained {
            Ok(at) => drained_at = Some(at),
            Err(e) => failures.push(e),
        }
        sh.stop.store(true, Ordering::SeqCst);
        let consumers = join_all([(ca, "consumer a"), (cb, "consumer b")], &mut failures);
        sh.abort.store(true, Ordering::SeqCst); // stops the chaos thread if still waiting
        let kills = join_thread(ch, "chaos", &mut failures).unwrap_or_default();
        (producers, consumers, kills)
    });
    let mut net = net.into_inner().unwrap_or_else(|p| p.into_inner());

    // Final state: every outbox and inbox empty.
    if failures.is_empty() {
        for (t, name) in AB.iter().enumerate() {
            match apis[t].outbox_depth(&ids[1 - t]) {
                Ok(0) => {}
                other => failures.push(format!("{name}'s outbox at the end: {other:?}")),
            }
            match apis[t].peek_all() {
                Ok(left) if left.is_empty() => {}
                Ok(left) => failures.push(format!(
                    "{name}'s inbox still holds {} messages after everything was acknowledged: {:?}",
                    left.len(),
                    left.iter().take(10).map(|m| &m.id).collect::<Vec<_>>()
                )),
                Err(e) => failures.push(format!("{name}'s inbox at the end: {e}")),
            }
            match inbox_depth(&net, name) {
                Ok(0) => {}
                other => failures.push(format!("{name}'s admin inbox_depth at the end: {other:?}")),
            }
        }
    }

    // Exactly once and in order, per direction.
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "{test}: seed {seed}, {n} messages each way, drained at {}",
        drained_at.map_or("never".to_string(), |t| format!("{t:.1} s"))
    );
    for k in &kills {
        let _ = writeln!(summary, "  {k}");
    }
    if kills.len() < 4 {
        failures.push(format!(
            "only {} kills happened (4 to 6 planned)",
            kills.len()
        ));
    }
    for p in &producers {
        let _ = writeln!(summary, "  {}", p.summary());
        p.add_failures(n, &mut failures);
    }
    for c in &consumers {
        c.judge(n, &mut summary, &mut failures);
    }
    eprint!("{summary}");
    if !failures.is_empty() {
        for name in AB {
            eprintln!(
                "--- last 60 lines of {name}'s log ---\n{}",
                tail(&net.node(name).log_text(), 60)
            );
        }
        panic!(
            "{test} FAILED (seed {seed}; replay with PEERLINK_CHAOS_SEED={seed}):\n  - {}\n{summary}",
            failures.join("\n  - ")
        );
    }
    // Both stop cleanly after all that.
    net.terminate_all();
    eprintln!(
        "{test}: passed in {:.1} s ({:.1} s of traffic)",
        setup_start.elapsed().as_secs_f64(),
        sh.secs()
    );
}

#[test]
fn exactly_once_under_crashes_sqlite() {
    exactly_once_under_crashes(Backend::Sqlite);
}

#[test]
fn exactly_once_under_crashes_postgres() {
    exactly_once_under_crashes(Backend::Postgres);
}

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

// ---------------------------------------------------------------------------
// 4. One Message-Id used with several peers
// ---------------------------------------------------------------------------

/// Message ids are the client's, scoped per peer: the same id sent to two peers
/// is two messages, and the same id received from two peers is two messages. Each
/// must arrive, and acknowledging one must not remove the other.
#[test]
fn same_message_id_with_different_peers() {
    const ABC: [&str; 3] = ["a", "b", "c"];
    const ROUNDS: usize = 100;
    let mut net = Net::mesh(&ABC);
    for name in ABC {
        write_messaging_config(net.node(name), &sqlite_url(&net, name), "", MESSAGING_LINK);
    }
    net.start_all(&ABC);
    net.wait_all_connected(&ABC, WAIT);
    let ids: Vec<String> = ABC.iter().map(|n| net.id(n)).collect();
    let apis: Vec<Api> = ABC.iter().map(|n| Api::of(net.node(n))).collect();

    // a sends "shared-i" to b and to c at the same moment, ROUNDS times: the API
    // commits concurrent requests together, and neither may be taken for a
    // duplicate of the other.
    let barrier = std::sync::Barrier::new(2);
    let sending = AtomicBool::new(true);
    let answers: Vec<Vec<serde_json::Value>> = std::thread::scope(|s| {
        // Background load keeps the committer busy, so that the two requests of a
        // round queue up behind it and are committed in one group.
        let load = s.spawn(|| {
            let mut k = 0;
            while sending.load(Ordering::SeqCst) {
                let batch: Vec<Outgoing> = (0..100)
                    .map(|j| Outgoing::new(&format!("load-{k}-{j}"), test_body("load", j, 1024)))
                    .collect();
                expect_accepted(&apis[0].send_batch(&ids[1], &batch), "load batch");
                k += 1;
            }
        });
        let handles: Vec<_> = [1usize, 2]
            .iter()
            .map(|&to| {
                let (api, peer, barrier) = (&apis[0], &ids[to], &barrier);
                s.spawn(move || {
                    (0..ROUNDS)
                        .map(|i| {
                            barrier.wait();
                            let id = format!("shared-{i}");
                            let r = api.send(peer, Some("text/plain"), Some(&id), id.as_bytes());
                            expect_accepted(&r, &format!("{id} to {}", ABC[to]))
                        })
                        .collect()
                })
            })
            .collect();
        let answers = handles
            .into_iter()
            .map(|h| h.join().expect("sender thread"))
            .collect();
        sending.store(false, Ordering::SeqCst);
        load.join().expect("load thread");
        answers
    });
    let mut wrongly_duplicate = Vec::new();
    for (k, list) in answers.iter().enumerate() {
        for (i, v) in list.iter().enumerate() {
            assert_eq!(v["id"], format!("shared-{i}"), "{v}");
            if v["duplicate"] != false {
                wrongly_duplicate.push(format!("shared-{i} to {}", ABC[k + 1]));
            }
        }
    }
    let mut delivered = Vec::new();
    for to in [1usize, 2] {
        wait_outboxes_empty(
            &format!("a's outbox to {} to drain", ABC[to]),
            &[(&apis[0], &ids[to])],
        );
        let taken = apis[to].take_all().expect("inbox (read and acknowledged)");
        delivered.push(taken.iter().filter(|m| m.id.starts_with("shared-")).count());
    }
    assert!(
        wrongly_duplicate.is_empty() && delivered == [ROUNDS, ROUNDS],
        "the same Message-Id sent to two peers at once must be two messages: {} of {} sends \
         were answered duplicate=true ({:?}...), and b and c received {delivered:?} of {ROUNDS} each",
        wrongly_duplicate.len(),
        2 * ROUNDS,
        &wrongly_duplicate[..wrongly_duplicate.len().min(5)]
    );

    // b and c each send "same-0..2" to a; a acknowledges one message at a time.
    for from in [1usize, 2] {
        for j in 0..3 {
            let id = format!("same-{j}");
            let body = format!("{id} from {}", ABC[from]);
            expect_accepted(
                &apis[from].send(&ids[0], Some("text/plain"), Some(&id), body.as_bytes()),
                &format!("{id} from {}", ABC[from]),
            );
        }
    }
    wait_outboxes_empty(
        "b's and c's outboxes to a to drain",
        &[(&apis[1], &ids[0]), (&apis[2], &ids[0])],
    );
    let mut received = Vec::new();
    loop {
        let page = apis[0].inbox(1, 0).expect("a's inbox");
        let Some(m) = page.first() else { break };
        received.push(String::from_utf8_lossy(&m.body).into_owned());
        // A bare id used by both b and c is ambiguous: refused, nothing removed.
        let bare = apis[0]
            .ack_raw(serde_json::json!({ "ids": [m.id] }).to_string().as_bytes())
            .expect("ack");
        if received.len() == 1 {
            // Nothing acknowledged yet: the other sender's copy is there.
            assert_eq!(
                bare.code,
                409,
                "a bare ambiguous id must be refused: {}",
                bare.text()
            );
        }
        assert!(bare.code == 409 || bare.code == 200, "{}", bare.text());
        assert_eq!(
            apis[0]
                .ack_from(&[(m.from.as_str(), m.id.as_str())])
                .expect("ack"),
            u64::from(bare.code != 200),
            "one ack removes one message"
        );
        assert!(received.len() <= 6, "more than 6 messages: {received:?}");
    }
    received.sort();
    assert_eq!(
        received,
        vec![
            "same-0 from b",
            "same-0 from c",
            "same-1 from b",
            "same-1 from c",
            "same-2 from b",
            "same-2 from c"
        ],
        "acknowledging a's message from one peer removed a message with the same id from the other"
    );
    net.terminate_all();
}

/// A crash between the partner's commit and our processing of its ack leaves
/// messages in our outbox that the partner already stored. With a smaller
/// window on the next link, the partner's cumulative ack is higher than what
/// this link sent: that is legitimate, the messages are delivered, and nothing
/// may be delivered twice (nor a new epoch started).
#[test]
fn acknowledgements_lost_in_a_crash_do_not_cause_redelivery() {
    let mut net = Net::mesh(&["a", "b"]);
    let urls: Vec<String> = ["a", "b"].iter().map(|n| sqlite_url(&net, n)).collect();
    write_messaging_config(
        net.node("a"),
        &urls[0],
        "",
        &format!("{MESSAGING_LINK}window_frames = 512\n"),
    );
    write_messaging_config(net.node("b"), &urls[1], "", MESSAGING_LINK);
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let (a, b) = (Api::of(net.node("a")), Api::of(net.node("b")));
    let bid = net.id("b");
    let batch: Vec<Outgoing> = (0..600)
        .map(|i| Outgoing::new(&format!("p-{i}"), vec![b'x'; 100]))
        .collect();
    assert_eq!(a.send_batch(&bid, &batch).unwrap().code, 202);
    wait_outboxes_empty("a's outbox to drain", &[(&a, &bid)]);
    b.take_all().unwrap();
    // Put a's store in the state a kill -9 leaves between b's commit and a's ack.
    net.terminate("a");
    let db = net.path("a-messages.db");
    let py = format!(
        r#"
import sqlite3
c = sqlite3.connect({db:?})
for i in range(600):
    c.execute("INSERT INTO outbox (peer_id, seq, message_id, content_type, body, created_ms) VALUES (?,?,?,?,?,0)", ({bid:?}, i+1, "p-%d" % i, "application/octet-stream", b"x"*100))
c.execute("UPDATE outbox_state SET acked_seq = 0 WHERE peer_id = ?", ({bid:?},))
c.commit()
"#,
        db = db.display().to_string()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&py)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_messaging_config(
        net.node("a"),
        &urls[0],
        "",
        &format!("{MESSAGING_LINK}window_frames = 4\n"),
    );
    net.start("a");
    wait_outboxes_empty("a's restored outbox to be acknowledged", &[(&a, &bid)]);
    // b stores before it acknowledges: anything re-delivered would be in its inbox now.
    let again = b.peek_all().unwrap();
    assert!(
        again.is_empty(),
        "{} messages were delivered twice",
        again.len()
    );
    let log = net.node("a").log_text();
    assert!(
        !log.contains("new outbox epoch"),
        "a started a new epoch:\n{log}"
    );
    net.terminate_all();
}
