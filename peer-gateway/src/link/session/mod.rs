//! The rules of one link, without I/O.
//!
//! A [`Session`] takes events (frames received, a timer tick, the outbox grew,
//! an operator's command, the results of store operations) and answers with
//! [`Action`]s (send this frame, store these messages, read the outbox, close
//! with this outcome), which the driver ([`super::driver`]) carries out with
//! the socket, the timers and the store. Every rule of the link lives here and
//! is unit-tested with plain values: the send window, group commit and
//! cumulative acks, recovery from lost acks and restored stores (epochs), pings
//! and round trips, CRL offers, idle closing and the dead-link rules.
//!
//! The driver runs one action at a time: after an action that asks the store
//! for something, the next call it makes is that action's result (e.g.
//! [`Session::stored`] after [`Action::StoreInbound`]). Frames that arrived
//! together are handled in order, and a control frame after a run of messages
//! is handled only once the messages are stored and acknowledged.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod actions;

pub use actions::{Action, Count, End, Params};

use super::error::LinkError;
use super::handle::{PingError, PingReply};
use super::writer::WriteError;
use crate::frame::{Frame, FrameError, GoodbyeCode};
use crate::store::{StoreError, WireMessage};

/// Most outbox messages read at once.
pub const OUTBOX_READ: usize = 256;

/// Bytes a Message frame's payload carries besides the body, id and type
/// (sequence number and length fields).
const MESSAGE_OVERHEAD: usize = 11;

/// Something received, in order.
#[derive(Debug)]
enum Input {
    Frame(Frame),
    /// Bytes that are not a frame: say why and close.
    Broken(GoodbyeCode, String),
}

/// The store operation whose result the session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Stored,
    OutboxRead,
    Assigned { ack: i64 },
    OutboxAcked { ack: i64 },
    EpochRotated { ack: i64 },
}

/// One link's state.
pub struct Session {
    params: Params,
    actions: VecDeque<Action>,
    /// What was received and not handled yet (waiting behind a store operation).
    input: VecDeque<Input>,
    awaiting: Option<Awaiting>,
    closed: bool,
    /// The outbox grew while a read was under way: read again after it.
    outbox_dirty: bool,
    last_rx: Instant,
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

impl Session {
    /// A session for a link that just came up at `now`.
    pub fn new(params: Params, now: Instant) -> Session {
        Session {
            params,
            actions: VecDeque::new(),
            input: VecDeque::new(),
            awaiting: None,
            closed: false,
            outbox_dirty: false,
            last_rx: now,
            last_tx: now,
            last_activity: now,
            next_nonce: 1,
            pending_pings: Vec::new(),
            sent_up_to: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the link is over (its `Close` action has been queued).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// When the session next needs [`Session::tick`] for a rule of its own: the
    /// dead-link bound since the last frame received, or a heartbeat since the
    /// last frame sent, whichever comes first. The driver also ticks every
    /// quarter heartbeat (the write-stall rule, idle links, expired pings), so
    /// this only makes those two rules exact instead of up to a tick late.
    pub fn next_deadline(&self) -> Instant {
        (self.last_rx + self.params.dead_after).min(self.last_tx + self.params.heartbeat)
    }

    /// Starts the link: offers our CRL, if any, and sends what the outbox holds
    /// after `acked` (the partner's last acknowledgement we know of, read from
    /// the store).
    pub fn start(&mut self, acked: Result<i64, StoreError>, crl: Option<Vec<u8>>, now: Instant) {
        if let Some(der) = crl {
            self.offer_crl(der);
        }
        match acked {
            Ok(acked) => {
                self.sent_up_to = acked;
                self.outbox_dirty = true;
                self.resume(now);
            }
            Err(e) => self.close(None, Err(LinkError::Store(e))),
        }
    }

    /// Frames that arrived together at `now` (group commit: a run of messages is
    /// stored in one transaction).
    pub fn frames_received(&mut self, frames: Vec<Frame>, now: Instant) {
        if self.closed {
            return;
        }
        self.last_rx = now;
        self.input.extend(frames.into_iter().map(Input::Frame));
        self.resume(now);
    }

    /// The partner sent something that is not a frame: say why and close, once
    /// the frames before it are handled.
    pub fn undecodable(&mut self, e: &FrameError, now: Instant) {
        self.input
            .push_back(Input::Broken(e.goodbye_code(), e.to_string()));
        self.resume(now);
    }

    /// The partner closed the connection.
    pub fn read_closed(&mut self) {
        self.close(None, Err(LinkError::ClosedWithoutGoodbye));
    }

    /// The socket failed while writing.
    pub fn write_failed(&mut self, e: WriteError) {
        self.close(None, Err(LinkError::Write(e)));
    }

    /// New messages wait in the outbox.
    pub fn outbox_grew(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.last_activity = now;
        self.outbox_dirty = true;
        self.resume(now);
    }

    /// An operator asks for a round trip.
    pub fn ping(&mut self, reply: PingReply, write_stalled: Duration, now: Instant) {
        if self.closed {
            let _ = reply.send(Err(PingError::Closed));
            return;
        }
        self.last_activity = now;
        if write_stalled >= self.params.heartbeat {
            let why = PingError::Stalled {
                ms: write_stalled.as_millis(),
            };
            self.actions.push_back(Action::ReplyPing(reply, Err(why)));
        } else {
            self.send_ping(Some(reply), now);
        }
    }

    /// Our node published a new CRL.
    pub fn crl_published(&mut self, der: Vec<u8>) {
        if !self.closed {
            self.offer_crl(der);
        }
    }

    /// Closes with `Goodbye(code, reason)` at our end's request (shutdown, a
    /// reload that revoked the partner, the tie-break).
    pub fn close_by_us(&mut self, code: GoodbyeCode, reason: &str) {
        self.close(
            Some(Frame::goodbye(code, reason)),
            Ok(End::Orderly(format!("closed by us: {code:?} {reason}"))),
        );
    }

    /// The gateway stops.
    pub fn shutdown(&mut self) {
        self.close(
            Some(Frame::goodbye(GoodbyeCode::Normal, "gateway shutting down")),
            Ok(End::Orderly("gateway shutting down".into())),
        );
    }

    /// The gateway stops without a word (its command channel closed).
    pub fn abandoned(&mut self) {
        self.close(None, Ok(End::Orderly("gateway stopping".into())));
    }

    /// The timer: dead-link rules, expired pings, idle closing, heartbeats.
    /// `write_stalled`: how long frames have waited without the socket taking a byte.
    pub fn tick(&mut self, now: Instant, write_stalled: Duration) {
        if self.closed {
            return;
        }
        let dead_after = self.params.dead_after;
        if write_stalled >= dead_after {
            // No goodbye: nothing gets through.
            self.actions
                .push_back(Action::Count(Count::DeadWriteStalled, 1));
            self.close(
                None,
                Err(LinkError::WriteStalled {
                    ms: write_stalled.as_millis(),
                }),
            );
            return;
        }
        let silent = now.saturating_duration_since(self.last_rx);
        if silent >= dead_after {
            self.actions
                .push_back(Action::Count(Count::DeadNothingReceived, 1));
            self.close(
                Some(Frame::goodbye(
                    GoodbyeCode::HeartbeatTimeout,
                    "nothing received",
                )),
                Err(LinkError::NothingReceived {
                    ms: silent.as_millis(),
                }),
            );
            return;
        }
        let mut i = 0;
        while i < self.pending_pings.len() {
            if now.saturating_duration_since(self.pending_pings[i].1) >= dead_after {
                let (_, _, reply) = self.pending_pings.swap_remove(i);
                if let Some(reply) = reply {
                    let why = PingError::NoPong {
                        ms: dead_after.as_millis(),
                    };
                    self.actions.push_back(Action::ReplyPing(reply, Err(why)));
                }
            } else {
                i += 1;
            }
        }
        let idle = self
            .params
            .idle_after
            .is_some_and(|idle| now.saturating_duration_since(self.last_activity) >= idle);
        if idle && self.in_flight.is_empty() && self.awaiting.is_none() {
            self.close(
                Some(Frame::goodbye(GoodbyeCode::Idle, "no traffic")),
                Ok(End::Idle("closed by us: idle".into())),
            );
            return;
        }
        if now.saturating_duration_since(self.last_tx) >= self.params.heartbeat {
            self.send_ping(None, now);
        }
    }

    /// Result of [`Action::StoreInbound`]: the highest sequence number now stored
    /// for the partner's epoch and how many messages were new.
    pub fn stored(&mut self, result: Result<(i64, u64), StoreError>, now: Instant) {
        self.finish(Awaiting::Stored);
        match result {
            Ok((last, new)) => {
                self.actions.push_back(Action::Count(Count::Received, new));
                let seq = u64::try_from(last).unwrap_or(0);
                self.send(Frame::Ack { seq }, now);
                self.resume(now);
            }
            // Not acknowledged: the partner keeps the messages and resends them on
            // the next link, after its backoff.
            Err(e) => self.close(
                Some(Frame::goodbye(
                    GoodbyeCode::Normal,
                    "receiver storage unavailable",
                )),
                Err(LinkError::Inbox(e)),
            ),
        }
    }

    /// Result of [`Action::ReadOutbox`].
    pub fn outbox_read(&mut self, result: Result<Vec<WireMessage>, StoreError>, now: Instant) {
        self.finish(Awaiting::OutboxRead);
        let batch = match result {
            Ok(batch) => batch,
            Err(e) => return self.close(None, Err(LinkError::Store(e))),
        };
        let full_read = batch.len() >= self.room().min(OUTBOX_READ);
        let sent = batch.len() as u64;
        for m in batch {
            let size = m.body.len() + m.message_id.len() + m.content_type.len() + MESSAGE_OVERHEAD;
            if size > self.params.peer_max_payload {
                return self.close(
                    None,
                    Err(LinkError::TooLargeForPartner {
                        id: m.message_id,
                        size,
                        max: self.params.peer_max_payload,
                    }),
                );
            }
            let seq = u64::try_from(m.seq).unwrap_or(0);
            self.sent_up_to = m.seq;
            self.in_flight.push_back((m.seq, size));
            self.in_flight_bytes += size;
            self.send(
                Frame::Message {
                    seq,
                    id: m.message_id,
                    content_type: m.content_type,
                    body: m.body.into(),
                },
                now,
            );
        }
        if sent > 0 {
            self.actions.push_back(Action::Count(Count::Sent, sent));
            self.last_activity = now;
        }
        // More may wait: read again while the window has room. A short read
        // emptied the outbox; what is accepted later wakes the link again.
        if sent > 0 && full_read {
            self.outbox_dirty = true;
        }
        self.resume(now);
    }

    /// Result of [`Action::QueryAssigned`].
    pub fn assigned(&mut self, result: Result<i64, StoreError>) {
        let Some(Awaiting::Assigned { ack }) = self.awaiting.take() else {
            return;
        };
        let assigned = match result {
            Ok(a) => a,
            Err(e) => return self.close(None, Err(LinkError::Store(e))),
        };
        if ack <= assigned {
            // Stored on an earlier link whose ack we lost (e.g. a crash between the
            // partner's commit and our processing of its ack, or a resend with a
            // smaller window): the partner has them, so they are delivered.
            self.sent_up_to = ack;
            self.apply_ack(ack);
        } else {
            // The partner has stored more of this epoch than we ever numbered: our
            // store was restored from an older copy. Keep the outbox (do not apply
            // the ack), start a new epoch, reconnect: the partner then counts
            // afresh and nothing is dropped as a resend.
            self.awaiting = Some(Awaiting::EpochRotated { ack });
            self.actions
                .push_back(Action::RotateEpoch(self.params.our_epoch.clone()));
        }
    }

    /// Result of [`Action::AckOutbox`].
    pub fn outbox_acked(&mut self, result: Result<(), StoreError>, now: Instant) {
        let Some(Awaiting::OutboxAcked { ack }) = self.awaiting.take() else {
            return;
        };
        if let Err(e) = result {
            return self.close(None, Err(LinkError::Store(e)));
        }
        let mut acked = 0;
        while self.in_flight.front().is_some_and(|(s, _)| *s <= ack) {
            if let Some((_, size)) = self.in_flight.pop_front() {
                self.in_flight_bytes -= size;
                acked += 1;
            }
        }
        self.actions
            .push_back(Action::Count(Count::Acknowledged, acked));
        // The window has room again.
        self.outbox_dirty = true;
        self.resume(now);
    }

    /// Result of [`Action::RotateEpoch`]: the new epoch.
    pub fn epoch_rotated(&mut self, result: Result<String, StoreError>) {
        let Some(Awaiting::EpochRotated { ack }) = self.awaiting.take() else {
            return;
        };
        match result {
            Ok(new) => {
                tracing::error!(
                    peer = %self.params.peer_id,
                    acked = ack,
                    sent_up_to = self.sent_up_to,
                    old_epoch = %self.params.our_epoch,
                    new_epoch = %new,
                    "the partner acknowledged messages this store never numbered (restored from an older copy?); started a new outbox epoch, messages may be delivered twice"
                );
                self.close(
                    Some(Frame::goodbye(
                        GoodbyeCode::Normal,
                        "sender restarted its outbox numbering",
                    )),
                    Err(LinkError::EpochRestarted),
                );
            }
            Err(e) => self.close(None, Err(LinkError::Store(e))),
        }
    }

    // ---- internals ----

    fn room(&self) -> usize {
        if self.in_flight_bytes >= self.params.window_bytes {
            return 0;
        }
        self.params
            .window_frames
            .saturating_sub(self.in_flight.len())
    }

    /// Carries on once nothing is awaited: first what was received, then the
    /// outbox if it may hold more than was sent.
    fn resume(&mut self, now: Instant) {
        self.advance(now);
        if self.awaiting.is_none() && !self.closed && std::mem::take(&mut self.outbox_dirty) {
            self.fill_window();
        }
    }

    /// Asks for outbox messages while the window has room.
    fn fill_window(&mut self) {
        let room = self.room();
        if room == 0 {
            return;
        }
        self.awaiting = Some(Awaiting::OutboxRead);
        self.actions.push_back(Action::ReadOutbox {
            after: self.sent_up_to,
            limit: room.min(OUTBOX_READ),
        });
    }

    fn finish(&mut self, what: Awaiting) {
        debug_assert_eq!(self.awaiting, Some(what), "result without its action");
        self.awaiting = None;
    }

    /// Handles received frames in order until one needs the store.
    fn advance(&mut self, now: Instant) {
        let mut batch: Vec<WireMessage> = Vec::new();
        while self.awaiting.is_none() && !self.closed {
            match self.input.front() {
                Some(Input::Frame(Frame::Message { .. })) => {
                    let Some(Input::Frame(Frame::Message {
                        seq,
                        id,
                        content_type,
                        body,
                    })) = self.input.pop_front()
                    else {
                        continue;
                    };
                    let Ok(seq) = i64::try_from(seq) else {
                        return self.protocol_error(
                            GoodbyeCode::ProtocolError,
                            "sequence number out of range".into(),
                        );
                    };
                    batch.push(WireMessage {
                        seq,
                        message_id: id,
                        content_type,
                        message_type: None,
                        body: body.to_vec(),
                    });
                }
                Some(_) if !batch.is_empty() => break,
                Some(_) => match self.input.pop_front() {
                    Some(Input::Frame(frame)) => self.handle_control(frame, now),
                    Some(Input::Broken(code, reason)) => self.protocol_error(code, reason),
                    None => {}
                },
                None => break,
            }
        }
        if !batch.is_empty() {
            self.last_activity = now;
            self.awaiting = Some(Awaiting::Stored);
            self.actions.push_back(Action::StoreInbound(batch));
        }
    }

    fn handle_control(&mut self, frame: Frame, now: Instant) {
        match frame {
            Frame::Ping { nonce } => self.send(Frame::Pong { nonce }, now),
            Frame::Pong { nonce } => {
                if let Some(pos) = self.pending_pings.iter().position(|(n, _, _)| *n == nonce) {
                    let (_, sent, reply) = self.pending_pings.swap_remove(pos);
                    let rtt = now.saturating_duration_since(sent);
                    self.actions.push_back(Action::Rtt(rtt));
                    if let Some(reply) = reply {
                        self.actions.push_back(Action::ReplyPing(reply, Ok(rtt)));
                    }
                }
            }
            Frame::Ack { seq } => {
                let Ok(ack) = i64::try_from(seq) else {
                    return self
                        .protocol_error(GoodbyeCode::ProtocolError, "ack out of range".into());
                };
                if ack > self.sent_up_to {
                    self.awaiting = Some(Awaiting::Assigned { ack });
                    self.actions.push_back(Action::QueryAssigned);
                } else {
                    self.apply_ack(ack);
                }
            }
            Frame::Crl { der } => self.actions.push_back(Action::OfferCrl(der)),
            Frame::Goodbye { code, reason } => {
                let end = match code {
                    GoodbyeCode::Idle => {
                        End::Idle(format!("partner closed the idle link: {reason}"))
                    }
                    GoodbyeCode::DuplicateLink => {
                        End::Duplicate(format!("partner said goodbye: DuplicateLink {reason}"))
                    }
                    code => End::Orderly(format!("partner said goodbye: {code:?} {reason}")),
                };
                self.close(None, Ok(end));
            }
            // Ignorable frames of a later protocol revision.
            Frame::Unknown { .. } => {}
            other => {
                let reason = format!("unexpected {} frame", other.frame_type_name());
                self.protocol_error(GoodbyeCode::ProtocolError, reason);
            }
        }
    }

    fn apply_ack(&mut self, ack: i64) {
        self.awaiting = Some(Awaiting::OutboxAcked { ack });
        self.actions.push_back(Action::AckOutbox(ack));
    }

    fn protocol_error(&mut self, code: GoodbyeCode, reason: String) {
        self.close(
            Some(Frame::goodbye(code, &reason)),
            Err(LinkError::Protocol(reason)),
        );
    }

    fn send(&mut self, frame: Frame, now: Instant) {
        self.actions.push_back(Action::Send(frame));
        self.last_tx = now;
    }

    fn send_ping(&mut self, reply: Option<PingReply>, now: Instant) {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.pending_pings.push((nonce, now, reply));
        self.send(Frame::Ping { nonce }, now);
    }

    /// Offers our CRL; one too large for a frame is logged and skipped, the link stays.
    fn offer_crl(&mut self, der: Vec<u8>) {
        let max = self
            .params
            .peer_max_payload
            .min(self.params.our_max_payload);
        if der.len() > max {
            tracing::warn!(peer = %self.params.peer_id, size = der.len(), max, "our CRL is larger than a frame; not offered (raise link.max_frame_bytes)");
            return;
        }
        self.actions
            .push_back(Action::Send(Frame::Crl { der: der.into() }));
    }

    fn close(&mut self, goodbye: Option<Frame>, outcome: Result<End, LinkError>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.input.clear();
        // Pending operator pings learn why there is no pong.
        for (_, _, reply) in self.pending_pings.drain(..) {
            if let Some(reply) = reply {
                let why = match &outcome {
                    Ok(_) => PingError::Closed,
                    Err(e) => PingError::Failed(e.to_string()),
                };
                self.actions.push_back(Action::ReplyPing(reply, Err(why)));
            }
        }
        self.actions.push_back(Action::Close { goodbye, outcome });
    }
}

#[cfg(test)]
mod tests;
