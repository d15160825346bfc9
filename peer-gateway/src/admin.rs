//! The admin HTTP API (loopback by default): status and ping.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::link::LinkCommand;
use crate::metrics::{Metrics, Snapshot};
use crate::peers::PeerTable;
use crate::store::Store;
use crate::trust::TrustHandle;

/// What the admin API reads: the peer table (status, ping), the trust, the
/// store (depths, health), the counters, and facts about this process.
pub struct Admin {
    /// Partners and their links.
    pub peers: Arc<PeerTable>,
    /// The trust in force.
    pub trust: Arc<TrustHandle>,
    /// The message store.
    pub store: Arc<Store>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The peer listener's address (shown in status).
    pub listen: std::net::SocketAddr,
    /// This process's replica id.
    pub replica_id: String,
    /// Expiry warning thresholds (days).
    pub expiry_warning_days: Vec<u32>,
}

/// The admin routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers/{id}/ping", post(ping))
        .route("/", get(status_page))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let tls = admin.trust.current();
    let trust = tls.trust();
    Json(json!({
        "node_id": trust.identity.node_id,
        "subject": trust.identity.subject,
        "listen": admin.listen.to_string(),
        "root_not_after": peerlink_pki::timefmt::rfc3339(trust.identity.not_after),
        "server_cert_not_after": peerlink_pki::timefmt::rfc3339(tls.identity().not_after),
        "peers": admin.peers.statuses(&admin.trust),
        "refused_handshakes": admin.peers.refused_counts(),
        "store": admin.store.kind(),
        "replica_id": admin.replica_id,
        "inbox_depth": admin.store.inbox_depth().await.ok(),
        "outbox": admin.store.outbox_stats_all().await.ok().map(|all| {
            all.into_iter().collect::<std::collections::BTreeMap<_, _>>()
        }),
        "certificates": crate::expiry::certificates(
            &tls,
            &admin.expiry_warning_days,
            time::OffsetDateTime::now_utc()
        ),
    }))
    .into_response()
}

/// The status page: plain HTML, CSS and JS in the binary, no CDN; it polls /v1/status.
async fn status_page() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("status_page.html"),
    )
        .into_response()
}

/// Healthy when the store answers; the links are reported by status, not here,
/// since a partner being down is not this gateway's failure.
async fn health(State(admin): State<Arc<Admin>>) -> Response {
    match admin.store.inbox_depth().await {
        Ok(_) => "ok\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        )
            .into_response(),
    }
}

/// Prometheus/OpenMetrics exposition: the counters as they are, the gauges from
/// the live state.
async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let snapshot = Snapshot {
        statuses: admin.peers.statuses(&admin.trust),
        outbox: admin.store.outbox_stats_all().await.ok(),
        inbox_depth: admin.store.inbox_depth().await.ok(),
        certificates: crate::expiry::certificates(
            &admin.trust.current(),
            &admin.expiry_warning_days,
            time::OffsetDateTime::now_utc(),
        ),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        admin.metrics.render(&snapshot),
    )
        .into_response()
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

async fn ping(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    if !admin.trust.knows(&id) {
        return error(StatusCode::NOT_FOUND, format!("unknown peer {id}"));
    }
    // A ping is demand: it reopens an idle link and waits for it briefly.
    admin.peers.demand(&id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let link = loop {
        if let Some(link) = admin.peers.link(&id) {
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
    // Bounded: the link's command queue is short and its loop never blocks, but a
    // ping must answer whatever the link is doing.
    let ask = link.commands.send(LinkCommand::Ping(tx));
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), ask).await,
        Ok(Ok(()))
    ) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the link to {id} just closed or does not answer"),
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(Ok(rtt))) => {
            Json(json!({ "peer": id, "rtt_ms": rtt.as_secs_f64() * 1000.0 })).into_response()
        }
        Ok(Ok(Err(why))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no pong from {id}: {why}"),
        ),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no pong from {id}: the link ended before the answer"),
        ),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, format!("no pong from {id}")),
    }
}
