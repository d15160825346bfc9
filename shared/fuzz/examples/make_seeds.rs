//! Writes the generated part of the seed corpus: frames encoded by the link
//! codec, DER names and the fixed chain's certificates, CRL and CSR.
//!
//! ```text
//! cargo run --manifest-path shared/fuzz/Cargo.toml --example make_seeds -- shared/fuzz/corpus
//! ```
//!
//! The bundles, openssl-made files and configs in the corpus are not
//! generated here (see docs/fuzzing.md).

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;
use x509_parser::prelude::{FromDer, X509Certificate};

use peer_gateway::frame::{Frame, FrameCodec, GoodbyeCode, DEFAULT_MAX_PAYLOAD};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut codec = FrameCodec::new(DEFAULT_MAX_PAYLOAD);
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut buf).expect("encodes");
    }
    buf.to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = {
        // Plain base64 (the fuzz crate has no base64 dependency).
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn subject(cert: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(cert).expect("parses");
    c.subject().as_raw().to_vec()
}

fn pair(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(a.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: make_seeds CORPUS_DIR");
    let out = Path::new(&out);

    // frame_decoder: one control byte (limit and chunk size), then frames.
    let dir = out.join("frame_decoder");
    let hello = Frame::Hello {
        version: 1,
        node_id: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b".into(),
        max_payload: DEFAULT_MAX_PAYLOAD,
        heartbeat_ms: 5000,
        epoch: "e1f2a3".into(),
    };
    let message = Frame::Message {
        seq: 42,
        id: "msg-1".into(),
        content_type: "application/json".into(),
        body: Bytes::from_static(b"{\"x\":1}"),
    };
    let seeds: [(&str, u8, Vec<Frame>); 6] = [
        ("hello", 0x00, vec![hello.clone()]),
        (
            "session",
            0x18,
            vec![
                hello,
                Frame::Ping { nonce: 7 },
                Frame::Pong { nonce: 7 },
                message.clone(),
                Frame::Ack { seq: 42 },
            ],
        ),
        ("message-small-limit", 0x05, vec![message]),
        (
            "goodbye",
            0x08,
            vec![Frame::goodbye(GoodbyeCode::DuplicateLink, "tie-break: é")],
        ),
        (
            "crl",
            0x00,
            vec![Frame::Crl {
                der: Bytes::from(peerlink_fuzz::fixed_chain().crl_b.clone()),
            }],
        ),
        (
            "unknown-and-ack",
            0x10,
            vec![Frame::Unknown { frame_type: 0x80 }, Frame::Ack { seq: 1 }],
        ),
    ];
    for (name, control, frames) in seeds {
        let mut bytes = vec![control];
        bytes.extend(encode(&frames));
        write(&dir, name, &bytes);
    }

    // cert_loading: the fixed chain in the shapes operators hand over.
    let chain = peerlink_fuzz::fixed_chain();
    let dir = out.join("cert_loading");
    write(&dir, "leaf.der", &chain.leaf);
    write(
        &dir,
        "cross-with-text.pem",
        format!(
            "Certificate:\n    Subject: O=Fuzz Net, OU=unit\n    (text as openssl prints it)\n{}",
            pem("CERTIFICATE", &chain.cross_b)
        )
        .as_bytes(),
    );
    write(
        &dir,
        "chain.pem",
        format!(
            "{}{}{}",
            pem("CERTIFICATE", &chain.leaf),
            pem("CERTIFICATE", &chain.cross_b),
            pem("CERTIFICATE", &chain.anchor)
        )
        .as_bytes(),
    );
    write(&dir, "crl.pem", pem("X509 CRL", &chain.crl_b).as_bytes());
    write(&dir, "crl.der", &chain.crl_b);
    write(
        &dir,
        "csr.pem",
        pem("CERTIFICATE REQUEST", &chain.csr).as_bytes(),
    );

    // name_matcher: pairs of DER names.
    let dir = out.join("name_matcher");
    let a = subject(&chain.anchor);
    let b = subject(&chain.root_b);
    let leaf = subject(&chain.leaf);
    write(&dir, "leaf-under-b", &pair(&leaf, &b));
    write(&dir, "a-vs-b", &pair(&a, &b));
    write(&dir, "same", &pair(&b, &b));
}
