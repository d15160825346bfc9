//! The gateway's metrics: every name, label set and help text, in one
//! registry, exposed by `GET /metrics` in the OpenMetrics text format
//! (prometheus-client). Counters and the commit-latency histogram are updated
//! as things happen; the gauges (link states, outbox and inbox depths,
//! certificate expiry) are set from a [`Snapshot`] of the live state when the
//! endpoint is scraped.
//!
//! Metric names and label sets are part of the interface: operators' dashboards
//! and alerts (docs/operations.md) depend on them.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::expiry::CertExpiry;
use crate::peers::{LinkState, PeerStatus};
use crate::store::OutboxStats;

/// Upper bounds (seconds) of the store commit latency histogram buckets.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The media type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label values in the order they are written (`{peer="...",state="..."}`).
type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// The live state the gauges show, gathered when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every partner's status.
    pub statuses: Vec<PeerStatus>,
    /// Outbox figures by partner (None: the store did not answer).
    pub outbox: Option<Vec<(String, OutboxStats)>>,
    /// Messages waiting for local applications (None: the store did not answer).
    pub inbox_depth: Option<i64>,
    /// Every certificate the gateway depends on.
    pub certificates: Vec<CertExpiry>,
}

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    handshakes_accepted: Counters,
    handshakes_refused: Counters,
    reconnect_attempts: Counters,
    messages_accepted: Counters,
    messages_sent: Counters,
    messages_acknowledged: Counters,
    messages_received: Counters,
    links_dead: Counters,
    commit_latency: Histogram,
    link_up: Gauges,
    link_state: Gauges,
    outbox_messages: Gauges,
    outbox_oldest_age: Gauges,
    inbox_messages: Gauges,
    certificate_expiry: Gauges,
    certificate_expiry_warning: Gauges,
    /// One scrape at a time: a scrape clears and refills the gauges.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| register::<Counters>(&mut registry, name, help);
        let handshakes_accepted = counter(
            "peerlink_handshakes_accepted",
            "Mutual-TLS handshakes completed, by direction",
        );
        let handshakes_refused = counter(
            "peerlink_handshakes_refused",
            "Handshakes refused, by reason",
        );
        let reconnect_attempts = counter("peerlink_reconnect_attempts", "Dial attempts to a peer");
        let messages_accepted = counter(
            "peerlink_messages_accepted",
            "Messages accepted from local applications, by destination peer",
        );
        let messages_sent = counter(
            "peerlink_messages_sent",
            "Message frames sent to a peer (including resends)",
        );
        let messages_acknowledged = counter(
            "peerlink_messages_acknowledged",
            "Messages a peer acknowledged as durably stored",
        );
        let messages_received = counter(
            "peerlink_messages_received",
            "New messages stored in the inbox, by sending peer",
        );
        let links_dead = counter(
            "peerlink_links_dead",
            "Links declared dead, by peer and reason: nothing_received (no frame for the dead-link bound) or write_stalled (the partner accepted no byte for that long)",
        );
        let commit_latency = Histogram::new(COMMIT_BUCKETS);
        registry.register(
            "peerlink_store_commit_duration_seconds",
            "Duration of message store write transactions, including the fsync",
            commit_latency.clone(),
        );
        let mut gauge = |name: &str, help: &str| register::<Gauges>(&mut registry, name, help);
        let link_up = gauge("peerlink_link_up", "1 when the link to the peer is up");
        let link_state = gauge(
            "peerlink_link_state",
            "Link state per peer (1 for the current state)",
        );
        let outbox_messages = gauge(
            "peerlink_outbox_messages",
            "Messages not yet acknowledged by the peer",
        );
        let outbox_oldest_age = gauge(
            "peerlink_outbox_oldest_age_seconds",
            "Age of the oldest undelivered message (0 when none)",
        );
        let inbox_messages = gauge(
            "peerlink_inbox_messages",
            "Messages waiting for local applications",
        );
        let certificate_expiry = gauge(
            "peerlink_certificate_expiry_seconds",
            "Seconds until a certificate the gateway depends on expires",
        );
        let certificate_expiry_warning = gauge(
            "peerlink_certificate_expiry_warning",
            "1 when the certificate is within an expiry warning threshold",
        );
        Metrics {
            registry,
            handshakes_accepted,
            handshakes_refused,
            reconnect_attempts,
            messages_accepted,
            messages_sent,
            messages_acknowledged,
            messages_received,
            links_dead,
            commit_latency,
            link_up,
            link_state,
            outbox_messages,
            outbox_oldest_age,
            inbox_messages,
            certificate_expiry,
            certificate_expiry_warning,
            scrape: Mutex::new(()),
        }
    }

    /// A handshake completed (`inbound` or `outbound`).
    pub fn handshake_accepted(&self, direction: &str) {
        inc(&self.handshakes_accepted, &[("direction", direction)], 1);
    }

    /// A handshake was refused, for this stable reason.
    pub fn handshake_refused(&self, reason: &str) {
        inc(&self.handshakes_refused, &[("reason", reason)], 1);
    }

    /// We dialed a partner.
    pub fn reconnect_attempt(&self, peer: &str) {
        inc(&self.reconnect_attempts, &[("peer", peer)], 1);
    }

    /// Local applications handed us `n` new messages for a partner.
    pub fn messages_accepted(&self, peer: &str, n: u64) {
        inc(&self.messages_accepted, &[("peer", peer)], n);
    }

    /// `n` Message frames went to a partner.
    pub fn messages_sent(&self, peer: &str, n: u64) {
        inc(&self.messages_sent, &[("peer", peer)], n);
    }

    /// A partner acknowledged `n` messages.
    pub fn messages_acknowledged(&self, peer: &str, n: u64) {
        inc(&self.messages_acknowledged, &[("peer", peer)], n);
    }

    /// `n` new messages from a partner were stored in the inbox.
    pub fn messages_received(&self, peer: &str, n: u64) {
        inc(&self.messages_received, &[("peer", peer)], n);
    }

    /// A link to a partner was declared dead (`nothing_received`, `write_stalled`).
    pub fn link_dead(&self, peer: &str, reason: &str) {
        inc(&self.links_dead, &[("peer", peer), ("reason", reason)], 1);
    }

    /// The histogram a store records its write transactions in.
    pub fn commit_latency(&self) -> Histogram {
        self.commit_latency.clone()
    }

    /// The exposition: the counters and histogram as they are, the gauges set
    /// from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.set_gauges(snapshot);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }

    fn set_gauges(&self, snapshot: &Snapshot) {
        for family in [
            &self.link_up,
            &self.link_state,
            &self.outbox_messages,
            &self.outbox_oldest_age,
            &self.inbox_messages,
            &self.certificate_expiry,
            &self.certificate_expiry_warning,
        ] {
            family.clear();
        }
        let set = |family: &Gauges, pairs: &[(&str, &str)], value: f64| {
            family.get_or_create(&labels(pairs)).set(value);
        };
        let flag = |b: bool| f64::from(u8::from(b));
        for s in &snapshot.statuses {
            let peer = s.node_id.as_str();
            set(
                &self.link_up,
                &[("peer", peer)],
                flag(s.state == LinkState::Connected),
            );
            for (state, name) in LinkState::ALL {
                set(
                    &self.link_state,
                    &[("peer", peer), ("state", name)],
                    flag(s.state == state),
                );
            }
            let stats = snapshot
                .outbox
                .iter()
                .flatten()
                .find(|(p, _)| p == peer)
                .map(|(_, st)| st.clone())
                .unwrap_or_default();
            set(&self.outbox_messages, &[("peer", peer)], stats.depth as f64);
            set(
                &self.outbox_oldest_age,
                &[("peer", peer)],
                stats.oldest_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
            );
        }
        if let Some(n) = snapshot.inbox_depth {
            set(&self.inbox_messages, &[], n as f64);
        }
        for c in &snapshot.certificates {
            let mut pairs = vec![("certificate", c.certificate)];
            if let Some(p) = &c.peer {
                pairs.push(("peer", p.as_str()));
            }
            set(&self.certificate_expiry, &pairs, c.seconds_left as f64);
            set(
                &self.certificate_expiry_warning,
                &pairs,
                flag(c.warning_days.is_some()),
            );
        }
    }
}

/// A new metric of type `M`, registered under `name`.
fn register<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

fn inc(family: &Counters, pairs: &[(&str, &str)], n: u64) {
    family.get_or_create(&labels(pairs)).inc_by(n);
}

/// Records a duration in a latency histogram, in seconds.
pub fn observe(histogram: &Histogram, d: Duration) {
    histogram.observe(d.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histogram_and_gauges_keep_their_names_and_labels() {
        let m = Metrics::new();
        m.handshake_refused("expired");
        m.handshake_refused("expired");
        m.link_dead("b", "write_stalled");
        observe(&m.commit_latency(), Duration::from_millis(3));
        let mut status = PeerStatus::new("b");
        status.state = LinkState::Connected;
        let out = m.render(&Snapshot {
            statuses: vec![status],
            outbox: Some(vec![(
                "b".into(),
                OutboxStats {
                    depth: 7,
                    bytes: 70,
                    oldest_age_ms: Some(1500),
                },
            )]),
            inbox_depth: Some(2),
            certificates: Vec::new(),
        });
        for line in [
            "peerlink_handshakes_refused_total{reason=\"expired\"} 2",
            "peerlink_links_dead_total{peer=\"b\",reason=\"write_stalled\"} 1",
            "# TYPE peerlink_store_commit_duration_seconds histogram",
            "peerlink_store_commit_duration_seconds_bucket{le=\"0.0025\"} 0",
            "peerlink_store_commit_duration_seconds_bucket{le=\"0.005\"} 1",
            "peerlink_store_commit_duration_seconds_count 1",
            "peerlink_link_up{peer=\"b\"} 1.0",
            "peerlink_link_state{peer=\"b\",state=\"connected\"} 1.0",
            "peerlink_link_state{peer=\"b\",state=\"idle\"} 0.0",
            "peerlink_outbox_messages{peer=\"b\"} 7.0",
            "peerlink_outbox_oldest_age_seconds{peer=\"b\"} 1.5",
            "peerlink_inbox_messages 2.0",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line:?} missing from:\n{out}"
            );
        }
        // A partner that is gone leaves no gauge behind at the next scrape.
        let out = m.render(&Snapshot::default());
        assert!(!out.contains("peerlink_link_up{"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.handshake_refused("a\"b\\c\nd");
        let out = m.render(&Snapshot::default());
        assert!(
            out.contains("peerlink_handshakes_refused_total{reason=\"a\\\"b\\\\c\\nd\"} 1"),
            "{out}"
        );
    }
}
