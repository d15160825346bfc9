//! End-to-end tests of durable messaging: two `peer-gateway` processes on loopback
//! (CAs made and cross-signed with the real `ca-tool`, gateway keys from
//! `peer-gateway keygen`) move messages between their HTTP APIs for local
//! applications, on SQLite and on PostgreSQL.
//!
//! - exactly once, in order, both ways, while each gateway is killed -9 and
//!   restarted at random moments (seeded; the seed is printed);
//! - the API's answers to bad input (unknown peer, oversized body, bad JSON, bad
//!   token, duplicate Message-Id, full outbox);
//! - the `peer-gateway send` / `recv` helpers;
//! - one Message-Id used with several peers (ids are scoped per peer).
//!
//! | module | what |
//! |---|---|
//! | `crashes` | 1: exactly once, in order, while the gateways are killed -9 |
//! | `api` | 2: the API's answers to bad input, deduplication, a full outbox |
//! | `cli` | 3: `peer-gateway send` and `recv` |
//! | `ids_and_acks` | 4: Message-Ids scoped per peer; acks lost in a crash |
//!
//! Run `cargo build --workspace --bins` first, then `cargo test --test messaging`
//! (one module: `cargo test --test messaging cli::`). Every wait is a bounded
//! poll. On failure the gateways are killed and their logs printed (see
//! `peerlink_e2e::gateway::Net`). `PEERLINK_CHAOS_SEED` replays a chaos schedule;
//! `PEERLINK_E2E_MESSAGES` changes the number of messages each way (default 20,000).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{admin_status, peer_gateway_path, wait_for, Net, WAIT};
use peerlink_e2e::messaging::{
    batch_json, parse_inbox, postgres_available, sqlite_url, tail, test_body, wait_outboxes_empty,
    write_messaging_config, Api, Backend, Outgoing, PgDatabase, Received, Response, Rng,
    MESSAGING_LINK,
};
use peerlink_e2e::traffic::{
    chaos_seed, consume, env_count, join_all, join_thread, produce, AbortOnPanic, ConsumerPlan,
    ProducerPlan, Traffic,
};
use peerlink_e2e::{args, run, Outcome};

mod api;
mod cli;
mod crashes;
mod ids_and_acks;

const AB: [&str; 2] = ["a", "b"];

/// A token for `api_token_file` (at least 16 characters).
const TOKEN: &str = "e2e-token-0123456789abcdef";

/// Sets up nodes a and b (CAs, cross-certs, gateway keys and certificates) with
/// gateway configs on `backend`: `top(name)` adds top-level keys, `link` is the
/// `[link]` table. PostgreSQL databases are pushed to `pg` (declare it before the
/// network, so that the databases are dropped after the gateways are killed).
fn setup(
    backend: Backend,
    pg: &mut Vec<PgDatabase>,
    top: impl Fn(&str) -> String,
    link: &str,
) -> Net {
    let net = Net::mesh(&AB);
    for name in AB {
        let url = match backend {
            Backend::Sqlite => sqlite_url(&net, name),
            Backend::Postgres => {
                let db = PgDatabase::create(name);
                let url = db.url.clone();
                pg.push(db);
                url
            }
        };
        write_messaging_config(net.node(name), &url, &top(name), link);
    }
    net
}

/// Writes [`TOKEN`] to `<name>.token` and rewrites `name`'s config (SQLite store,
/// [`MESSAGING_LINK`]) to require it, after the top-level keys `top`. Returns the
/// token file.
fn require_token(net: &Net, name: &str, top: &str) -> PathBuf {
    let token_file = net.path(&format!("{name}.token"));
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    write_messaging_config(
        net.node(name),
        &sqlite_url(net, name),
        &format!(
            "{top}api_token_file = {:?}\n",
            token_file.display().to_string()
        ),
        MESSAGING_LINK,
    );
    token_file
}

/// Waits until the API of `api` answers `GET /v1/peers/{peer}` (its store is open).
#[track_caller]
fn wait_api(net: &mut Net, name: &str, api: &Api, peer: &str) {
    net.wait(&format!("the API of {name}"), WAIT, |net| {
        net.assert_alive(name);
        api.peer(peer)
    });
}

/// `inbox_depth` of `name`'s admin status.
fn inbox_depth(net: &Net, name: &str) -> Result<i64, String> {
    let status = admin_status(net.node(name).admin())?;
    status["inbox_depth"]
        .as_i64()
        .ok_or_else(|| format!("no inbox_depth in the status of {name}: {status}"))
}

#[track_caller]
fn expect_status(r: &Result<Response, String>, code: u16, what: &str) -> Response {
    match r {
        Ok(r) if r.code == code => r.clone(),
        Ok(r) => panic!("{what}: expected HTTP {code}, got {}", r.describe()),
        Err(e) => panic!("{what}: expected HTTP {code}, request failed: {e}"),
    }
}

/// Asserts HTTP `code` with a JSON `{"error": "..."}` body; returns the message.
#[track_caller]
fn expect_error(r: &Result<Response, String>, code: u16, what: &str) -> String {
    let r = expect_status(r, code, what);
    let v = r
        .json()
        .unwrap_or_else(|e| panic!("{what}: the error is not JSON: {e}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no \"error\" string in {v}"));
    assert!(!msg.is_empty(), "{what}: empty error message");
    msg.to_string()
}

#[track_caller]
fn expect_accepted(r: &Result<Response, String>, what: &str) -> serde_json::Value {
    let r = expect_status(r, 202, what);
    r.json().unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Asserts a 202 that names Message-Id `id` and says whether it was a `duplicate`.
#[track_caller]
fn expect_dedup(r: &Result<Response, String>, what: &str, id: &str, duplicate: bool) {
    let v = expect_accepted(r, what);
    assert_eq!(
        (v["id"].as_str(), v["duplicate"].as_bool()),
        (Some(id), Some(duplicate)),
        "{v}"
    );
}

/// Asserts a 202 to a batch that answers Message-Ids `ids`, `duplicates` of them
/// duplicates.
#[track_caller]
fn expect_batch_dedup(r: &Result<Response, String>, what: &str, ids: &[&str], duplicates: u64) {
    let v = expect_accepted(r, what);
    assert_eq!(v["ids"], serde_json::json!(ids), "{v}");
    assert_eq!(v["duplicates"], duplicates, "{v}");
}

#[track_caller]
fn assert_depth(api: &Api, peer: &str, expected: i64, what: &str) {
    let depth = api
        .outbox_depth(peer)
        .unwrap_or_else(|e| panic!("{what}: outbox depth: {e}"));
    assert_eq!(depth, expected, "{what}: outbox_depth");
}
