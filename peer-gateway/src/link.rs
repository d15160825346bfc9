//! One authenticated link: Hello exchange, CRL offer, heartbeats, pings and a
//! graceful goodbye. A malformed frame closes this link only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::crl_store::CrlOutcome;
use crate::frame::{Frame, FrameCodec, GoodbyeCode};
use crate::gateway::{Gateway, LinkCommand, LinkHandle};
use crate::tiebreak::Direction;

use crate::frame::PROTOCOL_VERSION;

/// Why a link could not be set up after the TLS handshake.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Hello missing, late or inconsistent.
    #[error("link set-up failed: {0}")]
    Hello(String),
    /// The partner refused our certificate: in TLS 1.3 a client learns that only
    /// from the alert that arrives instead of the partner's first frame.
    #[error("the partner refused our certificate ({0}); check that it has registered us, that our cross-certificate and server certificate are current and not revoked")]
    RejectedByPeer(String),
}

fn alert_of(e: &crate::frame::FrameError) -> Option<String> {
    let crate::frame::FrameError::Io(io) = e else {
        return None;
    };
    match io.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(format!("TLS alert {alert:?}")),
        _ => None,
    }
}

/// Exchanges Hello frames; the partner's Hello must name the node its certificate names.
pub async fn exchange_hello<S>(
    framed: &mut Framed<S, FrameCodec>,
    gw: &Gateway,
    expected_peer: &str,
) -> Result<(), SetupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        node_id: gw.node_id(),
        max_payload: gw.config.link.max_frame_bytes,
        heartbeat_ms: u32::try_from(gw.config.link.heartbeat_ms).unwrap_or(u32::MAX),
    };
    framed.send(hello).await.map_err(|e| match alert_of(&e) {
        Some(alert) => SetupError::RejectedByPeer(alert),
        None => SetupError::Hello(format!("cannot send hello: {e}")),
    })?;
    match framed.next().await {
        Some(Ok(Frame::Hello {
            version, node_id, ..
        })) => {
            if version != PROTOCOL_VERSION {
                return Err(SetupError::Hello(format!(
                    "partner speaks protocol version {version}"
                )));
            }
            if node_id != expected_peer {
                return Err(SetupError::Hello(format!(
                    "partner's hello names node {node_id}, its certificate names {expected_peer}"
                )));
            }
            Ok(())
        }
        Some(Ok(Frame::Goodbye { code, reason })) => Err(SetupError::Hello(format!(
            "partner closed the link: {code:?} {reason}"
        ))),
        Some(Ok(other)) => Err(SetupError::Hello(format!(
            "expected hello, got {}",
            other.frame_type_name()
        ))),
        Some(Err(e)) => Err(match alert_of(&e) {
            Some(alert) => SetupError::RejectedByPeer(alert),
            None => SetupError::Hello(e.to_string()),
        }),
        None => Err(SetupError::Hello("connection closed before hello".into())),
    }
}

/// Registers and runs an established link until it ends; returns how long it was
/// registered (None if the tie-break rejected it).
pub async fn run<S>(
    gw: Arc<Gateway>,
    peer_id: String,
    direction: Direction,
    mut framed: Framed<S, FrameCodec>,
    peer_chain: Vec<Vec<u8>>,
) -> Option<Duration>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut commands) = mpsc::channel(16);
    let link_id = gw.next_link_id();
    let handle = LinkHandle {
        id: link_id,
        direction,
        since: Instant::now(),
        commands: tx,
        peer_chain,
    };
    if !gw.register_link(&peer_id, handle) {
        tracing::info!(peer = %peer_id, ?direction, "closing duplicate link (tie-break keeps the other one)");
        let _ = framed
            .send(Frame::Goodbye {
                code: GoodbyeCode::DuplicateLink,
                reason: "a link already exists".into(),
            })
            .await;
        let _ = framed.close().await;
        return None;
    }
    tracing::info!(peer = %peer_id, ?direction, link = link_id, "link up");

    let result = drive(&gw, &peer_id, &mut framed, &mut commands).await;
    let _ = framed.close().await;
    let (error, idle) = match result {
        Ok(End::Idle(reason)) => {
            tracing::info!(peer = %peer_id, link = link_id, reason = %reason, "link closed while idle");
            (Some(reason), true)
        }
        Ok(End::Orderly(reason)) => {
            tracing::info!(peer = %peer_id, link = link_id, reason = %reason, "link down");
            (Some(reason), false)
        }
        Err(e) => {
            tracing::warn!(peer = %peer_id, link = link_id, error = %e, "link down");
            (Some(e), false)
        }
    };
    gw.link_ended(&peer_id, link_id, error, idle)
}

/// How a link ended without failure.
enum End {
    /// Goodbye, shutdown, replaced.
    Orderly(String),
    /// Closed for lack of traffic: not redialed until there is demand.
    Idle(String),
}

/// The link loop. Ok for orderly ends, Err(reason) for failures.
async fn drive<S>(
    gw: &Arc<Gateway>,
    peer_id: &str,
    framed: &mut Framed<S, FrameCodec>,
    commands: &mut mpsc::Receiver<LinkCommand>,
) -> Result<End, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let heartbeat = gw.config.link.heartbeat();
    let dead_after = gw.config.link.dead_after();
    let idle_after = match gw.config.link.idle_close_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    // Application activity (anything but heartbeats) keeps an idle-closing link open.
    let mut last_activity = Instant::now();
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    let mut next_nonce: u64 = 1;
    let mut pending: Vec<(u64, Instant, Option<oneshot::Sender<Duration>>)> = Vec::new();
    let mut tick = tokio::time::interval(heartbeat / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    if let Some(crl) = gw.tls().trust().crl_der.clone() {
        send_crl(framed, peer_id, crl, &mut last_tx).await?;
    }

    loop {
        tokio::select! {
            frame = framed.next() => {
                last_rx = Instant::now();
                match frame {
                    None => return Err("connection closed by the partner without goodbye".into()),
                    Some(Err(e)) => {
                        let code = e.goodbye_code();
                        let _ = framed.send(Frame::goodbye(code, &e.to_string())).await;
                        return Err(format!("protocol error from partner: {e}"));
                    }
                    Some(Ok(frame)) => match frame {
                        Frame::Ping { nonce } => send(framed, Frame::Pong { nonce }, &mut last_tx).await?,
                        Frame::Goodbye { code: GoodbyeCode::Idle, reason } => {
                            return Ok(End::Idle(format!("partner closed the idle link: {reason}")));
                        }
                        Frame::Pong { nonce } => {
                            if let Some(pos) = pending.iter().position(|(n, _, _)| *n == nonce) {
                                let (_, sent, reply) = pending.swap_remove(pos);
                                let rtt = sent.elapsed();
                                gw.set_rtt(peer_id, rtt);
                                if let Some(reply) = reply {
                                    let _ = reply.send(rtt);
                                }
                            }
                        }
                        Frame::Crl { der } => handle_crl(gw, peer_id, &der),
                        Frame::Goodbye { code, reason } => {
                            return Ok(End::Orderly(format!("partner said goodbye: {code:?} {reason}")));
                        }
                        Frame::Unknown { .. } => {}
                        other => {
                            let reason = format!("unexpected {} frame", other.frame_type_name());
                            let _ = framed.send(Frame::goodbye(GoodbyeCode::ProtocolError, &reason)).await;
                            return Err(format!("protocol error from partner: {reason}"));
                        }
                    },
                }
            }
            command = commands.recv() => match command {
                Some(LinkCommand::Ping(reply)) => {
                    last_activity = Instant::now();
                    let nonce = next_nonce;
                    next_nonce += 1;
                    pending.push((nonce, Instant::now(), Some(reply)));
                    send(framed, Frame::Ping { nonce }, &mut last_tx).await?;
                }
                Some(LinkCommand::SendCrl(der)) => send_crl(framed, peer_id, der, &mut last_tx).await?,
                Some(LinkCommand::Close(code, reason)) => {
                    let _ = framed.send(Frame::goodbye(code, &reason)).await;
                    return Ok(End::Orderly(format!("closed by us: {code:?} {reason}")));
                }
                None => return Ok(End::Orderly("gateway stopping".into())),
            },
            _ = tick.tick() => {
                if last_rx.elapsed() >= dead_after {
                    let _ = framed.send(Frame::Goodbye { code: GoodbyeCode::HeartbeatTimeout, reason: "nothing received".into() }).await;
                    return Err(format!("dead link: nothing received for {} ms", dead_after.as_millis()));
                }
                pending.retain(|(_, sent, _)| sent.elapsed() < dead_after);
                if idle_after.is_some_and(|idle| last_activity.elapsed() >= idle) {
                    let _ = framed.send(Frame::Goodbye { code: GoodbyeCode::Idle, reason: "no traffic".into() }).await;
                    return Ok(End::Idle("closed by us: idle".into()));
                }
                if last_tx.elapsed() >= heartbeat {
                    let nonce = next_nonce;
                    next_nonce += 1;
                    pending.push((nonce, Instant::now(), None));
                    send(framed, Frame::Ping { nonce }, &mut last_tx).await?;
                }
            }
            _ = gw.shutdown.cancelled() => {
                let _ = framed.send(Frame::Goodbye { code: GoodbyeCode::Normal, reason: "gateway shutting down".into() }).await;
                return Ok(End::Orderly("gateway shutting down".into()));
            }
        }
    }
}

async fn send<S>(
    framed: &mut Framed<S, FrameCodec>,
    frame: Frame,
    last_tx: &mut Instant,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed
        .send(frame)
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    *last_tx = Instant::now();
    Ok(())
}

/// Offers our CRL; one too large for a frame is logged and skipped, the link stays.
async fn send_crl<S>(
    framed: &mut Framed<S, FrameCodec>,
    peer_id: &str,
    der: Vec<u8>,
    last_tx: &mut Instant,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max = framed.codec().max_payload() as usize;
    if der.len() > max {
        tracing::warn!(peer = %peer_id, size = der.len(), max, "our CRL is larger than a frame; not offered (raise link.max_frame_bytes)");
        return Ok(());
    }
    send(framed, Frame::Crl { der: der.into() }, last_tx).await
}

fn handle_crl(gw: &Arc<Gateway>, peer_id: &str, der: &[u8]) {
    let tls = gw.tls();
    let Some(peer) = tls.trust().peers.get(peer_id) else {
        return;
    };
    match gw.crls.offer(peer, der) {
        Ok(CrlOutcome::Stored(number)) => {
            tracing::info!(peer = %peer_id, crl_number = number, "stored the partner's newer CRL; reloading");
            gw.reload_request.notify_one();
        }
        Ok(CrlOutcome::NotNewer) => {}
        Err(e) => {
            tracing::warn!(peer = %peer_id, error = %e, "ignored a CRL offered by the partner")
        }
    }
}
