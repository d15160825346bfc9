//! One supervisor task per partner: dials when there is no link, backs off
//! with capped exponential delays and jitter on failure (sleeping, so a down
//! partner costs no CPU), and resets the backoff after a stable link.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::backoff::Backoff;
use crate::frame::FrameCodec;
use crate::gateway::{Gateway, LinkState};
use crate::tiebreak::{self, Direction};

/// Runs the supervisor of `peer_id` until the partner disappears from the trust or
/// the gateway stops.
pub async fn supervise(gw: Arc<Gateway>, peer_id: String) {
    let link = &gw.config.link;
    let mut backoff = Backoff::new(
        Duration::from_millis(link.backoff_base_ms),
        Duration::from_millis(link.backoff_cap_ms),
    );
    let stable_after = Duration::from_millis(link.stable_after_ms);
    let Some(wake) = gw.wake_handle(&peer_id) else {
        return;
    };
    let mut first = true;
    // Consecutive links the partner closed as duplicates of one it keeps.
    let mut duplicate_retries = 0u32;
    loop {
        if gw.shutdown.is_cancelled() {
            return;
        }
        let tls = gw.tls();
        let Some(peer) = tls.trust().peers.get(&peer_id).cloned() else {
            return; // removed by a reload
        };
        if gw.has_link(&peer_id) {
            tokio::select! {
                _ = wake.notified() => {}
                _ = gw.shutdown.cancelled() => return,
            }
            continue;
        }
        if gw.is_idle(&peer_id) {
            // Closed for idleness: reopened when somebody needs the link.
            tokio::select! {
                _ = wake.notified() => {}
                _ = gw.shutdown.cancelled() => return,
            }
            continue;
        }
        if !peer.can_dial() {
            let why = if peer.issued_to_us_der.is_none() {
                "no cross-certificate from this partner is registered; waiting for it to dial us"
            } else {
                "revoked or deactivated by our operator"
            };
            gw.set_state(&peer_id, LinkState::Inactive, Some(why.into()), None, 0);
            tokio::select! {
                _ = wake.notified() => {}
                _ = gw.shutdown.cancelled() => return,
            }
            continue;
        }
        // When both sides start together, the side whose links the tie-break keeps
        // dials first; the other gives it a moment, which avoids most duplicates.
        if first && tiebreak::preferred_dialer(&gw.node_id(), &peer_id) == Direction::Inbound {
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = wake.notified() => {}
                _ = gw.shutdown.cancelled() => return,
            }
            continue;
        }
        first = false;

        // Only the replica holding the partner's lease keeps its link.
        match crate::leases::acquire(&gw, &peer_id).await {
            Ok(true) => {}
            Ok(false) => {
                let owner = gw.store.lease_owner(&peer_id).await.ok().flatten();
                gw.set_state(
                    &peer_id,
                    LinkState::Standby,
                    Some(format!(
                        "the link is owned by replica {}",
                        owner.as_deref().unwrap_or("?")
                    )),
                    None,
                    0,
                );
                sleep_or_wake(&gw, &wake, crate::leases::standby_retry()).await;
                continue;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                gw.set_state(
                    &peer_id,
                    LinkState::BackingOff,
                    Some(e),
                    None,
                    backoff.attempts(),
                );
                sleep_or_wake(&gw, &wake, delay).await;
                continue;
            }
        }
        let endpoints = gw.endpoints_of(&peer_id);
        gw.set_state(
            &peer_id,
            LinkState::Connecting,
            None,
            None,
            backoff.attempts(),
        );
        let outcome = if endpoints.is_empty() {
            Err((
                "no endpoints known for this partner; waiting for it to dial us".to_string(),
                None,
            ))
        } else {
            gw.metrics.reconnect_attempts.inc(&[("peer", &peer_id)]);
            dial_any(&gw, &peer_id, &endpoints).await
        };
        match outcome {
            Ok(ended) => {
                if ended.is_some_and(|e| crate::backoff::is_stable(e.up_for, stable_after)) {
                    backoff.reset();
                }
                let kept_another = ended.is_some_and(|e| e.partner_kept_another);
                duplicate_retries = if kept_another {
                    duplicate_retries + 1
                } else {
                    0
                };
                if ended.is_some() && !gw.shutdown.is_cancelled() && !gw.is_idle(&peer_id) {
                    // The link just dropped: retry after the backoff delay. Not woken
                    // early: registering and ending the link left a stored wake-up,
                    // which would make a link the partner closes at once (e.g. as a
                    // duplicate) redial in a tight loop.
                    let delay = if kept_another && duplicate_retries <= MAX_DUPLICATE_RETRIES {
                        link.heartbeat() / 5
                    } else {
                        backoff.next_delay()
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = gw.shutdown.cancelled() => {}
                    }
                }
            }
            Err((error, refusal)) => {
                let state = if refusal.is_some() {
                    LinkState::Refused
                } else {
                    LinkState::BackingOff
                };
                let delay = backoff.next_delay();
                tracing::debug!(peer = %peer_id, error = %error, delay_ms = delay.as_millis() as u64, "dial failed");
                gw.set_state(&peer_id, state, Some(error), refusal, backoff.attempts());
                sleep_or_wake(&gw, &wake, delay).await;
            }
        }
    }
}

async fn sleep_or_wake(gw: &Gateway, wake: &tokio::sync::Notify, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = wake.notified() => {}
        _ = gw.shutdown.cancelled() => {}
    }
}

type DialError = (String, Option<&'static str>);

/// How many times in a row the dialer redials every heartbeat/5 while the partner
/// keeps another link of ours (see [`crate::link::Ended::partner_kept_another`]):
/// two heartbeats' worth, past the 1.6 after which the partner drops a silent link;
/// after that the partner evidently keeps a live one and the usual backoff applies.
const MAX_DUPLICATE_RETRIES: u32 = 10;

/// Tries each endpoint in turn; on success runs the link to its end and returns how
/// long it was up (None if the tie-break dropped it).
async fn dial_any(
    gw: &Arc<Gateway>,
    peer_id: &str,
    endpoints: &[String],
) -> Result<Option<crate::link::Ended>, DialError> {
    let mut last: DialError = ("no endpoint tried".into(), None);
    for endpoint in endpoints {
        match dial(gw, peer_id, endpoint).await {
            Ok(up_for) => return Ok(up_for),
            Err(e) => {
                if let Some(reason) = e.1 {
                    tracing::warn!(peer = %peer_id, endpoint = %endpoint, reason, error = %e.0, "handshake refused");
                }
                last = (format!("{endpoint}: {}", e.0), e.1);
            }
        }
    }
    Err(last)
}

async fn dial(
    gw: &Arc<Gateway>,
    peer_id: &str,
    endpoint: &str,
) -> Result<Option<crate::link::Ended>, DialError> {
    let link = &gw.config.link;
    let tcp = tokio::time::timeout(
        Duration::from_millis(link.connect_timeout_ms),
        TcpStream::connect(endpoint),
    )
    .await
    .map_err(|_| ("connect timed out".to_string(), None))?
    .map_err(|e| (format!("connect failed: {e}"), None))?;
    crate::socket::tune_peer_socket(&tcp, link);
    let tls = gw.tls();
    let handshake = async {
        let stream = tls.connect(tcp, peer_id).await.map_err(|e| {
            let refusal = match &e {
                peerlink_tls::HandshakeError::Refused(_)
                | peerlink_tls::HandshakeError::RejectedByPeer(_) => Some(e.reason()),
                _ => None,
            };
            if let peerlink_tls::HandshakeError::Refused(r) = &e {
                gw.record_refusal(r.reason, Some(peer_id), &r.detail);
            }
            (e.to_string(), refusal)
        })?;
        let chain = crate::link::presented_chain(stream.get_ref().1);
        let mut framed = Framed::new(stream, FrameCodec::new(link.max_frame_bytes));
        let hello = crate::link::exchange_hello(&mut framed, gw, peer_id)
            .await
            .map_err(|e| {
                let refusal = match e {
                    crate::link::SetupError::RejectedByPeer(_) => Some("rejected_by_peer"),
                    crate::link::SetupError::Hello(_) => None,
                };
                (e.to_string(), refusal)
            })?;
        Ok::<_, DialError>((framed, chain, hello))
    };
    let (framed, chain, hello) = tokio::time::timeout(link.handshake_timeout(), handshake)
        .await
        .map_err(|_| ("handshake timed out".to_string(), None))??;
    gw.metrics
        .handshakes_accepted
        .inc(&[("direction", "outbound")]);
    Ok(crate::link::run(
        gw.clone(),
        peer_id.to_string(),
        Direction::Outbound,
        framed,
        chain,
        hello,
    )
    .await)
}
