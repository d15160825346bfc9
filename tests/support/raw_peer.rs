//! [`RawPeer`]: a peer link that a test drives by hand. It dials a gateway's
//! listener as a partner's gateway would (the partner's real certificates,
//! through `peerlink-tls`, TLS 1.3 with ALPN `peerlink/1`), and then writes what
//! the test wants: frames encoded with the gateway's own codec
//! ([`peer_gateway::frame`]), or bytes that no correct implementation would send
//! (a header claiming 4 GiB, non-zero flags, an unknown mandatory type).
//!
//! The hostile-input tests and the bad-input matrix use it. Frames the gateway
//! sends back are decoded with the same codec, so the tests compare [`Frame`]s
//! and [`GoodbyeCode`]s instead of type bytes and code numbers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peer_gateway::frame::{Frame, FrameCodec, GoodbyeCode, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use peerlink_tls::{NodeTrust, PeerTls, ServerIdentity};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::gateway::Net;

/// The heartbeat a raw peer announces in its `Hello`, in milliseconds.
const RAW_HEARTBEAT_MS: u32 = 500;

/// Frames the gateway sends larger than this are an error of the test's making
/// (the gateway's own limit is [`DEFAULT_MAX_PAYLOAD`]).
const MAX_RECEIVED_PAYLOAD: u32 = 4 * 1024 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A link opened with a partner's real certificates, on which the test writes
/// `peerlink/1` frames by hand.
pub struct RawPeer {
    io: Box<dyn Io>,
    codec: FrameCodec,
    received: BytesMut,
}

/// How a link ended: the type bytes of every frame the gateway sent, in order,
/// and its `Goodbye` (code, reason) if it sent one.
#[derive(Debug, Default)]
pub struct Closed {
    /// Type bytes of the frames received, in order.
    pub types: Vec<u8>,
    /// The last `Goodbye` received.
    pub goodbye: Option<(GoodbyeCode, String)>,
}

/// `frame` encoded as it goes on the wire; panics when the codec refuses it.
pub fn encode(frame: Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameCodec::new(u32::MAX)
        .encode(frame.clone(), &mut out)
        .unwrap_or_else(|e| panic!("cannot encode {frame:?}: {e}"));
    out.to_vec()
}

/// One frame made by hand: `[type, flags = 0, reserved = 0, length u32 BE]` and
/// `payload`, whatever the codec would think of it.
pub fn raw_frame(frame_type: u8, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("payload under 4 GiB");
    let mut out = header(frame_type, length);
    out.extend_from_slice(payload);
    out
}

/// A frame header alone, claiming `length` payload bytes.
pub fn header(frame_type: u8, length: u32) -> Vec<u8> {
    let mut out = vec![frame_type, 0, 0, 0];
    out.extend_from_slice(&length.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out
}

/// A `Message` frame with no content type.
pub fn message(seq: u64, id: &str, body: &[u8]) -> Frame {
    Frame::Message {
        seq,
        id: id.to_string(),
        content_type: String::new(),
        body: Bytes::copy_from_slice(body),
    }
}

/// The `Hello` of a raw peer speaking for `node_id`: protocol `version` (normally
/// [`peer_gateway::frame::PROTOCOL_VERSION`]), the default payload limit,
/// [`RAW_HEARTBEAT_MS`] and a fixed outbox epoch.
pub fn hello(node_id: &str, version: u16) -> Frame {
    Frame::Hello {
        version,
        node_id: node_id.to_string(),
        max_payload: DEFAULT_MAX_PAYLOAD,
        heartbeat_ms: RAW_HEARTBEAT_MS,
        epoch: "rawpeer1".to_string(),
    }
}

impl RawPeer {
    /// Dials `to`'s listener as `node`'s gateway (its server certificate and the
    /// cross-certificate `to` issued it), TLS 1.3 with ALPN peerlink/1.
    pub async fn connect(net: &Net, node: &str, to: &str) -> Result<RawPeer, String> {
        let n = net.node(node);
        let trust = Arc::new(
            NodeTrust::load(&n.ca.dir, &BTreeMap::new())
                .await
                .map_err(|e| format!("load {node}'s trust: {e}"))?,
        );
        let identity = Arc::new(
            ServerIdentity::load(&n.server_cert, &n.server_key, &trust)
                .map_err(|e| format!("load {node}'s gateway identity: {e}"))?,
        );
        let tls = PeerTls::new(trust, identity).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", net.node(to).port))
            .await
            .map_err(|e| format!("connect to {to}: {e}"))?;
        let stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(tcp, &net.id(to)))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake with {to}: {e}"))?;
        Ok(RawPeer {
            io: Box::new(stream),
            codec: FrameCodec::new(MAX_RECEIVED_PAYLOAD),
            received: BytesMut::new(),
        })
    }

    /// Writes `bytes` as they are and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// Encodes `frame` and sends it.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), String> {
        self.send(&encode(frame)).await
    }

    /// The next frame, None at the end of the stream; Err on timeout, on a frame
    /// the codec refuses, and on a read error (the message then starts with
    /// "read").
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, String> {
        let read = async {
            loop {
                if let Some(frame) = self
                    .codec
                    .decode(&mut self.received)
                    .map_err(|e| format!("the gateway sent a bad frame: {e}"))?
                {
                    return Ok(Some(frame));
                }
                let n = self
                    .io
                    .read_buf(&mut self.received)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return if self.received.is_empty() {
                        Ok(None)
                    } else {
                        Err("read: the stream ended inside a frame".to_string())
                    };
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("no frame within {timeout:?}"))?
    }

    /// Reads until a frame for which `wanted` is true (within 10 s; other frames
    /// are skipped, nothing is answered) and returns it.
    pub async fn expect(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&Frame) -> bool,
    ) -> Result<Frame, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await? {
                Some(frame) if wanted(&frame) => return Ok(frame),
                Some(_) => {}
                None => return Err(format!("the stream ended before {what}")),
            }
        }
    }

    /// Reads every frame until the gateway closes the stream, for at most
    /// `within`. A read error (a reset after the Goodbye) counts as the close.
    pub async fn until_closed(&mut self, within: Duration) -> Result<Closed, String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut closed = Closed::default();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Ok(Some(frame)) => {
                    closed.types.push(frame.frame_type());
                    if let Frame::Goodbye { code, reason } = frame {
                        closed.goodbye = Some((code, reason));
                    }
                }
                Ok(None) => return Ok(closed),
                Err(e) if e.starts_with("read") => return Ok(closed),
                Err(e) => {
                    return Err(format!(
                        "{e} (the gateway did not close the link; frames {:?})",
                        closed.types
                    ))
                }
            }
        }
    }
}
