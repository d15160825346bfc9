//! The link frame codec (`peer_gateway::frame`): encode + decode of a `Message` frame, 1 KiB and 64 KiB
//! bodies, and of a `Ping`, against tokio-util's `LengthDelimitedCodec` (a bare
//! 4-byte length prefix) carrying a payload of the same size.
//!
//! `scripts/bench micro` runs it; `cargo bench -p peer-gateway --bench frame_codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use peer_gateway::frame::{self, Frame, FrameCodec};

fn roundtrip_ours(codec: &mut FrameCodec, buf: &mut BytesMut, frame: &Frame) -> Frame {
    codec.encode(frame.clone(), buf).unwrap();
    codec.decode(buf).unwrap().unwrap()
}

fn roundtrip_plain(
    codec: &mut LengthDelimitedCodec,
    buf: &mut BytesMut,
    payload: &Bytes,
) -> BytesMut {
    codec.encode(payload.clone(), buf).unwrap();
    codec.decode(buf).unwrap().unwrap()
}

fn codec(c: &mut Criterion) {
    for size in [1024usize, 64 * 1024] {
        let frame = Frame::Message {
            seq: 123_456,
            id: "0192f3c4-5b6a-7d8e-9f01-23456789abcd".into(),
            content_type: "application/octet-stream".into(),
            body: Bytes::from(vec![0x5a; size]),
        };
        // The same number of payload bytes for the baseline.
        let mut probe = BytesMut::new();
        FrameCodec::default()
            .encode(frame.clone(), &mut probe)
            .unwrap();
        let payload = Bytes::from(vec![0x5a; probe.len() - frame::HEADER_LEN]);

        let mut group = c.benchmark_group(format!("frame_message_{}k", size / 1024));
        group.throughput(Throughput::Bytes(probe.len() as u64));
        let mut ours = FrameCodec::default();
        let mut buf = BytesMut::with_capacity(probe.len() * 2);
        group.bench_function("ours_encode_decode", |b| {
            b.iter(|| black_box(roundtrip_ours(&mut ours, &mut buf, black_box(&frame))))
        });
        let mut plain = LengthDelimitedCodec::builder()
            .max_frame_length(frame::DEFAULT_MAX_PAYLOAD as usize)
            .new_codec();
        let mut buf = BytesMut::with_capacity(probe.len() * 2);
        group.bench_function("length_delimited_encode_decode", |b| {
            b.iter(|| black_box(roundtrip_plain(&mut plain, &mut buf, black_box(&payload))))
        });
        group.finish();
    }

    let mut group = c.benchmark_group("frame_ping");
    let ping = Frame::Ping { nonce: 42 };
    let mut ours = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(64);
    group.bench_function("ours_encode_decode", |b| {
        b.iter(|| black_box(roundtrip_ours(&mut ours, &mut buf, black_box(&ping))))
    });
    let payload = Bytes::from_static(&[0u8; 8]);
    let mut plain = LengthDelimitedCodec::new();
    let mut buf = BytesMut::with_capacity(64);
    group.bench_function("length_delimited_encode_decode", |b| {
        b.iter(|| black_box(roundtrip_plain(&mut plain, &mut buf, black_box(&payload))))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
