//! The store's rules, on SQLite and (when reachable) PostgreSQL.

use super::*;
use sqlx::Row;

#[test]
fn placeholders_are_rewritten_for_postgres() {
    assert_eq!(to_postgres("a = ? AND b = ?"), "a = $1 AND b = $2");
}

fn msg(peer: &str, id: Option<&str>, body: &str) -> NewMessage {
    NewMessage {
        peer_id: peer.into(),
        message_id: id.map(str::to_string),
        content_type: "text/plain".into(),
        message_type: None,
        body: body.as_bytes().to_vec(),
    }
}

fn wire(seq: i64, id: &str) -> WireMessage {
    WireMessage {
        seq,
        message_id: id.into(),
        content_type: "text/plain".into(),
        message_type: None,
        body: id.as_bytes().to_vec(),
    }
}

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gw.db").display());
    let mut out = vec![(Store::open(&url).await.unwrap(), Some(dir))];
    if let Some(pg) = testdb::fresh_postgres().await {
        out.push((Store::open(&pg).await.unwrap(), None));
    }
    out
}

#[tokio::test]
async fn outbox_assigns_sequences_and_deduplicates_ids() {
    for (store, _dir) in stores().await {
        let kind = store.kind();
        let r = store
            .enqueue(&[
                msg("b", Some("m1"), "one"),
                msg("b", None, "two"),
                msg("c", None, "x"),
            ])
            .await
            .unwrap();
        assert_eq!(r[0], Accepted::Stored("m1".into()), "{kind}");
        let again = store
            .enqueue(&[msg("b", Some("m1"), "other body")])
            .await
            .unwrap();
        assert_eq!(again, vec![Accepted::Duplicate("m1".into())], "{kind}");
        let out = store.outbox_after("b", 0, 10).await.unwrap();
        assert_eq!(
            out.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1, 2],
            "{kind}"
        );
        assert_eq!(out[0].body, b"one");
        assert_eq!(
            store.outbox_after("c", 0, 10).await.unwrap()[0].seq,
            1,
            "{kind}"
        );
        assert_eq!(store.outbox_stats("b").await.unwrap().depth, 2);
        store.ack_outbox("b", 1).await.unwrap();
        assert_eq!(store.acked_seq("b").await.unwrap(), 1);
        assert_eq!(
            store.outbox_after("b", 0, 10).await.unwrap().len(),
            1,
            "{kind}"
        );
        // An old ack never moves the counter back.
        store.ack_outbox("b", 0).await.unwrap();
        assert_eq!(store.acked_seq("b").await.unwrap(), 1);
        // Delivered ids are still remembered: a retried POST stores nothing.
        assert_eq!(
            store.enqueue(&[msg("b", Some("m1"), "one")]).await.unwrap(),
            vec![Accepted::Duplicate("m1".into())]
        );
        store.close().await;
    }
}

#[tokio::test]
async fn inbound_resends_are_dropped_and_a_new_epoch_starts_over() {
    for (store, _dir) in stores().await {
        let kind = store.kind();
        assert_eq!(
            store
                .store_inbound("a", "e1", &[wire(1, "x1"), wire(2, "x2")])
                .await
                .unwrap(),
            (2, 2)
        );
        // Link dropped before our ack arrived: the sender resends 2 and sends 3.
        assert_eq!(
            store
                .store_inbound("a", "e1", &[wire(2, "x2"), wire(3, "x3")])
                .await
                .unwrap(),
            (3, 1)
        );
        let inbox = store.inbox(10).await.unwrap();
        let ids: Vec<_> = inbox.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, vec!["x1", "x2", "x3"], "{kind}");
        // A wiped sender starts again at 1 under a new epoch: not a resend.
        assert_eq!(
            store
                .store_inbound("a", "e2", &[wire(1, "y1")])
                .await
                .unwrap(),
            (1, 1)
        );
        assert_eq!(store.inbox_depth().await.unwrap(), 4);
        assert_eq!(
            store
                .ack_inbox(&[
                    (None, "x1".into()),
                    (Some("a".into()), "x2".into()),
                    (None, "nope".into())
                ])
                .await
                .unwrap(),
            (2, vec![])
        );
        assert_eq!(store.inbox(10).await.unwrap()[0].message_id, "x3", "{kind}");
        // Acked messages resent again are still not duplicated.
        assert_eq!(
            store
                .store_inbound("a", "e1", &[wire(1, "x1")])
                .await
                .unwrap(),
            (3, 0)
        );
        assert_eq!(store.inbox_depth().await.unwrap(), 2);
        store.close().await;
    }
}

#[tokio::test]
async fn same_id_from_two_peers_needs_the_sender_to_ack() {
    for (store, _dir) in stores().await {
        store
            .store_inbound("b", "e", &[wire(1, "same")])
            .await
            .unwrap();
        store
            .store_inbound("c", "e", &[wire(1, "same")])
            .await
            .unwrap();
        // A bare id is ambiguous: nothing is removed.
        assert_eq!(
            store.ack_inbox(&[(None, "same".into())]).await.unwrap(),
            (0, vec!["same".to_string()])
        );
        assert_eq!(store.inbox_depth().await.unwrap(), 2);
        assert_eq!(
            store
                .ack_inbox(&[(Some("b".into()), "same".into())])
                .await
                .unwrap(),
            (1, vec![])
        );
        assert_eq!(store.inbox(10).await.unwrap()[0].from_peer, "c");
        store.close().await;
    }
}

#[tokio::test]
async fn interleaved_partners_in_one_batch_get_consecutive_numbers_in_batch_order() {
    for (store, _dir) in stores().await {
        store.enqueue(&[msg("b", Some("old"), "0")]).await.unwrap();
        let r = store
            .enqueue(&[
                msg("b", Some("m1"), "b1"),
                msg("c", Some("m1"), "c1"),
                msg("b", Some("old"), "again"),
                msg("b", Some("m2"), "b2"),
                msg("b", Some("m1"), "dup"),
                msg("c", Some("m3"), "c2"),
            ])
            .await
            .unwrap();
        let stored = r
            .iter()
            .filter(|a| matches!(a, Accepted::Stored(_)))
            .count();
        assert_eq!(stored, 4, "{r:?}");
        let seqs = |peer: &'static str| {
            let store = &store;
            async move {
                store
                    .outbox_after(peer, 0, 10)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| (m.seq, String::from_utf8_lossy(&m.body).into_owned()))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            seqs("b").await,
            vec![(1, "0".into()), (2, "b1".into()), (3, "b2".into())]
        );
        assert_eq!(seqs("c").await, vec![(1, "c1".into()), (2, "c2".into())]);
        // The next batch continues each partner's numbering.
        store.enqueue(&[msg("c", None, "c3")]).await.unwrap();
        assert_eq!(store.max_assigned_seq("c").await.unwrap(), 3);
        assert_eq!(store.max_assigned_seq("b").await.unwrap(), 3);
        let mut heads = store.outbox_heads().await.unwrap();
        heads.sort();
        assert_eq!(heads, vec![("b".to_string(), 3), ("c".to_string(), 3)]);
        store.close().await;
    }
}

#[tokio::test]
async fn one_id_sent_to_two_peers_in_one_batch_is_two_messages() {
    for (store, _dir) in stores().await {
        let r = store
            .enqueue(&[
                msg("b", Some("shared"), "x"),
                msg("c", Some("shared"), "y"),
                msg("b", Some("shared"), "z"),
            ])
            .await
            .unwrap();
        assert_eq!(
            r,
            vec![
                Accepted::Stored("shared".into()),
                Accepted::Stored("shared".into()),
                Accepted::Duplicate("shared".into())
            ]
        );
        assert_eq!(store.outbox_stats("c").await.unwrap().depth, 1);
        assert_eq!(store.max_assigned_seq("b").await.unwrap(), 1);
        store.close().await;
    }
}

#[tokio::test]
async fn a_peer_cannot_grow_the_dedup_table_with_new_epochs() {
    for (store, _dir) in stores().await {
        for e in 0..20 {
            store
                .store_inbound("p", &format!("e{e}"), &[wire(1, &format!("m{e}"))])
                .await
                .unwrap();
        }
        let rows: i64 = on_pool!(store, |pool, q| {
            let row = sqlx::query(&q(
                "SELECT COUNT(*) FROM inbound_state WHERE from_peer = 'p'",
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            row.try_get::<i64, _>(0).unwrap()
        });
        assert!(rows <= MAX_EPOCHS_PER_PEER + 1, "{rows} counters kept");
        store.close().await;
    }
}

#[tokio::test]
async fn epoch_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gw.db").display());
    let first = Store::open(&url).await.unwrap();
    let epoch = first.current_epoch("b").await.unwrap();
    first.close().await;
    let again = Store::open(&url).await.unwrap();
    // One process per SQLite store: a second opening is refused while it is open.
    let err = Store::open(&url).await.err().expect("second open refused");
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert_eq!(again.current_epoch("b").await.unwrap(), epoch);
    let rotated = again.rotate_epoch("b", &epoch).await.unwrap();
    assert_ne!(rotated, epoch);
    // A stale rotation (another replica already rotated) changes nothing.
    assert_eq!(again.rotate_epoch("b", &epoch).await.unwrap(), rotated);
    // Only towards that peer.
    assert_eq!(again.current_epoch("c").await.unwrap(), epoch);
}

/// Write transactions that their caller abandons at any point (an HTTP client
/// that hangs up, a timeout around a handshake) must leave no connection in
/// the pool holding SQLite's write lock or PostgreSQL's open transaction: one
/// such connection made every later write fail with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_writes_leave_no_transaction_open() {
    use std::future::Future;
    for (store, _dir) in stores().await {
        let kind = store.kind();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..3_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let polls = rng % 6;
            let pause = std::time::Duration::from_micros(rng % 200);
            let acks = [(Some("a".to_string()), format!("m{round}"))];
            let mut write = std::pin::pin!(store.ack_inbox(&acks));
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            for _ in 0..polls {
                if write.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
                std::thread::sleep(pause);
            }
            // Dropped here, wherever it got to.
        }
        // Every pooled connection must still write, promptly.
        for i in 0..16 {
            let acks = [(Some("a".to_string()), format!("after{i}"))];
            let done =
                tokio::time::timeout(std::time::Duration::from_secs(5), store.ack_inbox(&acks))
                    .await;
            assert!(
                matches!(done, Ok(Ok(_))),
                "{kind}: write {i} after abandoned writes: {done:?}"
            );
        }
        store.close().await;
    }
}

/// Messages from a swpt-stomp partner have no sequence number: each is stored
/// under a new id, with its type, and a resend is stored again (at least once).
#[tokio::test]
async fn untracked_messages_keep_their_type_and_are_never_deduplicated() {
    for (store, _dir) in stores().await {
        let kind = store.kind();
        let m = UntrackedMessage {
            content_type: "application/json".into(),
            message_type: "PrepareTransfer".into(),
            body: b"{}".to_vec(),
        };
        assert_eq!(
            store
                .store_untracked("a", &[m.clone(), m.clone()])
                .await
                .unwrap(),
            2
        );
        assert_eq!(store.store_untracked("a", &[m]).await.unwrap(), 1);
        let inbox = store.inbox(10).await.unwrap();
        assert_eq!(inbox.len(), 3, "{kind}");
        assert!(inbox
            .iter()
            .all(|i| i.message_type.as_deref() == Some("PrepareTransfer")));
        // A typed outbox message keeps its type to the wire.
        let mut typed = msg("b", Some("t1"), "x");
        typed.message_type = Some("AccountUpdate".into());
        store.enqueue(&[typed]).await.unwrap();
        let out = store.outbox_after("b", 0, 10).await.unwrap();
        assert_eq!(
            out[0].message_type.as_deref(),
            Some("AccountUpdate"),
            "{kind}"
        );
        store.close().await;
    }
}
