//! What the replicas and b say about b's link: link states, replica ids, the
//! lease in the database, who owns the link, and the sampler that watches the
//! owner over a whole run.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use peerlink_e2e::gateway::{admin_status, field, peer_entry};
use peerlink_e2e::traffic::{AbortOnPanic, Traffic};
use serde_json::Value;

use super::SAMPLE_EVERY;

/// The status entry the gateway at `admin` has for `peer`.
pub(crate) fn link_entry(admin: SocketAddr, peer: &str) -> Result<Value, String> {
    let status = admin_status(admin)?;
    peer_entry(&status, peer)
        .cloned()
        .ok_or_else(|| format!("no entry for {peer} in {status}"))
}

/// The link state the gateway at `admin` shows for `peer`.
pub(crate) fn link_state(admin: SocketAddr, peer: &str) -> Result<String, String> {
    link_entry(admin, peer).map(|e| field(&e, "state").to_string())
}

/// `replica_id` of the gateway at `admin`.
pub(crate) fn replica_id(admin: SocketAddr) -> Result<String, String> {
    let status = admin_status(admin)?;
    status["replica_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no replica_id in {status}"))
}

/// The unexpired lease holder of `peer`'s link, read from the database with psql.
pub(crate) fn lease_in_db(database_url: &str, peer: &str) -> Result<String, String> {
    let sql = format!(
        "SELECT owner FROM link_leases WHERE peer_id = '{peer}' \
         AND expires_ms >= (extract(epoch from clock_timestamp()) * 1000)::bigint"
    );
    let out = Command::new("psql")
        .arg(database_url)
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// None when the unexpired lease of `peer`'s link names the replica at `admin`
/// (`name`), else what holds it instead.
pub(crate) fn lease_problem(
    admin: SocketAddr,
    name: &str,
    database_url: &str,
    peer: &str,
) -> Option<String> {
    match (replica_id(admin), lease_in_db(database_url, peer)) {
        (Ok(id), Ok(holder)) if id == holder => None,
        (id, holder) => Some(format!(
            "the lease in the database is held by {holder:?}, not by {name} ({id:?})"
        )),
    }
}

/// Which replica (index in `admins`) shows `peer` connected while the other shows
/// it standby; Err with both states otherwise.
pub(crate) fn link_owner(admins: &[SocketAddr; 2], peer: &str) -> Result<usize, String> {
    let states: Vec<String> = admins
        .iter()
        .map(|a| link_state(*a, peer).unwrap_or_else(|e| e))
        .collect();
    match (states[0].as_str(), states[1].as_str()) {
        ("connected", "standby") => Ok(0),
        ("standby", "connected") => Ok(1),
        _ => Err(format!(
            "a1 shows b {}, a2 shows b {}",
            states[0], states[1]
        )),
    }
}

/// Whether the replica at `survivor` shows `bid` connected, and whether b shows
/// `aid` connected on another link than in `b_before` (its `since` changed).
pub(crate) fn takeover_seen(
    survivor: SocketAddr,
    b_admin: SocketAddr,
    aid: &str,
    bid: &str,
    b_before: &Value,
) -> (bool, bool) {
    let survivor_up = link_state(survivor, bid).as_deref() == Ok("connected");
    let b_up = link_entry(b_admin, aid).is_ok_and(|e| {
        field(&e, "state") == "connected" && field(&e, "since") != field(b_before, "since")
    });
    (survivor_up, b_up)
}

/// One observation of who holds b's link.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) t: f64,
    /// State of b on a1 and a2 (None: status unavailable, e.g. killed).
    pub(crate) replicas: [Option<String>; 2],
    /// State of a on b.
    pub(crate) b: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct SamplerReport {
    pub(crate) samples: Vec<Sample>,
    /// Confirmed moments when both replicas reported b connected.
    pub(crate) both_connected: Vec<String>,
}

/// Samples the link states every [`SAMPLE_EVERY`] until `stop`. A sample where both
/// replicas say `connected` is confirmed by reading the first one again (statuses
/// are read one after the other): connected, connected, connected is a moment when
/// both held a link (or a flap of the first, which is as wrong).
pub(crate) fn sample(
    admins: [SocketAddr; 2],
    b_admin: SocketAddr,
    aid: &str,
    bid: &str,
    sh: &Traffic,
) -> SamplerReport {
    let _guard = AbortOnPanic(&sh.abort);
    let mut rep = SamplerReport::default();
    while !sh.stop.load(Ordering::SeqCst) && !sh.aborted() {
        let t = sh.secs();
        let first = link_entry(admins[0], bid).ok();
        let second = link_entry(admins[1], bid).ok();
        let state = |e: &Option<Value>| e.as_ref().map(|e| field(e, "state").to_string());
        let replicas = [state(&first), state(&second)];
        if replicas.iter().all(|s| s.as_deref() == Some("connected")) {
            let again = link_entry(admins[0], bid).ok();
            if state(&again).as_deref() == Some("connected") {
                let line = format!(
                    "at {t:.2} s both replicas report b connected: a1 {} / a2 {} / a1 again {}",
                    first.unwrap_or_default(),
                    second.unwrap_or_default(),
                    again.unwrap_or_default()
                );
                eprintln!("[{:7.2}s] sampler: {line}", sh.secs());
                rep.both_connected.push(line);
            }
        }
        let b = link_state(b_admin, aid).ok();
        rep.samples.push(Sample { t, replicas, b });
        std::thread::sleep(SAMPLE_EVERY);
    }
    rep
}

/// The sequence of link owners seen (index of the one replica showing b
/// connected), consecutive repeats and samples without a single owner left out.
pub(crate) fn owner_sequence(samples: &[Sample]) -> Vec<(usize, f64)> {
    let mut out: Vec<(usize, f64)> = Vec::new();
    for s in samples {
        let connected: Vec<usize> = (0..2)
            .filter(|&i| s.replicas[i].as_deref() == Some("connected"))
            .collect();
        if let [only] = connected[..] {
            if out.last().map(|(o, _)| *o) != Some(only) {
                out.push((only, s.t));
            }
        }
    }
    out
}
