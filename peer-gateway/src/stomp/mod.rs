//! Swaptacular's STOMP links (swpt-stomp): STOMP 1.2 over the same mutual TLS
//! and validation as `peerlink/1`, one direction per connection. We dial a
//! partner's STOMP servers to send it our outbox, and it dials our
//! `stomp_listen` to send us messages. See docs/swaptacular.md.

pub mod client;
pub mod driver;
pub mod frame;
pub mod heartbeat;
pub mod server;

use crate::store::StoreError;

/// The organizational unit of a DER Name (a Swaptacular node's type:
/// `Accounting Authorities`, `Creditors Agents`, `Debtors Agents`).
pub fn unit_of(name_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, name) = x509_parser::x509::X509Name::from_der(name_der).ok()?;
    let unit = name.iter_organizational_unit().next()?;
    unit.as_str().ok().map(str::to_string)
}

/// The RabbitMQ exchange swpt_stomp publishes a node's incoming messages to,
/// by the node's unit; its server accepts SENDs to `/exchange/<this>` only.
pub fn exchange_of(unit: &str) -> &'static str {
    match unit {
        "Accounting Authorities" => "accounts_in",
        "Creditors Agents" => "creditors_in",
        "Debtors Agents" => "debtors_in",
        _ => "smp",
    }
}

/// Why a swpt-stomp connection ended in failure (status and logs show these).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StompLinkError {
    /// We refused what the partner sent (the ERROR frame said this).
    #[error("refused the partner's frame: {0}")]
    Refused(String),
    /// The partner's server refused what we sent.
    #[error("the partner's STOMP server said: {0}")]
    ServerError(String),
    /// The partner broke the protocol.
    #[error("protocol error from partner: {0}")]
    Protocol(String),
    /// The partner closed the connection without DISCONNECT.
    #[error("connection closed by the partner")]
    ClosedWithoutDisconnect,
    /// No CONNECT (or CONNECTED) in time.
    #[error("no CONNECT/CONNECTED in time")]
    NoConnect,
    /// Nothing received for the agreed heart-beat plus the allowance.
    #[error("dead link: nothing received for {ms} ms")]
    NothingReceived {
        /// How long.
        ms: u128,
    },
    /// The partner accepted no byte for the dead-link bound.
    #[error("dead link: write stalled for {ms} ms (the partner reads nothing, or the path to it dropped)")]
    WriteStalled {
        /// How long.
        ms: u128,
    },
    /// The socket failed.
    #[error("{0}")]
    Write(String),
    /// Reading from the socket failed (reset, TLS error, closed without close_notify).
    #[error("connection failed: {0}")]
    Read(String),
    /// Received messages could not be stored (not confirmed: the partner resends them).
    #[error("cannot store received messages: {0}")]
    Inbox(#[source] StoreError),
    /// The message store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An outbox message cannot travel over STOMP.
    #[error("message {id} cannot be sent over swpt-stomp: {why}")]
    Unsendable {
        /// Its id.
        id: String,
        /// Why (no type, too large).
        why: String,
    },
}
