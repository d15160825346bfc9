//! The sending side of a swpt-stomp connection, without I/O: we CONNECT to a
//! partner's STOMP server and SEND our outbox to it, at most `window`
//! messages unconfirmed; a RECEIPT confirms every message up to the one it
//! names (our outbox sequence number is the `receipt` header), which then
//! leaves the outbox. After a reconnect, what was not confirmed is sent again:
//! delivery to a swpt_stomp server is at least once (docs/swaptacular.md).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::frame::{Incoming, Outgoing, StompError, StompFrame, BODY_MAX_LENGTH};
use super::heartbeat::{Heartbeats, Offer};
use super::StompLinkError;
use crate::store::{StoreError, WireMessage};

/// What the client session needs to know.
#[derive(Debug, Clone)]
pub struct ClientParams {
    /// CONNECT `host`.
    pub host: String,
    /// CONNECT `login`, if any.
    pub login: Option<String>,
    /// CONNECT `passcode`, if any.
    pub passcode: Option<String>,
    /// SEND `destination`.
    pub destination: String,
    /// Most messages sent and not confirmed.
    pub window: usize,
    /// Our heart-beat offer.
    pub heartbeat: Offer,
    /// CONNECTED must arrive within this.
    pub connect_timeout: Duration,
    /// Frames waiting for the socket this long: dead.
    pub dead_after: Duration,
}

/// A counter the driver keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCount {
    /// SEND frames written.
    Sent,
    /// Messages the partner confirmed.
    Acknowledged,
}

/// What the driver must do.
#[derive(Debug)]
pub enum ClientAction {
    /// Write this.
    Send(Outgoing),
    /// Read at most `limit` outbox messages after `after`; report with
    /// [`ClientSession::outbox_read`].
    ReadOutbox {
        /// Highest sequence number sent.
        after: i64,
        /// Most messages.
        limit: usize,
    },
    /// Remove outbox messages up to this sequence number; report with
    /// [`ClientSession::outbox_acked`].
    AckOutbox(i64),
    /// Add to a counter.
    Count(ClientCount, u64),
    /// The connection is over.
    Close {
        /// How it ended.
        outcome: Result<String, StompLinkError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    OutboxRead,
    OutboxAcked,
}

/// One outbound connection's state.
pub struct ClientSession {
    params: ClientParams,
    actions: VecDeque<ClientAction>,
    heartbeats: Option<Heartbeats>,
    started: Instant,
    last_rx: Instant,
    last_tx: Instant,
    awaiting: Option<Awaiting>,
    /// The outbox may hold more than was read (grew, or a read was full).
    outbox_dirty: bool,
    sent_up_to: i64,
    in_flight: VecDeque<i64>,
    /// Confirmations received while another store operation was under way.
    pending_ack: Option<i64>,
    closed: bool,
}

impl ClientSession {
    /// A connection whose TLS handshake just completed at `now`; `acked` is the
    /// last sequence number the partner confirmed (the outbox's).
    pub fn new(params: ClientParams, acked: i64, now: Instant) -> ClientSession {
        let mut headers = vec![
            ("accept-version".to_string(), "1.2".to_string()),
            ("host".to_string(), params.host.clone()),
            ("heart-beat".to_string(), params.heartbeat.header()),
        ];
        if let Some(login) = &params.login {
            headers.push(("login".into(), login.clone()));
        }
        if let Some(passcode) = &params.passcode {
            headers.push(("passcode".into(), passcode.clone()));
        }
        let connect = StompFrame {
            command: "STOMP".into(),
            headers,
            body: bytes::Bytes::new(),
        };
        let mut actions = VecDeque::new();
        actions.push_back(ClientAction::Send(Outgoing::Frame(connect)));
        ClientSession {
            params,
            actions,
            heartbeats: None,
            started: now,
            last_rx: now,
            last_tx: now,
            awaiting: None,
            outbox_dirty: true,
            sent_up_to: acked,
            in_flight: VecDeque::new(),
            pending_ack: None,
            closed: false,
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// When [`ClientSession::tick`] is next needed.
    pub fn next_deadline(&self) -> Instant {
        match &self.heartbeats {
            None => self.started + self.params.connect_timeout,
            Some(hb) => hb
                .next_deadline(self.last_rx, self.last_tx)
                .unwrap_or(self.last_rx + Duration::from_secs(3600)),
        }
    }

    /// What arrived together at `now`.
    pub fn received(&mut self, items: Vec<Incoming>, now: Instant) {
        if self.closed {
            return;
        }
        self.last_rx = now;
        for item in items {
            let Incoming::Frame(frame) = item else {
                continue;
            };
            match frame.command.as_str() {
                "CONNECTED" => self.connected(&frame),
                "RECEIPT" if self.heartbeats.is_none() => {
                    self.protocol_error("Received another command before CONNECTED.")
                }
                "RECEIPT" => self.receipt(&frame),
                "ERROR" => {
                    let message = frame.header("message").unwrap_or("").to_string();
                    self.close(Err(StompLinkError::ServerError(message)));
                }
                other => self.protocol_error(&format!("Received unexpected command \"{other}\".")),
            }
            if self.closed {
                return;
            }
        }
        self.resume();
    }

    /// The partner sent something that is not STOMP, or the read failed.
    pub fn undecodable(&mut self, e: &StompError) {
        if let StompError::Io(io) = e {
            // Not the partner's frame: the connection itself failed.
            return self.close(Err(StompLinkError::Read(io.to_string())));
        }
        self.protocol_error(&e.to_string());
    }

    /// The partner closed the connection.
    pub fn read_closed(&mut self) {
        self.close(Err(StompLinkError::ClosedWithoutDisconnect));
    }

    /// The socket failed while writing.
    pub fn write_failed(&mut self, reason: String) {
        self.close(Err(StompLinkError::Write(reason)));
    }

    /// The gateway stops, a reload revoked the partner, or the tie-break... :
    /// close at once (what was not confirmed is sent again next time).
    pub fn close_by_us(&mut self, why: &str) {
        self.close(Ok(format!("closed by us: {why}")));
    }

    /// New messages wait in the outbox.
    pub fn outbox_grew(&mut self) {
        self.outbox_dirty = true;
        self.resume();
    }

    /// Result of [`ClientAction::ReadOutbox`].
    pub fn outbox_read(&mut self, result: Result<Vec<WireMessage>, StoreError>, now: Instant) {
        self.awaiting = None;
        if self.closed {
            return;
        }
        let batch = match result {
            Ok(b) => b,
            Err(e) => return self.close(Err(StompLinkError::Store(e))),
        };
        let full = batch.len() >= self.room();
        let sent = batch.len() as u64;
        for m in batch {
            let Some(message_type) = m.message_type.clone() else {
                return self.close(Err(StompLinkError::Unsendable {
                    id: m.message_id,
                    why: "it has no Message-Type, which swpt-stomp requires".into(),
                }));
            };
            if m.body.len() > BODY_MAX_LENGTH {
                return self.close(Err(StompLinkError::Unsendable {
                    id: m.message_id,
                    why: format!(
                        "{} bytes, and swpt-stomp carries at most {BODY_MAX_LENGTH}",
                        m.body.len()
                    ),
                }));
            }
            let receipt = m.seq.to_string();
            let mut frame = StompFrame::new(
                "SEND",
                &[
                    ("destination", &self.params.destination),
                    ("type", &message_type),
                    ("content-type", &m.content_type),
                    ("persistent", "true"),
                    ("receipt", &receipt),
                ],
            );
            frame.body = m.body.into();
            self.sent_up_to = m.seq;
            self.in_flight.push_back(m.seq);
            self.send(Outgoing::Frame(frame), now);
        }
        if sent > 0 {
            self.actions
                .push_back(ClientAction::Count(ClientCount::Sent, sent));
            if full {
                self.outbox_dirty = true;
            }
        }
        self.resume();
    }

    /// Result of [`ClientAction::AckOutbox`].
    pub fn outbox_acked(&mut self, result: Result<(), StoreError>, upto: i64) {
        self.awaiting = None;
        if self.closed {
            return;
        }
        if let Err(e) = result {
            return self.close(Err(StompLinkError::Store(e)));
        }
        let before = self.in_flight.len();
        self.in_flight.retain(|s| *s > upto);
        let acked = (before - self.in_flight.len()) as u64;
        self.actions
            .push_back(ClientAction::Count(ClientCount::Acknowledged, acked));
        self.outbox_dirty = true;
        self.resume();
    }

    /// The timer: CONNECTED timeout, heart-beats, a stalled socket.
    pub fn tick(&mut self, now: Instant, write_stalled: Duration) {
        if self.closed {
            return;
        }
        if write_stalled >= self.params.dead_after {
            return self.close(Err(StompLinkError::WriteStalled {
                ms: write_stalled.as_millis(),
            }));
        }
        let Some(hb) = self.heartbeats else {
            if now.saturating_duration_since(self.started) >= self.params.connect_timeout {
                self.close(Err(StompLinkError::NoConnect));
            }
            return;
        };
        if let Some(silent) = hb.silent_too_long(self.last_rx, now) {
            return self.close(Err(StompLinkError::NothingReceived {
                ms: silent.as_millis(),
            }));
        }
        if hb.send_due(self.last_tx, now) {
            self.send(Outgoing::Heartbeat, now);
        }
    }

    // ---- internals ----

    fn connected(&mut self, frame: &StompFrame) {
        if self.heartbeats.is_some() {
            return self.protocol_error("Received CONNECTED command more than once.");
        }
        if frame.header("version") != Some("1.2") {
            return self.protocol_error("Received wrong protocol version.");
        }
        match Heartbeats::negotiate(self.params.heartbeat, frame.header("heart-beat")) {
            Ok(hb) => self.heartbeats = Some(hb),
            Err(e) => self.protocol_error(&e.to_string()),
        }
    }

    fn receipt(&mut self, frame: &StompFrame) {
        let Some(id) = frame.header("receipt-id") else {
            return self.protocol_error("RECEIPT command without a receipt ID.");
        };
        match id.parse::<i64>() {
            Ok(seq) if self.in_flight.contains(&seq) => {
                self.pending_ack = Some(self.pending_ack.map_or(seq, |p| p.max(seq)));
            }
            _ => self.protocol_error(&format!(
                "Received a RECEIPT for {id:?}, which we did not send."
            )),
        }
    }

    fn room(&self) -> usize {
        self.params.window.saturating_sub(self.in_flight.len())
    }

    /// Carries on once nothing is awaited: confirmations first, then the outbox.
    fn resume(&mut self) {
        if self.closed || self.awaiting.is_some() || self.heartbeats.is_none() {
            return;
        }
        if let Some(upto) = self.pending_ack.take() {
            self.awaiting = Some(Awaiting::OutboxAcked);
            self.actions.push_back(ClientAction::AckOutbox(upto));
            return;
        }
        if self.outbox_dirty && self.room() > 0 {
            self.outbox_dirty = false;
            self.awaiting = Some(Awaiting::OutboxRead);
            self.actions.push_back(ClientAction::ReadOutbox {
                after: self.sent_up_to,
                limit: self.room(),
            });
        }
    }

    fn protocol_error(&mut self, why: &str) {
        self.close(Err(StompLinkError::Protocol(why.to_string())));
    }

    fn send(&mut self, item: Outgoing, now: Instant) {
        self.last_tx = now;
        self.actions.push_back(ClientAction::Send(item));
    }

    fn close(&mut self, outcome: Result<String, StompLinkError>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.actions.push_back(ClientAction::Close { outcome });
    }
}

#[cfg(test)]
mod tests;
