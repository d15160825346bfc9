//! Summaries of samples and what a process costs: the figures every section
//! reports, computed one way so that sections and baselines compare.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// p-th percentile (0..=100) of sorted samples, nearest rank (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The samples in ascending order.
fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(f64::total_cmp);
    samples
}

/// The median (nearest rank) of samples in any order.
pub fn median(samples: Vec<f64>) -> f64 {
    percentile(&sorted(samples), 50.0)
}

/// `n`, p50, p99 and max of millisecond samples: the latency sections' shape.
pub fn summary_ms(samples: Vec<f64>) -> Value {
    let s = sorted(samples);
    json!({
        "n": s.len(),
        "p50_ms": percentile(&s, 50.0),
        "p99_ms": percentile(&s, 99.0),
        "max_ms": s.last().copied().unwrap_or(f64::NAN),
    })
}

/// p50, p99 and max of millisecond samples (max `null` when empty): the
/// fleet-link section's shape.
pub fn spread_ms(samples: &[f64]) -> Value {
    let s = sorted(samples.to_vec());
    json!({"p50_ms": percentile(&s, 50.0), "p99_ms": percentile(&s, 99.0), "max_ms": s.last()})
}

/// Resident set size of a process (`self` or a pid), KiB.
pub fn rss_kib(pid: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or(Error::NoRss)
}

/// On-CPU seconds of all threads of a process (`/proc/PID/task/*/schedstat`, ns):
/// finer than utime + stime, which count 10 ms ticks.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(ns as f64 / 1e9)
}

/// A process's CPU use over the next `seconds`, in cores.
pub async fn cpu_over(pid: u32, seconds: f64) -> Result<f64> {
    let c0 = cpu_seconds(pid)?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    Ok((cpu_seconds(pid)? - c0) / t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn summaries_keep_their_shape() {
        let v = summary_ms(vec![2.0, 1.0]);
        assert_eq!(
            v,
            json!({"n": 2, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0})
        );
        assert_eq!(
            spread_ms(&[]),
            json!({"p50_ms": null, "p99_ms": null, "max_ms": null})
        );
    }

    #[test]
    fn own_memory_and_cpu_are_readable() {
        assert!(rss_kib("self").expect("own VmRSS") > 0);
        assert!(cpu_seconds(std::process::id()).expect("own schedstat") >= 0.0);
    }
}
