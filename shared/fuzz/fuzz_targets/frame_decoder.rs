//! Arbitrary bytes through the link codec (`peer-gateway/src/frame.rs`).
//!
//! The first input byte picks the codec's payload limit and the size of the
//! chunks the rest is fed in, the way a socket delivers it. Properties:
//! decoding never panics; the receive buffer never grows much beyond one
//! frame under the limit; every decoded frame re-encodes and decodes to
//! itself (byte for byte, except `Hello`, whose JSON is re-serialized, and
//! ignorable unknown frames, whose payload is discarded).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

use peer_gateway::frame::{Frame, FrameCodec, DEFAULT_MAX_PAYLOAD, HEADER_LEN};

fn check_round_trip(frame: &Frame, wire: &[u8]) {
    let mut again = BytesMut::new();
    let mut big = FrameCodec::new(DEFAULT_MAX_PAYLOAD);
    big.encode(frame.clone(), &mut again)
        .unwrap_or_else(|e| panic!("decoded frame {frame:?} does not re-encode: {e}"));
    let canonical = !matches!(frame, Frame::Hello { .. } | Frame::Unknown { .. });
    if canonical {
        assert_eq!(&again[..], wire, "re-encoding of {frame:?} differs");
    }
    let back = big
        .decode(&mut again)
        .unwrap_or_else(|e| panic!("re-encoded {frame:?} does not decode: {e}"));
    assert_eq!(back.as_ref(), Some(frame));
    assert!(again.is_empty(), "re-decoding left bytes behind");
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    // Small limits exercise the limit checks; the default one the real link.
    let max_payload = match control & 0x07 {
        0 => DEFAULT_MAX_PAYLOAD,
        1 => 0,
        2 => 1,
        3 => 8,
        n => 16 << n,
    };
    let chunk = match control >> 3 {
        0 => input.len().max(1),
        n => usize::from(n),
    };
    let mut codec = FrameCodec::new(max_payload);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let bound = 2 * (HEADER_LEN + max_payload as usize) + 2 * input.len() + 64;
    'feed: for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let before = buf.clone();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let used = before.len() - buf.len();
                    assert!(used >= HEADER_LEN && used - HEADER_LEN <= max_payload as usize);
                    check_round_trip(&frame, &before[..used]);
                }
                Ok(None) => {
                    assert!(
                        buf.capacity() <= bound,
                        "buffer of {} bytes after {fed} bytes fed with limit {max_payload}",
                        buf.capacity()
                    );
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
});
