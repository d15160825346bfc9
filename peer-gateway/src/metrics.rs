//! Prometheus metrics in the text exposition format, without a metrics crate:
//! a few counters keyed by label set, one latency histogram, and gauges that
//! are read from the live state when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the store commit latency histogram buckets.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    inner: Mutex<HistogramData>,
}

#[derive(Default, Clone)]
struct HistogramData {
    buckets: [u64; COMMIT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (i, bound) in COMMIT_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Writes the histogram family.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, bound) in COMMIT_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", h.buckets[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
    }
}

/// Counters of one family, by label values.
#[derive(Default)]
pub struct CounterFamily {
    values: Mutex<BTreeMap<Vec<(&'static str, String)>, u64>>,
}

impl CounterFamily {
    /// Adds `n` to the counter with these labels.
    pub fn add(&self, labels: &[(&'static str, &str)], n: u64) {
        let key = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        *self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(0) += n;
    }

    /// Adds one.
    pub fn inc(&self, labels: &[(&'static str, &str)]) {
        self.add(labels, 1);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, v) in self.values.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "{name}{} {v}", label_text(labels));
        }
    }
}

/// Formats `{a="x",b="y"}` with Prometheus escaping (empty for no labels).
pub fn label_text(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Writes one gauge family.
pub fn render_gauge(
    out: &mut String,
    name: &str,
    help: &str,
    samples: &[(Vec<(&'static str, String)>, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{} {v}", label_text(labels));
    }
}

/// The gateway's counters and histograms.
#[derive(Default)]
pub struct Metrics {
    /// Completed handshakes, by direction.
    pub handshakes_accepted: CounterFamily,
    /// Refused handshakes, by reason.
    pub handshakes_refused: CounterFamily,
    /// Dial attempts, by peer.
    pub reconnect_attempts: CounterFamily,
    /// Message frames sent, by peer.
    pub messages_sent: CounterFamily,
    /// Messages stored from a peer (new, not resends), by peer.
    pub messages_received: CounterFamily,
    /// Messages the peer acknowledged as stored, by peer.
    pub messages_acknowledged: CounterFamily,
    /// Messages accepted through the API, by peer.
    pub messages_accepted: CounterFamily,
    /// Links declared dead, by peer and reason (`nothing_received`, `write_stalled`).
    pub links_dead: CounterFamily,
}

impl Metrics {
    /// Renders the counters and histogram (gauges are added by the caller).
    pub fn render(&self, out: &mut String) {
        self.handshakes_accepted.render(
            out,
            "peerlink_handshakes_accepted_total",
            "Mutual-TLS handshakes completed, by direction.",
        );
        self.handshakes_refused.render(
            out,
            "peerlink_handshakes_refused_total",
            "Handshakes refused, by reason.",
        );
        self.reconnect_attempts.render(
            out,
            "peerlink_reconnect_attempts_total",
            "Dial attempts to a peer.",
        );
        self.messages_accepted.render(
            out,
            "peerlink_messages_accepted_total",
            "Messages accepted from local applications, by destination peer.",
        );
        self.messages_sent.render(
            out,
            "peerlink_messages_sent_total",
            "Message frames sent to a peer (including resends).",
        );
        self.messages_acknowledged.render(
            out,
            "peerlink_messages_acknowledged_total",
            "Messages a peer acknowledged as durably stored.",
        );
        self.messages_received.render(
            out,
            "peerlink_messages_received_total",
            "New messages stored in the inbox, by sending peer.",
        );
        self.links_dead.render(
            out,
            "peerlink_links_dead_total",
            "Links declared dead, by peer and reason: nothing_received (no frame for the dead-link bound) or write_stalled (the partner accepted no byte for that long).",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.handshakes_refused.inc(&[("reason", "expired")]);
        m.handshakes_refused.inc(&[("reason", "expired")]);
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        let mut out = String::new();
        m.render(&mut out);
        h.render(&mut out, "peerlink_store_commit_duration_seconds", "help");
        assert!(
            out.contains("peerlink_handshakes_refused_total{reason=\"expired\"} 2"),
            "{out}"
        );
        assert!(out.contains("# TYPE peerlink_store_commit_duration_seconds histogram"));
        assert!(
            out.contains("peerlink_store_commit_duration_seconds_bucket{le=\"0.0025\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("peerlink_store_commit_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{out}"
        );
        assert!(out.contains("peerlink_store_commit_duration_seconds_count 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = label_text(&[("reason", "a\"b\\c\nd".to_string())]);
        assert_eq!(text, "{reason=\"a\\\"b\\\\c\\nd\"}");
    }
}
