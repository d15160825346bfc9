//! The receiving side of a swpt-stomp connection, without I/O: a partner's
//! client CONNECTs and SENDs; we store every run of SENDs in one transaction
//! and then confirm them with one RECEIPT (cumulative, as swpt_stomp expects),
//! only after the commit. What swpt_stomp's own server refuses, we refuse with
//! the same ERROR text and close.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{Incoming, Outgoing, StompError, StompFrame};
use super::heartbeat::{Heartbeats, Offer};
use super::StompLinkError;
use crate::store::StoreError;

/// What the server session needs to know.
#[derive(Debug, Clone)]
pub struct ServerParams {
    /// The `destination` SENDs must name.
    pub destination: String,
    /// Our heart-beat offer.
    pub heartbeat: Offer,
    /// CONNECT must arrive within this.
    pub connect_timeout: Duration,
    /// Frames waiting for the socket this long: dead.
    pub dead_after: Duration,
}

/// A message a partner SENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its `receipt` header (the partner's id for it on this connection).
    pub receipt: String,
    /// Its `type` header.
    pub message_type: String,
    /// Its `content-type` (default `application/octet-stream`).
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

/// What the driver must do.
#[derive(Debug)]
pub enum ServerAction {
    /// Write this.
    Send(Outgoing),
    /// Store these in the inbox in one transaction; report with [`ServerSession::stored`].
    Store(Vec<Received>),
    /// The connection is over: write `error` (an ERROR frame) if any, then close.
    Close {
        /// The ERROR frame to send first.
        error: Option<StompFrame>,
        /// How it ended.
        outcome: Result<String, StompLinkError>,
    },
}

#[derive(Debug)]
enum Input {
    Frame(StompFrame),
    Broken(String),
}

/// One inbound connection's state.
pub struct ServerSession {
    params: ServerParams,
    actions: VecDeque<ServerAction>,
    input: VecDeque<Input>,
    heartbeats: Option<Heartbeats>,
    started: Instant,
    last_rx: Instant,
    last_tx: Instant,
    storing: bool,
    /// The receipt of the last message stored, to confirm.
    last_stored: Option<String>,
    /// DISCONNECT's receipt, answered once everything before it is confirmed.
    disconnect_receipt: Option<String>,
    disconnected: bool,
    closed: bool,
}

impl ServerSession {
    /// A connection that was just accepted at `now`.
    pub fn new(params: ServerParams, now: Instant) -> ServerSession {
        ServerSession {
            params,
            actions: VecDeque::new(),
            input: VecDeque::new(),
            heartbeats: None,
            started: now,
            last_rx: now,
            last_tx: now,
            storing: false,
            last_stored: None,
            disconnect_receipt: None,
            disconnected: false,
            closed: false,
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<ServerAction> {
        self.actions.pop_front()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// When [`ServerSession::tick`] is next needed.
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
            if let Incoming::Frame(f) = item {
                self.input.push_back(Input::Frame(f));
            }
        }
        self.advance(now);
    }

    /// The partner sent something that is not STOMP: say why, once what came
    /// before is handled. A failed read (`StompError::Io`) ends the connection
    /// at once, with nothing to say: nothing more can be confirmed on it.
    pub fn undecodable(&mut self, e: &StompError, now: Instant) {
        if let StompError::Io(io) = e {
            // Not the partner's frame: the connection itself failed.
            let outcome = if self.disconnected {
                Ok("the partner disconnected".into())
            } else {
                Err(StompLinkError::Read(io.to_string()))
            };
            return self.close(None, outcome);
        }
        self.input.push_back(Input::Broken(e.to_string()));
        self.advance(now);
    }

    /// The partner closed the connection.
    pub fn read_closed(&mut self) {
        let outcome = if self.disconnected {
            Ok("the partner disconnected".into())
        } else {
            Err(StompLinkError::ClosedWithoutDisconnect)
        };
        self.close(None, outcome);
    }

    /// The socket failed while writing.
    pub fn write_failed(&mut self, reason: String) {
        self.close(None, Err(StompLinkError::Write(reason)));
    }

    /// The gateway stops, or the partner was revoked or deactivated.
    pub fn close_by_us(&mut self, why: &str) {
        self.close(Some(error_frame(why)), Ok(format!("closed by us: {why}")));
    }

    /// Result of [`ServerAction::Store`].
    pub fn stored(&mut self, result: Result<(), StoreError>, now: Instant) {
        self.storing = false;
        if self.closed {
            return;
        }
        if let Err(e) = result {
            // Not confirmed: the partner sends them again on its next connection.
            return self.close(
                Some(error_frame("Internal server error.")),
                Err(StompLinkError::Inbox(e)),
            );
        }
        if let Some(receipt) = self.last_stored.take() {
            self.send_receipt(receipt, now);
        }
        self.answer_disconnect(now);
        self.advance(now);
    }

    /// The timer: CONNECT timeout, heart-beats, a stalled socket.
    pub fn tick(&mut self, now: Instant, write_stalled: Duration) {
        if self.closed {
            return;
        }
        if write_stalled >= self.params.dead_after {
            return self.close(
                None,
                Err(StompLinkError::WriteStalled {
                    ms: write_stalled.as_millis(),
                }),
            );
        }
        let Some(hb) = self.heartbeats else {
            if now.saturating_duration_since(self.started) >= self.params.connect_timeout {
                self.close(None, Err(StompLinkError::NoConnect));
            }
            return;
        };
        if let Some(silent) = hb.silent_too_long(self.last_rx, now) {
            let why = format!("No data received for {:.3} seconds.", silent.as_secs_f64());
            return self.close(
                Some(error_frame(&why)),
                Err(StompLinkError::NothingReceived {
                    ms: silent.as_millis(),
                }),
            );
        }
        if hb.send_due(self.last_tx, now) {
            self.send(Outgoing::Heartbeat, now);
        }
    }

    // ---- internals ----

    fn advance(&mut self, now: Instant) {
        let mut batch = Vec::new();
        while !self.storing && !self.closed {
            let Some(input) = self.input.pop_front() else {
                break;
            };
            let frame = match input {
                Input::Broken(why) => {
                    self.refuse(&why);
                    break;
                }
                Input::Frame(f) => f,
            };
            if self.disconnect_receipt.is_some() || self.disconnected {
                self.refuse("Received command after DISCONNECT.");
                break;
            }
            match frame.command.as_str() {
                "STOMP" | "CONNECT" => self.connect(&frame, now),
                "SEND" if self.heartbeats.is_none() => {
                    self.refuse("Received another command before CONNECT.")
                }
                "SEND" => {
                    if let Some(m) = self.accept_send(frame) {
                        batch.push(m);
                    }
                    let next_is_send = matches!(
                        self.input.front(),
                        Some(Input::Frame(f)) if f.command == "SEND"
                    );
                    if !next_is_send && !batch.is_empty() {
                        self.store(std::mem::take(&mut batch));
                    }
                }
                "DISCONNECT" if self.heartbeats.is_none() => {
                    self.refuse("Received DISCONNECT before CONNECT.")
                }
                "DISCONNECT" => self.disconnect(&frame, now),
                other => self.refuse(&format!("Received unexpected command \"{other}\".")),
            }
        }
        if !batch.is_empty() && !self.closed {
            self.store(batch);
        }
    }

    fn connect(&mut self, frame: &StompFrame, now: Instant) {
        if self.heartbeats.is_some() {
            return self.refuse("Received CONNECT command more than once.");
        }
        let versions = frame.header("accept-version").unwrap_or("");
        if !versions.split(',').any(|v| v.trim() == "1.2") {
            return self.refuse("STOMP 1.2 is not supported by the client.");
        }
        match Heartbeats::negotiate(self.params.heartbeat, frame.header("heart-beat")) {
            Ok(hb) => self.heartbeats = Some(hb),
            Err(e) => return self.refuse(&e.to_string()),
        }
        let offer = self.params.heartbeat.header();
        self.send(
            Outgoing::Frame(StompFrame::new(
                "CONNECTED",
                &[("version", "1.2"), ("heart-beat", &offer)],
            )),
            now,
        );
    }

    /// A SEND's message, or None after refusing it (the connection closes).
    fn accept_send(&mut self, frame: StompFrame) -> Option<Received> {
        for name in ["receipt", "type", "destination"] {
            if frame.header(name).is_none() {
                self.refuse(&format!("SEND command without a {name} header."));
                return None;
            }
        }
        let receipt = frame.header("receipt").unwrap_or_default().to_string();
        let message_type = frame.header("type").unwrap_or_default().to_string();
        let content_type = frame
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_string();
        let destination = frame.header("destination").unwrap_or_default();
        if destination != self.params.destination {
            let why = format!("Invalid SEND destination \"{destination}\".");
            let mut error = error_frame(&why);
            error.headers.push(("receipt-id".into(), receipt));
            error.headers.push(("type".into(), message_type));
            error.headers.push(("content-type".into(), content_type));
            error.body = frame.body;
            self.close(Some(error), Err(StompLinkError::Refused(why)));
            return None;
        }
        Some(Received {
            receipt,
            message_type,
            content_type,
            body: frame.body,
        })
    }

    fn store(&mut self, batch: Vec<Received>) {
        self.last_stored = batch.last().map(|m| m.receipt.clone());
        self.storing = true;
        self.actions.push_back(ServerAction::Store(batch));
    }

    fn disconnect(&mut self, frame: &StompFrame, now: Instant) {
        self.disconnected = true;
        match frame.header("receipt") {
            None => self.close(None, Ok("the partner disconnected".into())),
            Some(receipt) => {
                self.disconnect_receipt = Some(receipt.to_string());
                self.answer_disconnect(now);
            }
        }
    }

    /// Answers DISCONNECT once every message before it is confirmed.
    fn answer_disconnect(&mut self, now: Instant) {
        if self.storing || self.closed {
            return;
        }
        if let Some(receipt) = self.disconnect_receipt.take() {
            self.send_receipt(receipt, now);
            self.close(None, Ok("the partner disconnected".into()));
        }
    }

    fn send_receipt(&mut self, receipt: String, now: Instant) {
        self.send(
            Outgoing::Frame(StompFrame::new("RECEIPT", &[("receipt-id", &receipt)])),
            now,
        );
    }

    fn refuse(&mut self, why: &str) {
        self.close(
            Some(error_frame(why)),
            Err(StompLinkError::Refused(why.to_string())),
        );
    }

    fn send(&mut self, item: Outgoing, now: Instant) {
        self.last_tx = now;
        self.actions.push_back(ServerAction::Send(item));
    }

    fn close(&mut self, error: Option<StompFrame>, outcome: Result<String, StompLinkError>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.input.clear();
        self.actions
            .push_back(ServerAction::Close { error, outcome });
    }
}

/// An ERROR frame with `message`.
pub fn error_frame(message: &str) -> StompFrame {
    StompFrame::new("ERROR", &[("message", message)])
}

#[cfg(test)]
mod tests;
