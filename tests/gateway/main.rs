//! End-to-end tests of `peer-gateway`: gateways run as separate processes on
//! loopback, with CAs made and cross-signed by the real `ca-tool`, and `openssl`
//! as a TLS stack we did not write.
//!
//! | module | what |
//! |---|---|
//! | `links` | 1-3: gateways link up and ping, a crash and a restart, simultaneous dials |
//! | `refusals` | 4-5: refused handshakes with their reason, revocation cutting a link |
//! | `interop` | 6: openssl completes handshakes with the right certificates only |
//! | `lifecycle` | 7, 9, 10: shutdown, the store lock, heartbeats, reload, idle links |
//! | `config` | 8: configuration errors and `peer-gateway keygen` |
//!
//! Run `cargo build --workspace --bins` first, then `cargo test --test gateway`
//! (one module: `cargo test --test gateway lifecycle::`).
//!
//! Every wait is bounded (poll the admin API until a condition holds, with a
//! deadline); nothing assumes the machine's speed. On failure the gateways' logs
//! and last status are printed (see `peerlink_e2e::gateway::Net`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{
    config_text, field, peer_entry, peer_gateway, read_lossy, refusals, wait_for, GatedProxy, Net,
    WAIT,
};
use peerlink_e2e::{args, mode_of, openssl, read_bytes, run, Outcome};

mod config;
mod interop;
mod lifecycle;
mod links;
mod refusals;

const ABC: [&str; 3] = ["a", "b", "c"];

/// States of a partner that is not linked.
const DOWN: [&str; 3] = ["backing-off", "connecting", "refused"];

fn since(net: &Net, x: &str, y: &str) -> String {
    field(&net.peer_status(x, y), "since").to_string()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// Waits until `name`'s refused-handshake counters are exactly `expected`.
#[track_caller]
fn wait_refusals(net: &mut Net, name: &str, expected: &BTreeMap<String, u64>) {
    let what = format!("{name}'s refused_handshakes to be {expected:?}");
    net.wait(&what, WAIT, |net| {
        let got = refusals(&net.try_status(name)?);
        if &got == expected {
            Ok(())
        } else {
            Err(format!("refused_handshakes = {got:?}"))
        }
    });
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz: u64 = run(Command::new("getconf").arg("CLK_TCK"))
        .stdout
        .trim()
        .parse()
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

/// `timeout 20 peer-gateway run --config <file with text>`; must fail by itself.
fn run_config(dir: &Path, file: &str, text: &str) -> Outcome {
    let path = dir.join(file);
    fs::write(&path, text).unwrap();
    let out = run(Command::new("timeout").args(args![
        "20",
        peerlink_e2e::gateway::peer_gateway_path(),
        "run",
        "--config",
        &path
    ]));
    assert_ne!(
        out.code(),
        Some(124),
        "the gateway started with {file}:\n{text}"
    );
    out.assert_failure();
    out
}
