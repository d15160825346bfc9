//! The failover under traffic: messages both ways (a's submitted and read
//! alternately through both replicas), the owning replica killed -9 and
//! restarted; the takeover within 10 s, the link staying put afterwards, never
//! two owners, exactly one change of owner, and every message exactly once.
//!
//! Run: `cargo test --test replicas failover::`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{field, read_lossy, wait_for, WAIT};
use peerlink_e2e::messaging::{postgres_available, tail, Api, Rng, MESSAGING_LINK};
use peerlink_e2e::traffic::{
    chaos_seed, consume, join_all, join_thread, produce, AbortOnPanic, ConsumerPlan, ProducerPlan,
    Traffic,
};
use serde_json::Value;

use super::cluster::{Cluster, Replicas};
use super::status::{
    lease_problem, link_entry, link_owner, link_state, owner_sequence, replica_id, sample,
    takeover_seen,
};
use super::*;

#[derive(Debug, Default)]
struct ChaosReport {
    /// Index of the replica that owned the link and was killed.
    killed: Option<usize>,
    killed_at: f64,
    /// Kill to the survivor showing b connected.
    takeover: Option<Duration>,
    /// Kill to b showing a connected again.
    b_reconnected: Option<Duration>,
    /// Restart of the killed replica to it showing b standby.
    standby_after: Option<Duration>,
    lines: Vec<String>,
    problems: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn chaos(
    replicas: &Mutex<Replicas>,
    admins: [SocketAddr; 2],
    apis: &[Api; 2],
    b_api: &Api,
    b_admin: SocketAddr,
    aid: &str,
    bid: &str,
    database_url: &str,
    total: usize,
    seed: u64,
    sh: &Traffic,
) -> ChaosReport {
    let _guard = AbortOnPanic(&sh.abort);
    let mut rep = ChaosReport::default();
    let problem = |rep: &mut ChaosReport, p: String| {
        eprintln!("[{:7.2}s] chaos: {p}", sh.secs());
        rep.problems.push(p);
    };
    let say = |rep: &mut ChaosReport, l: String| {
        eprintln!("[{:7.2}s] chaos: {l}", sh.secs());
        rep.lines.push(l);
    };
    // 1. Partway through the traffic.
    let at = (KILL_AT * total as f64) as usize;
    let waiting = Instant::now();
    while sh.progress.load(Ordering::SeqCst) < at {
        if sh.aborted() {
            return rep;
        }
        if waiting.elapsed() > Duration::from_secs(60) {
            problem(
                &mut rep,
                format!(
                    "progress stuck at {} of the {at} planned for the kill",
                    sh.progress.load(Ordering::SeqCst)
                ),
            );
            sh.abort.store(true, Ordering::SeqCst);
            return rep;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // 2. Kill -9 the owner of the link, a random 0-40 ms after a batch was
    //    accepted: while that batch is on its way (sent, stored, acknowledged).
    let owner = wait_for(
        "exactly one replica owning b's link before the kill",
        WAIT,
        || link_owner(&admins, bid),
    )
    .0;
    let survivor = 1 - owner;
    let b_before = link_entry(b_admin, aid).unwrap_or_default();
    let batches = sh.batches.load(Ordering::SeqCst);
    let waiting = Instant::now();
    while sh.batches.load(Ordering::SeqCst) == batches && waiting.elapsed() < PACE * 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(Rng::new(seed).range(0, 40)));
    let progress = sh.progress.load(Ordering::SeqCst);
    lock(replicas).0[owner].kill9();
    let killed = Instant::now();
    rep.killed = Some(owner);
    rep.killed_at = sh.secs();
    // What the kill left unacknowledged (to be resent over the new link).
    let depths = (apis[survivor].outbox_depth(bid), b_api.outbox_depth(aid));
    let line = format!(
        "kill -9 {} (the link owner) at {:.2} s, progress {:.0}%; undelivered just after the kill: a->b {:?}, b->a {:?}",
        NAMES[owner],
        rep.killed_at,
        100.0 * progress as f64 / total as f64,
        depths.0,
        depths.1
    );
    say(&mut rep, line);
    // 3. Measure the takeover: the survivor shows b connected and b shows a
    //    connected on a new link (its `since` changed), in the same poll.
    while killed.elapsed() < TAKEOVER_WAIT && !sh.aborted() {
        let (survivor_up, b_up) = takeover_seen(admins[survivor], b_admin, aid, bid, &b_before);
        if b_up && rep.b_reconnected.is_none() {
            rep.b_reconnected = Some(killed.elapsed());
        }
        if survivor_up && b_up {
            rep.takeover = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    match rep.takeover {
        Some(d) => {
            let line = format!(
                "takeover: {} shows b connected {:.2} s after the kill (b shows a connected after {})",
                NAMES[survivor],
                d.as_secs_f64(),
                rep.b_reconnected
                    .map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
            );
            say(&mut rep, line);
            if d > TAKEOVER_LIMIT {
                problem(
                    &mut rep,
                    format!(
                        "takeover took {:.2} s, more than {TAKEOVER_LIMIT:?}",
                        d.as_secs_f64()
                    ),
                );
            }
        }
        None => {
            problem(
                &mut rep,
                format!(
                    "{} did not take b's link over within {TAKEOVER_WAIT:?} of the kill; it shows {:?}",
                    NAMES[survivor],
                    link_entry(admins[survivor], bid)
                ),
            );
            sh.abort.store(true, Ordering::SeqCst);
            return rep;
        }
    }
    if rep.b_reconnected.is_none_or(|d| d > TAKEOVER_LIMIT) {
        let line = format!(
            "b did not show a connected within {TAKEOVER_LIMIT:?} of the kill ({:?})",
            rep.b_reconnected
        );
        problem(&mut rep, line);
    }
    if let Some(p) = lease_problem(admins[survivor], NAMES[survivor], database_url, bid) {
        problem(&mut rep, format!("after the takeover {p}"));
    }
    // 4. Traffic on the survivor alone for a moment, then restart the killed replica.
    std::thread::sleep(BEFORE_RESTART);
    lock(replicas).0[owner].start();
    let restarted = Instant::now();
    sh.restarted.store(true, Ordering::SeqCst);
    let came_back = loop {
        if sh.aborted() {
            return rep;
        }
        if !lock(replicas).0[owner].running() {
            problem(
                &mut rep,
                format!("{} exited after its restart", NAMES[owner]),
            );
            sh.abort.store(true, Ordering::SeqCst);
            return rep;
        }
        let state = link_state(admins[owner], bid);
        if state.as_deref() == Ok("standby") && apis[owner].peer(bid).is_ok() {
            break Ok(restarted.elapsed());
        }
        if restarted.elapsed() > WAIT {
            break Err(format!("{state:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match came_back {
        Ok(d) => {
            rep.standby_after = Some(d);
            say(
                &mut rep,
                format!(
                    "{} restarted at {:.2} s; standby (API up) after {:.2} s",
                    NAMES[owner],
                    sh.secs() - d.as_secs_f64(),
                    d.as_secs_f64()
                ),
            );
        }
        Err(last) => {
            problem(
                &mut rep,
                format!(
                    "{} did not come back as standby within {WAIT:?} of its restart; last: {last}",
                    NAMES[owner]
                ),
            );
            sh.abort.store(true, Ordering::SeqCst);
            return rep;
        }
    }
    // 5. The link stays where it is: the survivor keeps the same link (same
    //    `since`), the restarted replica stays standby, b keeps its link.
    let base_survivor = link_entry(admins[survivor], bid).unwrap_or_default();
    let base_b = link_entry(b_admin, aid).unwrap_or_default();
    let window = Instant::now();
    let mut polls = 0;
    let mut moved = Vec::new();
    while window.elapsed() < STABILITY_WINDOW && !sh.aborted() {
        polls += 1;
        let s = link_entry(admins[survivor], bid);
        let r = link_entry(admins[owner], bid);
        let b = link_entry(b_admin, aid);
        let t = sh.secs();
        let same = |now: &Result<Value, String>, base: &Value| {
            now.as_ref().is_ok_and(|e| {
                field(e, "state") == "connected" && field(e, "since") == field(base, "since")
            })
        };
        if !same(&s, &base_survivor) {
            moved.push(format!("{t:.2} s: {} shows {s:?}", NAMES[survivor]));
        }
        if !r.as_ref().is_ok_and(|e| field(e, "state") == "standby") {
            moved.push(format!("{t:.2} s: restarted {} shows {r:?}", NAMES[owner]));
        }
        if !same(&b, &base_b) {
            moved.push(format!("{t:.2} s: b shows {b:?}"));
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    if !moved.is_empty() {
        problem(
            &mut rep,
            format!(
                "the link did not stay put during the {STABILITY_WINDOW:?} after {} came back ({} of {polls} polls): {}",
                NAMES[owner],
                moved.len(),
                moved[..moved.len().min(10)].join("; ")
            ),
        );
    } else {
        say(
            &mut rep,
            format!(
                "link stable for {STABILITY_WINDOW:?} after the restart ({polls} polls): {} connected since {}, {} standby",
                NAMES[survivor],
                field(&base_survivor, "since"),
                NAMES[owner]
            ),
        );
    }
    if let Some(p) = lease_problem(admins[survivor], NAMES[survivor], database_url, bid) {
        problem(&mut rep, format!("after the restart {p}"));
    }
    sh.chaos_finished.store(true, Ordering::SeqCst);
    rep
}

#[test]
fn two_replicas_on_postgres_fail_over_under_traffic() {
    const TEST: &str = "two_replicas_on_postgres_fail_over_under_traffic";
    if !postgres_available(TEST) {
        return;
    }
    let n = messages_per_side();
    let seed = chaos_seed();
    eprintln!("{TEST}: {n} messages each way; seed {seed} (replay the kill moment with PEERLINK_CHAOS_SEED={seed})");
    let began = Instant::now();
    let mut cluster = Cluster::new(MESSAGING_LINK, false);
    let (owner, linked_after) = cluster.start(Duration::from_secs(30));
    let (replicas, net, db) = (&cluster.replicas, &cluster.net, &cluster.db);
    let (aid, bid, admins, b_admin) = (
        &cluster.aid,
        &cluster.bid,
        &cluster.admins,
        &cluster.b_admin,
    );
    let (a_apis, b_api) = (&cluster.a_apis, &cluster.b_api);
    let standby = 1 - owner;
    let standby_entry = link_entry(admins[standby], bid).expect("standby entry");
    eprintln!(
        "{TEST}: set-up took {:.1} s; linked {:.1} s after start: {} (replica {}) owns b's link, {} is standby ({:?})",
        began.elapsed().as_secs_f64(),
        linked_after.as_secs_f64(),
        NAMES[owner],
        replica_id(admins[owner]).unwrap_or_default(),
        NAMES[standby],
        field(&standby_entry, "last_error")
    );

    // Traffic and the failover.
    let sh = Traffic::new();
    let total = 4 * n;
    let mut failures: Vec<String> = Vec::new();
    let mut drained_at = None;
    let (producers, consumers, chaos_rep, sampler) = std::thread::scope(|s| {
        let (sh, aid, bid, admins, b_admin) = (&sh, aid.as_str(), bid.as_str(), *admins, *b_admin);
        let db_url = db.url.as_str();
        let b_apis = std::slice::from_ref(b_api);
        // 0: a -> b, submitted alternately through both replicas; 1: b -> a. A failed
        // request is retried through the next API after 50 ms; paced until the
        // failover is over.
        let peer_ids = [bid, aid];
        let producer = |t: usize| ProducerPlan {
            sender: NODES[t],
            peer_id: peer_ids[t],
            n,
            chunk: CHUNK,
            body_bytes: BODY_BYTES,
            content_type: TYPE,
            batch_deadline: BATCH_DEADLINE,
            busy_pause: Duration::from_millis(50),
            error_pause_ms: 50..=50,
            probe_rate: 0.0,
            pace: PACE,
            seed,
        };
        // slot 0: a's inbox (from b); slot 1: b's inbox (from a); (from, id) acks.
        let consumer = |slot: usize| ConsumerPlan {
            receiver: NODES[slot],
            slot,
            sender: NODES[1 - slot],
            sender_id: peer_ids[slot],
            content_type: TYPE,
            wait_s: CONSUMER_WAIT_S,
            ack_with_sender: true,
        };
        let (plan_pa, plan_pb) = (producer(0), producer(1));
        let (plan_ca, plan_cb) = (consumer(0), consumer(1));
        let pa = s.spawn(move || produce(a_apis, &plan_pa, sh));
        let pb = s.spawn(move || produce(b_apis, &plan_pb, sh));
        let ca = s.spawn(move || consume(a_apis, &plan_ca, sh));
        let cb = s.spawn(move || consume(b_apis, &plan_cb, sh));
        let sm = s.spawn(move || sample(admins, b_admin, aid, bid, sh));
        let ch = s.spawn(move || {
            chaos(
                replicas, admins, a_apis, b_api, b_admin, aid, bid, db_url, total, seed, sh,
            )
        });
        let producers = join_all([(pa, "producer a"), (pb, "producer b")], &mut failures);
        let chaos_rep = join_thread(ch, "chaos", &mut failures).unwrap_or_default();
        let drained = sh.drain(
            n,
            DRAIN_DEADLINE,
            "the producers and the failover finished",
            || [a_apis[0].outbox_depth(bid), b_api.outbox_depth(aid)],
            || {
                let dead: Vec<&str> = lock(replicas)
                    .0
                    .iter_mut()
                    .filter_map(|r| (!r.running()).then_some(r.name))
                    .collect();
                (!dead.is_empty())
                    .then(|| format!("replica(s) {dead:?} stopped running on their own"))
            },
        );
        match drained {
            Ok(at) => drained_at = Some(at),
            Err(e) => failures.push(e),
        }
        sh.stop.store(true, Ordering::SeqCst);
        let consumers = join_all([(ca, "consumer a"), (cb, "consumer b")], &mut failures);
        let sampler = join_thread(sm, "sampler", &mut failures).unwrap_or_default();
        (producers, consumers, chaos_rep, sampler)
    });

    // Final state: every outbox and inbox empty, on every replica.
    if failures.is_empty() {
        for (i, api) in a_apis.iter().enumerate() {
            match api.outbox_depth(bid) {
                Ok(0) => {}
                other => failures.push(format!("{}: outbox to b at the end: {other:?}", NAMES[i])),
            }
            match api.peek_all() {
                Ok(left) if left.is_empty() => {}
                other => failures.push(format!(
                    "{}: inbox at the end (everything was acknowledged): {:?}",
                    NAMES[i],
                    other.map(|l| l.into_iter().take(5).map(|m| m.id).collect::<Vec<_>>())
                )),
            }
        }
        match (b_api.outbox_depth(aid), b_api.peek_all()) {
            (Ok(0), Ok(left)) if left.is_empty() => {}
            (depth, left) => failures.push(format!(
                "b at the end: outbox {depth:?}, inbox {:?}",
                left.map(|l| l.len())
            )),
        }
    }

    // Report and verdict.
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "{TEST}: {n} messages each way, drained at {}",
        drained_at.map_or("never".to_string(), |t| format!("{t:.1} s"))
    );
    for l in &chaos_rep.lines {
        let _ = writeln!(summary, "  {l}");
    }
    failures.extend(chaos_rep.problems.iter().map(|p| format!("failover: {p}")));
    if chaos_rep.killed.is_none() || chaos_rep.standby_after.is_none() {
        failures.push("the failover scenario did not run to its end".into());
    }

    // Link ownership over the whole run.
    let owners = owner_sequence(&sampler.samples);
    let owners_text: Vec<String> = owners
        .iter()
        .map(|(o, t)| format!("{} from {t:.2} s", NAMES[*o]))
        .collect();
    let b_not_connected = sampler
        .samples
        .iter()
        .filter(|s| s.b.as_deref() != Some("connected"))
        .count();
    let _ = writeln!(
        summary,
        "  sampler: {} samples; owners {}; b not connected to a in {} samples; both replicas connected in {} samples",
        sampler.samples.len(),
        owners_text.join(" -> "),
        b_not_connected,
        sampler.both_connected.len()
    );
    if !sampler.both_connected.is_empty() {
        failures.push(format!(
            "both replicas reported b connected at once {} times: {}",
            sampler.both_connected.len(),
            sampler.both_connected[..sampler.both_connected.len().min(5)].join("; ")
        ));
    }
    if let Some(killed) = chaos_rep.killed {
        let expected = vec![killed, 1 - killed];
        let seen: Vec<usize> = owners.iter().map(|(o, _)| *o).collect();
        if seen != expected {
            failures.push(format!(
                "the link owner must change exactly once, from {} to {} (at the kill); seen: {}",
                NAMES[killed],
                NAMES[1 - killed],
                owners_text.join(" -> ")
            ));
        }
        let back: Vec<String> = sampler
            .samples
            .iter()
            .filter(|s| {
                s.t > chaos_rep.killed_at && s.replicas[killed].as_deref() == Some("connected")
            })
            .take(5)
            .map(|s| format!("{:.2} s", s.t))
            .collect();
        if !back.is_empty() {
            failures.push(format!(
                "the killed replica {} showed b connected again after the kill, at {}",
                NAMES[killed],
                back.join(", ")
            ));
        }
    }

    let redirects: Vec<usize> = lock(replicas)
        .0
        .iter()
        .map(|r| {
            read_lossy(&r.log)
                .lines()
                .filter(|l| l.contains("another replica owns this partner's link"))
                .count()
        })
        .collect();
    let _ = writeln!(
        summary,
        "  connections from b answered Goodbye(NotOwner) by a1, a2: {redirects:?}"
    );
    for p in &producers {
        let _ = writeln!(summary, "  {}", p.summary());
        p.add_failures(n, &mut failures);
    }
    if let Some(pa) = producers.iter().find(|p| p.sender == "a") {
        if pa.batches_by_api.contains(&0) {
            failures.push(format!(
                "a's messages were not submitted through both replicas: batches by API {:?}",
                pa.batches_by_api
            ));
        }
        if let Some(killed) = chaos_rep.killed {
            if pa.busy_at_restart && pa.batches_after_restart[killed] == 0 {
                failures.push(format!(
                    "the restarted replica {} accepted no batch after its restart although the producer was still sending",
                    NAMES[killed]
                ));
            }
        }
    }
    for c in &consumers {
        c.judge(n, &mut summary, &mut failures);
        if c.receiver == "a" && c.pages_by_api.contains(&0) {
            failures.push(format!(
                "a's inbox was not read through both replicas: non-empty pages by API {:?}",
                c.pages_by_api
            ));
        }
    }
    eprint!("{summary}");
    if !failures.is_empty() {
        eprintln!(
            "--- last 60 lines of b's log ---\n{}",
            tail(&net.node(cluster.b_name).log_text(), 60)
        );
        panic!("{TEST} FAILED:\n  - {}\n{summary}", failures.join("\n  - "));
    }

    // Everything stops cleanly.
    let mut stop_errors = Vec::new();
    for r in &mut lock(replicas).0 {
        if let Err(e) = r.terminate() {
            stop_errors.push(e);
        }
    }
    assert!(stop_errors.is_empty(), "{stop_errors:?}");
    cluster.net.terminate_all();
    eprintln!(
        "{TEST}: passed in {:.1} s ({:.1} s of traffic); takeover {:.2} s",
        began.elapsed().as_secs_f64(),
        sh.secs(),
        chaos_rep.takeover.map_or(f64::NAN, |d| d.as_secs_f64())
    );
}
