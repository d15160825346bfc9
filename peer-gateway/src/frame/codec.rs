//! The codec: frames to bytes and back, with a payload limit; every read of a
//! peer's bytes is bounds-checked.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::*;

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
