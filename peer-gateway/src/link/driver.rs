//! Runs a link: registers it in the peer table, then feeds its [`Session`] with
//! what the socket, the timer, the outbox and the operator bring, and carries
//! out the session's actions with the writer task, the store and the peer
//! table, until the session closes the link.

use std::time::Instant;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio_util::codec::{Framed, FramedParts};

use super::handle::{LinkCommand, LinkHandle};
use super::hello::PeerHello;
use super::session::{Action, Count, End, Params, Session};
use super::writer::Writer;
use super::{Ended, LinkContext};
use crate::crl_store::CrlOutcome;
use crate::frame::{Frame, FrameCodec, GoodbyeCode};
use crate::peers::Registration;
use crate::tiebreak::Direction;

/// Most Message frames stored in one transaction.
const MAX_GROUP: usize = 1024;

/// The read half of a link's stream, decoding frames.
type Reader<S> = Framed<ReadHalf<S>, FrameCodec>;

/// Registers and runs an established link until it ends; returns how long it was
/// registered (None if the tie-break rejected it).
pub async fn run<S>(
    ctx: LinkContext,
    peer_id: String,
    direction: Direction,
    mut framed: Framed<S, FrameCodec>,
    peer_chain: Vec<Vec<u8>>,
    hello: PeerHello,
) -> Option<Ended>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let settings = ctx.settings.clone();
    let bound = settings.goodbye_bound();
    let (handle, mut commands) = LinkHandle::new(ctx.peers.next_link_id(), direction, peer_chain);
    let link_id = handle.id;
    let local = ctx.trust.node_id();
    if ctx.peers.register(&local, &peer_id, handle.clone()) != Registration::Registered {
        tracing::info!(peer = %peer_id, ?direction, "closing duplicate link (tie-break keeps the other one)");
        let goodbye = async {
            let _ = framed
                .send(Frame::goodbye(
                    GoodbyeCode::DuplicateLink,
                    "a link already exists",
                ))
                .await;
            let _ = framed.close().await;
        };
        let _ = tokio::time::timeout(bound, goodbye).await;
        return None;
    }
    tracing::info!(peer = %peer_id, ?direction, link = link_id, "link up");

    let (mut reader, write_half, codec) = split(framed);
    let mut writer = Writer::spawn(write_half, codec);
    let mut session = Session::new(
        Params {
            peer_id: peer_id.clone(),
            peer_epoch: hello.epoch.clone(),
            our_epoch: hello.our_epoch.clone(),
            peer_max_payload: hello.max_payload as usize,
            our_max_payload: settings.max_frame_bytes as usize,
            window_frames: settings.window_frames,
            window_bytes: settings.window_bytes,
            heartbeat: settings.heartbeat(),
            dead_after: settings.dead_after(),
            idle_after: match settings.idle_close_ms {
                0 => None,
                ms => Some(std::time::Duration::from_millis(ms)),
            },
        },
        Instant::now(),
    );
    let crl = ctx.trust.current().trust().crl_der.clone();
    let acked = ctx.store.acked_seq(&peer_id).await;
    session.start(acked, crl, Instant::now());

    let mut tick = tokio::time::interval(settings.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outbox = ctx.signals.outbox(&peer_id);
    let (goodbye, outcome) = loop {
        if let Some(closing) = carry_out(&ctx, &peer_id, &hello, &mut session, &writer).await {
            break closing;
        }
        tokio::select! {
            frame = reader.next() => {
                let now = Instant::now();
                handle.received(now);
                match frame {
                    None => session.read_closed(),
                    Some(Err(e)) => session.undecodable(&e, now),
                    Some(Ok(first)) => {
                        // Group commit: take every frame that is already here.
                        let mut ready = vec![first];
                        let mut broken = None;
                        while ready.len() < MAX_GROUP {
                            match reader.next().now_or_never() {
                                Some(Some(Ok(frame))) => ready.push(frame),
                                Some(Some(Err(e))) => {
                                    broken = Some(e);
                                    break;
                                }
                                _ => break,
                            }
                        }
                        session.frames_received(ready, now);
                        if let Some(e) = broken {
                            session.undecodable(&e, now);
                        }
                    }
                }
            }
            failure = writer.failed() => session.write_failed(failure),
            _ = outbox.notified() => session.outbox_grew(Instant::now()),
            command = commands.recv() => match command {
                Some(LinkCommand::Ping(reply)) => session.ping(reply, writer.stalled_for(), Instant::now()),
                Some(LinkCommand::SendCrl(der)) => session.crl_published(der),
                Some(LinkCommand::Close(code, reason)) => session.close_by_us(code, &reason),
                None => session.abandoned(),
            },
            _ = tick.tick() => session.tick(Instant::now(), writer.stalled_for()),
            _ = tokio::time::sleep_until(session.next_deadline().into()) => {
                session.tick(Instant::now(), writer.stalled_for());
            }
            _ = ctx.shutdown.cancelled() => session.shutdown(),
        }
    };

    let partner_kept_another = matches!(outcome, Ok(End::Duplicate(_)));
    let (error, idle) = match outcome {
        Ok(End::Idle(reason)) => {
            tracing::info!(peer = %peer_id, link = link_id, reason = %reason, "link closed while idle");
            (Some(reason), true)
        }
        Ok(End::Orderly(reason) | End::Duplicate(reason)) => {
            tracing::info!(peer = %peer_id, link = link_id, reason = %reason, "link down");
            (Some(reason), false)
        }
        Err(e) => {
            tracing::warn!(peer = %peer_id, link = link_id, error = %e, "link down");
            (Some(e.to_string()), false)
        }
    };
    // Status first: the goodbye below may take its whole bound.
    let up_for = ctx.peers.link_ended(&peer_id, link_id, error, idle);
    match goodbye {
        Some(goodbye) => writer.close_with(goodbye, bound).await,
        None => writer.close(bound).await,
    }
    drop(reader);
    Some(Ended {
        up_for: up_for?,
        partner_kept_another,
    })
}

/// Carries out the session's actions until none is left; returns the goodbye
/// and outcome once the session closed the link.
async fn carry_out(
    ctx: &LinkContext,
    peer_id: &str,
    hello: &PeerHello,
    session: &mut Session,
    writer: &Writer<Frame>,
) -> Option<(Option<Frame>, Result<End, super::LinkError>)> {
    let store = &ctx.store;
    let mut closing = None;
    while let Some(action) = session.poll_action() {
        match action {
            Action::Send(frame) => {
                if let Err(e) = writer.send(frame) {
                    session.write_failed(e);
                }
            }
            Action::StoreInbound(batch) => {
                let result = store.store_inbound(peer_id, &hello.epoch, &batch).await;
                session.stored(result, Instant::now());
            }
            Action::ReadOutbox { after, limit } => {
                let result = store.outbox_after(peer_id, after, limit as i64).await;
                session.outbox_read(result, Instant::now());
            }
            Action::QueryAssigned => {
                let result = store.max_assigned_seq(peer_id).await;
                session.assigned(result);
            }
            Action::AckOutbox(seq) => {
                let result = store.ack_outbox(peer_id, seq).await;
                session.outbox_acked(result, Instant::now());
            }
            Action::RotateEpoch(old) => {
                let result = store.rotate_epoch(peer_id, &old).await;
                session.epoch_rotated(result);
            }
            Action::OfferCrl(der) => offer_crl(ctx, peer_id, &der),
            Action::Rtt(rtt) => ctx.peers.set_rtt(peer_id, rtt),
            Action::ReplyPing(reply, answer) => {
                let _ = reply.send(answer);
            }
            Action::Count(count, n) => {
                let m = &ctx.metrics;
                match count {
                    Count::Sent => m.messages_sent(peer_id, n),
                    Count::Acknowledged => m.messages_acknowledged(peer_id, n),
                    Count::Received => {
                        m.messages_received(peer_id, n);
                        ctx.signals.inbox_arrived.notify_waiters();
                    }
                    Count::DeadNothingReceived => m.link_dead(peer_id, "nothing_received"),
                    Count::DeadWriteStalled => m.link_dead(peer_id, "write_stalled"),
                }
            }
            Action::Close { goodbye, outcome } => closing = Some((goodbye, outcome)),
        }
    }
    closing
}

/// A CRL the partner offered: stored if it is valid and newer, then a reload
/// puts it in force.
fn offer_crl(ctx: &LinkContext, peer_id: &str, der: &[u8]) {
    let tls = ctx.trust.current();
    let Some(peer) = tls.trust().peers.get(peer_id) else {
        return;
    };
    match ctx.crls.offer(peer, der) {
        Ok(CrlOutcome::Stored(number)) => {
            tracing::info!(peer = %peer_id, crl_number = number, "stored the partner's newer CRL; reloading");
            ctx.signals.reload.notify_one();
        }
        Ok(CrlOutcome::NotNewer) => {}
        Err(e) => {
            tracing::warn!(peer = %peer_id, error = %e, "ignored a CRL offered by the partner")
        }
    }
}

/// Splits an established link's stream: reads stay in the link's task, writes
/// go to their own (see `writer`). Bytes that arrived with the partner's Hello
/// belong to the next frames and are decoded before anything else is read.
fn split<S>(framed: Framed<S, FrameCodec>) -> (Reader<S>, WriteHalf<S>, FrameCodec)
where
    S: AsyncRead + AsyncWrite,
{
    let FramedParts {
        io,
        codec,
        read_buf,
        ..
    } = framed.into_parts();
    let (read_half, write_half) = tokio::io::split(io);
    let mut parts = FramedParts::new(read_half, codec);
    // `from_parts` (unlike a new reader given the buffer afterwards) knows the
    // buffer may already hold whole frames.
    parts.read_buf = read_buf;
    (Framed::from_parts(parts), write_half, codec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A partner that sends its Hello and its first frame in one write: the frame
    /// is already in our buffer when the Hello is decoded, and must be handled
    /// without waiting for more bytes (which a quiet partner never sends).
    #[tokio::test]
    async fn frames_that_came_with_the_hello_are_decoded_after_the_split() {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut bytes = bytes::BytesMut::new();
        let mut codec = FrameCodec::default();
        for frame in [
            Frame::hello("b", 65_536, 5_000, "e"),
            Frame::Ping { nonce: 7 },
        ] {
            tokio_util::codec::Encoder::encode(&mut codec, frame, &mut bytes).expect("encodes");
        }
        theirs.write_all(&bytes).await.expect("written");
        let mut framed = Framed::new(ours, FrameCodec::default());
        assert!(matches!(framed.next().await, Some(Ok(Frame::Hello { .. }))));
        let (mut reader, _write_half, _) = split(framed);
        let next = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
        assert!(
            matches!(next, Ok(Some(Ok(Frame::Ping { nonce: 7 })))),
            "{next:?}"
        );
    }
}
