//! The server session's rules, with plain values.

use std::time::{Duration, Instant};

use super::*;

fn params() -> ServerParams {
    ServerParams {
        destination: "/exchange/accounts_in".into(),
        heartbeat: Offer {
            send_min_ms: 5_000,
            recv_desired_ms: 30_000,
        },
        connect_timeout: Duration::from_secs(10),
        dead_after: Duration::from_secs(15),
    }
}

fn drain(s: &mut ServerSession) -> Vec<ServerAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn frame(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Incoming {
    let mut f = StompFrame::new(command, headers);
    f.body = Bytes::copy_from_slice(body);
    Incoming::Frame(f)
}

fn connect() -> Incoming {
    frame(
        "STOMP",
        &[
            ("accept-version", "1.2"),
            ("host", "/"),
            ("heart-beat", "5000,30000"),
        ],
        b"",
    )
}

fn send(receipt: &str) -> Incoming {
    frame(
        "SEND",
        &[
            ("destination", "/exchange/accounts_in"),
            ("type", "PrepareTransfer"),
            ("content-type", "application/json"),
            ("persistent", "true"),
            ("receipt", receipt),
        ],
        b"{}",
    )
}

fn connected(t0: Instant) -> ServerSession {
    let mut s = ServerSession::new(params(), t0);
    s.received(vec![connect()], t0);
    match &drain(&mut s)[..] {
        [ServerAction::Send(Outgoing::Frame(f))] => {
            assert_eq!(f.command, "CONNECTED");
            assert_eq!(f.header("version"), Some("1.2"));
            assert_eq!(f.header("heart-beat"), Some("5000,30000"));
        }
        other => panic!("{other:?}"),
    }
    s
}

/// The ERROR frame's message and the outcome's text of a close.
fn refusal(actions: &[ServerAction]) -> (String, String) {
    match actions.last() {
        Some(ServerAction::Close {
            error: Some(e),
            outcome,
        }) => (
            e.header("message").unwrap_or_default().to_string(),
            match outcome {
                Ok(r) => r.clone(),
                Err(e) => e.to_string(),
            },
        ),
        other => panic!("expected a close with ERROR, got {other:?}"),
    }
}

#[test]
fn sends_that_arrive_together_are_stored_once_and_confirmed_by_the_last_receipt() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.received(vec![send("1"), send("2"), send("3")], t0);
    match &drain(&mut s)[..] {
        [ServerAction::Store(batch)] => {
            assert_eq!(batch.len(), 3);
            assert_eq!(batch[2].receipt, "3");
            assert_eq!(batch[0].message_type, "PrepareTransfer");
            assert_eq!(&batch[0].body[..], b"{}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing is confirmed before the commit.
    s.received(vec![send("4")], t0);
    assert!(drain(&mut s).is_empty(), "one store at a time");
    s.stored(Ok(()), t0);
    let actions = drain(&mut s);
    match &actions[0] {
        ServerAction::Send(Outgoing::Frame(f)) => {
            assert_eq!(f.command, "RECEIPT");
            assert_eq!(f.header("receipt-id"), Some("3"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&actions[1], ServerAction::Store(b) if b[0].receipt == "4"));
}

#[test]
fn messages_that_cannot_be_stored_are_not_confirmed() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.received(vec![send("1")], t0);
    drain(&mut s);
    s.stored(
        Err(StoreError::Db(sqlx::Error::Protocol("disk gone".into()))),
        t0,
    );
    let actions = drain(&mut s);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, ServerAction::Send(Outgoing::Frame(f)) if f.command == "RECEIPT")));
    assert_eq!(refusal(&actions).0, "Internal server error.");
}

#[test]
fn what_swpt_stomp_refuses_is_refused_with_its_words() {
    let t0 = Instant::now();
    let cases: Vec<(Vec<Incoming>, &str)> = vec![
        (vec![send("1")], "Received another command before CONNECT."),
        (
            vec![frame("DISCONNECT", &[("receipt", "x")], b"")],
            "Received DISCONNECT before CONNECT.",
        ),
        (
            vec![frame("CONNECT", &[("accept-version", "1.0,1.1")], b"")],
            "STOMP 1.2 is not supported by the client.",
        ),
        (
            vec![frame(
                "CONNECT",
                &[("accept-version", "1.2"), ("heart-beat", "x")],
                b"",
            )],
            "Received invalid heart-beat value.",
        ),
        (
            vec![connect(), connect()],
            "Received CONNECT command more than once.",
        ),
        (
            vec![connect(), frame("SUBSCRIBE", &[("destination", "/q")], b"")],
            "Received unexpected command \"SUBSCRIBE\".",
        ),
        (
            vec![
                connect(),
                frame(
                    "SEND",
                    &[("destination", "/exchange/accounts_in"), ("type", "T")],
                    b"",
                ),
            ],
            "SEND command without a receipt header.",
        ),
        (
            vec![
                connect(),
                frame(
                    "SEND",
                    &[("destination", "/exchange/accounts_in"), ("receipt", "1")],
                    b"",
                ),
            ],
            "SEND command without a type header.",
        ),
        (
            vec![connect(), frame("DISCONNECT", &[], b""), send("1")],
            "",
        ),
    ];
    for (input, expected) in cases {
        let mut s = ServerSession::new(params(), t0);
        s.received(input, t0);
        let actions = drain(&mut s);
        if expected.is_empty() {
            // DISCONNECT without a receipt just closes.
            assert!(matches!(
                actions.last(),
                Some(ServerAction::Close {
                    error: None,
                    outcome: Ok(_)
                })
            ));
            continue;
        }
        assert_eq!(refusal(&actions).0, expected);
        assert!(s.is_closed());
    }
}

#[test]
fn a_wrong_destination_is_refused_with_the_message_as_context() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.received(
        vec![frame(
            "SEND",
            &[
                ("destination", "/exchange/other"),
                ("type", "PrepareTransfer"),
                ("receipt", "9"),
            ],
            b"{\"a\":1}",
        )],
        t0,
    );
    let actions = drain(&mut s);
    let ServerAction::Close {
        error: Some(e),
        outcome: Err(_),
    } = actions.last().expect("a close")
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        e.header("message"),
        Some("Invalid SEND destination \"/exchange/other\".")
    );
    assert_eq!(e.header("receipt-id"), Some("9"));
    assert_eq!(&e.body[..], b"{\"a\":1}");
}

#[test]
fn disconnect_is_answered_after_everything_before_it_is_confirmed() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.received(
        vec![send("1"), frame("DISCONNECT", &[("receipt", "bye")], b"")],
        t0,
    );
    assert!(matches!(&drain(&mut s)[..], [ServerAction::Store(_)]));
    s.stored(Ok(()), t0);
    let actions = drain(&mut s);
    let receipts: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            ServerAction::Send(Outgoing::Frame(f)) => f.header("receipt-id"),
            _ => None,
        })
        .collect();
    assert_eq!(receipts, vec!["1", "bye"]);
    assert!(matches!(
        actions.last(),
        Some(ServerAction::Close { outcome: Ok(_), .. })
    ));
}

#[test]
fn heart_beats_are_sent_and_a_silent_partner_is_dropped() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(params(), t0);
    s.received(
        vec![frame(
            "CONNECT",
            &[("accept-version", "1.2"), ("heart-beat", "5000,5000")],
            b"",
        )],
        t0,
    );
    drain(&mut s);
    s.tick(t0 + Duration::from_secs(5), Duration::ZERO);
    assert!(matches!(
        &drain(&mut s)[..],
        [ServerAction::Send(Outgoing::Heartbeat)]
    ));
    // Their 5 s against our 30 s: 30 s plus the 10 s allowance.
    s.tick(t0 + Duration::from_secs(40), Duration::ZERO);
    assert!(!s.is_closed());
    drain(&mut s);
    s.tick(t0 + Duration::from_millis(40_001), Duration::ZERO);
    let (message, outcome) = refusal(&drain(&mut s));
    assert!(
        message.starts_with("No data received for 40.001"),
        "{message}"
    );
    assert!(
        outcome.starts_with("dead link: nothing received"),
        "{outcome}"
    );
}

#[test]
fn a_client_that_never_connects_is_dropped() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(params(), t0);
    s.tick(t0 + Duration::from_secs(9), Duration::ZERO);
    assert!(!s.is_closed());
    s.tick(t0 + Duration::from_secs(10), Duration::ZERO);
    assert!(s.is_closed());
}

#[test]
fn bytes_that_are_not_stomp_end_the_connection_after_what_came_before() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.received(vec![send("1")], t0);
    s.undecodable(&StompError::BodyTooLarge, t0);
    assert!(matches!(&drain(&mut s)[..], [ServerAction::Store(_)]));
    s.stored(Ok(()), t0);
    let actions = drain(&mut s);
    assert!(
        matches!(&actions[0], ServerAction::Send(Outgoing::Frame(f)) if f.command == "RECEIPT")
    );
    assert_eq!(refusal(&actions).0, "The body is too large.");
}

#[test]
fn a_failed_read_ends_the_connection_without_blaming_the_partners_frames() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let reset = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no close_notify");
    s.undecodable(&StompError::Io(reset), t0);
    let actions = drain(&mut s);
    match &actions[..] {
        [ServerAction::Close {
            error: None,
            outcome: Err(StompLinkError::Read(why)),
        }] => assert!(why.contains("no close_notify"), "{why}"),
        other => panic!("expected a close without ERROR, got {other:?}"),
    }
}
