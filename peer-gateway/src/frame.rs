//! The link framing protocol `peerlink/1` (negotiated by TLS ALPN `peerlink/1`).
//!
//! Every frame is an 8-byte header followed by a payload:
//!
//! ```text
//! +--------+--------+-----------------+-----------------------------------+
//! | type   | flags  | reserved        | length (payload bytes)            |
//! | u8     | u8 = 0 | u16 BE = 0      | u32 BE, <= max_payload            |
//! +--------+--------+-----------------+-----------------------------------+
//! ```
//!
//! The header is validated before any payload is buffered, so a peer can never
//! make us allocate more than `max_payload` bytes per link. `docs/protocol.md`
//! is the normative description; this module is its implementation.
//!
//! Decoding errors close the link: [`FrameError::goodbye_code`] tells the link
//! which [`GoodbyeCode`] to send before it does.
//!
//! The ALPN id itself (`peerlink_tls::ALPN`) lives with the TLS set-up; a new
//! framing version gets a new id, so two implementations never disagree about
//! the framing they speak.

use std::fmt;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// The `version` a `Hello` of this protocol carries (the ALPN id already
/// selected the version; the field lets a peer detect a buggy implementation).
pub const PROTOCOL_VERSION: u16 = 1;

/// Size of the frame header.
pub const HEADER_LEN: usize = 8;

/// Default largest payload accepted and sent: 1 MiB of message body plus room
/// for the message envelope (id, content type) and a generous CRL.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1024 * 1024 + 64 * 1024;

/// Longest outbox epoch a `Hello` may carry.
pub const MAX_EPOCH_LEN: usize = 64;

/// Smallest `max_payload` a `Hello` may advertise: enough for every control
/// frame and a CRL of a few thousand entries, so a peer cannot advertise a
/// limit that makes the link unusable.
pub const MIN_MAX_PAYLOAD: u32 = 64 * 1024;

/// Default interval after which a side that has sent nothing sends a `Ping`.
pub const DEFAULT_HEARTBEAT_MS: u32 = 5_000;

/// Smallest heartbeat interval a `Hello` may advertise (protects both sides
/// from a ping storm).
pub const MIN_HEARTBEAT_MS: u32 = 100;

/// Largest heartbeat interval a `Hello` may advertise (dead links must still be
/// detected in reasonable time).
pub const MAX_HEARTBEAT_MS: u32 = 600_000;

/// A link on which nothing was received for this many of the peer's heartbeat
/// intervals is dead and is closed.
pub const DEAD_AFTER_HEARTBEATS: u32 = 3;

/// Time allowed from the TCP connect to having received the peer's `Hello`
/// (TLS handshake included): a peer that stalls cannot hold a slot forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest node id, in bytes (ids are ASCII).
pub const MAX_NODE_ID_LEN: usize = 64;

/// Longest `Goodbye` reason, in UTF-8 bytes: enough to explain, too short to
/// carry data.
pub const MAX_GOODBYE_REASON: usize = 1024;

/// Longest message id, in UTF-8 bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 128;

/// Longest message content type, in UTF-8 bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;

const TYPE_HELLO: u8 = 0x01;
const TYPE_PING: u8 = 0x02;
const TYPE_PONG: u8 = 0x03;
const TYPE_CRL: u8 = 0x04;
const TYPE_GOODBYE: u8 = 0x05;
const TYPE_MESSAGE: u8 = 0x10;
const TYPE_ACK: u8 = 0x11;

/// Frame types at or above this value are ignorable when unknown, so a later
/// version can add optional frames without breaking older peers.
const IGNORABLE_BIT: u8 = 0x80;

/// Why a link is being closed, carried by a `Goodbye` frame so the peer can log
/// it and decide whether to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoodbyeCode {
    /// 0: orderly shutdown or reload.
    Normal,
    /// 1: this link lost the tie-break against another link to the same peer.
    DuplicateLink,
    /// 2: the peer broke the protocol (bad frame, wrong order, bad hello).
    ProtocolError,
    /// 3: the peer was revoked or deactivated.
    Revoked,
    /// 4: the peer sent a frame larger than our limit.
    FrameTooLarge,
    /// 5: the link was idle and is closed until needed.
    Idle,
    /// 6: nothing was received for too long.
    HeartbeatTimeout,
    /// 7: another replica of this node owns the link to the peer; dial another endpoint.
    NotOwner,
    /// A code this version does not know (kept so it can be logged).
    Other(u16),
}

impl GoodbyeCode {
    /// The wire value. `Other(n)` with `n` of a known code encodes as that code.
    pub fn as_u16(self) -> u16 {
        match self {
            GoodbyeCode::Normal => 0,
            GoodbyeCode::DuplicateLink => 1,
            GoodbyeCode::ProtocolError => 2,
            GoodbyeCode::Revoked => 3,
            GoodbyeCode::FrameTooLarge => 4,
            GoodbyeCode::Idle => 5,
            GoodbyeCode::HeartbeatTimeout => 6,
            GoodbyeCode::NotOwner => 7,
            GoodbyeCode::Other(code) => code,
        }
    }

    /// Reads a wire value; unknown values are kept as `Other` rather than
    /// rejected, since a goodbye is informational.
    pub fn from_u16(code: u16) -> GoodbyeCode {
        match code {
            0 => GoodbyeCode::Normal,
            1 => GoodbyeCode::DuplicateLink,
            2 => GoodbyeCode::ProtocolError,
            3 => GoodbyeCode::Revoked,
            4 => GoodbyeCode::FrameTooLarge,
            5 => GoodbyeCode::Idle,
            6 => GoodbyeCode::HeartbeatTimeout,
            7 => GoodbyeCode::NotOwner,
            other => GoodbyeCode::Other(other),
        }
    }

    /// A stable snake_case name, for logs, status and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            GoodbyeCode::Normal => "normal",
            GoodbyeCode::DuplicateLink => "duplicate_link",
            GoodbyeCode::ProtocolError => "protocol_error",
            GoodbyeCode::Revoked => "revoked",
            GoodbyeCode::FrameTooLarge => "frame_too_large",
            GoodbyeCode::Idle => "idle",
            GoodbyeCode::HeartbeatTimeout => "heartbeat_timeout",
            GoodbyeCode::NotOwner => "not_owner",
            GoodbyeCode::Other(_) => "other",
        }
    }
}

impl From<u16> for GoodbyeCode {
    fn from(code: u16) -> Self {
        GoodbyeCode::from_u16(code)
    }
}

impl From<GoodbyeCode> for u16 {
    fn from(code: GoodbyeCode) -> Self {
        code.as_u16()
    }
}

impl fmt::Display for GoodbyeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

/// One frame of the link protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// 0x01, sent first by both sides: who we are and what we can take.
    Hello {
        /// Must be [`PROTOCOL_VERSION`].
        version: u16,
        /// The sender's node id; must match the identity its certificate proved.
        node_id: String,
        /// The largest payload the sender accepts.
        max_payload: u32,
        /// The sender's heartbeat interval: it sends something at least this often.
        heartbeat_ms: u32,
        /// The sender's outbox epoch (random, fixed for the life of its message
        /// store): the receiver keys its deduplication counter by it. Empty when
        /// the sender has no message store.
        epoch: String,
    },
    /// 0x02, liveness probe and RTT measurement; answered by `Pong`.
    Ping {
        /// Echoed in the `Pong`.
        nonce: u64,
    },
    /// 0x03, answer to `Ping`.
    Pong {
        /// The nonce of the `Ping` answered.
        nonce: u64,
    },
    /// 0x04, the sender node's newest CRL (DER), so revocation travels over
    /// the links themselves.
    Crl {
        /// The CRL, DER; never empty.
        der: Bytes,
    },
    /// 0x05, sent before closing, so the peer knows why.
    Goodbye {
        /// Machine-readable reason.
        code: GoodbyeCode,
        /// Human-readable detail, at most [`MAX_GOODBYE_REASON`] bytes.
        reason: String,
    },
    /// 0x10, reserved for durable messaging: one message.
    Message {
        /// Per-link-direction sequence number, acknowledged by `Ack`.
        seq: u64,
        /// The message id used for deduplication (1..=128 bytes).
        id: String,
        /// Media type of the body (at most 256 bytes, may be empty).
        content_type: String,
        /// The message body.
        body: Bytes,
    },
    /// 0x11, reserved for durable messaging: everything up to `seq` is stored.
    Ack {
        /// The highest sequence number durably stored (cumulative).
        seq: u64,
    },
    /// An ignorable frame type (0x80..=0xFF) this version does not know; its
    /// payload is discarded.
    Unknown {
        /// The type byte received.
        frame_type: u8,
    },
}

impl Frame {
    /// A `Hello` of this protocol version.
    pub fn hello(
        node_id: impl Into<String>,
        max_payload: u32,
        heartbeat_ms: u32,
        epoch: impl Into<String>,
    ) -> Frame {
        Frame::Hello {
            version: PROTOCOL_VERSION,
            node_id: node_id.into(),
            max_payload,
            heartbeat_ms,
            epoch: epoch.into(),
        }
    }

    /// A `Goodbye` whose reason is cut (at a character boundary) to the
    /// protocol limit, so that explaining an error can never fail to encode.
    pub fn goodbye(code: GoodbyeCode, reason: &str) -> Frame {
        let mut end = reason.len().min(MAX_GOODBYE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Frame::Goodbye {
            code,
            reason: reason[..end].to_string(),
        }
    }

    /// The type byte on the wire.
    pub fn frame_type(&self) -> u8 {
        match self {
            Frame::Hello { .. } => TYPE_HELLO,
            Frame::Ping { .. } => TYPE_PING,
            Frame::Pong { .. } => TYPE_PONG,
            Frame::Crl { .. } => TYPE_CRL,
            Frame::Goodbye { .. } => TYPE_GOODBYE,
            Frame::Message { .. } => TYPE_MESSAGE,
            Frame::Ack { .. } => TYPE_ACK,
            Frame::Unknown { frame_type } => *frame_type,
        }
    }

    /// A stable lowercase name, for logs and metric labels.
    pub fn frame_type_name(&self) -> &'static str {
        type_name(self.frame_type())
    }

    /// Checks the limits that the wire format alone does not enforce, so that
    /// encoding and decoding accept exactly the same frames.
    fn validate(&self) -> Result<(), FrameError> {
        let frame_type = self.frame_type();
        let bad = |reason: String| Err(FrameError::Malformed { frame_type, reason });
        match self {
            Frame::Hello {
                node_id,
                max_payload,
                heartbeat_ms,
                epoch,
                ..
            } => {
                if epoch.len() > MAX_EPOCH_LEN || !epoch.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return bad(format!(
                        "epoch must be at most {MAX_EPOCH_LEN} letters and digits"
                    ));
                }
                if !is_valid_node_id(node_id) {
                    return bad(format!(
                        "node_id must be 1 to {MAX_NODE_ID_LEN} characters from A-Z a-z 0-9 . - \
                         starting with a letter or digit"
                    ));
                }
                if *max_payload < MIN_MAX_PAYLOAD {
                    return bad(format!(
                        "max_payload {max_payload} is below the minimum {MIN_MAX_PAYLOAD}"
                    ));
                }
                if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(heartbeat_ms) {
                    return bad(format!(
                        "heartbeat_ms {heartbeat_ms} is outside \
                         {MIN_HEARTBEAT_MS}..={MAX_HEARTBEAT_MS}"
                    ));
                }
            }
            Frame::Crl { der } if der.is_empty() => return bad("empty CRL".into()),
            Frame::Goodbye { reason, .. } if reason.len() > MAX_GOODBYE_REASON => {
                return bad(format!(
                    "reason of {} bytes exceeds {MAX_GOODBYE_REASON}",
                    reason.len()
                ));
            }
            Frame::Message {
                id, content_type, ..
            } => {
                if id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN {
                    return bad(format!(
                        "message id of {} bytes is outside 1..={MAX_MESSAGE_ID_LEN}",
                        id.len()
                    ));
                }
                if content_type.len() > MAX_CONTENT_TYPE_LEN {
                    return bad(format!(
                        "content type of {} bytes exceeds {MAX_CONTENT_TYPE_LEN}",
                        content_type.len()
                    ));
                }
            }
            Frame::Unknown { frame_type } => {
                if *frame_type & IGNORABLE_BIT == 0 {
                    return Err(FrameError::UnknownType(*frame_type));
                }
                if is_known_type(*frame_type) {
                    return bad("a known frame type cannot be sent as unknown".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Appends the payload (without header) to `dst`.
    fn write_payload(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            Frame::Hello {
                version,
                node_id,
                max_payload,
                heartbeat_ms,
                epoch,
            } => {
                let json = HelloWire {
                    version: *version,
                    node_id: node_id.as_str(),
                    max_payload: *max_payload,
                    heartbeat_ms: *heartbeat_ms,
                    epoch: epoch.as_str(),
                };
                serde_json::to_writer(dst.writer(), &json).map_err(|e| FrameError::Malformed {
                    frame_type: TYPE_HELLO,
                    reason: format!("cannot encode hello JSON: {e}"),
                })?;
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => dst.put_u64(*nonce),
            Frame::Crl { der } => dst.put_slice(der),
            Frame::Goodbye { code, reason } => {
                dst.put_u16(code.as_u16());
                dst.put_slice(reason.as_bytes());
            }
            Frame::Message {
                seq,
                id,
                content_type,
                body,
            } => {
                // Lengths were checked by `validate`; the conversions cannot fail.
                let id_len = u8::try_from(id.len()).map_err(|_| too_long(TYPE_MESSAGE, "id"))?;
                let ct_len = u16::try_from(content_type.len())
                    .map_err(|_| too_long(TYPE_MESSAGE, "content type"))?;
                dst.put_u64(*seq);
                dst.put_u8(id_len);
                dst.put_slice(id.as_bytes());
                dst.put_u16(ct_len);
                dst.put_slice(content_type.as_bytes());
                dst.put_slice(body);
            }
            Frame::Ack { seq } => dst.put_u64(*seq),
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }
}

fn too_long(frame_type: u8, what: &str) -> FrameError {
    FrameError::Malformed {
        frame_type,
        reason: format!("{what} too long"),
    }
}

/// The `Hello` payload as it is written; a separate type so that the JSON field
/// names are fixed here and not by the Rust enum.
#[derive(Serialize)]
struct HelloWire<'a> {
    version: u16,
    node_id: &'a str,
    max_payload: u32,
    heartbeat_ms: u32,
    epoch: &'a str,
}

/// The `Hello` payload as it is read. Unknown fields are ignored (serde's
/// default) so a later version can add optional fields.
#[derive(Deserialize)]
struct HelloRead {
    version: u16,
    node_id: String,
    max_payload: u32,
    heartbeat_ms: u32,
    #[serde(default)]
    epoch: String,
}

/// Node ids follow the rule of `peerlink_pki::identity::check_node_id`: 1 to 64
/// characters from `A-Z a-z 0-9 . -`, starting with a letter or digit. The
/// protocol repeats it so that a peer's claim is safe to log before it is
/// compared with its certificate.
fn is_valid_node_id(id: &str) -> bool {
    (1..=MAX_NODE_ID_LEN).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn is_known_type(frame_type: u8) -> bool {
    matches!(
        frame_type,
        TYPE_HELLO | TYPE_PING | TYPE_PONG | TYPE_CRL | TYPE_GOODBYE | TYPE_MESSAGE | TYPE_ACK
    )
}

fn type_name(frame_type: u8) -> &'static str {
    match frame_type {
        TYPE_HELLO => "hello",
        TYPE_PING => "ping",
        TYPE_PONG => "pong",
        TYPE_CRL => "crl",
        TYPE_GOODBYE => "goodbye",
        TYPE_MESSAGE => "message",
        TYPE_ACK => "ack",
        _ => "unknown",
    }
}

/// Why a frame could not be decoded or encoded. Every decoding error is fatal
/// for the link (the stream can no longer be trusted to be in sync).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The payload length exceeds the limit; detected from the header alone.
    #[error("frame payload of {length} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length claimed by the header (or of the frame being encoded).
        length: u64,
        /// The codec's limit.
        max: u32,
    },
    /// The header's flags or reserved field are not zero.
    #[error("bad frame header: flags {flags:#04x} and reserved {reserved:#06x} must be zero")]
    BadHeader {
        /// The flags byte received.
        flags: u8,
        /// The reserved field received.
        reserved: u16,
    },
    /// A frame type below 0x80 that this version does not know.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The payload does not have the layout or limits of its type.
    #[error("malformed {} frame ({frame_type:#04x}): {reason}", type_name(*.frame_type))]
    Malformed {
        /// The type byte of the frame.
        frame_type: u8,
        /// What is wrong, for the log.
        reason: String,
    },
    /// Reading or writing the underlying stream failed.
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The code to put in the `Goodbye` sent before closing the link because of
    /// this error.
    pub fn goodbye_code(&self) -> GoodbyeCode {
        match self {
            FrameError::TooLarge { .. } => GoodbyeCode::FrameTooLarge,
            FrameError::BadHeader { .. }
            | FrameError::UnknownType(_)
            | FrameError::Malformed { .. }
            | FrameError::Io(_) => GoodbyeCode::ProtocolError,
        }
    }
}

/// Encodes and decodes `peerlink/1` frames with a payload limit.
///
/// The same limit applies to both directions: a link receives with its own
/// limit and checks what it sends against the partner's advertised one before
/// encoding (a message over it is refused, not sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    max_payload: u32,
}

impl FrameCodec {
    /// A codec that rejects payloads larger than `max_payload` bytes.
    pub fn new(max_payload: u32) -> FrameCodec {
        FrameCodec { max_payload }
    }

    fn too_large(&self, length: u64) -> FrameError {
        FrameError::TooLarge {
            length,
            max: self.max_payload,
        }
    }
}

impl Default for FrameCodec {
    /// A codec with [`DEFAULT_MAX_PAYLOAD`].
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&src[..HEADER_LEN]);
        let [frame_type, flags, r0, r1, l0, l1, l2, l3] = header;
        let reserved = u16::from_be_bytes([r0, r1]);
        let length = u32::from_be_bytes([l0, l1, l2, l3]);

        // Everything about the frame is checked from the header, before a
        // single payload byte is buffered.
        if flags != 0 || reserved != 0 {
            return Err(FrameError::BadHeader { flags, reserved });
        }
        if length > self.max_payload {
            return Err(self.too_large(u64::from(length)));
        }
        if frame_type & IGNORABLE_BIT == 0 && !is_known_type(frame_type) {
            return Err(FrameError::UnknownType(frame_type));
        }
        let payload_len = usize::try_from(length).map_err(|_| self.too_large(u64::from(length)))?;
        let total = HEADER_LEN
            .checked_add(payload_len)
            .ok_or_else(|| self.too_large(u64::from(length)))?;
        if src.len() < total {
            // Bounded by max_payload, checked above.
            src.reserve(total - src.len());
            return Ok(None);
        }

        src.advance(HEADER_LEN);
        let payload = src.split_to(payload_len).freeze();
        decode_payload(frame_type, payload).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("stream ended inside a frame ({} bytes pending)", src.len()),
            ))),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.validate()?;
        let start = dst.len();
        dst.put_slice(&[0u8; HEADER_LEN]);
        if let Err(e) = frame.write_payload(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let payload_len = dst.len() - start - HEADER_LEN;
        let length = match u32::try_from(payload_len) {
            Ok(length) if length <= self.max_payload => length,
            _ => {
                dst.truncate(start);
                return Err(self.too_large(payload_len as u64));
            }
        };
        let header = &mut dst[start..start + HEADER_LEN];
        header[0] = frame.frame_type();
        // flags and reserved stay zero.
        header[4..].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }
}

/// Reads a payload field by field; every read is bounds-checked and turns a
/// short payload into `Malformed` instead of a panic.
struct PayloadReader {
    frame_type: u8,
    buf: Bytes,
}

impl PayloadReader {
    fn malformed(&self, reason: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            frame_type: self.frame_type,
            reason: reason.into(),
        }
    }

    fn need(&self, n: usize, what: &str) -> Result<(), FrameError> {
        if self.buf.remaining() < n {
            Err(self.malformed(format!(
                "payload ends inside {what} ({} of {n} bytes present)",
                self.buf.remaining()
            )))
        } else {
            Ok(())
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, FrameError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self, what: &str) -> Result<u16, FrameError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<Bytes, FrameError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    fn utf8(&mut self, n: usize, what: &str) -> Result<String, FrameError> {
        let raw = self.bytes(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Fixed-size payloads must not carry trailing bytes: they would be a sign
    /// of a framing bug on the other side.
    fn finish(&self) -> Result<(), FrameError> {
        if self.buf.has_remaining() {
            Err(self.malformed(format!(
                "{} unexpected trailing bytes",
                self.buf.remaining()
            )))
        } else {
            Ok(())
        }
    }
}

fn decode_payload(frame_type: u8, payload: Bytes) -> Result<Frame, FrameError> {
    let mut r = PayloadReader {
        frame_type,
        buf: payload,
    };
    let frame = match frame_type {
        TYPE_HELLO => {
            let hello: HelloRead = serde_json::from_slice(&r.buf).map_err(|e| {
                r.malformed(format!("invalid hello JSON: {}", bounded(&e.to_string())))
            })?;
            Frame::Hello {
                version: hello.version,
                node_id: hello.node_id,
                max_payload: hello.max_payload,
                heartbeat_ms: hello.heartbeat_ms,
                epoch: hello.epoch,
            }
        }
        TYPE_PING | TYPE_PONG => {
            let nonce = r.u64("nonce")?;
            r.finish()?;
            if frame_type == TYPE_PING {
                Frame::Ping { nonce }
            } else {
                Frame::Pong { nonce }
            }
        }
        TYPE_CRL => Frame::Crl { der: r.rest() },
        TYPE_GOODBYE => {
            let code = GoodbyeCode::from_u16(r.u16("code")?);
            let len = r.buf.remaining();
            if len > MAX_GOODBYE_REASON {
                return Err(r.malformed(format!(
                    "reason of {len} bytes exceeds {MAX_GOODBYE_REASON}"
                )));
            }
            let reason = r.utf8(len, "reason")?;
            Frame::Goodbye { code, reason }
        }
        TYPE_MESSAGE => {
            let seq = r.u64("seq")?;
            let id_len = usize::from(r.u8("id length")?);
            let id = r.utf8(id_len, "id")?;
            let ct_len = usize::from(r.u16("content type length")?);
            let content_type = r.utf8(ct_len, "content type")?;
            let body = r.rest();
            Frame::Message {
                seq,
                id,
                content_type,
                body,
            }
        }
        TYPE_ACK => {
            let seq = r.u64("seq")?;
            r.finish()?;
            Frame::Ack { seq }
        }
        // The header check let only ignorable types through.
        other if other & IGNORABLE_BIT != 0 => Frame::Unknown { frame_type: other },
        other => return Err(FrameError::UnknownType(other)),
    };
    frame.validate()?;
    Ok(frame)
}

/// Keeps peer-controlled text in error messages short and free of control
/// characters, since it ends up in logs.
fn bounded(text: &str) -> String {
    const MAX_CHARS: usize = 160;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            matches!(err, FrameError::Io(ref e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        );
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
        let Frame::Goodbye { reason, .. } = Frame::goodbye(GoodbyeCode::ProtocolError, &long)
        else {
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

    /// xorshift64: deterministic, dependency-free noise for the fuzz loop.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
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
}
