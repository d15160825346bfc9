//! The HTTP API for local applications: send, receive, acknowledge, status.
//!
//! A message is answered `202` only once it is durably stored. Errors are JSON
//! `{"error": "..."}` with the status codes of the interface: 404 unknown
//! peer, 413 too large, 503 with `Retry-After` when the outbox is full or the
//! store is unavailable, 400 bad input, 401 bad token.

// Handlers return axum `Response`s as their error type; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::config::Protocol;
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::signals::Signals;
use crate::store::committer::Committer;
use crate::store::{Accepted, NewMessage, Store, StoreError};
use crate::trust::TrustHandle;

/// Longest accepted Message-Id.
pub const MAX_MESSAGE_ID: usize = 128;
/// Longest accepted Content-Type.
pub const MAX_CONTENT_TYPE: usize = 256;
/// Most messages in one batch request.
pub const MAX_BATCH: usize = 1000;
/// Largest inbox page.
pub const MAX_INBOX_PAGE: i64 = 1000;
/// Longest long-poll wait.
pub const MAX_WAIT_SECONDS: u64 = 60;

/// The API's limits, from the config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Which partners speak swpt-stomp (their messages need a type and fit 8 KiB).
    pub stomp: Arc<crate::config::StompSettings>,
    /// Largest message body.
    pub max_message_bytes: usize,
    /// Undelivered messages per partner before sends are refused (503).
    pub max_outbox_messages: i64,
    /// Bearer token required, if any.
    pub token: Option<String>,
}

/// What the API uses: the store and its committer, the trust (which partners
/// exist), the peer table (their link status), the wake-ups, the counters.
pub struct Api {
    /// Where messages are read and acknowledged.
    pub store: Arc<Store>,
    /// Where messages are stored (group commit).
    pub committer: Committer,
    /// Which partners exist.
    pub trust: Arc<TrustHandle>,
    /// Their link status.
    pub peers: Arc<PeerTable>,
    /// Wakes links (outbox) and waits for arrivals (inbox).
    pub signals: Arc<Signals>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Limits and token.
    pub limits: Limits,
    /// Ends long polls when the gateway stops.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The API routes.
pub fn router(api: Arc<Api>) -> Router {
    let max = api.limits.max_message_bytes;
    // A batch carries up to MAX_BATCH bodies, base64-encoded; cap it at 64 MiB.
    let batch_limit = (max * 4 / 3 + 1024)
        .saturating_mul(MAX_BATCH)
        .min(64 * 1024 * 1024);
    Router::new()
        .route(
            "/v1/peers/{id}/messages",
            post(send).layer(DefaultBodyLimit::max(max + 1)),
        )
        .route(
            "/v1/peers/{id}/messages/batch",
            post(send_batch).layer(DefaultBodyLimit::max(batch_limit)),
        )
        .route("/v1/inbox", get(inbox))
        .route(
            "/v1/inbox/ack",
            post(ack).layer(DefaultBodyLimit::max(4 * 1024 * 1024)),
        )
        .route("/v1/peers/{id}", get(peer))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/messaging.md",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(middleware::from_fn(json_errors))
        .with_state(api)
}

/// Turns the framework's plain-text rejections (body too large, bad query
/// string, bad header) into the API's JSON error shape, keeping the status.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut r = error(status, message);
    if let Some(v) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

fn unavailable(message: String) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

fn store_error(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "message store error");
    unavailable(format!("message store unavailable: {e}"))
}

async fn authorize(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    if let Some(token) = &api.limits.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            });
        let ok = presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
        if !ok {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (see api_token_file)",
            );
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_peer(api: &Api, id: &str) -> Result<(), Response> {
    if api.trust.knows(id) {
        Ok(())
    } else {
        Err(error(StatusCode::NOT_FOUND, format!("unknown peer {id}")))
    }
}

fn check_id(id: &str) -> Result<(), Response> {
    if id.is_empty()
        || id.len() > MAX_MESSAGE_ID
        || id.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("Message-Id must be 1 to {MAX_MESSAGE_ID} visible characters"),
        ));
    }
    Ok(())
}

/// Longest accepted Message-Type.
pub const MAX_MESSAGE_TYPE: usize = 128;

/// What a partner's wire needs of a message: swpt-stomp carries a type (which it
/// requires) and at most 8,192 bytes; peerlink/1 has no field for a type.
fn check_for_wire(
    api: &Api,
    peer: &str,
    message_type: Option<&str>,
    body_len: usize,
    which: &str,
) -> Result<(), Response> {
    if let Some(t) = message_type {
        if t.is_empty()
            || t.len() > MAX_MESSAGE_TYPE
            || t.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("{which}Message-Type must be 1 to {MAX_MESSAGE_TYPE} visible characters"),
            ));
        }
    }
    match (api.trust.protocol_of(peer), message_type) {
        (Protocol::SwptStomp, None) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("{which}{peer} speaks swpt-stomp: give the message a Message-Type (e.g. PrepareTransfer)"),
        )),
        (Protocol::SwptStomp, Some(_)) if body_len > crate::stomp::frame::BODY_MAX_LENGTH => {
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{which}message of {body_len} bytes: {peer} speaks swpt-stomp, which carries at most {} bytes",
                    crate::stomp::frame::BODY_MAX_LENGTH
                ),
            ))
        }
        (Protocol::Peerlink, Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("{which}Message-Type is carried only to swpt-stomp partners; {peer} speaks peerlink/1"),
        )),
        _ => Ok(()),
    }
}

fn check_content_type(ct: &str) -> Result<(), Response> {
    if ct.len() > MAX_CONTENT_TYPE || ct.chars().any(char::is_control) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("Content-Type longer than {MAX_CONTENT_TYPE} bytes"),
        ));
    }
    Ok(())
}

async fn outbox_has_room(api: &Api, peer: &str, adding: i64) -> Result<(), Response> {
    let stats = api
        .store
        .outbox_stats(peer)
        .await
        .map_err(|e| store_error(&e))?;
    if stats.depth + adding > api.limits.max_outbox_messages {
        return Err(unavailable(format!(
            "the outbox for {peer} is full ({} undelivered messages); retry later",
            stats.depth
        )));
    }
    Ok(())
}

async fn submit(api: &Api, peer: &str, batch: Vec<NewMessage>) -> Result<Vec<Accepted>, Response> {
    let accepted = api
        .committer
        .submit(batch)
        .await
        .map_err(|e| store_error(&e))?;
    let stored = accepted
        .iter()
        .filter(|a| matches!(a, Accepted::Stored(_)))
        .count();
    api.metrics.messages_accepted(peer, stored as u64);
    api.signals.outbox(peer).notify_one();
    Ok(accepted)
}

async fn send(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_peer(&api, &id) {
        return r;
    }
    if body.len() > api.limits.max_message_bytes {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "message of {} bytes exceeds max_message_bytes {}",
                body.len(),
                api.limits.max_message_bytes
            ),
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let message_id = match headers.get("message-id") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) => Some(s.to_string()),
            Err(_) => return error(StatusCode::BAD_REQUEST, "Message-Id must be ASCII"),
        },
    };
    if let Some(mid) = &message_id {
        if let Err(r) = check_id(mid) {
            return r;
        }
    }
    if let Err(r) = check_content_type(&content_type) {
        return r;
    }
    let message_type = match headers.get("message-type") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) => Some(s.to_string()),
            Err(_) => return error(StatusCode::BAD_REQUEST, "Message-Type must be ASCII"),
        },
    };
    if let Err(r) = check_for_wire(&api, &id, message_type.as_deref(), body.len(), "") {
        return r;
    }
    if let Err(r) = outbox_has_room(&api, &id, 1).await {
        return r;
    }
    let message = NewMessage {
        peer_id: id.clone(),
        message_id,
        content_type,
        message_type,
        body: body.to_vec(),
    };
    match submit(&api, &id, vec![message]).await {
        Ok(accepted) => match accepted.first() {
            Some(a) => (
                StatusCode::ACCEPTED,
                Json(json!({ "id": a.id(), "duplicate": matches!(a, Accepted::Duplicate(_)) })),
            )
                .into_response(),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "nothing stored"),
        },
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    /// The message type (required by swpt-stomp partners).
    #[serde(default, rename = "type")]
    message_type: Option<String>,
    body_base64: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    messages: Vec<BatchItem>,
}

async fn send_batch(State(api): State<Arc<Api>>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Err(r) = check_peer(&api, &id) {
        return r;
    }
    let request: BatchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
    };
    if request.messages.is_empty() || request.messages.len() > MAX_BATCH {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a batch holds 1 to {MAX_BATCH} messages"),
        );
    }
    let mut batch = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.into_iter().enumerate() {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&m.body_base64) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("messages[{i}].body_base64 is not base64"),
            );
        };
        if bytes.len() > api.limits.max_message_bytes {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "messages[{i}] of {} bytes exceeds max_message_bytes",
                    bytes.len()
                ),
            );
        }
        if let Some(mid) = &m.id {
            if let Err(r) = check_id(mid) {
                return r;
            }
        }
        let content_type = m
            .content_type
            .unwrap_or_else(|| "application/octet-stream".into());
        if let Err(r) = check_content_type(&content_type) {
            return r;
        }
        let which = format!("messages[{i}]: ");
        if let Err(r) = check_for_wire(&api, &id, m.message_type.as_deref(), bytes.len(), &which) {
            return r;
        }
        batch.push(NewMessage {
            peer_id: id.clone(),
            message_id: m.id,
            content_type,
            message_type: m.message_type,
            body: bytes,
        });
    }
    if let Err(r) = outbox_has_room(&api, &id, batch.len() as i64).await {
        return r;
    }
    match submit(&api, &id, batch).await {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "ids": accepted.iter().map(Accepted::id).collect::<Vec<_>>(),
                "duplicates": accepted.iter().filter(|a| matches!(a, Accepted::Duplicate(_))).count(),
            })),
        )
            .into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct InboxQuery {
    limit: Option<i64>,
    wait: Option<u64>,
}

async fn inbox(State(api): State<Arc<Api>>, Query(q): Query<InboxQuery>) -> Response {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_INBOX_PAGE).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_INBOX_PAGE}"),
        );
    }
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECONDS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register interest before looking, so an arrival in between is not missed.
        let arrived = api.signals.inbox_arrived.notified();
        let messages = match api.store.inbox(limit).await {
            Ok(m) => m,
            Err(e) => return store_error(&e),
        };
        if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
            let list: Vec<_> = messages
                .iter()
                .map(|m| {
                    let mut item = json!({
                        "id": m.message_id,
                        "from": m.from_peer,
                        "content_type": m.content_type,
                        "body_base64": base64::engine::general_purpose::STANDARD.encode(&m.body),
                        "received_at": peerlink_pki::timefmt::rfc3339(
                            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.received_ms) * 1_000_000)
                                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                        ),
                    });
                    if let Some(t) = &m.message_type {
                        item["type"] = json!(t);
                    }
                    item
                })
                .collect();
            return Json(json!({ "messages": list })).into_response();
        }
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep_until(deadline) => {}
            // Another replica sharing the store may have received something.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = api.shutdown.cancelled() => {}
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    ids: Vec<AckId>,
}

/// An acknowledged message: its id, or `{"from": ..., "id": ...}` (needed when two
/// partners used the same id).
#[derive(Deserialize)]
#[serde(untagged)]
enum AckId {
    Bare(String),
    Qualified { from: String, id: String },
}

async fn ack(State(api): State<Arc<Api>>, body: Bytes) -> Response {
    let request: AckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
    };
    if request.ids.len() > MAX_INBOX_PAGE as usize {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_INBOX_PAGE} ids per request"),
        );
    }
    let acks: Vec<(Option<String>, String)> = request
        .ids
        .into_iter()
        .map(|a| match a {
            AckId::Bare(id) => (None, id),
            AckId::Qualified { from, id } => (Some(from), id),
        })
        .collect();
    match api.store.ack_inbox(&acks).await {
        Ok((n, ambiguous)) if ambiguous.is_empty() => Json(json!({ "acknowledged": n })).into_response(),
        Ok((n, ambiguous)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "acknowledged": n,
                "ambiguous": ambiguous,
                "error": "several partners sent these ids; acknowledge them as {\"from\": ..., \"id\": ...}",
            })),
        )
            .into_response(),
        Err(e) => store_error(&e),
    }
}

async fn peer(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    if let Err(r) = check_peer(&api, &id) {
        return r;
    }
    let stats = match api.store.outbox_stats(&id).await {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let status = api.peers.status(&api.trust, &id);
    Json(json!({
        "node_id": id,
        "link": status,
        "outbox_depth": stats.depth,
        "outbox_bytes": stats.bytes,
        "oldest_undelivered_age_ms": stats.oldest_age_ms,
    }))
    .into_response()
}
