//! One supervisor task per partner: carries out what its
//! [`Supervisor`](crate::peers::supervisor::Supervisor) decides: waits, sleeps
//! (so a partner that is down costs no CPU), takes the link lease, dials the
//! partner's endpoints and runs the link it gets until it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::codec::Framed;

use crate::frame::FrameCodec;
use crate::leases::Leases;
use crate::link::{Ended, LinkContext, SetupError};
use crate::peers::supervisor::{Dialable, Dialed, Step, Supervisor, View};
use crate::tiebreak::{self, Direction};

/// What supervisors need: everything a link needs, and the leases.
#[derive(Clone)]
pub struct Dialer {
    /// What the links they run need.
    pub links: LinkContext,
    /// Link ownership across replicas.
    pub leases: Arc<Leases>,
}

impl Dialer {
    /// Starts the supervisor of `peer_id` (which must have an entry in the peer table).
    pub fn spawn(&self, peer_id: String) {
        tokio::spawn(supervise(self.clone(), peer_id));
    }

    /// What the supervisor of `peer_id` sees of it now.
    fn view(&self, peer_id: &str) -> View {
        let ctx = &self.links;
        let tls = ctx.trust.current();
        let trust = tls.trust();
        let peer = trust.peers.get(peer_id);
        View {
            shutdown: ctx.shutdown.is_cancelled(),
            in_trust: peer.is_some(),
            has_link: ctx.peers.has_link(peer_id),
            idle: ctx.peers.is_idle(peer_id),
            dialable: match peer {
                Some(p) if p.can_dial() => Dialable::Yes,
                Some(p) if p.issued_to_us_der.is_none() => Dialable::No(
                    "no cross-certificate from this partner is registered; waiting for it to dial us",
                ),
                _ => Dialable::No("revoked or deactivated by our operator"),
            },
            partner_preferred: tiebreak::preferred_dialer(&trust.identity.node_id, peer_id)
                == Direction::Inbound,
        }
    }
}

/// Runs the supervisor of `peer_id` until the partner disappears from the trust or
/// the gateway stops.
pub async fn supervise(dialer: Dialer, peer_id: String) {
    let ctx = &dialer.links;
    let Some(wake) = ctx.peers.wake_handle(&peer_id) else {
        return;
    };
    let mut supervisor = Supervisor::new(&ctx.settings, rand_core::OsRng);
    let mut plan = supervisor.check(&dialer.view(&peer_id));
    loop {
        if let Some(s) = plan.status.take() {
            ctx.peers
                .set_state(&peer_id, s.state, s.error, s.refusal, s.attempts);
        }
        plan = match plan.step {
            Step::Stop => return,
            Step::Check => supervisor.check(&dialer.view(&peer_id)),
            Step::WaitForWake => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = ctx.shutdown.cancelled() => return,
                }
                supervisor.check(&dialer.view(&peer_id))
            }
            Step::Sleep { delay, wake_early } => {
                sleep(&dialer, &wake, delay, wake_early).await;
                supervisor.check(&dialer.view(&peer_id))
            }
            Step::TakeLease => supervisor.leased(dialer.leases.take(&peer_id).await),
            Step::Dial => {
                let dialed = dial_any(ctx, &peer_id).await;
                if let Dialed::Failed { error, .. } = &dialed {
                    tracing::debug!(peer = %peer_id, error = %error, "dial failed");
                }
                let wanted = !ctx.shutdown.is_cancelled() && !ctx.peers.is_idle(&peer_id);
                supervisor.dialed(dialed, wanted)
            }
        };
    }
}

async fn sleep(dialer: &Dialer, wake: &Notify, delay: Duration, wake_early: bool) {
    let shutdown = &dialer.links.shutdown;
    if wake_early {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => {}
        }
    } else {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// Why one endpoint gave no link.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Handshake(peerlink_tls::HandshakeError),
    #[error(transparent)]
    Setup(SetupError),
    #[error("handshake timed out")]
    HandshakeTimeout,
}

impl DialError {
    /// The stable reason when the handshake was refused (by us or by the partner).
    fn refusal(&self) -> Option<&'static str> {
        use peerlink_tls::HandshakeError;
        match self {
            DialError::Handshake(
                e @ (HandshakeError::Refused(_) | HandshakeError::RejectedByPeer(_)),
            ) => Some(e.reason()),
            DialError::Setup(SetupError::RejectedByPeer(_)) => Some("rejected_by_peer"),
            _ => None,
        }
    }
}

/// Tries each endpoint in turn; on success runs the link to its end.
async fn dial_any(ctx: &LinkContext, peer_id: &str) -> Dialed {
    let endpoints = ctx.trust.endpoints_of(peer_id);
    if endpoints.is_empty() {
        return Dialed::Failed {
            error: "no endpoints known for this partner; waiting for it to dial us".into(),
            refusal: None,
        };
    }
    ctx.metrics.reconnect_attempt(peer_id);
    let mut last = Dialed::Failed {
        error: "no endpoint tried".into(),
        refusal: None,
    };
    for endpoint in &endpoints {
        match dial(ctx, peer_id, endpoint).await {
            Ok(ended) => return Dialed::Linked(ended),
            Err(e) => {
                let refusal = e.refusal();
                if let Some(reason) = refusal {
                    tracing::warn!(peer = %peer_id, endpoint = %endpoint, reason, error = %e, "handshake refused");
                }
                last = Dialed::Failed {
                    error: format!("{endpoint}: {e}"),
                    refusal,
                };
            }
        }
    }
    last
}

async fn dial(
    ctx: &LinkContext,
    peer_id: &str,
    endpoint: &str,
) -> Result<Option<Ended>, DialError> {
    let settings = &ctx.settings;
    let tcp = tokio::time::timeout(
        Duration::from_millis(settings.connect_timeout_ms),
        TcpStream::connect(endpoint),
    )
    .await
    .map_err(|_| DialError::ConnectTimeout)?
    .map_err(DialError::Connect)?;
    crate::socket::tune_peer_socket(&tcp, settings);
    if ctx.trust.protocol_of(peer_id) == crate::config::Protocol::SwptStomp {
        let tls = ctx.trust.current();
        let handshake = tls.connect_as(tcp, peer_id, peerlink_tls::Wire::SwptStomp);
        let stream = match tokio::time::timeout(settings.handshake_timeout(), handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                if let peerlink_tls::HandshakeError::Refused(r) = &e {
                    ctx.record_refusal(r.reason, Some(peer_id), &r.detail);
                }
                return Err(DialError::Handshake(e));
            }
            Err(_) => return Err(DialError::HandshakeTimeout),
        };
        ctx.metrics.handshake_accepted("outbound");
        return Ok(
            crate::stomp::driver::run_client(ctx.clone(), peer_id.to_string(), stream).await,
        );
    }
    let tls = ctx.trust.current();
    let handshake = async {
        let stream = tls.connect(tcp, peer_id).await.map_err(|e| {
            if let peerlink_tls::HandshakeError::Refused(r) = &e {
                ctx.record_refusal(r.reason, Some(peer_id), &r.detail);
            }
            DialError::Handshake(e)
        })?;
        let chain = crate::link::presented_chain(stream.get_ref().1);
        let mut framed = Framed::new(stream, FrameCodec::new(settings.max_frame_bytes));
        let hello = crate::link::exchange_hello(&mut framed, ctx, peer_id)
            .await
            .map_err(DialError::Setup)?;
        Ok::<_, DialError>((framed, chain, hello))
    };
    let (framed, chain, hello) = tokio::time::timeout(settings.handshake_timeout(), handshake)
        .await
        .map_err(|_| DialError::HandshakeTimeout)??;
    ctx.metrics.handshake_accepted("outbound");
    Ok(crate::link::run(
        ctx.clone(),
        peer_id.to_string(),
        Direction::Outbound,
        framed,
        chain,
        hello,
    )
    .await)
}
