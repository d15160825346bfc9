//! Why a link ended in failure. The texts are what operators read in status
//! (`last_error`) and logs ("link down").

use super::writer::WriteError;
use crate::store::StoreError;

/// A link's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The partner closed the connection without a goodbye.
    #[error("connection closed by the partner without goodbye")]
    ClosedWithoutGoodbye,
    /// The partner broke the protocol (an undecodable or unexpected frame).
    #[error("protocol error from partner: {0}")]
    Protocol(String),
    /// The socket failed, or the partner left too much unread.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Nothing received for the dead-link bound.
    #[error("dead link: nothing received for {ms} ms")]
    NothingReceived {
        /// How long.
        ms: u128,
    },
    /// The partner accepted no byte for the dead-link bound while frames waited.
    #[error("dead link: write stalled for {ms} ms (the partner reads nothing, or the path to it dropped)")]
    WriteStalled {
        /// How long.
        ms: u128,
    },
    /// The messages the partner sent could not be stored (they are not
    /// acknowledged, so the partner sends them again on the next link).
    #[error("cannot store received messages: {0}")]
    Inbox(#[source] StoreError),
    /// The message store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The partner acknowledged messages our store never numbered: a new outbox
    /// epoch was started (see docs/messaging.md).
    #[error("restarted its outbox numbering after an impossible acknowledgement")]
    EpochRestarted,
    /// An outbox message does not fit the partner's frame limit.
    #[error("message {id} ({size} bytes) exceeds the partner's frame limit of {max} bytes")]
    TooLargeForPartner {
        /// Its id.
        id: String,
        /// Its encoded size.
        size: usize,
        /// The partner's limit.
        max: usize,
    },
}
