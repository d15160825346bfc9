//! What a session is told about its link, and what it asks the driver to do.

use std::time::Duration;

use bytes::Bytes;

use crate::frame::Frame;
use crate::link::error::LinkError;
use crate::link::handle::{PingError, PingReply};
use crate::store::WireMessage;

/// What a session needs to know about its link.
#[derive(Debug, Clone)]
pub struct Params {
    /// The partner, for logs.
    pub peer_id: String,
    /// The partner's outbox epoch (keys our deduplication of what it sends).
    pub peer_epoch: String,
    /// The epoch of our outbox that we announced on this link.
    pub our_epoch: String,
    /// The largest payload the partner accepts.
    pub peer_max_payload: usize,
    /// The largest payload we accept (our CRL must fit both).
    pub our_max_payload: usize,
    /// Most messages sent and not yet acknowledged.
    pub window_frames: usize,
    /// Most bytes sent and not yet acknowledged.
    pub window_bytes: usize,
    /// Send a Ping after this long without sending anything.
    pub heartbeat: Duration,
    /// Nothing received, or nothing written, for this long: dead.
    pub dead_after: Duration,
    /// Close the link after this long without application traffic (None: never).
    pub idle_after: Option<Duration>,
}

/// How a link ended without failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Goodbye, shutdown, replaced.
    Orderly(String),
    /// The partner closed it with `Goodbye(DuplicateLink)`.
    Duplicate(String),
    /// Closed for lack of traffic: not redialed until there is demand.
    Idle(String),
}

/// A counter the driver keeps for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Message frames sent.
    Sent,
    /// Messages the partner acknowledged.
    Acknowledged,
    /// New messages stored in our inbox (the inbox's readers are woken too).
    Received,
    /// The link was declared dead: nothing received.
    DeadNothingReceived,
    /// The link was declared dead: nothing written.
    DeadWriteStalled,
}

/// What the driver must do.
#[derive(Debug)]
pub enum Action {
    /// Queue this frame for the socket.
    Send(Frame),
    /// Store these messages in the inbox in one transaction; report with
    /// [`Session::stored`].
    StoreInbound(Vec<WireMessage>),
    /// Read at most `limit` outbox messages with a sequence number above `after`;
    /// report with [`Session::outbox_read`].
    ReadOutbox {
        /// Highest sequence number already sent.
        after: i64,
        /// Most messages.
        limit: usize,
    },
    /// Ask for the highest sequence number ever assigned to the partner; report
    /// with [`Session::assigned`].
    QueryAssigned,
    /// Remove outbox messages up to this sequence number (the partner stored
    /// them); report with [`Session::outbox_acked`].
    AckOutbox(i64),
    /// Start a new outbox epoch towards the partner, replacing this one; report
    /// with [`Session::epoch_rotated`].
    RotateEpoch(String),
    /// Hand a CRL the partner offered to the CRL store.
    OfferCrl(Bytes),
    /// A round trip was measured.
    Rtt(Duration),
    /// Answer an operator's ping.
    ReplyPing(PingReply, Result<Duration, PingError>),
    /// Add to a counter.
    Count(Count, u64),
    /// The link is over: say `goodbye` (best effort), then close. Always the
    /// last action.
    Close {
        /// What to tell the partner, if anything can reach it.
        goodbye: Option<Frame>,
        /// How it ended.
        outcome: Result<End, LinkError>,
    },
}
