//! Why a frame could not be decoded or encoded.

use super::{type_name, GoodbyeCode};

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
