//! The session's timers and endings: pings and round trips, dead and idle
//! links, goodbyes, protocol errors.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

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
