//! The admin HTTP API (loopback by default): status and ping.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::gateway::{Gateway, LinkCommand};

/// The admin routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers/{id}/ping", post(ping))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(gw)
}

async fn status(State(gw): State<Arc<Gateway>>) -> Response {
    let tls = gw.tls();
    let trust = tls.trust();
    Json(json!({
        "node_id": trust.identity.node_id,
        "subject": trust.identity.subject,
        "listen": gw.config.listen.to_string(),
        "root_not_after": shared::cadb::rfc3339(trust.identity.not_after),
        "server_cert_not_after": shared::cadb::rfc3339(tls.identity().not_after),
        "peers": gw.statuses(),
        "refused_handshakes": gw.refused_counts(),
        "store": gw.store.kind(),
        "inbox_depth": gw.store.inbox_depth().await.ok(),
    }))
    .into_response()
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

async fn ping(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    if !gw.tls().trust().peers.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, format!("unknown peer {id}"));
    }
    // A ping is demand: it reopens an idle link and waits for it briefly.
    gw.demand(&id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let link = loop {
        if let Some(link) = gw.link(&id) {
            break link;
        }
        if tokio::time::Instant::now() >= deadline {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no link to {id} right now"),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if link.commands.send(LinkCommand::Ping(tx)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the link to {id} just closed"),
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(rtt)) => {
            Json(json!({ "peer": id, "rtt_ms": rtt.as_secs_f64() * 1000.0 })).into_response()
        }
        _ => error(StatusCode::GATEWAY_TIMEOUT, format!("no pong from {id}")),
    }
}
