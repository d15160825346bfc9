//! Message ids are scoped per peer (the same id to or from two peers is two
//! messages), and acknowledgements lost in a crash cause no redelivery.
//!
//! Run: `cargo test --test messaging ids_and_acks::`.

use super::*;

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
