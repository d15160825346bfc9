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
        message_type: None,
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

mod timers;
