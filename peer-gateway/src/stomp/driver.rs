//! Runs swpt-stomp connections: the listener that partners dial to send to us
//! (each connection a [`ServerSession`]), and our client connection to a
//! partner's STOMP server, started by its supervisor like a `peerlink/1` link
//! and registered as the partner's link (a [`ClientSession`]). Both use the
//! writer task of the links, so no write can hold off a dead-link decision.

use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use peerlink_tls::Wire;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::codec::FramedRead;

use super::client::{ClientAction, ClientCount, ClientParams, ClientSession};
use super::frame::{Incoming, Outgoing, StompCodec, StompError};
use super::heartbeat::Offer;
use super::server::{ServerAction, ServerParams, ServerSession};
use super::{exchange_of, StompLinkError};
use crate::config::{Protocol, StompSettings};
use crate::link::writer::Writer;
use crate::link::{Ended, LinkCommand, LinkContext, LinkHandle, PingError};
use crate::peers::Registration;
use crate::store::UntrackedMessage;
use crate::tiebreak::Direction;

/// Most frames handled together (one transaction for a run of SENDs).
const MAX_GROUP: usize = 1024;

/// Our heart-beat offer: send at least every `heartbeat_ms`, want something
/// at least every six of them (swpt_stomp's 5 s and 30 s by default).
fn offer(settings: &StompSettings) -> Offer {
    Offer {
        send_min_ms: settings.heartbeat_ms,
        recv_desired_ms: settings.heartbeat_ms.saturating_mul(6),
    }
}

/// Reads what is already there after `first`, up to [`MAX_GROUP`] items;
/// an error after some items is returned with them.
fn group<R>(
    reader: &mut FramedRead<R, StompCodec>,
    first: Incoming,
) -> (Vec<Incoming>, Option<StompError>)
where
    R: AsyncRead + Unpin,
{
    let mut items = vec![first];
    while items.len() < MAX_GROUP {
        match reader.next().now_or_never() {
            Some(Some(Ok(item))) => items.push(item),
            Some(Some(Err(e))) => return (items, Some(e)),
            _ => break,
        }
    }
    (items, None)
}

/// Accepts partners' swpt-stomp connections until shutdown.
pub async fn serve(ctx: LinkContext, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = ctx.shutdown.cancelled() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "STOMP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            crate::socket::tune_peer_socket(&tcp, &ctx.settings);
            let tls = ctx.trust.current();
            let handshake = tls.accept_as(tcp, Wire::SwptStomp);
            let (stream, peer_id) = match tokio::time::timeout(
                ctx.settings.handshake_timeout(),
                handshake,
            )
            .await
            {
                Ok(Ok(up)) => up,
                Ok(Err(e)) => {
                    let peer = match &e {
                        peerlink_tls::HandshakeError::Refused(r) => r.peer.clone(),
                        _ => None,
                    };
                    ctx.record_refusal(e.reason(), peer.as_deref(), &e.to_string());
                    tracing::warn!(%remote, reason = e.reason(), error = %e, "refused STOMP handshake");
                    return;
                }
                Err(_) => {
                    ctx.record_refusal("handshake_timeout", None, "handshake timed out");
                    tracing::warn!(%remote, "refused STOMP handshake: timed out");
                    return;
                }
            };
            if ctx.trust.protocol_of(&peer_id) != Protocol::SwptStomp {
                ctx.record_refusal(
                    "wrong_protocol",
                    Some(&peer_id),
                    "the partner dialed our STOMP listener but is configured for peerlink/1",
                );
                tracing::warn!(%remote, peer = %peer_id, "refused STOMP connection: the partner is configured for peerlink/1 (set protocol = \"swpt-stomp\" for it)");
                return;
            }
            ctx.metrics.handshake_accepted("inbound");
            run_server(ctx, peer_id, stream).await;
        });
    }
}

/// One inbound connection: the partner sends, we store and confirm.
async fn run_server<S>(ctx: LinkContext, peer_id: String, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let our_unit = super::unit_of(&ctx.trust.current().trust().identity.subject_der);
    let params = ServerParams {
        destination: ctx.stomp.destination_for(our_unit.as_deref().unwrap_or("")),
        heartbeat: offer(&ctx.stomp),
        connect_timeout: ctx.settings.handshake_timeout(),
        dead_after: ctx.settings.dead_after(),
    };
    tracing::info!(peer = %peer_id, destination = %params.destination, "STOMP connection from partner");
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read_half, StompCodec::default());
    let mut writer: Writer<Outgoing> = Writer::spawn(write_half, StompCodec::default());
    let mut session = ServerSession::new(params, Instant::now());
    let mut tick = tokio::time::interval(ctx.settings.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (error, outcome) = loop {
        let mut closing = None;
        while let Some(action) = session.poll_action() {
            match action {
                ServerAction::Send(item) => {
                    if let Err(e) = writer.send(item) {
                        session.write_failed(e.to_string());
                    }
                }
                ServerAction::Store(batch) => {
                    let messages: Vec<UntrackedMessage> = batch
                        .into_iter()
                        .map(|m| UntrackedMessage {
                            content_type: m.content_type,
                            message_type: m.message_type,
                            body: m.body.to_vec(),
                        })
                        .collect();
                    let result = ctx.store.store_untracked(&peer_id, &messages).await;
                    if let Ok(n) = &result {
                        ctx.metrics.messages_received(&peer_id, *n);
                        ctx.signals.inbox_arrived.notify_waiters();
                    }
                    session.stored(result.map(|_| ()), Instant::now());
                }
                ServerAction::Close { error, outcome } => closing = Some((error, outcome)),
            }
        }
        if let Some(closing) = closing {
            break closing;
        }
        tokio::select! {
            item = reader.next() => {
                let now = Instant::now();
                match item {
                    None => session.read_closed(),
                    Some(Err(e)) => session.undecodable(&e, now),
                    Some(Ok(first)) => {
                        let (items, broken) = group(&mut reader, first);
                        session.received(items, now);
                        if let Some(e) = broken {
                            session.undecodable(&e, now);
                        }
                    }
                }
            }
            failure = writer.failed() => session.write_failed(failure.to_string()),
            _ = tick.tick() => {
                // A partner revoked or deactivated by a reload loses its connections.
                if !partner_active(&ctx, &peer_id) {
                    session.close_by_us("The peer has been deactivated.");
                } else {
                    session.tick(Instant::now(), writer.stalled_for());
                }
            }
            _ = tokio::time::sleep_until(session.next_deadline().into()) => {
                session.tick(Instant::now(), writer.stalled_for());
            }
            _ = ctx.shutdown.cancelled() => session.close_by_us("The server is shutting down."),
        }
    };
    match &outcome {
        Ok(reason) => {
            tracing::info!(peer = %peer_id, reason = %reason, "STOMP connection from partner closed")
        }
        Err(e) => {
            if matches!(e, StompLinkError::NothingReceived { .. }) {
                ctx.metrics.link_dead(&peer_id, "nothing_received");
            }
            tracing::warn!(peer = %peer_id, error = %e, "STOMP connection from partner closed")
        }
    }
    let bound = ctx.settings.goodbye_bound();
    match error {
        Some(frame) => writer.close_with(Outgoing::Frame(frame), bound).await,
        None => writer.close(bound).await,
    }
}

fn partner_active(ctx: &LinkContext, peer_id: &str) -> bool {
    ctx.trust
        .current()
        .trust()
        .peers
        .get(peer_id)
        .is_some_and(|p| p.status == peerlink_tls::PeerStatus::Active)
}

/// What to put in CONNECT and SEND for `peer_id`: the config's overrides,
/// else the partner's published manifest (its `stomp.toml`), else what
/// swpt_stomp would use (host `/`, the exchange of the partner's node type).
/// `${NODE_ID}` stands for our node id, as in swpt_stomp (not in the passcode
/// of a manifest, which swpt_stomp takes as written).
fn client_params(ctx: &LinkContext, peer_id: &str) -> ClientParams {
    let tls = ctx.trust.current();
    let trust = tls.trust();
    let ours = &trust.identity.node_id;
    let overrides = ctx.stomp.peers.get(peer_id).cloned().unwrap_or_default();
    let peer = trust.peers.get(peer_id);
    let manifest = peer.and_then(|p| p.stomp.as_ref());
    let their_unit = peer.and_then(|p| super::unit_of(&p.subject_der));
    let fill = |s: String| s.replace("${NODE_ID}", ours);
    let destination = match (overrides.destination, manifest) {
        (Some(d), _) => fill(d),
        (None, Some(m)) => m.destination_for(ours),
        (None, None) => format!(
            "/exchange/{}",
            exchange_of(their_unit.as_deref().unwrap_or(""))
        ),
    };
    let host = match (overrides.host, manifest) {
        (Some(h), _) => fill(h),
        (None, Some(m)) => m.host_for(ours),
        (None, None) => "/".into(),
    };
    let login = match overrides.login {
        Some(l) => Some(fill(l)),
        None => manifest.and_then(|m| m.login_for(ours)),
    };
    let passcode = match overrides.passcode {
        Some(p) => Some(fill(p)),
        None => manifest.and_then(|m| m.passcode.clone()),
    };
    ClientParams {
        host,
        login,
        passcode,
        destination,
        window: ctx.stomp.window,
        heartbeat: offer(&ctx.stomp),
        connect_timeout: ctx.settings.handshake_timeout(),
        dead_after: ctx.settings.dead_after(),
    }
}

/// Registers and runs our connection to a partner's STOMP server until it ends;
/// returns how long it was registered (None if another link of the partner's
/// was kept).
pub async fn run_client<S>(ctx: LinkContext, peer_id: String, stream: S) -> Option<Ended>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (handle, mut commands) =
        LinkHandle::new(ctx.peers.next_link_id(), Direction::Outbound, Vec::new());
    let link_id = handle.id;
    let local = ctx.trust.node_id();
    if ctx.peers.register(&local, &peer_id, handle.clone()) != Registration::Registered {
        return None;
    }
    let params = client_params(&ctx, &peer_id);
    tracing::info!(peer = %peer_id, link = link_id, destination = %params.destination, "STOMP link up");
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read_half, StompCodec::default());
    let mut writer: Writer<Outgoing> = Writer::spawn(write_half, StompCodec::default());
    let now = Instant::now();
    let mut session = match ctx.store.acked_seq(&peer_id).await {
        Ok(acked) => ClientSession::new(params, acked, now),
        Err(e) => {
            let _ = ctx
                .peers
                .link_ended(&peer_id, link_id, Some(e.to_string()), false);
            writer.close(ctx.settings.goodbye_bound()).await;
            return None;
        }
    };
    let outbox = ctx.signals.outbox(&peer_id);
    let mut tick = tokio::time::interval(ctx.settings.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        let mut closing = None;
        while let Some(action) = session.poll_action() {
            match action {
                ClientAction::Send(item) => {
                    if let Err(e) = writer.send(item) {
                        session.write_failed(e.to_string());
                    }
                }
                ClientAction::ReadOutbox { after, limit } => {
                    let result = ctx.store.outbox_after(&peer_id, after, limit as i64).await;
                    session.outbox_read(result, Instant::now());
                }
                ClientAction::AckOutbox(upto) => {
                    let result = ctx.store.ack_outbox(&peer_id, upto).await;
                    session.outbox_acked(result, upto);
                }
                ClientAction::Count(ClientCount::Sent, n) => ctx.metrics.messages_sent(&peer_id, n),
                ClientAction::Count(ClientCount::Acknowledged, n) => {
                    ctx.metrics.messages_acknowledged(&peer_id, n)
                }
                ClientAction::Close { outcome } => closing = Some(outcome),
            }
        }
        if let Some(outcome) = closing {
            break outcome;
        }
        tokio::select! {
            item = reader.next() => {
                let now = Instant::now();
                handle.received(now);
                match item {
                    None => session.read_closed(),
                    Some(Err(e)) => session.undecodable(&e),
                    Some(Ok(first)) => {
                        let (items, broken) = group(&mut reader, first);
                        session.received(items, now);
                        if let Some(e) = broken {
                            session.undecodable(&e);
                        }
                    }
                }
            }
            failure = writer.failed() => session.write_failed(failure.to_string()),
            _ = outbox.notified() => session.outbox_grew(),
            command = commands.recv() => match command {
                Some(LinkCommand::Ping(reply)) => {
                    let _ = reply.send(Err(PingError::Unsupported));
                }
                Some(LinkCommand::SendCrl(_)) => {}
                Some(LinkCommand::Close(code, reason)) => {
                    session.close_by_us(&format!("{code:?} {reason}"))
                }
                None => session.close_by_us("gateway stopping"),
            },
            _ = tick.tick() => session.tick(Instant::now(), writer.stalled_for()),
            _ = tokio::time::sleep_until(session.next_deadline().into()) => {
                session.tick(Instant::now(), writer.stalled_for());
            }
            _ = ctx.shutdown.cancelled() => session.close_by_us("gateway shutting down"),
        }
    };
    let error = match outcome {
        Ok(reason) => {
            tracing::info!(peer = %peer_id, link = link_id, reason = %reason, "STOMP link down");
            reason
        }
        Err(e) => {
            if matches!(e, StompLinkError::NothingReceived { .. }) {
                ctx.metrics.link_dead(&peer_id, "nothing_received");
            } else if matches!(e, StompLinkError::WriteStalled { .. }) {
                ctx.metrics.link_dead(&peer_id, "write_stalled");
            }
            tracing::warn!(peer = %peer_id, link = link_id, error = %e, "STOMP link down");
            e.to_string()
        }
    };
    let up_for = ctx.peers.link_ended(&peer_id, link_id, Some(error), false);
    writer.close(ctx.settings.goodbye_bound()).await;
    Some(Ended {
        up_for: up_for?,
        partner_kept_another: false,
    })
}
