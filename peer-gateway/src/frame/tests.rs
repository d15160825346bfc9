//! The codec against hand-written bytes, round trips and hostile input.

use super::*;
use bytes::BufMut;
use tokio_util::codec::{Decoder, Encoder};

fn encode(frame: Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode(frame, &mut buf)
        .expect("encodes");
    buf
}

fn decode_all(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    FrameCodec::default().decode(&mut BytesMut::from(bytes))
}

/// A raw frame with the given header fields and payload.
fn raw(frame_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![frame_type, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::hello(
            "3f0c5e0a9d3b4c1e8a7f6b5c4d3e2f10",
            DEFAULT_MAX_PAYLOAD,
            5000,
            "9b1e4c0d2a7f4e8b8c3d6a5f1e2b3c4d",
        ),
        Frame::Ping { nonce: 0 },
        Frame::Ping { nonce: u64::MAX },
        Frame::Pong {
            nonce: 0x0102_0304_0506_0708,
        },
        Frame::Crl {
            der: Bytes::from_static(&[0x30, 0x03, 0x02, 0x01, 0x00]),
        },
        Frame::goodbye(GoodbyeCode::Normal, ""),
        Frame::goodbye(
            GoodbyeCode::DuplicateLink,
            "tie-break: keeping the link dialed by a",
        ),
        Frame::goodbye(GoodbyeCode::ProtocolError, "bad frame"),
        Frame::goodbye(GoodbyeCode::Revoked, "revoked"),
        Frame::goodbye(GoodbyeCode::FrameTooLarge, "too large"),
        Frame::goodbye(GoodbyeCode::Idle, "idle"),
        Frame::goodbye(GoodbyeCode::HeartbeatTimeout, "é"),
        Frame::goodbye(GoodbyeCode::Other(999), "future"),
        Frame::Message {
            seq: 42,
            id: "msg-1".into(),
            content_type: "application/json".into(),
            body: Bytes::from_static(b"{\"x\":1}"),
        },
        Frame::Message {
            seq: 0,
            id: "x".repeat(MAX_MESSAGE_ID_LEN),
            content_type: String::new(),
            body: Bytes::new(),
        },
        Frame::Ack { seq: 7 },
        Frame::Unknown { frame_type: 0x80 },
        Frame::Unknown { frame_type: 0xFF },
    ]
}

#[test]
fn round_trip_every_frame_type() {
    for frame in sample_frames() {
        let mut buf = encode(frame.clone());
        let decoded = FrameCodec::default().decode(&mut buf).expect("decodes");
        assert_eq!(decoded, Some(frame));
        assert!(buf.is_empty(), "whole frame consumed");
    }
}

#[test]
fn several_frames_in_one_buffer() {
    let mut buf = BytesMut::new();
    let mut codec = FrameCodec::default();
    for frame in sample_frames() {
        codec.encode(frame, &mut buf).expect("encodes");
    }
    let mut out = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).expect("decodes") {
        out.push(frame);
    }
    assert_eq!(out, sample_frames());
    assert!(buf.is_empty());
}

#[test]
fn wire_layout_is_as_documented() {
    let buf = encode(Frame::Ping {
        nonce: 0x0102_0304_0506_0708,
    });
    assert_eq!(&buf[..], &[2, 0, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);

    let buf = encode(Frame::goodbye(GoodbyeCode::Idle, "bye"));
    assert_eq!(&buf[..], &[5, 0, 0, 0, 0, 0, 0, 5, 0, 5, b'b', b'y', b'e']);

    let buf = encode(Frame::Message {
        seq: 1,
        id: "ab".into(),
        content_type: "t".into(),
        body: Bytes::from_static(b"zz"),
    });
    assert_eq!(
        &buf[..],
        &[
            0x10, 0, 0, 0, 0, 0, 0, 16, // header
            0, 0, 0, 0, 0, 0, 0, 1, // seq
            2, b'a', b'b', // id
            0, 1, b't', // content type
            b'z', b'z', // body
        ]
    );

    let buf = encode(Frame::hello("node-a", 70_000, 5000, ""));
    let json: serde_json::Value = serde_json::from_slice(&buf[HEADER_LEN..]).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"version": 1, "node_id": "node-a", "max_payload": 70_000, "heartbeat_ms": 5000, "epoch": ""})
    );
}

#[test]
fn decode_across_every_split_point() {
    let mut stream = Vec::new();
    for frame in sample_frames() {
        stream.extend_from_slice(&encode(frame));
    }
    // One byte at a time.
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for byte in &stream {
        buf.put_u8(*byte);
        while let Some(frame) = codec.decode(&mut buf).expect("decodes") {
            out.push(frame);
        }
    }
    assert_eq!(out, sample_frames());

    // Every two-piece split of the whole stream.
    for split in 0..=stream.len() {
        let mut buf = BytesMut::from(&stream[..split]);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).expect("decodes") {
            out.push(frame);
        }
        buf.extend_from_slice(&stream[split..]);
        while let Some(frame) = codec.decode(&mut buf).expect("decodes") {
            out.push(frame);
        }
        assert_eq!(out, sample_frames(), "split at {split}");
    }
}

#[test]
fn truncated_input_needs_more_data() {
    let full = encode(Frame::Message {
        seq: 9,
        id: "id".into(),
        content_type: "text/plain".into(),
        body: Bytes::from_static(b"hello"),
    });
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        let result = FrameCodec::default().decode(&mut buf).expect("no error");
        assert_eq!(result, None, "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
}

#[test]
fn truncated_at_eof_is_an_error() {
    let full = encode(Frame::Ping { nonce: 1 });
    let mut buf = BytesMut::from(&full[..5]);
    let err = FrameCodec::default().decode_eof(&mut buf).unwrap_err();
    assert!(matches!(err, FrameError::Io(ref e) if e.kind() == std::io::ErrorKind::UnexpectedEof));
    assert_eq!(err.goodbye_code(), GoodbyeCode::ProtocolError);
    let mut empty = BytesMut::new();
    assert!(FrameCodec::default()
        .decode_eof(&mut empty)
        .expect("clean eof")
        .is_none());
}

#[test]
fn oversized_length_rejected_from_header_alone() {
    // A header claiming 4 GiB - 1, and nothing else.
    let mut buf = BytesMut::from(&[TYPE_CRL, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    let before = buf.capacity();
    let err = FrameCodec::default().decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        FrameError::TooLarge {
            length: 0xFFFF_FFFF,
            max: DEFAULT_MAX_PAYLOAD
        }
    ));
    assert_eq!(err.goodbye_code(), GoodbyeCode::FrameTooLarge);
    assert_eq!(buf.capacity(), before, "nothing allocated");

    // One byte over a small limit.
    let mut codec = FrameCodec::new(16);
    let mut buf = BytesMut::from(&raw(TYPE_CRL, &[1; 17])[..HEADER_LEN]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLarge {
            length: 17,
            max: 16
        })
    ));
    // Exactly the limit is fine.
    let mut buf = BytesMut::from(&raw(TYPE_CRL, &[1; 16])[..]);
    assert!(codec.decode(&mut buf).expect("fits").is_some());
}

#[test]
fn reserves_only_what_the_frame_needs() {
    let mut buf = BytesMut::from(&raw(TYPE_CRL, &[1; 1000])[..HEADER_LEN]);
    assert_eq!(FrameCodec::default().decode(&mut buf).expect("ok"), None);
    assert!(buf.capacity() >= HEADER_LEN + 1000);
    assert!(buf.capacity() <= 2 * (HEADER_LEN + 1000));
}

#[test]
fn encoding_over_the_limit_is_an_error() {
    let mut codec = FrameCodec::new(MIN_MAX_PAYLOAD);
    let mut buf = BytesMut::from(&b"keep"[..]);
    let big = Frame::Crl {
        der: Bytes::from(vec![0u8; MIN_MAX_PAYLOAD as usize + 1]),
    };
    let err = codec.encode(big, &mut buf).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }));
    assert_eq!(&buf[..], b"keep", "nothing partial left behind");
    let fits = Frame::Crl {
        der: Bytes::from(vec![0u8; MIN_MAX_PAYLOAD as usize]),
    };
    codec.encode(fits, &mut buf).expect("exactly the limit");
}

#[test]
fn encoding_invalid_frames_is_an_error() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let invalid = [
        Frame::hello("", DEFAULT_MAX_PAYLOAD, 5000, ""),
        Frame::hello("x".repeat(65), DEFAULT_MAX_PAYLOAD, 5000, ""),
        Frame::hello("-leading-dash", DEFAULT_MAX_PAYLOAD, 5000, ""),
        Frame::hello("a", MIN_MAX_PAYLOAD - 1, 5000, ""),
        Frame::hello("a", DEFAULT_MAX_PAYLOAD, 0, ""),
        Frame::Crl { der: Bytes::new() },
        Frame::Goodbye {
            code: GoodbyeCode::Normal,
            reason: "x".repeat(MAX_GOODBYE_REASON + 1),
        },
        Frame::Message {
            seq: 1,
            id: String::new(),
            content_type: String::new(),
            body: Bytes::new(),
        },
        Frame::Message {
            seq: 1,
            id: "x".repeat(MAX_MESSAGE_ID_LEN + 1),
            content_type: String::new(),
            body: Bytes::new(),
        },
        Frame::Message {
            seq: 1,
            id: "x".into(),
            content_type: "x".repeat(MAX_CONTENT_TYPE_LEN + 1),
            body: Bytes::new(),
        },
        Frame::Unknown { frame_type: 0x01 },
        Frame::Unknown { frame_type: 0x7F },
    ];
    for frame in invalid {
        assert!(codec.encode(frame.clone(), &mut buf).is_err(), "{frame:?}");
        assert!(buf.is_empty());
    }
}

#[test]
fn goodbye_constructor_truncates_at_char_boundary() {
    let long = "é".repeat(MAX_GOODBYE_REASON); // 2 bytes each
    let Frame::Goodbye { reason, .. } = Frame::goodbye(GoodbyeCode::ProtocolError, &long) else {
        panic!("not a goodbye");
    };
    assert_eq!(reason.len(), MAX_GOODBYE_REASON);
    let long = format!("a{}", "é".repeat(MAX_GOODBYE_REASON));
    let frame = Frame::goodbye(GoodbyeCode::ProtocolError, &long);
    let Frame::Goodbye { reason, .. } = &frame else {
        panic!("not a goodbye");
    };
    assert_eq!(reason.len(), MAX_GOODBYE_REASON - 1);
    encode(frame);
}

#[test]
fn nonzero_flags_or_reserved_rejected() {
    for (flags, reserved) in [(1u8, 0u16), (0x80, 0), (0, 1), (0, 0x8000), (3, 3)] {
        let mut bytes = raw(TYPE_PING, &[0; 8]);
        bytes[1] = flags;
        bytes[2..4].copy_from_slice(&reserved.to_be_bytes());
        let err = decode_all(&bytes).unwrap_err();
        assert!(
            matches!(err, FrameError::BadHeader { flags: f, reserved: r } if f == flags && r == reserved)
        );
        assert_eq!(err.goodbye_code(), GoodbyeCode::ProtocolError);
        // Also from the header alone.
        assert!(decode_all(&bytes[..HEADER_LEN]).is_err());
    }
}

#[test]
fn unknown_low_type_rejected_high_type_skipped() {
    for t in [0x00u8, 0x06, 0x0F, 0x12, 0x7F] {
        let err = decode_all(&raw(t, b"abc")[..HEADER_LEN]).unwrap_err();
        assert!(matches!(err, FrameError::UnknownType(x) if x == t));
        assert_eq!(err.goodbye_code(), GoodbyeCode::ProtocolError);
    }
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&raw(0x80, b"some future extension"));
    buf.extend_from_slice(&raw(0xFE, b""));
    buf.extend_from_slice(&encode(Frame::Ping { nonce: 5 }));
    let mut codec = FrameCodec::default();
    assert_eq!(
        codec.decode(&mut buf).expect("ok"),
        Some(Frame::Unknown { frame_type: 0x80 })
    );
    let skipped = codec.decode(&mut buf).expect("ok").expect("frame");
    assert_eq!(skipped, Frame::Unknown { frame_type: 0xFE });
    assert_eq!(skipped.frame_type_name(), "unknown");
    assert_eq!(
        codec.decode(&mut buf).expect("ok"),
        Some(Frame::Ping { nonce: 5 })
    );
}

fn assert_malformed(bytes: &[u8], expected_type: u8) {
    match decode_all(bytes) {
        Err(err @ FrameError::Malformed { frame_type, .. }) => {
            assert_eq!(frame_type, expected_type, "{err}");
            assert_eq!(err.goodbye_code(), GoodbyeCode::ProtocolError);
        }
        other => panic!("expected Malformed for {bytes:?}, got {other:?}"),
    }
}

#[test]
fn malformed_payloads() {
    // Fixed-size payloads with the wrong size.
    assert_malformed(&raw(TYPE_PING, &[0; 7]), TYPE_PING);
    assert_malformed(&raw(TYPE_PING, &[0; 9]), TYPE_PING);
    assert_malformed(&raw(TYPE_PONG, &[]), TYPE_PONG);
    assert_malformed(&raw(TYPE_ACK, &[0; 4]), TYPE_ACK);
    // Hello.
    assert_malformed(&raw(TYPE_HELLO, b"{not json"), TYPE_HELLO);
    assert_malformed(&raw(TYPE_HELLO, b"[1,2]"), TYPE_HELLO);
    assert_malformed(&raw(TYPE_HELLO, b""), TYPE_HELLO);
    assert_malformed(
        &raw(
            TYPE_HELLO,
            br#"{"version":1,"node_id":"a","max_payload":70000}"#,
        ),
        TYPE_HELLO,
    );
    assert_malformed(
        &raw(
            TYPE_HELLO,
            br#"{"version":70000,"node_id":"a","max_payload":70000,"heartbeat_ms":5000}"#,
        ),
        TYPE_HELLO,
    );
    assert_malformed(
        &raw(
            TYPE_HELLO,
            br#"{"version":1,"node_id":"a b","max_payload":70000,"heartbeat_ms":5000}"#,
        ),
        TYPE_HELLO,
    );
    assert_malformed(
        &raw(
            TYPE_HELLO,
            br#"{"version":1,"node_id":"a","max_payload":70000,"heartbeat_ms":5000,"node_id":"b"}"#,
        ),
        TYPE_HELLO,
    );
    // CRL.
    assert_malformed(&raw(TYPE_CRL, &[]), TYPE_CRL);
    // Goodbye.
    assert_malformed(&raw(TYPE_GOODBYE, &[0]), TYPE_GOODBYE);
    assert_malformed(&raw(TYPE_GOODBYE, &[0, 0, 0xFF, 0xFE]), TYPE_GOODBYE);
    let mut long = vec![0, 0];
    long.extend(std::iter::repeat_n(b'a', MAX_GOODBYE_REASON + 1));
    assert_malformed(&raw(TYPE_GOODBYE, &long), TYPE_GOODBYE);
    // Message: id_len past the end, ct_len past the end, bad UTF-8, empty id, too long id.
    let mut msg = 1u64.to_be_bytes().to_vec();
    msg.extend_from_slice(&[10, b'a', b'b']);
    assert_malformed(&raw(TYPE_MESSAGE, &msg), TYPE_MESSAGE);
    let mut msg = 1u64.to_be_bytes().to_vec();
    msg.extend_from_slice(&[1, b'a', 0, 9, b't']);
    assert_malformed(&raw(TYPE_MESSAGE, &msg), TYPE_MESSAGE);
    let mut msg = 1u64.to_be_bytes().to_vec();
    msg.extend_from_slice(&[1, 0xC3, 0, 0]);
    assert_malformed(&raw(TYPE_MESSAGE, &msg), TYPE_MESSAGE);
    let mut msg = 1u64.to_be_bytes().to_vec();
    msg.extend_from_slice(&[0, 0, 0]);
    assert_malformed(&raw(TYPE_MESSAGE, &msg), TYPE_MESSAGE);
    let mut msg = 1u64.to_be_bytes().to_vec();
    msg.push(129);
    msg.extend(std::iter::repeat_n(b'a', 129));
    msg.extend_from_slice(&[0, 0]);
    assert_malformed(&raw(TYPE_MESSAGE, &msg), TYPE_MESSAGE);
    assert_malformed(&raw(TYPE_MESSAGE, &[0; 5]), TYPE_MESSAGE);
}

#[test]
fn hello_ignores_unknown_fields() {
    let payload = br#"{"future":{"x":[1,2]},"version":1,"node_id":"n.1","max_payload":70000,"heartbeat_ms":250,"extra":"y"}"#;
    assert_eq!(
        decode_all(&raw(TYPE_HELLO, payload)).expect("decodes"),
        Some(Frame::Hello {
            version: 1,
            node_id: "n.1".into(),
            max_payload: 70_000,
            heartbeat_ms: 250,
            epoch: String::new(),
        })
    );
}

#[test]
fn malformed_error_is_readable_and_bounded() {
    let mut payload = br#"{"version":1,"node_id":""#.to_vec();
    payload.extend(std::iter::repeat_n(b'\x01', 5000));
    let err = decode_all(&raw(TYPE_HELLO, &payload)).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("malformed hello frame (0x01)"), "{text}");
    assert!(text.len() < 1200, "{} bytes", text.len());
    assert!(!text.chars().any(|c| c.is_control()));
}

#[test]
fn goodbye_codes_round_trip() {
    for code in 0..=u16::MAX {
        assert_eq!(GoodbyeCode::from_u16(code).as_u16(), code);
    }
    assert_eq!(GoodbyeCode::from(6), GoodbyeCode::HeartbeatTimeout);
    assert_eq!(GoodbyeCode::from(7), GoodbyeCode::NotOwner);
    assert_eq!(GoodbyeCode::from(8), GoodbyeCode::Other(8));
    assert_eq!(u16::from(GoodbyeCode::Revoked), 3);
    assert_eq!(GoodbyeCode::Revoked.to_string(), "revoked (3)");
}

#[test]
fn frame_type_names() {
    let names: Vec<_> = sample_frames().iter().map(Frame::frame_type_name).collect();
    for name in [
        "hello", "ping", "pong", "crl", "goodbye", "message", "ack", "unknown",
    ] {
        assert!(names.contains(&name), "{name}");
    }
}

#[tokio::test]
async fn works_with_framed_streams() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;

    let (a, b) = tokio::io::duplex(64);
    let mut a = Framed::new(a, FrameCodec::default());
    let mut b = Framed::new(b, FrameCodec::default());
    let frames = sample_frames();
    let expected = frames.clone();
    let writer = tokio::spawn(async move {
        for frame in frames {
            a.send(frame).await.expect("sends");
        }
    });
    for frame in expected {
        let got = b.next().await.expect("a frame").expect("decodes");
        assert_eq!(got, frame);
    }
    writer.await.expect("writer");
    // The writer closed its end: clean end of stream.
    assert!(b.next().await.is_none());
}

/// Deterministic noise for the fuzz loop.
struct Noise(crate::backoff::test_rng::XorShift);

impl Noise {
    fn next(&mut self) -> u64 {
        rand_core::RngCore::next_u64(&mut self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = Noise(crate::backoff::test_rng::XorShift(0x9E37_79B9_7F4A_7C15));
    let known = [
        TYPE_HELLO,
        TYPE_PING,
        TYPE_PONG,
        TYPE_CRL,
        TYPE_GOODBYE,
        TYPE_MESSAGE,
        TYPE_ACK,
    ];
    let mut decoded = 0usize;
    for _ in 0..10_000 {
        let len = rng.below(80) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Most inputs get a plausible header so payload decoders are
        // exercised too, not only the header checks.
        if len >= HEADER_LEN && rng.below(4) != 0 {
            bytes[0] = known[rng.below(known.len() as u64) as usize];
            bytes[1] = 0;
            bytes[2] = 0;
            bytes[3] = 0;
            let claimed = (len - HEADER_LEN) as u32 + rng.below(3) as u32;
            bytes[4..8].copy_from_slice(&claimed.to_be_bytes());
        }
        let mut codec = FrameCodec::new(64 + rng.below(64) as u32);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        // Feed in random chunks, decoding after each.
        'feed: while fed < bytes.len() {
            let chunk = 1 + rng.below(16) as usize;
            let end = (fed + chunk).min(bytes.len());
            buf.extend_from_slice(&bytes[fed..end]);
            fed = end;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        decoded += 1;
                        // Whatever decodes must re-encode to itself.
                        let mut again = BytesMut::new();
                        let mut big = FrameCodec::default();
                        big.encode(frame.clone(), &mut again).expect("re-encodes");
                        assert_eq!(big.decode(&mut again).expect("re-decodes"), Some(frame));
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }
    assert!(decoded > 100, "only {decoded} frames decoded");
}
