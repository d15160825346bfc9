//! Our gateway standing in for swpt_stomp on a Swaptacular node, and reading
//! what reached it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::SwptLab;
use crate::gateway::{free_port, peer_gateway_path, wait_for};
use crate::messaging::Api;

/// Our gateway standing in for swpt_stomp on a node.
pub struct Gateway {
    /// Its config file.
    pub config: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// The application API.
    pub api: Api,
    /// The admin address.
    pub admin: std::net::SocketAddr,
    /// Where partners' STOMP clients dial it.
    pub stomp_port: u16,
    child: Option<Child>,
}

impl Gateway {
    /// Writes the config of a gateway for the lab's node `name` (`AA`, `CA`),
    /// using its `server.crt` and `server.key` as swpt_stomp does; `extra`
    /// goes at the end.
    pub fn configure(lab: &SwptLab, name: &str, extra: &str) -> Gateway {
        let node = lab.node(name);
        Gateway::configure_at(
            &node,
            &node.join("server.crt"),
            &node.join("server.key"),
            &node,
            extra,
        )
    }

    /// Writes the config of a gateway on `node_dir` (either layout) with
    /// certificate `cert` and key `key`; its config, database, state and log
    /// go in `work`.
    pub fn configure_at(
        node_dir: &Path,
        cert: &Path,
        key: &Path,
        work: &Path,
        extra: &str,
    ) -> Gateway {
        let (listen, admin, api, stomp_port) = (free_port(), free_port(), free_port(), free_port());
        let config = work.join("gateway.toml");
        let text = format!(
            "node_dir = {node:?}\nserver_cert = {cert:?}\nserver_key = {key:?}\n\
             listen = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             api_listen = \"127.0.0.1:{api}\"\ndatabase_url = \"sqlite://{db}\"\n\
             state_dir = {state:?}\n\n[stomp]\nlisten = \"127.0.0.1:{stomp_port}\"\n\
             heartbeat_ms = 1000\n\n[link]\nheartbeat_ms = 500\nbackoff_base_ms = 100\n\
             backoff_cap_ms = 1000\nhandshake_timeout_ms = 3000\n{extra}\n",
            node = node_dir.display().to_string(),
            cert = cert.display().to_string(),
            key = key.display().to_string(),
            db = work.join("gateway.db").display(),
            state = work.join("gateway-state").display().to_string(),
        );
        std::fs::write(&config, text).expect("write gateway config");
        Gateway {
            log: work.join("gateway.log"),
            config,
            api: Api::new(api),
            admin: std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
            stomp_port,
            child: None,
        }
    }

    /// Starts it and waits for its admin API.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(peer_gateway_path())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("PEERLINK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start peer-gateway");
        self.child = Some(child);
        let admin = self.admin;
        let log = self.log.clone();
        wait_for("the gateway's admin API", Duration::from_secs(30), || {
            crate::gateway::admin_status(admin).map_err(|e| format!("{e}\n{}", read(&log)))
        });
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// The status entry of partner `peer`.
    pub fn peer_state(&self, peer: &str) -> Result<serde_json::Value, String> {
        let status = crate::gateway::admin_status(self.admin)?;
        crate::gateway::peer_entry(&status, peer)
            .cloned()
            .ok_or_else(|| format!("no entry for {peer}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- our gateway's log ---\n{}", self.log_text());
        }
        self.kill9();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Takes (and acknowledges) everything in the inbox: (type, body) pairs.
pub fn take_inbox(api: &Api) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let Ok(r) = api.inbox_raw(1000, 0) else {
            return out;
        };
        let Ok(v) = r.json() else {
            return out;
        };
        let list = v["messages"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return out;
        }
        let mut acks = Vec::new();
        for m in &list {
            let body = crate::base64_decode(m["body_base64"].as_str().unwrap_or(""));
            out.push((
                m["type"].as_str().unwrap_or("").to_string(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            acks.push((
                m["from"].as_str().unwrap_or("").to_string(),
                m["id"].as_str().unwrap_or("").to_string(),
            ));
        }
        let pairs: Vec<(&str, &str)> = acks.iter().map(|(f, i)| (f.as_str(), i.as_str())).collect();
        let _ = api.ack_from(&pairs);
    }
}

/// The `coordinator_request_id` of an SMP message body (our test numbering).
pub fn request_id(body: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["coordinator_request_id"].as_u64()
}

/// Publishes `n` PrepareTransfer messages (numbered from `first`) straight
/// into `queue` of the lab's vhost, persistent, as a node's own software would.
pub fn publish(lab: &SwptLab, queue: &str, first: u64, n: u64, creditor: u64) {
    let bodies: Vec<String> = (first..first + n)
        .map(|i| super::prepare_transfer(i, creditor))
        .collect();
    lab.publish(queue, "PrepareTransfer", &bodies);
}
