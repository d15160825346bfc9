//! One authenticated link: Hello exchange, CRL offer, heartbeats, pings,
//! durable message transfer in both directions, and a graceful goodbye.
//! A malformed frame closes this link only.
//!
//! Sending: messages leave our outbox in sequence order, at most
//! `window_frames` / `window_bytes` unacknowledged; an `Ack` removes them from
//! the outbox. Receiving: every `Message` frame that is ready is stored in one
//! transaction (group commit), then acknowledged cumulatively. A link that
//! drops resends from the last acknowledged sequence number; the receiver
//! drops what it already stored. Every message thus lands in the peer's inbox
//! exactly once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::crl_store::CrlOutcome;
use crate::frame::{Frame, FrameCodec, FrameError, GoodbyeCode, PROTOCOL_VERSION};
use crate::gateway::{Gateway, LinkCommand, LinkHandle};
use crate::store::WireMessage;
use crate::tiebreak::Direction;

/// Most Message frames stored in one transaction.
const MAX_GROUP: usize = 1024;

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
    gw: &Gateway,
    expected_peer: &str,
) -> Result<PeerHello, SetupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = gw
        .store
        .current_epoch(expected_peer)
        .await
        .map_err(|e| SetupError::Hello(format!("message store unavailable: {e}")))?;
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        node_id: gw.node_id(),
        max_payload: gw.config.link.max_frame_bytes,
        heartbeat_ms: u32::try_from(gw.config.link.heartbeat_ms).unwrap_or(u32::MAX),
        epoch: epoch.clone(),
    };
    let our_epoch = epoch;
    framed.send(hello).await.map_err(|e| match alert_of(&e) {
        Some(alert) => SetupError::RejectedByPeer(alert),
        None => SetupError::Hello(format!("cannot send hello: {e}")),
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
                return Err(SetupError::Hello(format!(
                    "partner speaks protocol version {version}"
                )));
            }
            if node_id != expected_peer {
                return Err(SetupError::Hello(format!(
                    "partner's hello names node {node_id}, its certificate names {expected_peer}"
                )));
            }
            Ok(PeerHello {
                epoch,
                max_payload,
                our_epoch: our_epoch.clone(),
            })
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
    hello: PeerHello,
) -> Option<Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut commands) = mpsc::channel(16);
    let link_id = gw.next_link_id();
    let last_rx = Arc::new(std::sync::Mutex::new(Instant::now()));
    let handle = LinkHandle {
        id: link_id,
        direction,
        since: Instant::now(),
        commands: tx,
        peer_chain,
        last_rx: last_rx.clone(),
    };
    if !gw.register_link(&peer_id, handle) {
        tracing::info!(peer = %peer_id, ?direction, "closing duplicate link (tie-break keeps the other one)");
        let _ = framed
            .send(Frame::goodbye(
                GoodbyeCode::DuplicateLink,
                "a link already exists",
            ))
            .await;
        let _ = framed.close().await;
        return None;
    }
    tracing::info!(peer = %peer_id, ?direction, link = link_id, "link up");

    let mut link = Link {
        gw: gw.clone(),
        peer_id: peer_id.clone(),
        last_rx_shared: last_rx,
        peer_epoch: hello.epoch,
        our_epoch: hello.our_epoch,
        peer_max_payload: hello.max_payload as usize,
        last_tx: Instant::now(),
        last_activity: Instant::now(),
        next_nonce: 1,
        pending_pings: Vec::new(),
        sent_up_to: 0,
        in_flight: VecDeque::new(),
        in_flight_bytes: 0,
    };
    let result = link.drive(&mut framed, &mut commands).await;
    let _ = framed.close().await;
    let partner_kept_another = matches!(result, Ok(End::Duplicate(_)));
    let (error, idle) = match result {
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
            (Some(e), false)
        }
    };
    let up_for = gw.link_ended(&peer_id, link_id, error, idle)?;
    Some(Ended {
        up_for,
        partner_kept_another,
    })
}

/// What the dialer learns from a link that was registered and has ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// How long it was up.
    pub up_for: Duration,
    /// The partner closed it as a duplicate of a link it keeps. When we hold no
    /// other link to it, that kept link leads to a dead process (a replica of
    /// ours that stopped answering), which the partner drops once it has been
    /// silent for 1.6 heartbeats: redialing on a short fixed cadence until then
    /// takes over as soon as it can, where the growing backoff could add seconds.
    pub partner_kept_another: bool,
}

/// How a link ended without failure.
enum End {
    /// Goodbye, shutdown, replaced.
    Orderly(String),
    /// The partner closed it with `Goodbye(DuplicateLink)`.
    Duplicate(String),
    /// Closed for lack of traffic: not redialed until there is demand.
    Idle(String),
}

struct Link {
    gw: Arc<Gateway>,
    peer_id: String,
    last_rx_shared: Arc<std::sync::Mutex<Instant>>,
    peer_epoch: String,
    our_epoch: String,
    peer_max_payload: usize,
    last_tx: Instant,
    /// Application activity (anything but heartbeats) keeps an idle-closing link open.
    last_activity: Instant,
    next_nonce: u64,
    pending_pings: Vec<(u64, Instant, Option<oneshot::Sender<Duration>>)>,
    /// Highest outbox sequence number sent on this link.
    sent_up_to: i64,
    /// (seq, size) of messages sent and not yet acknowledged.
    in_flight: VecDeque<(i64, usize)>,
    in_flight_bytes: usize,
}

impl Link {
    /// The link loop. Ok for orderly ends, Err(reason) for failures.
    async fn drive<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        commands: &mut mpsc::Receiver<LinkCommand>,
    ) -> Result<End, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let gw = self.gw.clone();
        let heartbeat = gw.config.link.heartbeat();
        let dead_after = gw.config.link.dead_after();
        let idle_after = match gw.config.link.idle_close_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        let mut last_rx = Instant::now();
        // A quarter heartbeat: pings leave at most 1.25 intervals after the last
        // frame sent, which keeps the stale-link rule (1.6 intervals) safe.
        let mut tick = tokio::time::interval(heartbeat / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outbox = gw.outbox_waker(&self.peer_id);

        if let Some(crl) = gw.tls().trust().crl_der.clone() {
            self.send_crl(framed, crl).await?;
        }
        self.sent_up_to = gw
            .store
            .acked_seq(&self.peer_id)
            .await
            .map_err(|e| e.to_string())?;
        self.fill_window(framed).await?;

        loop {
            tokio::select! {
                frame = framed.next() => {
                    last_rx = Instant::now();
                    *self.last_rx_shared.lock().unwrap_or_else(|p| p.into_inner()) = last_rx;
                    let first = match frame {
                        None => return Err("connection closed by the partner without goodbye".into()),
                        Some(Err(e)) => return Err(self.protocol_error(framed, e).await),
                        Some(Ok(frame)) => frame,
                    };
                    // Group commit: take every frame that is already here.
                    let mut ready = vec![first];
                    while ready.len() < MAX_GROUP {
                        match framed.next().now_or_never() {
                            Some(Some(Ok(frame))) => ready.push(frame),
                            Some(Some(Err(e))) => {
                                self.handle_frames(framed, ready).await?;
                                return Err(self.protocol_error(framed, e).await);
                            }
                            _ => break,
                        }
                    }
                    if let Some(end) = self.handle_frames(framed, ready).await? {
                        return Ok(end);
                    }
                }
                _ = outbox.notified() => {
                    self.last_activity = Instant::now();
                    self.fill_window(framed).await?;
                }
                command = commands.recv() => match command {
                    Some(LinkCommand::Ping(reply)) => {
                        self.last_activity = Instant::now();
                        self.ping(framed, Some(reply)).await?;
                    }
                    Some(LinkCommand::SendCrl(der)) => self.send_crl(framed, der).await?,
                    Some(LinkCommand::Close(code, reason)) => {
                        let _ = framed.send(Frame::goodbye(code, &reason)).await;
                        return Ok(End::Orderly(format!("closed by us: {code:?} {reason}")));
                    }
                    None => return Ok(End::Orderly("gateway stopping".into())),
                },
                _ = tick.tick() => {
                    if last_rx.elapsed() >= dead_after {
                        let _ = framed.send(Frame::goodbye(GoodbyeCode::HeartbeatTimeout, "nothing received")).await;
                        return Err(format!("dead link: nothing received for {} ms", dead_after.as_millis()));
                    }
                    self.pending_pings.retain(|(_, sent, _)| sent.elapsed() < dead_after);
                    if idle_after.is_some_and(|idle| self.last_activity.elapsed() >= idle) && self.in_flight.is_empty() {
                        let _ = framed.send(Frame::goodbye(GoodbyeCode::Idle, "no traffic")).await;
                        return Ok(End::Idle("closed by us: idle".into()));
                    }
                    if self.last_tx.elapsed() >= heartbeat {
                        self.ping(framed, None).await?;
                    }
                    // No outbox query here: our API wakes the link for new
                    // messages, acks reopen a full window, and messages accepted by
                    // another replica are announced by `outbox_watch`.
                }
                _ = gw.shutdown.cancelled() => {
                    let _ = framed.send(Frame::goodbye(GoodbyeCode::Normal, "gateway shutting down")).await;
                    return Ok(End::Orderly("gateway shutting down".into()));
                }
            }
        }
    }

    async fn protocol_error<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        e: FrameError,
    ) -> String
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let _ = framed
            .send(Frame::goodbye(e.goodbye_code(), &e.to_string()))
            .await;
        format!("protocol error from partner: {e}")
    }

    /// Handles frames received together; runs of Message frames are stored in one
    /// transaction and acknowledged once.
    async fn handle_frames<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        frames: Vec<Frame>,
    ) -> Result<Option<End>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut batch: Vec<WireMessage> = Vec::new();
        for frame in frames {
            if let Frame::Message {
                seq,
                id,
                content_type,
                body,
            } = frame
            {
                let seq =
                    i64::try_from(seq).map_err(|_| "sequence number out of range".to_string())?;
                batch.push(WireMessage {
                    seq,
                    message_id: id,
                    content_type,
                    body: body.to_vec(),
                });
                continue;
            }
            self.store_batch(framed, &mut batch).await?;
            if let Some(end) = self.handle_control(framed, frame).await? {
                return Ok(Some(end));
            }
        }
        self.store_batch(framed, &mut batch).await?;
        Ok(None)
    }

    async fn store_batch<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        batch: &mut Vec<WireMessage>,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if batch.is_empty() {
            return Ok(());
        }
        self.last_activity = Instant::now();
        let stored = self
            .gw
            .store
            .store_inbound(&self.peer_id, &self.peer_epoch, batch)
            .await;
        batch.clear();
        match stored {
            Ok((last, new)) => {
                self.gw
                    .metrics
                    .messages_received
                    .add(&[("peer", &self.peer_id)], new);
                self.gw.inbox_arrived.notify_waiters();
                let seq = u64::try_from(last).unwrap_or(0);
                self.send(framed, Frame::Ack { seq }).await
            }
            Err(e) => {
                // Not acknowledged: the partner keeps the messages and resends them on
                // the next link, after its backoff.
                let _ = framed
                    .send(Frame::goodbye(
                        GoodbyeCode::Normal,
                        "receiver storage unavailable",
                    ))
                    .await;
                Err(format!("cannot store received messages: {e}"))
            }
        }
    }

    async fn handle_control<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        frame: Frame,
    ) -> Result<Option<End>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match frame {
            Frame::Ping { nonce } => self.send(framed, Frame::Pong { nonce }).await?,
            Frame::Pong { nonce } => {
                if let Some(pos) = self.pending_pings.iter().position(|(n, _, _)| *n == nonce) {
                    let (_, sent, reply) = self.pending_pings.swap_remove(pos);
                    let rtt = sent.elapsed();
                    self.gw.set_rtt(&self.peer_id, rtt);
                    if let Some(reply) = reply {
                        let _ = reply.send(rtt);
                    }
                }
            }
            Frame::Ack { seq } => {
                let seq = i64::try_from(seq).map_err(|_| "ack out of range".to_string())?;
                if seq > self.sent_up_to {
                    let assigned = self
                        .gw
                        .store
                        .max_assigned_seq(&self.peer_id)
                        .await
                        .map_err(|e| e.to_string())?;
                    if seq <= assigned {
                        // Stored on an earlier link whose ack we lost (e.g. a crash
                        // between the partner's commit and our processing of its
                        // ack): the partner has them, so they are delivered.
                        self.sent_up_to = seq;
                    }
                }
                if seq > self.sent_up_to {
                    // The partner has stored more of this epoch than we ever sent on
                    // this link: our store was restored from an older copy. Keep the
                    // outbox (do not apply the ack), start a new epoch, reconnect:
                    // the partner then counts afresh and nothing is dropped as a resend.
                    let new = self
                        .gw
                        .store
                        .rotate_epoch(&self.peer_id, &self.our_epoch)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::error!(
                        peer = %self.peer_id,
                        acked = seq,
                        sent_up_to = self.sent_up_to,
                        old_epoch = %self.our_epoch,
                        new_epoch = %new,
                        "the partner acknowledged messages this store never numbered (restored from an older copy?); started a new outbox epoch, messages may be delivered twice"
                    );
                    let _ = framed
                        .send(Frame::goodbye(
                            GoodbyeCode::Normal,
                            "sender restarted its outbox numbering",
                        ))
                        .await;
                    return Err(
                        "restarted its outbox numbering after an impossible acknowledgement".into(),
                    );
                }
                self.gw
                    .store
                    .ack_outbox(&self.peer_id, seq)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut acked = 0;
                while self.in_flight.front().is_some_and(|(s, _)| *s <= seq) {
                    if let Some((_, size)) = self.in_flight.pop_front() {
                        self.in_flight_bytes -= size;
                        acked += 1;
                    }
                }
                self.gw
                    .metrics
                    .messages_acknowledged
                    .add(&[("peer", &self.peer_id)], acked);
                self.fill_window(framed).await?;
            }
            Frame::Crl { der } => self.handle_crl(&der),
            Frame::Goodbye {
                code: GoodbyeCode::Idle,
                reason,
            } => {
                return Ok(Some(End::Idle(format!(
                    "partner closed the idle link: {reason}"
                ))));
            }
            Frame::Goodbye {
                code: GoodbyeCode::DuplicateLink,
                reason,
            } => {
                return Ok(Some(End::Duplicate(format!(
                    "partner said goodbye: DuplicateLink {reason}"
                ))));
            }
            Frame::Goodbye { code, reason } => {
                return Ok(Some(End::Orderly(format!(
                    "partner said goodbye: {code:?} {reason}"
                ))));
            }
            Frame::Unknown { .. } => {}
            other => {
                let reason = format!("unexpected {} frame", other.frame_type_name());
                let _ = framed
                    .send(Frame::goodbye(GoodbyeCode::ProtocolError, &reason))
                    .await;
                return Err(format!("protocol error from partner: {reason}"));
            }
        }
        Ok(None)
    }

    /// Sends outbox messages while the window has room.
    async fn fill_window<S>(&mut self, framed: &mut Framed<S, FrameCodec>) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let link = &self.gw.config.link;
        loop {
            let room = link.window_frames.saturating_sub(self.in_flight.len());
            if room == 0 || self.in_flight_bytes >= link.window_bytes {
                return Ok(());
            }
            let batch = self
                .gw
                .store
                .outbox_after(&self.peer_id, self.sent_up_to, room.min(256) as i64)
                .await
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                return Ok(());
            }
            let sent = batch.len() as u64;
            for m in batch {
                let size = m.body.len() + m.message_id.len() + m.content_type.len() + 11;
                if size > self.peer_max_payload {
                    return Err(format!(
                        "message {} ({} bytes) exceeds the partner's frame limit of {} bytes",
                        m.message_id, size, self.peer_max_payload
                    ));
                }
                let seq = u64::try_from(m.seq).unwrap_or(0);
                framed
                    .feed(Frame::Message {
                        seq,
                        id: m.message_id,
                        content_type: m.content_type,
                        body: m.body.into(),
                    })
                    .await
                    .map_err(|e| format!("send failed: {e}"))?;
                self.sent_up_to = m.seq;
                self.in_flight.push_back((m.seq, size));
                self.in_flight_bytes += size;
            }
            framed
                .flush()
                .await
                .map_err(|e| format!("send failed: {e}"))?;
            self.gw
                .metrics
                .messages_sent
                .add(&[("peer", &self.peer_id)], sent);
            self.last_tx = Instant::now();
            self.last_activity = Instant::now();
        }
    }

    async fn ping<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        reply: Option<oneshot::Sender<Duration>>,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.pending_pings.push((nonce, Instant::now(), reply));
        self.send(framed, Frame::Ping { nonce }).await
    }

    async fn send<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        frame: Frame,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        framed
            .send(frame)
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        self.last_tx = Instant::now();
        Ok(())
    }

    /// Offers our CRL; one too large for a frame is logged and skipped, the link stays.
    async fn send_crl<S>(
        &mut self,
        framed: &mut Framed<S, FrameCodec>,
        der: Vec<u8>,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let max = self
            .peer_max_payload
            .min(framed.codec().max_payload() as usize);
        if der.len() > max {
            tracing::warn!(peer = %self.peer_id, size = der.len(), max, "our CRL is larger than a frame; not offered (raise link.max_frame_bytes)");
            return Ok(());
        }
        self.send(framed, Frame::Crl { der: der.into() }).await
    }

    fn handle_crl(&self, der: &[u8]) {
        let tls = self.gw.tls();
        let Some(peer) = tls.trust().peers.get(&self.peer_id) else {
            return;
        };
        match self.gw.crls.offer(peer, der) {
            Ok(CrlOutcome::Stored(number)) => {
                tracing::info!(peer = %self.peer_id, crl_number = number, "stored the partner's newer CRL; reloading");
                self.gw.reload_request.notify_one();
            }
            Ok(CrlOutcome::NotNewer) => {}
            Err(e) => {
                tracing::warn!(peer = %self.peer_id, error = %e, "ignored a CRL offered by the partner")
            }
        }
    }
}
