//! Expiry of every certificate the gateway depends on: our root, our server
//! certificate, each cross-certificate a partner issued us, and each partner's
//! pinned root. Reported in status and metrics, and logged as a warning when
//! one comes within the configured thresholds (default 30 and 7 days).

use std::sync::Arc;
use std::time::Duration;

use peerlink_tls::PeerTls;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::trust::TrustHandle;

/// One certificate and how long it has left.
#[derive(Debug, Clone, Serialize)]
pub struct CertExpiry {
    /// `root`, `server`, `crl` (our CRL's nextUpdate: once past, every inbound
    /// handshake is refused until a fresh CRL is published), `cross` (issued to us
    /// by the partner) or `partner_root`.
    pub certificate: &'static str,
    /// The partner concerned, for `cross` and `partner_root`.
    pub peer: Option<String>,
    /// RFC 3339.
    pub not_after: String,
    /// Seconds until expiry (negative once expired).
    pub seconds_left: i64,
    /// The smallest warning threshold (days) already reached, if any.
    pub warning_days: Option<u32>,
}

/// Every certificate the gateway depends on.
pub fn certificates(tls: &PeerTls, thresholds: &[u32], now: OffsetDateTime) -> Vec<CertExpiry> {
    let trust = tls.trust();
    let mut list = vec![
        ("root", None, trust.identity.not_after),
        ("server", None, tls.identity().not_after),
    ];
    if let Some(next) = trust.crl_der.as_deref().and_then(crl_next_update) {
        list.push(("crl", None, next));
    }
    for p in trust.peers.values() {
        if let Some(t) = p.issued_to_us_not_after {
            list.push(("cross", Some(p.node_id.clone()), t));
        }
        if let Some(t) = peerlink_tls::not_after(&p.root_der) {
            list.push(("partner_root", Some(p.node_id.clone()), t));
        }
    }
    list.into_iter()
        .map(|(certificate, peer, not_after)| {
            let seconds_left = (not_after - now).whole_seconds();
            let warning_days = thresholds
                .iter()
                .copied()
                .filter(|d| seconds_left <= i64::from(*d) * 86_400)
                .min();
            CertExpiry {
                certificate,
                peer,
                not_after: peerlink_pki::timefmt::rfc3339(not_after),
                seconds_left,
                warning_days,
            }
        })
        .collect()
}

/// The nextUpdate of a DER CRL.
fn crl_next_update(der: &[u8]) -> Option<OffsetDateTime> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).ok()?;
    crl.next_update().map(|t| t.to_datetime())
}

/// Logs a warning for each certificate within a threshold: at start, after every
/// reload (the caller), and every hour.
pub async fn watch(trust: Arc<TrustHandle>, thresholds: Vec<u32>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => log_warnings(&trust, &thresholds),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Logs one structured warning line per certificate close to expiry.
pub fn log_warnings(trust: &TrustHandle, thresholds: &[u32]) {
    for c in certificates(&trust.current(), thresholds, OffsetDateTime::now_utc()) {
        if let Some(days) = c.warning_days {
            let days_left = c.seconds_left / 86_400;
            tracing::warn!(
                certificate = c.certificate,
                peer = c.peer.as_deref().unwrap_or("-"),
                not_after = %c.not_after,
                days_left,
                threshold_days = days,
                "certificate expires soon"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thresholds_pick_the_smallest_reached() {
        let reached = |secs: i64| {
            [30u32, 7]
                .iter()
                .copied()
                .filter(|d| secs <= i64::from(*d) * 86_400)
                .min()
        };
        assert_eq!(reached(40 * 86_400), None);
        assert_eq!(reached(20 * 86_400), Some(30));
        assert_eq!(reached(3 * 86_400), Some(7));
        assert_eq!(reached(-5), Some(7));
    }
}
