//! The admin HTTP API (loopback by default): status and ping.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::gateway::{Gateway, LinkCommand, LinkState};
use crate::metrics::render_gauge;

/// The admin routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers/{id}/ping", post(ping))
        .route("/", get(status_page))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(gw)
}

async fn status(State(gw): State<Arc<Gateway>>) -> Response {
    let tls = gw.tls();
    let trust = tls.trust();
    Json(json!({
        "node_id": trust.identity.node_id,
        "subject": trust.identity.subject,
        "listen": gw.config.listen.to_string(),
        "root_not_after": peerlink_pki::timefmt::rfc3339(trust.identity.not_after),
        "server_cert_not_after": peerlink_pki::timefmt::rfc3339(tls.identity().not_after),
        "peers": gw.statuses(),
        "refused_handshakes": gw.refused_counts(),
        "store": gw.store.kind(),
        "replica_id": gw.replica_id,
        "inbox_depth": gw.store.inbox_depth().await.ok(),
        "outbox": gw.store.outbox_stats_all().await.ok().map(|all| {
            all.into_iter().collect::<std::collections::BTreeMap<_, _>>()
        }),
        "certificates": crate::expiry::certificates(
            &tls,
            &gw.config.expiry_warning_days,
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
async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.store.inbox_depth().await {
        Ok(_) => "ok\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        )
            .into_response(),
    }
}

const STATES: [(LinkState, &str); 7] = [
    (LinkState::Connected, "connected"),
    (LinkState::Connecting, "connecting"),
    (LinkState::BackingOff, "backing-off"),
    (LinkState::Refused, "refused"),
    (LinkState::Inactive, "inactive"),
    (LinkState::Idle, "idle"),
    (LinkState::Standby, "standby"),
];

/// Prometheus text exposition.
async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut out = String::new();
    gw.metrics.render(&mut out);
    gw.store.commit_latency.render(
        &mut out,
        "peerlink_store_commit_duration_seconds",
        "Duration of message store write transactions, including the fsync.",
    );
    let statuses = gw.statuses();
    let up: Vec<_> = statuses
        .iter()
        .map(|s| {
            (
                vec![("peer", s.node_id.clone())],
                f64::from(u8::from(s.state == LinkState::Connected)),
            )
        })
        .collect();
    render_gauge(
        &mut out,
        "peerlink_link_up",
        "1 when the link to the peer is up.",
        &up,
    );
    let mut states = Vec::new();
    for s in &statuses {
        for (state, name) in STATES {
            states.push((
                vec![("peer", s.node_id.clone()), ("state", name.to_string())],
                f64::from(u8::from(s.state == state)),
            ));
        }
    }
    render_gauge(
        &mut out,
        "peerlink_link_state",
        "Link state per peer (1 for the current state).",
        &states,
    );
    let outbox = gw.store.outbox_stats_all().await.unwrap_or_default();
    let mut depth = Vec::new();
    let mut age = Vec::new();
    for s in &statuses {
        let stats = outbox
            .iter()
            .find(|(p, _)| *p == s.node_id)
            .map(|(_, st)| st.clone())
            .unwrap_or_default();
        depth.push((vec![("peer", s.node_id.clone())], stats.depth as f64));
        age.push((
            vec![("peer", s.node_id.clone())],
            stats.oldest_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        ));
    }
    render_gauge(
        &mut out,
        "peerlink_outbox_messages",
        "Messages not yet acknowledged by the peer.",
        &depth,
    );
    render_gauge(
        &mut out,
        "peerlink_outbox_oldest_age_seconds",
        "Age of the oldest undelivered message (0 when none).",
        &age,
    );
    if let Ok(n) = gw.store.inbox_depth().await {
        render_gauge(
            &mut out,
            "peerlink_inbox_messages",
            "Messages waiting for local applications.",
            &[(vec![], n as f64)],
        );
    }
    let certs = crate::expiry::certificates(
        &gw.tls(),
        &gw.config.expiry_warning_days,
        time::OffsetDateTime::now_utc(),
    );
    let labels = |c: &crate::expiry::CertExpiry| {
        let mut l = vec![("certificate", c.certificate.to_string())];
        if let Some(p) = &c.peer {
            l.push(("peer", p.clone()));
        }
        l
    };
    let expiry: Vec<_> = certs
        .iter()
        .map(|c| (labels(c), c.seconds_left as f64))
        .collect();
    render_gauge(
        &mut out,
        "peerlink_certificate_expiry_seconds",
        "Seconds until a certificate the gateway depends on expires.",
        &expiry,
    );
    let warn: Vec<_> = certs
        .iter()
        .map(|c| (labels(c), f64::from(u8::from(c.warning_days.is_some()))))
        .collect();
    render_gauge(
        &mut out,
        "peerlink_certificate_expiry_warning",
        "1 when the certificate is within an expiry warning threshold.",
        &warn,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
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
