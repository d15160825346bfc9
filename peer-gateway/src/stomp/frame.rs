//! STOMP 1.2 frames (<https://stomp.github.io/stomp-specification-1.2.html>),
//! with the limits Swaptacular's swpt_stomp applies, so that whatever we send
//! it accepts and whatever it would refuse we refuse too: a header block of at
//! most 4,096 bytes, a body of at most 8,192, commands of 1 to 50 upper-case
//! letters, at most 50 header lines.
//!
//! ```text
//! COMMAND EOL
//! name:value EOL          (repeated; the first of a repeated name counts)
//! EOL
//! body NUL                (content-length bytes when that header is given)
//! ```
//!
//! EOL is LF or CR LF; EOLs between frames are heart-beats. Header names and
//! values escape `\r`, `\n`, `:` and `\` as `\r`, `\n`, `\c` and `\\`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Largest header block (command line excluded) swpt_stomp accepts.
pub const HEADER_MAX_LENGTH: usize = 4_096;
/// Largest body swpt_stomp accepts.
pub const BODY_MAX_LENGTH: usize = 8_192;
/// Most header lines in one frame.
pub const MAX_HEADERS: usize = 50;
/// Longest command.
const MAX_COMMAND: usize = 50;
/// Longest header name or value, as written (escaped).
const MAX_HEADER_PART: usize = 500;

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompFrame {
    /// `CONNECT`, `SEND`, `RECEIPT`, ...
    pub command: String,
    /// Headers in order, unescaped; repeated names are kept, the first counts.
    pub headers: Vec<(String, String)>,
    /// The body (without the terminating NUL).
    pub body: Bytes,
}

impl StompFrame {
    /// A frame without a body.
    pub fn new(command: &str, headers: &[(&str, &str)]) -> StompFrame {
        StompFrame {
            command: command.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            body: Bytes::new(),
        }
    }

    /// The value of header `name` (its first occurrence).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What arrives on a STOMP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// One or more EOLs between frames: the peer is alive.
    Heartbeat,
    /// A frame.
    Frame(StompFrame),
}

/// Why bytes are not STOMP. The texts are swpt_stomp's where it has one, since
/// they go back to the peer in an ERROR frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StompError {
    /// Not a frame.
    #[error("Invalid frame.")]
    Invalid,
    /// The header block is over [`HEADER_MAX_LENGTH`].
    #[error("The frame header is too big.")]
    HeaderTooBig,
    /// A header is not `name:value`, has a bad escape, or is not UTF-8.
    #[error("Invalid header.")]
    InvalidHeader,
    /// The body is over the limit.
    #[error("The body is too large.")]
    BodyTooLarge,
    /// `content-length` is over the limit or not a number.
    #[error("Content-length is too large.")]
    ContentLengthTooLarge,
    /// The body was not followed by NUL where content-length said it ends.
    #[error("The frame is not terminated by NUL.")]
    Unterminated,
    /// A header we were asked to send cannot be written.
    #[error("header {0:?} cannot be sent: the header block would exceed 4096 bytes")]
    CannotEncode(String),
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes STOMP 1.2 frames with the limits above.
#[derive(Debug, Clone, Copy)]
pub struct StompCodec {
    max_body: usize,
}

impl Default for StompCodec {
    fn default() -> Self {
        StompCodec {
            max_body: BODY_MAX_LENGTH,
        }
    }
}

/// Position just after the next LF at or after `from`, if any.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| from + i + 1)
}

/// A line without its EOL (LF or CR LF).
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn unescape(raw: &[u8]) -> Result<String, StompError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            out.push(match bytes.next() {
                Some(b'r') => b'\r',
                Some(b'n') => b'\n',
                Some(b'c') => b':',
                Some(b'\\') => b'\\',
                _ => return Err(StompError::InvalidHeader),
            });
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| StompError::InvalidHeader)
}

fn escape(text: &str, out: &mut BytesMut) {
    for c in text.bytes() {
        match c {
            b'\r' => out.put_slice(b"\\r"),
            b'\n' => out.put_slice(b"\\n"),
            b':' => out.put_slice(b"\\c"),
            b'\\' => out.put_slice(b"\\\\"),
            c => out.put_u8(c),
        }
    }
}

impl StompCodec {
    /// A codec accepting bodies up to `max_body` bytes (at most [`BODY_MAX_LENGTH`]
    /// is what swpt_stomp accepts).
    pub fn new(max_body: usize) -> StompCodec {
        StompCodec { max_body }
    }

    /// Parses the head (command and headers) at the start of `buf`; returns the
    /// frame without body and where the body starts, or None when incomplete.
    fn head(&self, buf: &[u8]) -> Result<Option<(StompFrame, usize)>, StompError> {
        let Some(first) = line_end(buf, 0) else {
            if buf.len() > MAX_COMMAND + 2 {
                return Err(StompError::Invalid);
            }
            return Ok(None);
        };
        let command = trim_eol(&buf[..first]);
        if command.is_empty()
            || command.len() > MAX_COMMAND
            || !command.iter().all(u8::is_ascii_uppercase)
        {
            return Err(StompError::Invalid);
        }
        let mut headers = Vec::new();
        let mut at = first;
        loop {
            let Some(end) = line_end(buf, at) else {
                if buf.len() - first > HEADER_MAX_LENGTH {
                    return Err(StompError::HeaderTooBig);
                }
                return Ok(None);
            };
            if end - first > HEADER_MAX_LENGTH {
                return Err(StompError::HeaderTooBig);
            }
            let line = trim_eol(&buf[at..end]);
            at = end;
            if line.is_empty() {
                break;
            }
            if headers.len() == MAX_HEADERS {
                return Err(StompError::HeaderTooBig);
            }
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or(StompError::InvalidHeader)?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty()
                || name.len() > MAX_HEADER_PART
                || value.len() > MAX_HEADER_PART
                || value.contains(&b':')
                || line.contains(&b'\r')
            {
                return Err(StompError::InvalidHeader);
            }
            headers.push((unescape(name)?, unescape(value)?));
        }
        let frame = StompFrame {
            command: String::from_utf8_lossy(command).into_owned(),
            headers,
            body: Bytes::new(),
        };
        Ok(Some((frame, at)))
    }
}

impl Decoder for StompCodec {
    type Item = Incoming;
    type Error = StompError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, StompError> {
        let eols = src
            .iter()
            .take_while(|b| **b == b'\n' || **b == b'\r')
            .count();
        if eols > 0 {
            // A lone CR may be the start of CR LF: keep it for the next read.
            let take = if src[..eols].ends_with(b"\r") {
                eols - 1
            } else {
                eols
            };
            if take > 0 {
                src.advance(take);
                return Ok(Some(Incoming::Heartbeat));
            }
            if src.len() == 1 {
                return Ok(None);
            }
            return Err(StompError::Invalid);
        }
        if src.is_empty() {
            return Ok(None);
        }
        let Some((mut frame, body_at)) = self.head(src)? else {
            return Ok(None);
        };
        let body_end = match frame.header("content-length") {
            Some(n) => {
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| StompError::ContentLengthTooLarge)?;
                if n > self.max_body {
                    return Err(StompError::ContentLengthTooLarge);
                }
                if src.len() < body_at + n + 1 {
                    return Ok(None);
                }
                if src[body_at + n] != 0 {
                    return Err(StompError::Unterminated);
                }
                body_at + n
            }
            None => match src[body_at..].iter().position(|b| *b == 0) {
                Some(i) if i <= self.max_body => body_at + i,
                Some(_) => return Err(StompError::BodyTooLarge),
                None if src.len() - body_at > self.max_body => {
                    return Err(StompError::BodyTooLarge)
                }
                None => return Ok(None),
            },
        };
        let mut whole = src.split_to(body_end + 1);
        whole.truncate(body_end);
        frame.body = whole.split_off(body_at).freeze();
        Ok(Some(Incoming::Frame(frame)))
    }
}

/// What we write on a STOMP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// An EOL: we are alive.
    Heartbeat,
    /// A frame.
    Frame(StompFrame),
}

impl Encoder<Outgoing> for StompCodec {
    type Error = StompError;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), StompError> {
        let frame = match item {
            Outgoing::Heartbeat => {
                dst.put_u8(b'\n');
                return Ok(());
            }
            Outgoing::Frame(frame) => frame,
        };
        let start = dst.len();
        dst.put_slice(frame.command.as_bytes());
        dst.put_u8(b'\n');
        let head_start = dst.len();
        for (name, value) in &frame.headers {
            escape(name, dst);
            dst.put_u8(b':');
            escape(value, dst);
            dst.put_u8(b'\n');
        }
        if !frame.body.is_empty() && frame.header("content-length").is_none() {
            dst.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
        }
        if dst.len() - head_start > HEADER_MAX_LENGTH {
            let name = frame
                .headers
                .iter()
                .max_by_key(|(_, v)| v.len())
                .map_or_else(String::new, |(k, _)| k.clone());
            dst.truncate(start);
            return Err(StompError::CannotEncode(name));
        }
        dst.put_u8(b'\n');
        dst.put_slice(&frame.body);
        dst.put_u8(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Incoming>, StompError> {
        let mut codec = StompCodec::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf)? {
            out.push(item);
        }
        Ok(out)
    }

    fn frame_of(item: &Incoming) -> &StompFrame {
        match item {
            Incoming::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn a_send_with_and_without_content_length_and_heartbeats_between() {
        let wire = b"\n\r\nSEND\r\ndestination:/exchange/smp\ntype:PrepareTransfer\nreceipt:7\ncontent-length:4\n\nab\0c\0\nSEND\ndestination:/x\n\nhello\0";
        let items = decode_all(wire).expect("decodes");
        assert_eq!(items[0], Incoming::Heartbeat);
        let first = frame_of(&items[1]);
        assert_eq!(first.command, "SEND");
        assert_eq!(first.header("type"), Some("PrepareTransfer"));
        assert_eq!(&first.body[..], b"ab\0c", "content-length may include NUL");
        assert_eq!(items[2], Incoming::Heartbeat);
        assert_eq!(&frame_of(&items[3]).body[..], b"hello");
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let mut codec = StompCodec::default();
        let frame = StompFrame {
            command: "SEND".into(),
            headers: vec![("receipt".into(), "a:b\\c\nd".into())],
            body: Bytes::from_static(b"{\"x\":1}"),
        };
        let mut wire = BytesMut::new();
        codec
            .encode(Outgoing::Frame(frame.clone()), &mut wire)
            .expect("encodes");
        for split in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..split]);
            let early = codec.decode(&mut buf).expect("a prefix is not an error");
            assert!(early.is_none(), "complete at {split} of {}", wire.len());
            buf.extend_from_slice(&wire[split..]);
            let got = codec.decode(&mut buf).expect("decodes").expect("a frame");
            let Incoming::Frame(mut got) = got else {
                panic!("not a frame")
            };
            // The encoder added content-length.
            got.headers.retain(|(k, _)| k != "content-length");
            assert_eq!(got, frame);
        }
    }

    #[test]
    fn the_first_of_repeated_headers_counts() {
        let items = decode_all(b"SEND\ntype:A\ntype:B\n\n\0").expect("decodes");
        assert_eq!(frame_of(&items[0]).header("type"), Some("A"));
    }

    #[test]
    fn limits_and_malformed_input_are_refused() {
        let big_body = [b"SEND\n\n".as_slice(), &[b'x'; BODY_MAX_LENGTH + 1], b"\0"].concat();
        assert!(matches!(
            decode_all(&big_body),
            Err(StompError::BodyTooLarge)
        ));
        let big_len = format!("SEND\ncontent-length:{}\n\n", BODY_MAX_LENGTH + 1);
        assert!(matches!(
            decode_all(big_len.as_bytes()),
            Err(StompError::ContentLengthTooLarge)
        ));
        let big_head = format!("SEND\nx:{}\n\n\0", "y".repeat(HEADER_MAX_LENGTH));
        assert!(matches!(
            decode_all(big_head.as_bytes()),
            Err(StompError::HeaderTooBig)
        ));
        for bad in [
            b"send\n\n\0".as_slice(),
            b"SEND\nno colon\n\n\0",
            b"SEND\nbad:\\t\n\n\0",
            b"SEND\nbad:\xff\n\n\0",
            b"SEND\ncontent-length:1\n\nab\0",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Nothing but an incomplete frame: wait for more.
        assert!(decode_all(b"SEN").expect("incomplete").is_empty());
        assert!(decode_all(b"SEND\nreceipt:1\n")
            .expect("incomplete")
            .is_empty());
    }

    #[test]
    fn a_header_block_too_big_to_send_is_refused_before_writing() {
        let mut codec = StompCodec::default();
        let mut out = BytesMut::from(&b"earlier"[..]);
        let frame = StompFrame::new("SEND", &[("type", &"t".repeat(HEADER_MAX_LENGTH))]);
        assert!(matches!(
            codec.encode(Outgoing::Frame(frame), &mut out),
            Err(StompError::CannotEncode(name)) if name == "type"
        ));
        assert_eq!(&out[..], b"earlier");
    }
}
