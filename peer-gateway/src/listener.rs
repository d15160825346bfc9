//! Accepting partners: a bounded accept queue, per-source admission control
//! (rate limit and concurrent handshakes), a global cap on concurrent
//! handshakes shared fairly between sources ([`crate::inflight`]), a handshake timeout, TCP_NODELAY, and a logged, counted reason
//! for every refusal (never sent to the peer beyond the TLS alert).

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use futures_util::SinkExt;

use crate::frame::{Frame, FrameCodec, GoodbyeCode};
use crate::leases::Leases;
use crate::link::LinkContext;
use crate::tiebreak::Direction;

/// Accepts connections until shutdown.
pub async fn serve(ctx: LinkContext, leases: Arc<Leases>, listener: TcpListener) {
    let in_flight = crate::inflight::InFlight::new(ctx.settings.max_concurrent_handshakes);
    let link = &ctx.settings;
    let admission = crate::admission::Admission::new(
        link.handshakes_per_source_per_second,
        link.handshake_burst_per_source,
        link.max_handshakes_per_source,
    );
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = ctx.shutdown.cancelled() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match admission.admit(remote.ip(), std::time::Instant::now()) {
            Ok(slot) => slot,
            Err(rejection) => {
                // Debug only: a flood must not also flood the log.
                ctx.record_refusal(rejection.reason(), None, "source over its handshake budget");
                tracing::debug!(%remote, reason = rejection.reason(), "refused connection");
                continue;
            }
        };
        let Some(ticket) = in_flight.admit(remote.ip(), std::time::Instant::now()) else {
            ctx.record_refusal("too_many_handshakes", None, "handshake limit reached");
            tracing::debug!(%remote, "refused connection: too many handshakes in progress");
            continue;
        };
        if ticket.evicted_another {
            tracing::debug!(%remote, "handshake limit reached: took the slot of the oldest handshake of the busiest source");
        }
        let ctx = ctx.clone();
        let leases = leases.clone();
        tokio::spawn(async move {
            let up = tokio::select! {
                up = handshake(&ctx, &leases, tcp, remote) => up,
                _ = ticket.displaced() => {
                    ctx.record_refusal(
                        "handshake_displaced",
                        None,
                        "its slot went to a source holding fewer handshakes",
                    );
                    None
                }
            };
            drop(ticket);
            drop(slot);
            if let Some((peer_id, framed, chain, hello)) = up {
                crate::link::run(ctx, peer_id, Direction::Inbound, framed, chain, hello).await;
            }
        });
    }
}

type Accepted = (
    String,
    Framed<tokio_rustls::server::TlsStream<TcpStream>, FrameCodec>,
    Vec<Vec<u8>>,
    crate::link::PeerHello,
);

async fn handshake(
    ctx: &LinkContext,
    leases: &Leases,
    tcp: TcpStream,
    remote: std::net::SocketAddr,
) -> Option<Accepted> {
    crate::socket::tune_peer_socket(&tcp, &ctx.settings);
    let tls = ctx.trust.current();
    let work = async {
        let (stream, peer_id) = match tls.accept(tcp).await {
            Ok(ok) => ok,
            Err(e) => {
                let (peer, claims, detail) = match &e {
                    peerlink_tls::HandshakeError::Refused(r) => {
                        (r.peer.clone(), r.claims.clone(), r.detail.clone())
                    }
                    other => (None, None, other.to_string()),
                };
                ctx.record_refusal(e.reason(), peer.as_deref(), &detail);
                tracing::warn!(
                    %remote,
                    reason = e.reason(),
                    peer = peer.as_deref().unwrap_or("-"),
                    claims = claims.as_deref().unwrap_or("-"),
                    detail = %detail,
                    "refused handshake"
                );
                return None;
            }
        };
        let chain = crate::link::presented_chain(stream.get_ref().1);
        let mut framed = Framed::new(stream, FrameCodec::new(ctx.settings.max_frame_bytes));
        // Another replica may own this partner's link: send it to its next endpoint.
        match leases.acquire(&peer_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%remote, peer = %peer_id, "another replica owns this partner's link; redirecting");
                let _ = framed
                    .send(Frame::goodbye(
                        GoodbyeCode::NotOwner,
                        "another replica owns this link",
                    ))
                    .await;
                return None;
            }
            Err(e) => {
                tracing::warn!(%remote, peer = %peer_id, error = %e, "closing: link lease unavailable");
                let _ = framed
                    .send(Frame::goodbye(GoodbyeCode::Normal, &e.to_string()))
                    .await;
                return None;
            }
        }
        let hello = match crate::link::exchange_hello(&mut framed, ctx, &peer_id).await {
            Ok(hello) => hello,
            Err(e) => {
                tracing::warn!(%remote, peer = %peer_id, error = %e, "link set-up failed");
                return None;
            }
        };
        ctx.metrics.handshake_accepted("inbound");
        Some((peer_id, framed, chain, hello))
    };
    match tokio::time::timeout(ctx.settings.handshake_timeout(), work).await {
        Ok(up) => up,
        Err(_) => {
            ctx.record_refusal("handshake_timeout", None, "handshake timed out");
            tracing::warn!(%remote, "refused handshake: timed out");
            None
        }
    }
}
