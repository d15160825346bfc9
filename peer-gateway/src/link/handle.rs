//! What the rest of the gateway holds of a running link: a way to reach its
//! task, and the facts the tie-break and a reload need.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::frame::GoodbyeCode;
use crate::tiebreak::Direction;

/// Where a link answers an operator's ping: the round trip, or why there is none.
pub type PingReply = oneshot::Sender<Result<Duration, PingError>>;

/// Why an operator's ping got no round trip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The partner has accepted nothing for a heartbeat or more: a ping would
    /// only queue behind what waits.
    #[error("the link is stalled: the partner has accepted nothing for {ms} ms")]
    Stalled {
        /// How long.
        ms: u128,
    },
    /// No pong within the dead-link bound.
    #[error("no pong within {ms} ms")]
    NoPong {
        /// The bound.
        ms: u128,
    },
    /// The link was closing when the ping arrived, or closed before the pong.
    #[error("the link closed before the pong")]
    Closed,
    /// The link failed before the pong.
    #[error("the link failed before the pong: {0}")]
    Failed(String),
    /// The partner's link is a swpt-stomp connection: STOMP has no ping (its
    /// heart-beats keep it alive).
    #[error("swpt-stomp links have no ping (heart-beats watch them)")]
    Unsupported,
}

/// Orders a link task can receive.
#[derive(Debug)]
pub enum LinkCommand {
    /// Measure a round trip.
    Ping(PingReply),
    /// Say goodbye with this code and close.
    Close(GoodbyeCode, String),
    /// Offer our newest CRL.
    SendCrl(Vec<u8>),
}

/// Commands a link task has not handled yet, at most.
pub const COMMAND_QUEUE: usize = 16;

/// The registered link of a partner.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    /// Unique id of this link in this process.
    pub id: u64,
    /// Who dialed.
    pub direction: Direction,
    /// When it came up.
    pub since: Instant,
    /// Commands to the link task.
    pub commands: mpsc::Sender<LinkCommand>,
    /// The certificate chain the partner presented (leaf first), re-checked on reload.
    pub peer_chain: Vec<Vec<u8>>,
    /// When the link last received anything; a link silent for longer than
    /// [`crate::config::LinkConfig::stale_after`] loses the tie-break to a fresh
    /// one (its far end is probably gone).
    pub last_rx: Arc<Mutex<Instant>>,
}

impl LinkHandle {
    /// A handle for a new link, and the receiving end of its commands.
    pub fn new(
        id: u64,
        direction: Direction,
        peer_chain: Vec<Vec<u8>>,
    ) -> (LinkHandle, mpsc::Receiver<LinkCommand>) {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let now = Instant::now();
        let handle = LinkHandle {
            id,
            direction,
            since: now,
            commands,
            peer_chain,
            last_rx: Arc::new(Mutex::new(now)),
        };
        (handle, receiver)
    }

    /// How long since the link last received anything.
    pub fn silent_for(&self) -> Duration {
        self.last_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Notes that the link received something now.
    pub fn received(&self, at: Instant) {
        *self.last_rx.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Asks the link to say goodbye and close. Never waits: a link whose command
    /// queue is full is busy ending already, or ends by its dead-link rule.
    pub fn close(&self, code: GoodbyeCode, reason: &str) {
        let _ = self
            .commands
            .try_send(LinkCommand::Close(code, reason.to_string()));
    }

    /// A handle whose commands the test reads.
    #[cfg(test)]
    pub fn for_test(id: u64, direction: Direction) -> (LinkHandle, mpsc::Receiver<LinkCommand>) {
        LinkHandle::new(id, direction, Vec::new())
    }

    /// Pretends the link last received something `ago`.
    #[cfg(test)]
    pub fn backdate_last_rx(&self, ago: Duration) {
        if let Some(then) = Instant::now().checked_sub(ago) {
            self.received(then);
        }
    }
}
