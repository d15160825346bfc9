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
//!
//! The loop never waits on its socket: frames go to a [`writer::Writer`] task,
//! so the dead-link rule holds for writes as for reads (nothing received, or
//! nothing written, for the dead-link bound ends the link).

mod writer;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, FramedParts};

use writer::Writer;

use crate::crl_store::CrlOutcome;
use crate::frame::{Frame, FrameCodec, FrameError, GoodbyeCode, PROTOCOL_VERSION};
use crate::gateway::{Gateway, LinkCommand, LinkHandle, PingReply};
use crate::store::WireMessage;
use crate::tiebreak::Direction;

/// Most Message frames stored in one transaction.
const MAX_GROUP: usize = 1024;

/// Longest a goodbye (and the TLS close after it) may take. A goodbye is a
/// courtesy: a partner that reads nothing must not hold the link's end.
pub fn goodbye_bound(heartbeat: Duration) -> Duration {
    (heartbeat / 4).min(Duration::from_secs(1))
}

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
    let hello = Frame::hello(
        gw.node_id(),
        gw.config.link.max_frame_bytes,
        u32::try_from(gw.config.link.heartbeat_ms).unwrap_or(u32::MAX),
        epoch.clone(),
    );
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
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let bound = goodbye_bound(gw.config.link.heartbeat());
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
    let mut link = Link {
        writer: Writer::spawn(write_half, codec),
        goodbye: None,
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
    let result = link.drive(&mut reader, &mut commands).await;
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
    // Status first: the goodbye below may take its whole bound.
    let up_for = gw.link_ended(&peer_id, link_id, error, idle);
    match link.goodbye.take() {
        Some(goodbye) => link.writer.close_with(goodbye, bound).await,
        None => link.writer.close(bound).await,
    }
    drop(reader);
    Some(Ended {
        up_for: up_for?,
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
    writer: Writer,
    /// Said (best effort, bounded) when the loop ends.
    goodbye: Option<Frame>,
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
    pending_pings: Vec<(u64, Instant, Option<PingReply>)>,
    /// Highest outbox sequence number sent on this link.
    sent_up_to: i64,
    /// (seq, size) of messages sent and not yet acknowledged.
    in_flight: VecDeque<(i64, usize)>,
    in_flight_bytes: usize,
}

/// The read half of a link's stream, decoding frames.
type Reader<S> = Framed<ReadHalf<S>, FrameCodec>;

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

impl Link {
    /// The link loop. Ok for orderly ends, Err(reason) for failures. Sets
    /// `self.goodbye` to what the partner should be told.
    async fn drive<S>(
        &mut self,
        reader: &mut Reader<S>,
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
        // frame sent, which keeps the stale-link rule (1.6 intervals) safe, and a
        // dead link is declared at most a quarter interval late.
        let mut tick = tokio::time::interval(heartbeat / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outbox = gw.outbox_waker(&self.peer_id);

        if let Some(crl) = gw.tls().trust().crl_der.clone() {
            self.send_crl(crl)?;
        }
        self.sent_up_to = gw
            .store
            .acked_seq(&self.peer_id)
            .await
            .map_err(|e| e.to_string())?;
        self.fill_window().await?;

        loop {
            tokio::select! {
                frame = reader.next() => {
                    last_rx = Instant::now();
                    *self.last_rx_shared.lock().unwrap_or_else(|p| p.into_inner()) = last_rx;
                    let first = match frame {
                        None => return Err("connection closed by the partner without goodbye".into()),
                        Some(Err(e)) => return Err(self.protocol_error(e)),
                        Some(Ok(frame)) => frame,
                    };
                    // Group commit: take every frame that is already here.
                    let mut ready = vec![first];
                    while ready.len() < MAX_GROUP {
                        match reader.next().now_or_never() {
                            Some(Some(Ok(frame))) => ready.push(frame),
                            Some(Some(Err(e))) => {
                                self.handle_frames(ready).await?;
                                return Err(self.protocol_error(e));
                            }
                            _ => break,
                        }
                    }
                    if let Some(end) = self.handle_frames(ready).await? {
                        return Ok(end);
                    }
                }
                reason = self.writer.failed() => return Err(format!("send failed: {reason}")),
                _ = outbox.notified() => {
                    self.last_activity = Instant::now();
                    self.fill_window().await?;
                }
                command = commands.recv() => match command {
                    Some(LinkCommand::Ping(reply)) => {
                        self.last_activity = Instant::now();
                        let stalled = self.writer.stalled_for();
                        if stalled >= heartbeat {
                            let _ = reply.send(Err(format!(
                                "the link is stalled: the partner has accepted nothing for {} ms",
                                stalled.as_millis()
                            )));
                        } else {
                            self.ping(Some(reply))?;
                        }
                    }
                    Some(LinkCommand::SendCrl(der)) => self.send_crl(der)?,
                    Some(LinkCommand::Close(code, reason)) => {
                        self.goodbye = Some(Frame::goodbye(code, &reason));
                        return Ok(End::Orderly(format!("closed by us: {code:?} {reason}")));
                    }
                    None => return Ok(End::Orderly("gateway stopping".into())),
                },
                _ = tick.tick() => {
                    let stalled = self.writer.stalled_for();
                    if stalled >= dead_after {
                        // No goodbye: nothing gets through.
                        gw.metrics.links_dead.inc(&[("peer", &self.peer_id), ("reason", "write_stalled")]);
                        return Err(format!(
                            "dead link: write stalled for {} ms (the partner reads nothing, or the path to it dropped)",
                            stalled.as_millis()
                        ));
                    }
                    if last_rx.elapsed() >= dead_after {
                        gw.metrics.links_dead.inc(&[("peer", &self.peer_id), ("reason", "nothing_received")]);
                        self.goodbye = Some(Frame::goodbye(GoodbyeCode::HeartbeatTimeout, "nothing received"));
                        return Err(format!(
                            "dead link: nothing received for {} ms",
                            last_rx.elapsed().as_millis()
                        ));
                    }
                    self.pending_pings.retain(|(_, sent, _)| sent.elapsed() < dead_after);
                    if idle_after.is_some_and(|idle| self.last_activity.elapsed() >= idle) && self.in_flight.is_empty() {
                        self.goodbye = Some(Frame::goodbye(GoodbyeCode::Idle, "no traffic"));
                        return Ok(End::Idle("closed by us: idle".into()));
                    }
                    if self.last_tx.elapsed() >= heartbeat {
                        self.ping(None)?;
                    }
                    // No outbox query here: our API wakes the link for new
                    // messages, acks reopen a full window, and messages accepted by
                    // another replica are announced by `outbox_watch`.
                }
                _ = gw.shutdown.cancelled() => {
                    self.goodbye = Some(Frame::goodbye(GoodbyeCode::Normal, "gateway shutting down"));
                    return Ok(End::Orderly("gateway shutting down".into()));
                }
            }
        }
    }

    fn protocol_error(&mut self, e: FrameError) -> String {
        self.goodbye = Some(Frame::goodbye(e.goodbye_code(), &e.to_string()));
        format!("protocol error from partner: {e}")
    }

    /// Handles frames received together; runs of Message frames are stored in one
    /// transaction and acknowledged once.
    async fn handle_frames(&mut self, frames: Vec<Frame>) -> Result<Option<End>, String> {
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
            self.store_batch(&mut batch).await?;
            if let Some(end) = self.handle_control(frame).await? {
                return Ok(Some(end));
            }
        }
        self.store_batch(&mut batch).await?;
        Ok(None)
    }

    async fn store_batch(&mut self, batch: &mut Vec<WireMessage>) -> Result<(), String> {
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
                self.send(Frame::Ack { seq })
            }
            Err(e) => {
                // Not acknowledged: the partner keeps the messages and resends them on
                // the next link, after its backoff.
                self.goodbye = Some(Frame::goodbye(
                    GoodbyeCode::Normal,
                    "receiver storage unavailable",
                ));
                Err(format!("cannot store received messages: {e}"))
            }
        }
    }

    async fn handle_control(&mut self, frame: Frame) -> Result<Option<End>, String> {
        match frame {
            Frame::Ping { nonce } => self.send(Frame::Pong { nonce })?,
            Frame::Pong { nonce } => {
                if let Some(pos) = self.pending_pings.iter().position(|(n, _, _)| *n == nonce) {
                    let (_, sent, reply) = self.pending_pings.swap_remove(pos);
                    let rtt = sent.elapsed();
                    self.gw.set_rtt(&self.peer_id, rtt);
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(rtt));
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
                    self.goodbye = Some(Frame::goodbye(
                        GoodbyeCode::Normal,
                        "sender restarted its outbox numbering",
                    ));
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
                self.fill_window().await?;
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
                self.goodbye = Some(Frame::goodbye(GoodbyeCode::ProtocolError, &reason));
                return Err(format!("protocol error from partner: {reason}"));
            }
        }
        Ok(None)
    }

    /// Queues outbox messages while the window has room.
    async fn fill_window(&mut self) -> Result<(), String> {
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
                self.writer
                    .send(Frame::Message {
                        seq,
                        id: m.message_id,
                        content_type: m.content_type,
                        body: m.body.into(),
                    })
                    .map_err(|e| e.to_string())?;
                self.sent_up_to = m.seq;
                self.in_flight.push_back((m.seq, size));
                self.in_flight_bytes += size;
            }
            self.gw
                .metrics
                .messages_sent
                .add(&[("peer", &self.peer_id)], sent);
            self.last_tx = Instant::now();
            self.last_activity = Instant::now();
        }
    }

    fn ping(&mut self, reply: Option<PingReply>) -> Result<(), String> {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.pending_pings.push((nonce, Instant::now(), reply));
        self.send(Frame::Ping { nonce })
    }

    fn send(&mut self, frame: Frame) -> Result<(), String> {
        self.writer.send(frame).map_err(|e| e.to_string())?;
        self.last_tx = Instant::now();
        Ok(())
    }

    /// Offers our CRL; one too large for a frame is logged and skipped, the link stays.
    fn send_crl(&mut self, der: Vec<u8>) -> Result<(), String> {
        let max = self
            .peer_max_payload
            .min(self.gw.config.link.max_frame_bytes as usize);
        if der.len() > max {
            tracing::warn!(peer = %self.peer_id, size = der.len(), max, "our CRL is larger than a frame; not offered (raise link.max_frame_bytes)");
            return Ok(());
        }
        self.send(Frame::Crl { der: der.into() })
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

#[cfg(test)]
mod tests {
    use super::*;
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
