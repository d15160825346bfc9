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

mod codec;
mod error;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub use codec::FrameCodec;
pub use error::FrameError;

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

/// A link on which nothing was received for this many of the receiver's own
/// heartbeat intervals (or on which the peer accepted nothing while frames
/// waited) is dead and is closed.
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
    /// 0x10: one durable message.
    Message {
        /// The sender's outbox sequence number for this partner (per epoch),
        /// acknowledged cumulatively by `Ack`.
        seq: u64,
        /// The message id used for deduplication (1..=128 bytes).
        id: String,
        /// Media type of the body (at most 256 bytes, may be empty).
        content_type: String,
        /// The message body.
        body: Bytes,
    },
    /// 0x11: every message up to `seq` is durably stored.
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
