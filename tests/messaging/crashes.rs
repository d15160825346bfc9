//! Exactly once, in order, both ways, on SQLite and on PostgreSQL, while each
//! gateway is killed -9 and restarted at random moments (seeded; the seed is
//! printed, `PEERLINK_CHAOS_SEED` replays it).
//!
//! Run: `cargo test --test messaging crashes::`.

use super::*;

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
    peerlink_e2e::traffic::judge_directions(n, &producers, &consumers, &mut summary, &mut failures);
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
