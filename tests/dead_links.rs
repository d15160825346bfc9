//! End-to-end tests of links whose path dies silently while messages flow: both
//! gateways must declare the link dead within the dead-link bound (3 heartbeats)
//! plus one heartbeat, relink when the path allows, and deliver every message
//! exactly once, in order.
//!
//! - b behind a real NAT (network namespaces, iptables MASQUERADE; see
//!   `peerlink_e2e::netns`): the NAT forgets its connections (`conntrack -F`);
//! - the same path dropped by iptables for a while, then restored;
//! - a partner that stops reading (SIGSTOP of its process), three times, while
//!   its application's HTTP requests are abandoned mid-flight around each stop
//!   (the pattern that once left a SQLite connection holding the write lock).
//!
//! Run `cargo build --workspace --bins` first. The namespace tests need root,
//! iproute2, iptables and conntrack: under `CI=true` they fail without them,
//! elsewhere they are skipped with a note.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{admin_status, http, peer_entry, Net, WAIT};
use peerlink_e2e::messaging::{sqlite_url, tail, Api};
use peerlink_e2e::netns::NatLab;
use peerlink_e2e::traffic::{
    consume, join_all, join_thread, produce, ConsumerPlan, ProducerPlan, Traffic,
};

const AB: [&str; 2] = ["a", "b"];

/// Heartbeat of both gateways (`LINK`).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Nothing received (or written) for this long: dead (3 heartbeats).
const DEAD_AFTER: Duration = Duration::from_millis(1_500);
/// What the issue asks for: dead within the dead-link bound plus one heartbeat.
/// Observed by polling every 25 ms, which is inside it.
const BOUND: Duration = DEAD_AFTER.saturating_add(HEARTBEAT);

const LINK: &str = "[link]\nheartbeat_ms = 500\ndead_after_heartbeats = 3\n\
                    backoff_base_ms = 100\nbackoff_cap_ms = 1000\nstable_after_ms = 2000\n\
                    reload_poll_ms = 500\nconnect_timeout_ms = 1000\nhandshake_timeout_ms = 3000\n";

const CONTENT_TYPE: &str = "application/x-dead-link-test";

/// One test at a time: each measures how soon a link is declared dead, and two
/// gateways plus traffic per test already load this 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A gateway config: its addresses, its store, endpoint overrides.
fn config(net: &Net, name: &str, listen: &str, api_ip: &str, peers: &str) -> String {
    let node = net.node(name);
    format!(
        "node_dir = {:?}\nserver_cert = {:?}\nserver_key = {:?}\nlisten = {listen:?}\n\
         admin_listen = \"{api_ip}:{}\"\napi_listen = \"{api_ip}:{}\"\n\
         database_url = {:?}\nstate_dir = \"{name}-state\"\nmax_message_bytes = 131072\n\
         {peers}\n{LINK}",
        node.ca.dir.display().to_string(),
        node.server_cert.display().to_string(),
        node.server_key.display().to_string(),
        node.admin_port,
        node.api_port,
        sqlite_url(net, name),
    )
}

/// a in the root namespace, listening on the lab's public address; b behind the
/// NAT, dialing a there. a cannot reach b (its endpoint for b is a closed
/// loopback port), as with any partner behind a NAT.
fn nat_pair(lab: &NatLab) -> Net {
    let mut net = Net::mesh(&AB);
    let (a_id, b_id) = (net.id("a"), net.id("b"));
    let a_listen = format!("{}:{}", lab.public_ip, net.node("a").port);
    let a = config(
        &net,
        "a",
        &a_listen,
        "127.0.0.1",
        &format!("[peers.\"{b_id}\"]\nendpoints = [\"127.0.0.1:1\"]\n"),
    );
    let b = config(
        &net,
        "b",
        &format!("{}:{}", lab.host_ip, net.node("b").port),
        &lab.host_mgmt_ip.to_string(),
        &format!("[peers.\"{a_id}\"]\nendpoints = [{a_listen:?}]\n"),
    );
    std::fs::write(&net.node("a").config, a).expect("write a's config");
    std::fs::write(&net.node("b").config, b).expect("write b's config");
    let node = net.node_mut("b");
    node.launcher = lab.host_prefix();
    node.api_ip = lab.host_mgmt_ip.into();
    net
}

/// a and b behind the NAT of `lab`, started and linked: the gateways, their
/// admin addresses, their node ids and their application APIs.
fn linked_behind_nat(lab: &NatLab) -> (Net, [SocketAddr; 2], [String; 2], [Api; 2]) {
    let mut net = nat_pair(lab);
    let admins = start_linked(&mut net);
    let ids = [net.id("a"), net.id("b")];
    let apis = [
        api(&net, "a", Duration::from_secs(10)),
        api(&net, "b", Duration::from_secs(10)),
    ];
    (net, admins, ids, apis)
}

/// Both on loopback, with the same link tuning.
fn loopback_pair() -> Net {
    let net = Net::mesh(&AB);
    for name in AB {
        let listen = format!("127.0.0.1:{}", net.node(name).port);
        let text = config(&net, name, &listen, "127.0.0.1", "");
        std::fs::write(&net.node(name).config, text).expect("write config");
    }
    net
}

fn api(net: &Net, name: &str, timeout: Duration) -> Api {
    let node = net.node(name);
    Api {
        addr: SocketAddr::new(node.api_ip, node.api_port),
        token: None,
        timeout,
    }
}

/// The link of `name` to `peer` as its status shows it: (state, since).
fn link_of(admin: SocketAddr, peer: &str) -> Option<(String, String)> {
    let status = admin_status(admin).ok()?;
    let entry = peer_entry(&status, peer)?;
    Some((
        entry["state"].as_str()?.to_string(),
        entry["since"].as_str()?.to_string(),
    ))
}

/// `peerlink_links_dead_total` for `peer`, all reasons.
fn dead_count(admin: SocketAddr, peer: &str) -> u64 {
    let Ok((200, text)) = http(admin, "GET", "/metrics") else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("peerlink_links_dead_total{") && l.contains(peer))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Polls until the connected link each side showed at `t0` is gone from its
/// status (replaced, or backing off), or `bound` passes; returns when each let
/// go, measured from `t0`.
fn time_to_let_go(
    sides: &[(&str, SocketAddr, &str, (String, String))],
    t0: Instant,
    bound: Duration,
) -> Vec<(String, Option<Duration>)> {
    let mut out: Vec<(String, Option<Duration>)> =
        sides.iter().map(|(n, ..)| (n.to_string(), None)).collect();
    while t0.elapsed() <= bound + Duration::from_millis(500) {
        for (i, (_, admin, peer, before)) in sides.iter().enumerate() {
            if out[i].1.is_none() && link_of(*admin, peer).is_some_and(|now| now != *before) {
                out[i].1 = Some(t0.elapsed());
            }
        }
        if out.iter().all(|(_, t)| t.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    out
}

/// Waits until both sides show one connected link again.
fn wait_relinked(net: &mut Net, what: &str) -> Duration {
    let start = Instant::now();
    net.wait_all_connected(&AB, WAIT);
    let took = start.elapsed();
    eprintln!("{what}: relinked after {:.2} s", took.as_secs_f64());
    took
}

/// Moves `n` messages of `body_bytes` each way between a and b (producers and
/// consumers through the application APIs, every arrival checked) while
/// `disrupt` breaks things; then drains and judges exactly-once and order.
/// `disrupt` returns lines for the summary and failures.
fn with_traffic(
    test: &str,
    net: Net,
    apis: [Api; 2],
    n: usize,
    body_bytes: usize,
    disrupt: impl FnOnce(&Mutex<Net>, &Traffic) -> (Vec<String>, Vec<String>) + Send,
) -> Net {
    let ids = [net.id("a"), net.id("b")];
    let net = Mutex::new(net);
    let t = Traffic::new();
    let mut failures = Vec::new();
    let producer = |k: usize| ProducerPlan {
        sender: AB[k],
        peer_id: &ids[1 - k],
        n,
        chunk: 20,
        body_bytes,
        content_type: CONTENT_TYPE,
        batch_deadline: Duration::from_secs(60),
        busy_pause: Duration::from_millis(100),
        error_pause_ms: 20..=80,
        probe_rate: 0.0,
        pace: Duration::from_millis(40),
        seed: k as u64 + 1,
    };
    let consumer = |k: usize| ConsumerPlan {
        receiver: AB[k],
        slot: k,
        sender: AB[1 - k],
        sender_id: &ids[1 - k],
        content_type: CONTENT_TYPE,
        wait_s: 1,
        ack_with_sender: true,
    };
    let mut notes = Vec::new();
    let (producers, consumers) = std::thread::scope(|s| {
        let (t, apis, net) = (&t, &apis, &net);
        let (pa, pb) = (producer(0), producer(1));
        let (ca, cb) = (consumer(0), consumer(1));
        let hpa = s.spawn(move || produce(std::slice::from_ref(&apis[0]), &pa, t));
        let hpb = s.spawn(move || produce(std::slice::from_ref(&apis[1]), &pb, t));
        let hca = s.spawn(move || consume(std::slice::from_ref(&apis[0]), &ca, t));
        let hcb = s.spawn(move || consume(std::slice::from_ref(&apis[1]), &cb, t));
        let hd = s.spawn(move || {
            let result = disrupt(net, t);
            t.chaos_finished.store(true, Ordering::SeqCst);
            result
        });
        let producers = join_all([(hpa, "producer a"), (hpb, "producer b")], &mut failures);
        if let Some((lines, fails)) = join_thread(hd, "disruption", &mut failures) {
            notes = lines;
            failures.extend(fails);
        }
        if let Err(e) = t.drain(
            n,
            Duration::from_secs(90),
            "the producers finished",
            || [apis[0].outbox_depth(&ids[1]), apis[1].outbox_depth(&ids[0])],
            || None,
        ) {
            failures.push(e);
        }
        t.stop.store(true, Ordering::SeqCst);
        let consumers = join_all([(hca, "consumer a"), (hcb, "consumer b")], &mut failures);
        t.abort.store(true, Ordering::SeqCst);
        (producers, consumers)
    });
    let net = net.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "{test}: {n} messages of {body_bytes} bytes each way"
    );
    for line in &notes {
        let _ = writeln!(summary, "  {line}");
    }
    peerlink_e2e::traffic::judge_directions(n, &producers, &consumers, &mut summary, &mut failures);
    eprint!("{summary}");
    if !failures.is_empty() {
        for name in AB {
            eprintln!(
                "--- last 40 lines of {name}'s log ---\n{}",
                tail(&net.node(name).log_text(), 40)
            );
        }
        panic!("{test}:\n  {}", failures.join("\n  "));
    }
    net
}

/// Starts a and b, waits for their link; returns their admin addresses and each
/// side's view of the link.
fn start_linked(net: &mut Net) -> [SocketAddr; 2] {
    net.start_all(&AB);
    net.wait_all_connected(&AB, WAIT);
    [net.node("a").admin(), net.node("b").admin()]
}

/// Waits (bounded) until every thread of process `pid` is stopped (state `T`).
fn wait_stopped(pid: u32) -> bool {
    let start = Instant::now();
    let stopped = || -> Option<bool> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let mut all = true;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // The state follows the command name in parentheses.
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            all &= state == "T" || state == "t";
        }
        Some(all)
    };
    while start.elapsed() < WAIT {
        if stopped() == Some(true) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Waits until `accepted` messages (both ways together) went through the APIs.
fn wait_progress(t: &Traffic, accepted: usize) -> bool {
    let start = Instant::now();
    while t.progress.load(Ordering::SeqCst) < accepted {
        if t.aborted() || start.elapsed() > WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Checks that each side let go of its link within [`BOUND`].
fn judge_let_go(
    what: &str,
    let_go: &[(String, Option<Duration>)],
    notes: &mut Vec<String>,
    failures: &mut Vec<String>,
) {
    for (name, took) in let_go {
        match took {
            Some(d) if *d <= BOUND => notes.push(format!(
                "{what}: {name} let go of the dead link after {} ms (bound {} ms)",
                d.as_millis(),
                BOUND.as_millis()
            )),
            Some(d) => failures.push(format!(
                "{what}: {name} let go of the dead link only after {} ms (bound {} ms)",
                d.as_millis(),
                BOUND.as_millis()
            )),
            None => failures.push(format!(
                "{what}: {name} still showed the dead link as connected {} ms later",
                (BOUND + Duration::from_millis(500)).as_millis()
            )),
        }
    }
}

#[test]
fn a_nat_that_forgets_its_connections_cuts_no_message() {
    let test = "a_nat_that_forgets_its_connections_cuts_no_message";
    let _serial = one_at_a_time();
    let Some(lab) = NatLab::require(test) else {
        return;
    };
    let (net, admins, [a_id, b_id], apis) = linked_behind_nat(&lab);
    let a_port = net.node("a").port;
    let lab = &lab;
    let net = with_traffic(test, net, apis, 1_200, 8 * 1024, |net, t| {
        let (mut notes, mut failures) = (Vec::new(), Vec::new());
        for round in 1..=2 {
            if !wait_progress(t, 600 * round) {
                failures.push(format!("round {round}: traffic did not get going"));
                return (notes, failures);
            }
            let before_a = link_of(admins[0], &b_id);
            let before_b = link_of(admins[1], &a_id);
            let dead_before = dead_count(admins[1], &a_id);
            let (Some(before_a), Some(before_b)) = (before_a, before_b) else {
                failures.push(format!("round {round}: no status before the flush"));
                return (notes, failures);
            };
            let t0 = Instant::now();
            lab.flush_conntrack();
            let let_go = time_to_let_go(
                &[
                    ("a", admins[0], b_id.as_str(), before_a),
                    ("b", admins[1], a_id.as_str(), before_b),
                ],
                t0,
                BOUND,
            );
            judge_let_go(
                &format!("conntrack flush {round}"),
                &let_go,
                &mut notes,
                &mut failures,
            );
            // b cannot be replaced by a (a cannot dial it): b's own rule fired.
            if dead_count(admins[1], &a_id) <= dead_before {
                failures.push(format!(
                    "round {round}: b's peerlink_links_dead_total did not count the dead link"
                ));
            }
            let mut guard = net.lock().unwrap_or_else(|p| p.into_inner());
            wait_relinked(&mut guard, &format!("conntrack flush {round}"));
        }
        // The old connections are gone, not lingering behind the new link.
        let start = Instant::now();
        loop {
            let (ours, theirs) = (
                lab.established(false, a_port),
                lab.established(true, a_port),
            );
            if ours == 1 && theirs == 1 {
                notes.push("one established connection on each side after relinking".into());
                break;
            }
            if start.elapsed() > WAIT {
                failures.push(format!(
                    "established connections on a's link port: {ours} on a, {theirs} on b (expected 1 each)"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (notes, failures)
    });
    drop(net);
}

#[test]
fn a_path_dropped_for_a_while_is_declared_dead_on_both_sides() {
    let test = "a_path_dropped_for_a_while_is_declared_dead_on_both_sides";
    let _serial = one_at_a_time();
    let Some(lab) = NatLab::require(test) else {
        return;
    };
    let (net, admins, [a_id, b_id], apis) = linked_behind_nat(&lab);
    let lab = &lab;
    let net = with_traffic(test, net, apis, 600, 64 * 1024, |net, t| {
        let (mut notes, mut failures) = (Vec::new(), Vec::new());
        if !wait_progress(t, 300) {
            failures.push("traffic did not get going".into());
            return (notes, failures);
        }
        let (Some(before_a), Some(before_b)) =
            (link_of(admins[0], &b_id), link_of(admins[1], &a_id))
        else {
            failures.push("no status before the cut".into());
            return (notes, failures);
        };
        let dead_before = [dead_count(admins[0], &b_id), dead_count(admins[1], &a_id)];
        let t0 = Instant::now();
        lab.cut_path();
        let let_go = time_to_let_go(
            &[
                ("a", admins[0], b_id.as_str(), before_a),
                ("b", admins[1], a_id.as_str(), before_b),
            ],
            t0,
            BOUND,
        );
        judge_let_go("path cut", &let_go, &mut notes, &mut failures);
        // Neither can reach the other: each side's own rule must have fired.
        for (k, (admin, peer)) in [(admins[0], &b_id), (admins[1], &a_id)].iter().enumerate() {
            if dead_count(*admin, peer) <= dead_before[k] {
                failures.push(format!(
                    "{}'s peerlink_links_dead_total did not count the dead link",
                    AB[k]
                ));
            }
        }
        // Status says why.
        let status = admin_status(admins[1]).unwrap_or_default();
        let error = peer_entry(&status, &a_id)
            .and_then(|e| e["last_error"].as_str().map(str::to_string))
            .unwrap_or_default();
        if error.contains("dead link") {
            notes.push(format!("b's status: {error}"));
        } else {
            failures.push(format!("b's status does not say the link died: {error:?}"));
        }
        // Down for a while longer, then back.
        std::thread::sleep(DEAD_AFTER * 2);
        lab.restore_path();
        let mut guard = net.lock().unwrap_or_else(|p| p.into_inner());
        let took = wait_relinked(&mut guard, "path restored");
        notes.push(format!(
            "relinked {:.2} s after the path came back",
            took.as_secs_f64()
        ));
        (notes, failures)
    });
    drop(net);
}

#[test]
fn a_partner_that_stops_reading_is_dropped_and_relinked_without_loss() {
    let test = "a_partner_that_stops_reading_is_dropped_and_relinked_without_loss";
    let _serial = one_at_a_time();
    let mut net = loopback_pair();
    let admins = start_linked(&mut net);
    let (a_id, b_id) = (net.id("a"), net.id("b"));
    // Short client timeouts: requests to b in flight when it stops are abandoned,
    // and b finds them cancelled when it resumes.
    let apis = [
        api(&net, "a", Duration::from_secs(2)),
        api(&net, "b", Duration::from_millis(700)),
    ];
    let net = with_traffic(test, net, apis, 900, 64 * 1024, |net, t| {
        let (mut notes, mut failures) = (Vec::new(), Vec::new());
        for round in 1..=3 {
            if !wait_progress(t, 450 * round) {
                failures.push(format!("round {round}: traffic did not get going"));
                return (notes, failures);
            }
            let Some(before) = link_of(admins[0], &b_id) else {
                failures.push(format!("round {round}: no status before SIGSTOP"));
                return (notes, failures);
            };
            let dead_before = dead_count(admins[0], &b_id);
            let t0 = Instant::now();
            let pid = {
                let guard = net.lock().unwrap_or_else(|p| p.into_inner());
                guard.signal("b", "STOP");
                guard.node("b").pid()
            };
            // kill(2) only queues the signal: wait until every thread has stopped.
            if !wait_stopped(pid) {
                failures.push(format!("round {round}: b did not stop within {WAIT:?}"));
                return (notes, failures);
            }
            // An operator's ping through the dying link answers with an error, not a hang.
            let ping_path = format!("/v1/peers/{b_id}/ping");
            let ping = std::thread::spawn(move || {
                let sent = Instant::now();
                (http(admins[0], "POST", &ping_path), sent.elapsed())
            });
            let let_go = time_to_let_go(&[("a", admins[0], b_id.as_str(), before)], t0, BOUND);
            judge_let_go(
                &format!("SIGSTOP {round}"),
                &let_go,
                &mut notes,
                &mut failures,
            );
            if dead_count(admins[0], &b_id) <= dead_before {
                failures.push(format!(
                    "round {round}: a's peerlink_links_dead_total did not count the dead link"
                ));
            }
            match ping.join() {
                Ok((Ok((code, body)), took)) if code != 200 && took <= BOUND + HEARTBEAT => {
                    notes.push(format!(
                        "SIGSTOP {round}: ping answered {code} after {} ms: {}",
                        took.as_millis(),
                        body.trim()
                    ))
                }
                Ok((answer, took)) => failures.push(format!(
                    "round {round}: ping through the dying link answered {answer:?} after {} ms (expected an error within {} ms)",
                    took.as_millis(),
                    (BOUND + HEARTBEAT).as_millis()
                )),
                Err(_) => failures.push(format!("round {round}: the ping thread panicked")),
            }
            std::thread::sleep(DEAD_AFTER);
            let mut guard = net.lock().unwrap_or_else(|p| p.into_inner());
            guard.signal("b", "CONT");
            wait_relinked(&mut guard, &format!("SIGCONT {round}"));
            drop(guard);
            let status = admin_status(admins[1]).unwrap_or_default();
            if let Some(e) = peer_entry(&status, &a_id).and_then(|e| e["last_error"].as_str()) {
                if e.contains("database is locked") {
                    failures.push(format!("round {round}: b's link failed on its store: {e}"));
                }
            }
        }
        (notes, failures)
    });
    let log = net.node("b").log_text();
    assert!(
        !log.contains("database is locked"),
        "b's store was locked:\n{}",
        tail(&log, 40)
    );
}
