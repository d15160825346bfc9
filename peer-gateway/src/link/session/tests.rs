//! Every rule of a link, with plain values: no socket, no store, no clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

const HEARTBEAT: Duration = Duration::from_millis(500);
const DEAD_AFTER: Duration = Duration::from_millis(1_500);

fn params() -> Params {
    Params {
        peer_id: "b".into(),
        peer_epoch: "their-epoch".into(),
        our_epoch: "our-epoch".into(),
        peer_max_payload: 65_536,
        our_max_payload: 65_536,
        window_frames: 4,
        window_bytes: 1 << 20,
        heartbeat: HEARTBEAT,
        dead_after: DEAD_AFTER,
        idle_after: None,
    }
}

/// A session started at `t0` with nothing acknowledged and no CRL, whose first
/// outbox read has been answered with nothing.
fn started(params: Params, t0: Instant) -> Session {
    let mut s = Session::new(params, t0);
    s.start(Ok(0), None, t0);
    assert!(matches!(
        s.poll_action(),
        Some(Action::ReadOutbox { after: 0, .. })
    ));
    s.outbox_read(Ok(vec![]), t0);
    assert!(drain(&mut s).is_empty());
    s
}

fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn wire(seq: i64, body: &str) -> WireMessage {
    WireMessage {
        seq,
        message_id: format!("m{seq}"),
        content_type: "text/plain".into(),
        body: body.as_bytes().to_vec(),
    }
}

fn message(seq: u64) -> Frame {
    Frame::Message {
        seq,
        id: format!("m{seq}"),
        content_type: "text/plain".into(),
        body: Bytes::from_static(b"x"),
    }
}

fn sent_frames(actions: &[Action]) -> Vec<&Frame> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn closing(actions: &[Action]) -> (&Option<Frame>, &Result<End, LinkError>) {
    match actions.last() {
        Some(Action::Close { goodbye, outcome }) => (goodbye, outcome),
        other => panic!("expected a close last, got {other:?} in {actions:?}"),
    }
}

/// The failure's text (what status and logs show), or a panic for an orderly end.
fn failure(outcome: &Result<End, LinkError>) -> String {
    match outcome {
        Err(e) => e.to_string(),
        Ok(end) => panic!("expected a failure, got {end:?}"),
    }
}

/// A store failure, as the driver reports one.
fn db_error(what: &str) -> StoreError {
    StoreError::Db(sqlx::Error::Protocol(what.into()))
}

fn goodbye_code(goodbye: &Option<Frame>) -> Option<GoodbyeCode> {
    match goodbye {
        Some(Frame::Goodbye { code, .. }) => Some(*code),
        _ => None,
    }
}

// ---- start, CRL, window ----

#[test]
fn start_offers_our_crl_then_reads_the_outbox_after_the_last_ack() {
    let t0 = Instant::now();
    let mut s = Session::new(params(), t0);
    s.start(Ok(41), Some(vec![0x30, 0x00]), t0);
    let actions = drain(&mut s);
    assert!(matches!(&actions[0], Action::Send(Frame::Crl { .. })));
    assert!(matches!(
        actions[1],
        Action::ReadOutbox {
            after: 41,
            limit: 4
        }
    ));
}

#[test]
fn a_crl_larger_than_either_frame_limit_is_not_offered_and_the_link_stays() {
    let t0 = Instant::now();
    let mut s = Session::new(
        Params {
            our_max_payload: 100,
            ..params()
        },
        t0,
    );
    s.start(Ok(0), Some(vec![0; 101]), t0);
    let actions = drain(&mut s);
    assert!(sent_frames(&actions).is_empty());
    assert!(!s.is_closed());
}

#[test]
fn a_store_that_cannot_say_what_was_acknowledged_ends_the_link() {
    let t0 = Instant::now();
    let mut s = Session::new(params(), t0);
    s.start(Err(db_error("gone")), None, t0);
    let actions = drain(&mut s);
    let (goodbye, outcome) = closing(&actions);
    assert!(goodbye.is_none());
    assert!(matches!(outcome, Err(LinkError::Store(_))));
    assert!(failure(outcome).contains("gone"));
}

#[test]
fn messages_are_sent_in_order_up_to_the_window_and_more_are_read_after_acks() {
    let t0 = Instant::now();
    let mut s = Session::new(params(), t0);
    s.start(Ok(0), None, t0);
    assert!(matches!(
        drain(&mut s)[..],
        [Action::ReadOutbox { after: 0, limit: 4 }]
    ));
    // A full read (4 = the window): all sent, the window is full, no more reads.
    s.outbox_read(Ok((1..=4).map(|i| wire(i, "x")).collect()), t0);
    let actions = drain(&mut s);
    let seqs: Vec<u64> = sent_frames(&actions)
        .iter()
        .map(|f| match f {
            Frame::Message { seq, .. } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Count(Count::Sent, 4))));
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::ReadOutbox { .. })));
    // Even when told the outbox grew.
    s.outbox_grew(t0);
    assert!(drain(&mut s).is_empty());
    // An ack for 2 frees two slots: the outbox is read after 4, for 2.
    s.frames_received(vec![Frame::Ack { seq: 2 }], t0);
    assert!(matches!(drain(&mut s)[..], [Action::AckOutbox(2)]));
    s.outbox_acked(Ok(()), t0);
    let actions = drain(&mut s);
    assert!(matches!(actions[0], Action::Count(Count::Acknowledged, 2)));
    assert!(matches!(
        actions[1],
        Action::ReadOutbox { after: 4, limit: 2 }
    ));
}

#[test]
fn the_byte_window_stops_sending_too() {
    let t0 = Instant::now();
    let mut s = Session::new(
        Params {
            window_frames: 100,
            window_bytes: 100,
            ..params()
        },
        t0,
    );
    s.start(Ok(0), None, t0);
    drain(&mut s);
    let big = "y".repeat(200);
    s.outbox_read(Ok(vec![wire(1, &big)]), t0);
    drain(&mut s);
    s.outbox_grew(t0);
    assert!(
        drain(&mut s).is_empty(),
        "no read while the bytes in flight exceed the window"
    );
}

#[test]
fn a_short_read_means_the_outbox_is_empty_until_it_grows_again() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.outbox_grew(t0);
    assert!(matches!(
        drain(&mut s)[..],
        [Action::ReadOutbox { after: 0, .. }]
    ));
    s.outbox_read(Ok(vec![wire(1, "x")]), t0);
    let actions = drain(&mut s);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::ReadOutbox { .. })));
}

#[test]
fn a_message_over_the_partners_frame_limit_ends_the_link_instead_of_being_sent() {
    let t0 = Instant::now();
    let mut s = Session::new(
        Params {
            peer_max_payload: 50,
            ..params()
        },
        t0,
    );
    s.start(Ok(0), None, t0);
    drain(&mut s);
    s.outbox_read(Ok(vec![wire(1, &"z".repeat(60))]), t0);
    let actions = drain(&mut s);
    assert!(sent_frames(&actions).is_empty());
    let (_, outcome) = closing(&actions);
    assert!(
        matches!(outcome, Err(LinkError::TooLargeForPartner { size, max: 50, .. }) if *size > 50),
        "{outcome:?}"
    );
}

// ---- receiving: group commit, order, acks ----

#[test]
fn messages_that_arrive_together_are_stored_in_one_transaction_and_acked_once() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![message(1), message(2), message(3)], t0);
    let actions = drain(&mut s);
    match &actions[..] {
        [Action::StoreInbound(batch)] => {
            assert_eq!(
                batch.iter().map(|m| m.seq).collect::<Vec<_>>(),
                vec![1, 2, 3]
            );
        }
        other => panic!("{other:?}"),
    }
    s.stored(Ok((3, 3)), t0);
    let actions = drain(&mut s);
    assert!(matches!(actions[0], Action::Count(Count::Received, 3)));
    assert!(matches!(actions[1], Action::Send(Frame::Ack { seq: 3 })));
    assert_eq!(actions.len(), 2);
}

#[test]
fn a_control_frame_behind_messages_waits_until_they_are_stored() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![message(1), Frame::Ping { nonce: 9 }, message(2)], t0);
    assert!(matches!(&drain(&mut s)[..], [Action::StoreInbound(b)] if b.len() == 1));
    s.stored(Ok((1, 1)), t0);
    let actions = drain(&mut s);
    let frames = sent_frames(&actions);
    assert!(matches!(
        frames[..],
        [Frame::Ack { seq: 1 }, Frame::Pong { nonce: 9 }]
    ));
    assert!(matches!(
        actions.last(),
        Some(Action::StoreInbound(b)) if b[0].seq == 2
    ));
}

#[test]
fn resends_the_store_already_holds_are_acknowledged_without_counting() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![message(1), message(2)], t0);
    drain(&mut s);
    // The store had both (a resend after a lost ack): nothing new, still acked.
    s.stored(Ok((2, 0)), t0);
    let actions = drain(&mut s);
    assert!(matches!(actions[0], Action::Count(Count::Received, 0)));
    assert!(matches!(actions[1], Action::Send(Frame::Ack { seq: 2 })));
}

#[test]
fn messages_that_cannot_be_stored_are_not_acknowledged_and_end_the_link() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![message(1)], t0);
    drain(&mut s);
    s.stored(Err(db_error("database is locked")), t0);
    let actions = drain(&mut s);
    assert!(!sent_frames(&actions)
        .iter()
        .any(|f| matches!(f, Frame::Ack { .. })));
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(GoodbyeCode::Normal));
    let text = failure(outcome);
    assert!(
        text.starts_with("cannot store received messages: database error: ")
            && text.ends_with("database is locked"),
        "{text}"
    );
}

#[test]
fn a_sequence_number_beyond_what_the_store_can_hold_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![message(u64::MAX)], t0);
    let actions = drain(&mut s);
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(GoodbyeCode::ProtocolError));
    assert_eq!(
        failure(outcome),
        LinkError::Protocol("sequence number out of range".into()).to_string()
    );
}

// ---- acks: lost acks and restored stores ----

fn with_in_flight(n: i64, t0: Instant) -> Session {
    let mut s = started(
        Params {
            window_frames: 100,
            ..params()
        },
        t0,
    );
    s.outbox_grew(t0);
    drain(&mut s);
    s.outbox_read(Ok((1..=n).map(|i| wire(i, "x")).collect()), t0);
    drain(&mut s);
    s
}

#[test]
fn an_ack_within_what_was_sent_removes_those_messages() {
    let t0 = Instant::now();
    let mut s = with_in_flight(3, t0);
    s.frames_received(vec![Frame::Ack { seq: 3 }], t0);
    assert!(matches!(drain(&mut s)[..], [Action::AckOutbox(3)]));
    s.outbox_acked(Ok(()), t0);
    assert!(drain(&mut s)
        .iter()
        .any(|a| matches!(a, Action::Count(Count::Acknowledged, 3))));
}

/// A cumulative ack above what this link sent is legitimate when the store
/// numbered that far: the partner stored them on an earlier link whose ack we
/// lost (a crash, or a link that died), or this link sent less (a smaller
/// window). It is applied; no new epoch.
#[test]
fn an_ack_for_messages_sent_on_an_earlier_link_is_applied_not_treated_as_a_restore() {
    let t0 = Instant::now();
    let mut s = with_in_flight(2, t0);
    s.frames_received(vec![Frame::Ack { seq: 7 }], t0);
    assert!(matches!(drain(&mut s)[..], [Action::QueryAssigned]));
    s.assigned(Ok(9));
    assert!(matches!(drain(&mut s)[..], [Action::AckOutbox(7)]));
    s.outbox_acked(Ok(()), t0);
    let actions = drain(&mut s);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Count(Count::Acknowledged, 2))));
    // Sending resumes after 7, not after 2.
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::ReadOutbox { after: 7, .. })));
    assert!(!s.is_closed());
}

/// An ack beyond anything our store ever numbered: it was restored from an
/// older copy. Keep the outbox, start a new epoch, reconnect.
#[test]
fn an_ack_beyond_anything_ever_numbered_starts_a_new_epoch_and_ends_the_link() {
    let t0 = Instant::now();
    let mut s = with_in_flight(2, t0);
    s.frames_received(vec![Frame::Ack { seq: 50 }], t0);
    drain(&mut s);
    s.assigned(Ok(2));
    match &drain(&mut s)[..] {
        [Action::RotateEpoch(old)] => assert_eq!(old, "our-epoch"),
        other => panic!("{other:?}"),
    }
    s.epoch_rotated(Ok("new-epoch".into()));
    let actions = drain(&mut s);
    assert!(!actions.iter().any(|a| matches!(a, Action::AckOutbox(_))));
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(GoodbyeCode::Normal));
    assert_eq!(failure(outcome), LinkError::EpochRestarted.to_string());
}

#[test]
fn an_ack_that_does_not_fit_a_sequence_number_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![Frame::Ack { seq: u64::MAX }], t0);
    let actions = drain(&mut s);
    let (_, outcome) = closing(&actions);
    assert_eq!(
        failure(outcome),
        LinkError::Protocol("ack out of range".into()).to_string()
    );
}

// ---- pings, heartbeats, CRLs ----

#[test]
fn a_ping_from_the_partner_is_answered_and_a_crl_handed_on() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    let der = Bytes::from_static(&[0x30, 0x00]);
    s.frames_received(
        vec![Frame::Ping { nonce: 5 }, Frame::Crl { der: der.clone() }],
        t0,
    );
    let actions = drain(&mut s);
    assert!(matches!(actions[0], Action::Send(Frame::Pong { nonce: 5 })));
    assert!(matches!(&actions[1], Action::OfferCrl(d) if *d == der));
}

#[test]
fn a_quiet_link_pings_every_heartbeat_and_measures_the_round_trip() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.tick(t0 + HEARTBEAT / 2, Duration::ZERO);
    assert!(drain(&mut s).is_empty(), "not yet");
    s.tick(t0 + HEARTBEAT, Duration::ZERO);
    let nonce = match &drain(&mut s)[..] {
        [Action::Send(Frame::Ping { nonce })] => *nonce,
        other => panic!("{other:?}"),
    };
    s.frames_received(
        vec![Frame::Pong { nonce }],
        t0 + HEARTBEAT + Duration::from_millis(3),
    );
    assert!(matches!(
        drain(&mut s)[..],
        [Action::Rtt(rtt)] if rtt == Duration::from_millis(3)
    ));
}

#[test]
fn an_operators_ping_is_answered_with_the_round_trip() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    s.ping(reply, Duration::ZERO, t0);
    let nonce = match &drain(&mut s)[..] {
        [Action::Send(Frame::Ping { nonce })] => *nonce,
        other => panic!("{other:?}"),
    };
    s.frames_received(vec![Frame::Pong { nonce }], t0 + Duration::from_millis(2));
    for a in drain(&mut s) {
        if let Action::ReplyPing(r, result) = a {
            let _ = r.send(result);
        }
    }
    assert_eq!(answer.try_recv(), Ok(Ok(Duration::from_millis(2))));
}

#[test]
fn an_operators_ping_through_a_stalled_link_fails_at_once() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    let (reply, _answer) = tokio::sync::oneshot::channel();
    s.ping(reply, HEARTBEAT, t0);
    match &drain(&mut s)[..] {
        [Action::ReplyPing(_, Err(why))] => {
            assert!(matches!(why, PingError::Stalled { ms: 500 }), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_operators_ping_without_pong_fails_after_the_dead_link_bound_or_when_the_link_ends() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    let (reply, _a) = tokio::sync::oneshot::channel();
    s.ping(reply, Duration::ZERO, t0);
    drain(&mut s);
    // Something keeps arriving (so the link is alive), but no pong.
    s.frames_received(vec![Frame::Ack { seq: 0 }], t0 + DEAD_AFTER);
    drain(&mut s);
    s.outbox_acked(Ok(()), t0 + DEAD_AFTER);
    drain(&mut s);
    s.tick(t0 + DEAD_AFTER, Duration::ZERO);
    assert!(drain(&mut s).iter().any(
        |a| matches!(a, Action::ReplyPing(_, Err(why)) if matches!(why, PingError::NoPong { .. }))
    ));
    // A pending one when the link closes.
    let (reply, _a) = tokio::sync::oneshot::channel();
    s.ping(reply, Duration::ZERO, t0 + DEAD_AFTER);
    drain(&mut s);
    s.shutdown();
    let actions = drain(&mut s);
    assert!(matches!(
        &actions[0],
        Action::ReplyPing(_, Err(PingError::Closed))
    ));
    assert!(matches!(actions.last(), Some(Action::Close { .. })));
}

// ---- dead, idle, goodbyes ----

#[test]
fn nothing_received_for_the_dead_link_bound_ends_the_link_with_a_goodbye() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![Frame::Ping { nonce: 1 }], t0);
    drain(&mut s);
    s.tick(t0 + DEAD_AFTER - Duration::from_millis(1), Duration::ZERO);
    assert!(!s.is_closed());
    drain(&mut s);
    s.tick(t0 + DEAD_AFTER, Duration::ZERO);
    let actions = drain(&mut s);
    assert!(matches!(
        actions[0],
        Action::Count(Count::DeadNothingReceived, 1)
    ));
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(GoodbyeCode::HeartbeatTimeout));
    assert_eq!(
        failure(outcome),
        LinkError::NothingReceived { ms: 1500 }.to_string()
    );
}

#[test]
fn the_next_deadline_is_the_dead_link_bound_or_the_next_heartbeat() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    assert_eq!(s.next_deadline(), t0 + HEARTBEAT);
    // A frame was just sent: the dead-link bound since the last receipt comes first.
    s.tick(t0 + HEARTBEAT, Duration::ZERO);
    drain(&mut s);
    assert_eq!(s.next_deadline(), t0 + HEARTBEAT * 2);
    s.frames_received(vec![Frame::Ping { nonce: 1 }], t0 + HEARTBEAT * 2);
    drain(&mut s);
    s.frames_received(vec![Frame::Ping { nonce: 2 }], t0 + DEAD_AFTER);
    drain(&mut s);
    assert_eq!(s.next_deadline(), t0 + DEAD_AFTER + HEARTBEAT);
}

#[test]
fn a_partner_that_accepts_nothing_for_the_dead_link_bound_is_dropped_without_a_goodbye() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    // Frames keep arriving: only the write side is stuck.
    s.frames_received(vec![Frame::Ping { nonce: 1 }], t0 + DEAD_AFTER);
    drain(&mut s);
    s.tick(t0 + DEAD_AFTER, DEAD_AFTER);
    let actions = drain(&mut s);
    assert!(matches!(
        actions[0],
        Action::Count(Count::DeadWriteStalled, 1)
    ));
    let (goodbye, outcome) = closing(&actions);
    assert!(goodbye.is_none(), "a goodbye could not get through");
    assert_eq!(
        failure(outcome),
        LinkError::WriteStalled { ms: 1500 }.to_string()
    );
}

#[test]
fn an_idle_link_closes_only_when_nothing_is_in_flight() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(2);
    let mut s = started(
        Params {
            idle_after: Some(idle),
            ..params()
        },
        t0,
    );
    s.outbox_grew(t0);
    drain(&mut s);
    s.outbox_read(Ok(vec![wire(1, "x")]), t0);
    drain(&mut s);
    // Pongs keep it alive but are not activity; one message is unacknowledged.
    let late = t0 + idle;
    s.frames_received(vec![Frame::Ping { nonce: 1 }], late);
    drain(&mut s);
    s.tick(late, Duration::ZERO);
    assert!(!s.is_closed(), "a message is in flight");
    s.frames_received(vec![Frame::Ack { seq: 1 }], late);
    drain(&mut s);
    s.outbox_acked(Ok(()), late);
    drain(&mut s);
    s.outbox_read(Ok(vec![]), late);
    drain(&mut s);
    // Acks are not application activity: with nothing in flight any more, the
    // link has been idle since the message was sent and closes at the next tick.
    s.tick(late + HEARTBEAT / 4, Duration::ZERO);
    let actions = drain(&mut s);
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(GoodbyeCode::Idle));
    assert!(matches!(outcome, Ok(End::Idle(r)) if r == "closed by us: idle"));
}

#[test]
fn the_partners_goodbye_says_how_the_link_ended() {
    let t0 = Instant::now();
    for (code, expected) in [
        (GoodbyeCode::Idle, "Idle"),
        (GoodbyeCode::DuplicateLink, "Duplicate"),
        (GoodbyeCode::Normal, "Orderly"),
        (GoodbyeCode::Revoked, "Orderly"),
    ] {
        let mut s = started(params(), t0);
        s.frames_received(vec![Frame::goodbye(code, "bye")], t0);
        let actions = drain(&mut s);
        let (goodbye, outcome) = closing(&actions);
        assert!(goodbye.is_none(), "no goodbye back");
        let kind = match outcome {
            Ok(End::Idle(_)) => "Idle",
            Ok(End::Duplicate(_)) => "Duplicate",
            Ok(End::Orderly(_)) => "Orderly",
            Err(e) => panic!("{e}"),
        };
        assert_eq!(kind, expected, "{code:?}");
    }
}

#[test]
fn an_unexpected_frame_or_undecodable_bytes_end_the_link_after_what_came_before() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![Frame::hello("b", 65_536, 500, "e")], t0);
    let actions = drain(&mut s);
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(GoodbyeCode::ProtocolError));
    assert_eq!(
        failure(outcome),
        LinkError::Protocol("unexpected hello frame".into()).to_string()
    );

    let mut s = started(params(), t0);
    s.frames_received(vec![message(1)], t0);
    let e = crate::frame::FrameError::TooLarge {
        length: 1 << 32,
        max: 65_536,
    };
    s.undecodable(&e, t0);
    // The message is stored and acknowledged first.
    assert!(matches!(drain(&mut s)[..], [Action::StoreInbound(_)]));
    s.stored(Ok((1, 1)), t0);
    let actions = drain(&mut s);
    assert!(matches!(actions[1], Action::Send(Frame::Ack { seq: 1 })));
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(e.goodbye_code()));
    assert!(matches!(outcome, Err(LinkError::Protocol(_))));
}

#[test]
fn unknown_ignorable_frames_are_skipped() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(
        vec![
            Frame::Unknown { frame_type: 0x80 },
            Frame::Ping { nonce: 3 },
        ],
        t0,
    );
    assert!(matches!(
        drain(&mut s)[..],
        [Action::Send(Frame::Pong { nonce: 3 })]
    ));
}

#[test]
fn our_side_closes_with_its_reason_and_then_ignores_everything() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.close_by_us(GoodbyeCode::Revoked, "partner deactivated");
    let actions = drain(&mut s);
    let (goodbye, outcome) = closing(&actions);
    assert_eq!(goodbye_code(goodbye), Some(GoodbyeCode::Revoked));
    assert!(matches!(outcome, Ok(End::Orderly(r)) if r.contains("partner deactivated")));
    s.frames_received(vec![message(1)], t0);
    s.tick(t0 + DEAD_AFTER * 2, DEAD_AFTER * 2);
    s.outbox_grew(t0);
    assert!(drain(&mut s).is_empty());

    let mut s = started(params(), t0);
    s.shutdown();
    let actions = drain(&mut s);
    assert_eq!(goodbye_code(closing(&actions).0), Some(GoodbyeCode::Normal));
}

#[test]
fn the_socket_failing_or_closing_ends_the_link_without_a_goodbye() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.read_closed();
    let actions = drain(&mut s);
    let (goodbye, outcome) = closing(&actions);
    assert!(goodbye.is_none());
    assert!(matches!(outcome, Err(LinkError::ClosedWithoutGoodbye)));
    let mut s = started(params(), t0);
    s.write_failed(WriteError::Failed("broken pipe".into()));
    let actions = drain(&mut s);
    assert_eq!(failure(closing(&actions).1), "send failed: broken pipe");
}

#[test]
fn an_outbox_that_grows_during_a_store_operation_is_read_after_it() {
    let t0 = Instant::now();
    let mut s = started(params(), t0);
    s.frames_received(vec![message(1)], t0);
    drain(&mut s);
    s.outbox_grew(t0);
    assert!(drain(&mut s).is_empty(), "one store operation at a time");
    s.stored(Ok((1, 1)), t0);
    assert!(drain(&mut s)
        .iter()
        .any(|a| matches!(a, Action::ReadOutbox { .. })));
}
