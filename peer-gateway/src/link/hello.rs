//! The Hello exchange that opens every link, right after the TLS handshake:
//! each side names itself, its frame limit, heartbeat and outbox epoch (see
//! docs/protocol.md). The partner's Hello must name the node its certificate
//! names and speak our protocol version.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::LinkContext;
use crate::frame::{Frame, FrameCodec, FrameError, PROTOCOL_VERSION};

/// Why a link could not be set up after the TLS handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// Hello missing, late or inconsistent.
    #[error("link set-up failed: {0}")]
    Hello(#[from] HelloError),
    /// The partner refused our certificate: in TLS 1.3 a client learns that only
    /// from the alert that arrives instead of the partner's first frame.
    #[error("the partner refused our certificate ({0}); check that it has registered us, that our cross-certificate and server certificate are current and not revoked")]
    RejectedByPeer(String),
}

/// What was wrong with the Hello exchange.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// Our store could not give our outbox epoch.
    #[error("message store unavailable: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Our Hello could not be sent.
    #[error("cannot send hello: {0}")]
    Send(#[source] FrameError),
    /// The partner speaks another protocol version.
    #[error("partner speaks protocol version {0}")]
    Version(u16),
    /// The partner's Hello names another node than its certificate.
    #[error("partner's hello names node {named}, its certificate names {certified}")]
    WrongNode {
        /// The node the Hello names.
        named: String,
        /// The node the certificate names.
        certified: String,
    },
    /// The partner said goodbye instead.
    #[error("partner closed the link: {code:?} {reason}")]
    Goodbye {
        /// Its code.
        code: crate::frame::GoodbyeCode,
        /// Its reason.
        reason: String,
    },
    /// Another frame came first.
    #[error("expected hello, got {0}")]
    Unexpected(&'static str),
    /// The partner's bytes are not a frame.
    #[error(transparent)]
    Frame(FrameError),
    /// The connection closed first.
    #[error("connection closed before hello")]
    Closed,
}

/// What the partner's Hello told us.
#[derive(Debug, Clone)]
pub struct PeerHello {
    /// The partner's outbox epoch (keys our deduplication counter).
    pub epoch: String,
    /// The largest payload it accepts.
    pub max_payload: u32,
    /// The epoch of our outbox that we announced on this link.
    pub our_epoch: String,
}

fn alert_of(e: &FrameError) -> Option<String> {
    let FrameError::Io(io) = e else {
        return None;
    };
    match io.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(format!("TLS alert {alert:?}")),
        _ => None,
    }
}

/// The certificate chain the partner presented (leaf first), kept with the link
/// so a reload can re-check it.
pub fn presented_chain(conn: &rustls::CommonState) -> Vec<Vec<u8>> {
    conn.peer_certificates()
        .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
        .unwrap_or_default()
}

/// Exchanges Hello frames; the partner's Hello must name the node its certificate names.
pub async fn exchange_hello<S>(
    framed: &mut Framed<S, FrameCodec>,
    ctx: &LinkContext,
    expected_peer: &str,
) -> Result<PeerHello, SetupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = ctx
        .store
        .current_epoch(expected_peer)
        .await
        .map_err(HelloError::Store)?;
    let hello = Frame::hello(
        ctx.trust.node_id(),
        ctx.settings.max_frame_bytes,
        u32::try_from(ctx.settings.heartbeat_ms).unwrap_or(u32::MAX),
        epoch.clone(),
    );
    let our_epoch = epoch;
    framed.send(hello).await.map_err(|e| match alert_of(&e) {
        Some(alert) => SetupError::RejectedByPeer(alert),
        None => HelloError::Send(e).into(),
    })?;
    match framed.next().await {
        Some(Ok(Frame::Hello {
            version,
            node_id,
            max_payload,
            epoch,
            ..
        })) => {
            if version != PROTOCOL_VERSION {
                return Err(HelloError::Version(version).into());
            }
            if node_id != expected_peer {
                return Err(HelloError::WrongNode {
                    named: node_id,
                    certified: expected_peer.to_string(),
                }
                .into());
            }
            Ok(PeerHello {
                epoch,
                max_payload,
                our_epoch: our_epoch.clone(),
            })
        }
        Some(Ok(Frame::Goodbye { code, reason })) => {
            Err(HelloError::Goodbye { code, reason }.into())
        }
        Some(Ok(other)) => Err(HelloError::Unexpected(other.frame_type_name()).into()),
        Some(Err(e)) => Err(match alert_of(&e) {
            Some(alert) => SetupError::RejectedByPeer(alert),
            None => HelloError::Frame(e).into(),
        }),
        None => Err(HelloError::Closed.into()),
    }
}
