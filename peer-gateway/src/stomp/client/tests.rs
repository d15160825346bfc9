//! The client session's rules, with plain values.

use std::time::{Duration, Instant};

use super::*;

fn params() -> ClientParams {
    ClientParams {
        host: "/".into(),
        login: None,
        passcode: None,
        destination: "/exchange/accounts_in".into(),
        window: 3,
        heartbeat: Offer {
            send_min_ms: 5_000,
            recv_desired_ms: 30_000,
        },
        connect_timeout: Duration::from_secs(10),
        dead_after: Duration::from_secs(15),
    }
}

fn drain(s: &mut ClientSession) -> Vec<ClientAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn frame(command: &str, headers: &[(&str, &str)]) -> Incoming {
    Incoming::Frame(StompFrame::new(command, headers))
}

fn message(seq: i64, message_type: Option<&str>) -> WireMessage {
    WireMessage {
        seq,
        message_id: format!("m{seq}"),
        content_type: "application/json".into(),
        message_type: message_type.map(str::to_string),
        body: b"{}".to_vec(),
    }
}

/// A session that is CONNECTED and has been asked to read the outbox.
fn connected(acked: i64, t0: Instant) -> ClientSession {
    let mut s = ClientSession::new(params(), acked, t0);
    match &drain(&mut s)[..] {
        [ClientAction::Send(Outgoing::Frame(f))] => {
            assert_eq!(f.command, "STOMP");
            assert_eq!(f.header("accept-version"), Some("1.2"));
            assert_eq!(f.header("host"), Some("/"));
            assert_eq!(f.header("heart-beat"), Some("5000,30000"));
        }
        other => panic!("{other:?}"),
    }
    s.received(
        vec![frame(
            "CONNECTED",
            &[("version", "1.2"), ("heart-beat", "5000,30000")],
        )],
        t0,
    );
    match &drain(&mut s)[..] {
        [ClientAction::ReadOutbox { after, limit: 3 }] => assert_eq!(*after, acked),
        other => panic!("{other:?}"),
    }
    s
}

fn sends(actions: &[ClientAction]) -> Vec<&StompFrame> {
    actions
        .iter()
        .filter_map(|a| match a {
            ClientAction::Send(Outgoing::Frame(f)) if f.command == "SEND" => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn nothing_is_sent_before_connected() {
    let t0 = Instant::now();
    let mut s = ClientSession::new(params(), 0, t0);
    drain(&mut s);
    s.outbox_grew();
    assert!(drain(&mut s).is_empty());
}

#[test]
fn outbox_messages_go_as_sends_with_the_swpt_headers_within_the_window() {
    let t0 = Instant::now();
    let mut s = connected(10, t0);
    s.outbox_read(
        Ok(vec![
            message(11, Some("PrepareTransfer")),
            message(12, Some("FinalizeTransfer")),
            message(13, Some("ConfigureAccount")),
        ]),
        t0,
    );
    let actions = drain(&mut s);
    let frames = sends(&actions);
    assert_eq!(frames.len(), 3);
    let f = frames[0];
    assert_eq!(f.header("destination"), Some("/exchange/accounts_in"));
    assert_eq!(f.header("type"), Some("PrepareTransfer"));
    assert_eq!(f.header("content-type"), Some("application/json"));
    assert_eq!(f.header("persistent"), Some("true"));
    assert_eq!(f.header("receipt"), Some("11"));
    assert_eq!(&f.body[..], b"{}");
    // The window (3) is full: no more reads, even when the outbox grows.
    assert!(!actions
        .iter()
        .any(|a| matches!(a, ClientAction::ReadOutbox { .. })));
    s.outbox_grew();
    assert!(drain(&mut s).is_empty());
}

#[test]
fn a_receipt_confirms_everything_up_to_it_and_reopens_the_window() {
    let t0 = Instant::now();
    let mut s = connected(0, t0);
    s.outbox_read(
        Ok(vec![
            message(1, Some("T")),
            message(2, Some("T")),
            message(3, Some("T")),
        ]),
        t0,
    );
    drain(&mut s);
    s.received(vec![frame("RECEIPT", &[("receipt-id", "2")])], t0);
    assert!(matches!(drain(&mut s)[..], [ClientAction::AckOutbox(2)]));
    s.outbox_acked(Ok(()), 2);
    let actions = drain(&mut s);
    assert!(matches!(
        actions[0],
        ClientAction::Count(ClientCount::Acknowledged, 2)
    ));
    assert!(matches!(
        actions[1],
        ClientAction::ReadOutbox { after: 3, limit: 2 }
    ));
}

#[test]
fn receipts_during_an_outbox_operation_are_applied_after_it() {
    let t0 = Instant::now();
    let mut s = connected(0, t0);
    s.outbox_read(Ok(vec![message(1, Some("T")), message(2, Some("T"))]), t0);
    drain(&mut s);
    s.received(vec![frame("RECEIPT", &[("receipt-id", "1")])], t0);
    assert!(matches!(drain(&mut s)[..], [ClientAction::AckOutbox(1)]));
    s.received(vec![frame("RECEIPT", &[("receipt-id", "2")])], t0);
    assert!(drain(&mut s).is_empty(), "one store operation at a time");
    s.outbox_acked(Ok(()), 1);
    let actions = drain(&mut s);
    assert!(actions
        .iter()
        .any(|a| matches!(a, ClientAction::AckOutbox(2))));
}

#[test]
fn a_receipt_for_something_never_sent_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut s = connected(0, t0);
    s.received(vec![frame("RECEIPT", &[("receipt-id", "99")])], t0);
    assert!(matches!(
        drain(&mut s).last(),
        Some(ClientAction::Close {
            outcome: Err(StompLinkError::Protocol(_))
        })
    ));
}

#[test]
fn the_servers_error_ends_the_connection_with_its_message() {
    let t0 = Instant::now();
    let mut s = connected(0, t0);
    s.received(
        vec![frame("ERROR", &[("message", "Invalid creditor ID: 0x01.")])],
        t0,
    );
    match drain(&mut s).last() {
        Some(ClientAction::Close { outcome: Err(e) }) => {
            assert_eq!(
                e.to_string(),
                "the partner's STOMP server said: Invalid creditor ID: 0x01."
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn messages_swpt_stomp_cannot_carry_are_not_sent() {
    let t0 = Instant::now();
    let mut s = connected(0, t0);
    s.outbox_read(Ok(vec![message(1, None)]), t0);
    let actions = drain(&mut s);
    assert!(sends(&actions).is_empty());
    assert!(matches!(
        actions.last(),
        Some(ClientAction::Close {
            outcome: Err(StompLinkError::Unsendable { .. })
        })
    ));
    let mut s = connected(0, t0);
    let mut big = message(1, Some("T"));
    big.body = vec![b'x'; BODY_MAX_LENGTH + 1];
    s.outbox_read(Ok(vec![big]), t0);
    assert!(sends(&drain(&mut s)).is_empty());
}

#[test]
fn a_server_that_never_answers_or_goes_silent_is_dropped() {
    let t0 = Instant::now();
    let mut s = ClientSession::new(params(), 0, t0);
    drain(&mut s);
    s.tick(t0 + Duration::from_secs(10), Duration::ZERO);
    assert!(matches!(
        drain(&mut s).last(),
        Some(ClientAction::Close {
            outcome: Err(StompLinkError::NoConnect)
        })
    ));
    let mut s = connected(0, t0);
    s.tick(t0 + Duration::from_secs(30), Duration::ZERO);
    assert!(matches!(
        drain(&mut s)[..],
        [ClientAction::Send(Outgoing::Heartbeat)]
    ));
    s.tick(t0 + Duration::from_millis(40_001), Duration::ZERO);
    assert!(matches!(
        drain(&mut s).last(),
        Some(ClientAction::Close {
            outcome: Err(StompLinkError::NothingReceived { .. })
        })
    ));
}

#[test]
fn wrong_or_unexpected_frames_from_the_server_are_protocol_errors() {
    let t0 = Instant::now();
    for (input, why) in [
        (
            vec![frame("CONNECTED", &[("version", "1.1")])],
            "Received wrong protocol version.",
        ),
        (
            vec![frame("RECEIPT", &[("receipt-id", "1")])],
            "Received another command before CONNECTED.",
        ),
        (
            vec![frame("MESSAGE", &[])],
            "Received unexpected command \"MESSAGE\".",
        ),
    ] {
        let mut s = ClientSession::new(params(), 0, t0);
        drain(&mut s);
        s.received(input, t0);
        match drain(&mut s).last() {
            Some(ClientAction::Close {
                outcome: Err(StompLinkError::Protocol(w)),
            }) => {
                assert_eq!(w, why)
            }
            other => panic!("{other:?}"),
        }
    }
}
