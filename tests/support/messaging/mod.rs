//! Helpers for the durable-messaging end-to-end tests: a tiny HTTP/1.0 client of the
//! gateway's API for local applications, gateway configs with an explicit store
//! (SQLite file or a fresh PostgreSQL database), test message bodies that encode
//! their sender and index, and a seeded PRNG for the chaos schedule.
//!
//! The API client is in `api.rs` ([`Api`]), test messages and the PRNG in
//! `bodies.rs`; here: message stores (SQLite, PostgreSQL) and gateway configs.
//! Node set-up, process guards and log reports come from [`crate::gateway`].

use std::fs;
use std::process::Command;

use crate::gateway::{wait_for, Net, Node, WAIT};

mod api;
mod bodies;

pub use api::{batch_json, http_request, parse_inbox, Api, Outgoing, Received, Response};
pub use bodies::{parse_test_body, random_hex, tail, test_body, test_id, Rng};

/// `[link]` tuning of the messaging tests: fast heartbeats and reconnects.
pub const MESSAGING_LINK: &str = crate::fast_link_table!(500);

// ---------------------------------------------------------------------------
// Stores and configs
// ---------------------------------------------------------------------------

/// Which message store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in the test directory.
    Sqlite,
    /// A fresh database on the local PostgreSQL server.
    Postgres,
}

/// The PostgreSQL server's admin URL: `PEERLINK_TEST_PG` (as the unit tests use), by
/// default `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_admin_url() -> String {
    std::env::var("PEERLINK_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(sql: &str) -> Result<String, String> {
    let url = postgres_admin_url();
    let out = Command::new("psql")
        .arg(&url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "psql {url} -c {sql:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the PostgreSQL server answers. When it does not: panics in CI
/// (`CI=true`), otherwise prints why `test` is skipped and returns false.
pub fn postgres_available(test: &str) -> bool {
    match psql("SELECT 1") {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required in CI (CI=true) but unusable: {e}");
            }
            eprintln!("SKIPPING {test}: PostgreSQL is unreachable ({e}); set CI=true to make this a failure");
            false
        }
    }
}

/// A database created for one gateway of one test; dropped (best effort) on drop.
#[derive(Debug)]
pub struct PgDatabase {
    /// Database name.
    pub name: String,
    /// URL for the gateway's `database_url`.
    pub url: String,
}

impl PgDatabase {
    /// Creates `peerlink_e2e_<tag>_<random>`.
    pub fn create(tag: &str) -> PgDatabase {
        let name = format!("peerlink_e2e_{tag}_{}", random_hex(8));
        psql(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
        let admin = postgres_admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        PgDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("note: could not drop test database {}: {e}", self.name);
        }
    }
}

/// The `sqlite://` URL of the message store of node `name` in `net`'s directory.
pub fn sqlite_url(net: &Net, name: &str) -> String {
    format!(
        "sqlite://{}",
        net.path(&format!("{name}-messages.db")).display()
    )
}

/// The ports a gateway process listens on: peer links, admin API, local API.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// `listen` (peer links).
    pub listen: u16,
    /// `admin_listen`.
    pub admin: u16,
    /// `api_listen`.
    pub api: u16,
}

impl Ports {
    /// The ports of `node`'s bundle.
    pub fn of(node: &Node) -> Ports {
        Ports {
            listen: node.port,
            admin: node.admin_port,
            api: node.api_port,
        }
    }
}

/// A gateway config for `node`'s directory, certificate and key, listening on
/// `ports`, with state directory `state_dir`, an explicit `database_url`, `top`
/// (extra top-level keys, e.g. `max_message_bytes = 65536`) and `link` (the
/// `[link]` table, e.g. [`MESSAGING_LINK`]). Replicas of one node share all but
/// the ports and the state directory.
pub fn messaging_config_text(
    node: &Node,
    ports: Ports,
    state_dir: &str,
    database_url: &str,
    top: &str,
    link: &str,
) -> String {
    format!(
        "node_dir = {:?}\nserver_cert = {:?}\nserver_key = {:?}\n\
         listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\napi_listen = \"127.0.0.1:{}\"\n\
         database_url = {:?}\nstate_dir = {:?}\n{top}\n{link}",
        node.ca.dir.display().to_string(),
        node.server_cert.display().to_string(),
        node.server_key.display().to_string(),
        ports.listen,
        ports.admin,
        ports.api,
        database_url,
        state_dir,
    )
}

/// Writes `node`'s gateway config ([`messaging_config_text`]) with its own ports and
/// state directory.
pub fn write_messaging_config(node: &Node, database_url: &str, top: &str, link: &str) {
    let state_dir = format!("{}-state", node.name);
    let text = messaging_config_text(node, Ports::of(node), &state_dir, database_url, top, link);
    fs::write(&node.config, text)
        .unwrap_or_else(|e| panic!("write {}: {e}", node.config.display()));
}

/// Waits (at most [`WAIT`] for all of them) until every outbox `(api, peer)` is empty.
#[track_caller]
pub fn wait_outboxes_empty(what: &str, outboxes: &[(&Api, &str)]) {
    wait_for(what, WAIT, || {
        for (api, peer) in outboxes {
            match api.outbox_depth(peer) {
                Ok(0) => {}
                other => return Err(format!("outbox of {} to {peer}: {other:?}", api.addr)),
            }
        }
        Ok(())
    });
}
