//! [`Net`]: a set of nodes in one temporary directory, their gateway processes,
//! their status, bounded waits on it, and their logs (printed when a test fails).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{
    admin_status, config_text, field, free_port, peer_entry, peer_gateway, read_lossy,
    spawn_gateway, wait_exit, wait_for, Node, WAIT,
};
use crate::{run_program, write_passphrase, CaFixture, PASSPHRASE};

/// A set of nodes in one temporary directory.
pub struct Net {
    /// The temporary directory (everything lives here; removed on drop).
    pub dir: PathBuf,
    /// The passphrase file of every CA.
    pub pass: PathBuf,
    /// The nodes by name, in creation order.
    pub nodes: Vec<Node>,
}

impl Net {
    /// An empty network.
    pub fn empty() -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "peerlink-gw-{}-{}-{nanos:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let pass = write_passphrase(&dir.join("pass"), PASSPHRASE);
        Net {
            dir,
            pass,
            nodes: Vec::new(),
        }
    }

    /// Nodes `names`, every pair cross-signed and registered (a full mesh).
    pub fn mesh(names: &[&str]) -> Net {
        let mut net = Net::empty();
        for n in names {
            net.add_node(n);
        }
        for (i, x) in names.iter().enumerate() {
            for y in &names[i + 1..] {
                net.cross_sign(x, y);
            }
        }
        net
    }

    /// A path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Adds node `name`: `ca-tool init`, `export-bundle` with its listen endpoint,
    /// `peer-gateway keygen`, `ca-tool sign-server`, and its gateway config.
    pub fn add_node(&mut self, name: &str) -> &Node {
        let dir = self.path(name);
        let ca = CaFixture::init(&dir, "Net", name, None, None, &self.pass);
        let port = free_port();
        let admin_port = free_port();
        let api_port = free_port();
        let bundle = self.path(&format!("{name}.bundle"));
        ca.export_bundle(&bundle, &[&format!("127.0.0.1:{port}")]);
        let server_key = self.path(&format!("{name}-gw.key"));
        let csr = self.path(&format!("{name}-gw.csr"));
        let server_cert = self.path(&format!("{name}-gw.crt"));
        peer_gateway(args![
            "keygen",
            "--node-dir",
            &dir,
            "--out-key",
            &server_key,
            "--out-csr",
            &csr,
            "--cn",
            "gw1"
        ])
        .assert_success();
        ca.sign_server(&csr, &server_cert).assert_success();
        let node = Node {
            name: name.to_string(),
            ca,
            bundle,
            port,
            admin_port,
            api_port,
            server_key,
            server_cert,
            config: self.path(&format!("{name}.toml")),
            log: self.path(&format!("{name}.log")),
            api_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            launcher: Vec::new(),
            child: None,
        };
        fs::write(
            &node.config,
            config_text(&node, &node.server_cert, &node.server_key, ""),
        )
        .expect("write config");
        self.nodes.push(node);
        self.nodes.last().expect("just pushed")
    }

    /// Cross-signs `x` and `y` both ways and registers both cross-certs, as the
    /// operators do: `sign-peer` on each side, `register-peer` on the other.
    pub fn cross_sign(&self, x: &str, y: &str) {
        for (issuer, subject) in [(x, y), (y, x)] {
            let cert = self.cross_cert(subject, issuer);
            let i = self.node(issuer);
            let s = self.node(subject);
            i.ca.sign_peer(&s.bundle, &cert, Some(&s.ca.fingerprint))
                .assert_success();
            s.ca.register_peer(&i.bundle, &cert).assert_success();
        }
    }

    /// The cross-cert `issuer` issued to `subject` (`<subject>-by-<issuer>.crt`).
    pub fn cross_cert(&self, subject: &str, issuer: &str) -> PathBuf {
        self.path(&format!("{subject}-by-{issuer}.crt"))
    }

    /// Node `name`.
    #[track_caller]
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Node `name`, to change how it is started ([`Node::launcher`], [`Node::api_ip`]).
    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The node id of `name`.
    pub fn id(&self, name: &str) -> String {
        self.node(name).id().to_string()
    }

    /// The name of the node with id `id` (or the id itself).
    pub fn name_of(&self, id: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.id() == id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    }

    /// Starts the gateway of `name` with its own config.
    pub fn start(&mut self, name: &str) {
        let config = self.node(name).config.clone();
        self.start_with_config(name, &config);
    }

    /// Starts the gateway of `name` with `config` (stderr appended to its log).
    pub fn start_with_config(&mut self, name: &str, config: &Path) {
        let node = self.node_mut(name);
        assert!(
            !node.is_running(),
            "gateway {name} is already running ({})",
            node.pid()
        );
        let child = spawn_gateway(
            &format!("gateway {name}"),
            config,
            &node.log,
            &node.launcher,
        );
        node.child = Some(child);
    }

    /// Rewrites `name`'s config with `extra` (e.g. `[peers."<id>"]` tables).
    pub fn set_config_extra(&self, name: &str, extra: &str) {
        let node = self.node(name);
        fs::write(
            &node.config,
            config_text(node, &node.server_cert, &node.server_key, extra),
        )
        .expect("write config");
    }

    /// Starts the gateways of `names` back to back, as fast as possible.
    pub fn start_all(&mut self, names: &[&str]) {
        for n in names {
            self.start(n);
        }
    }

    /// Waits until the admin API of `name` answers.
    #[track_caller]
    pub fn wait_admin(&mut self, name: &str) {
        let admin = self.node(name).admin();
        self.wait(&format!("the admin API of {name}"), WAIT, |net| {
            net.assert_alive(name);
            admin_status(admin)
        });
    }

    /// Panics (with the log) when the gateway of `name` has exited.
    #[track_caller]
    pub fn assert_alive(&mut self, name: &str) {
        let node = self.node_mut(name);
        if let Some(child) = &mut node.child {
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                panic!("gateway {name} exited unexpectedly with {status}");
            }
        }
    }

    /// Sends `signal` (e.g. "TERM", "INT", "KILL") to the gateway of `name`.
    pub fn signal(&self, name: &str, signal: &str) {
        let pid = self.node(name).pid();
        run_program("kill", [format!("-{signal}"), pid.to_string()]).assert_success();
    }

    /// Sends `signal` and waits (bounded) for the gateway to exit; returns its status.
    #[track_caller]
    pub fn stop_with(&mut self, name: &str, signal: &str) -> ExitStatus {
        self.signal(name, signal);
        let node = self.node_mut(name);
        let mut child = node.child.take().expect("running");
        wait_exit(&mut child, WAIT).unwrap_or_else(|e| panic!("gateway {name} {e} of SIG{signal}"))
    }

    /// SIGTERM; asserts a clean exit (code 0).
    #[track_caller]
    pub fn terminate(&mut self, name: &str) {
        let status = self.stop_with(name, "TERM");
        assert_eq!(
            status.code(),
            Some(0),
            "gateway {name} did not exit 0 on SIGTERM: {status}"
        );
    }

    /// SIGKILL (a crash).
    pub fn kill9(&mut self, name: &str) {
        let status = self.stop_with(name, "KILL");
        assert!(status.code().is_none(), "{name} was not killed: {status}");
    }

    /// Stops every running gateway with SIGTERM and asserts that each exits 0.
    #[track_caller]
    pub fn terminate_all(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            if self.node_mut(&n).is_running() {
                self.terminate(&n);
            }
        }
    }

    /// `GET /v1/status` of `name`, or why it failed.
    pub fn try_status(&self, name: &str) -> Result<Value, String> {
        admin_status(self.node(name).admin())
    }

    /// `GET /v1/status` of `name`.
    #[track_caller]
    pub fn status(&self, name: &str) -> Value {
        self.try_status(name)
            .unwrap_or_else(|e| panic!("status of {name}: {e}"))
    }

    /// What `name`'s status says about `peer` (a name).
    #[track_caller]
    pub fn peer_status(&self, name: &str, peer: &str) -> Value {
        let status = self.status(name);
        peer_entry(&status, &self.id(peer))
            .unwrap_or_else(|| panic!("{name}'s status has no entry for {peer}: {status:#}"))
            .clone()
    }

    /// Polls `probe` (which gets the network, to read statuses) until it returns `Ok`,
    /// for at most `timeout`; panics with the last observation. Returns the time it took.
    #[track_caller]
    pub fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&mut Net) -> Result<T, String>,
    ) -> (T, Duration) {
        wait_for(what, timeout, || probe(self))
    }

    /// Checks that `name` sees `peer` in `state`; Err describes what it sees instead.
    pub fn check_state(&self, name: &str, peer: &str, states: &[&str]) -> Result<Value, String> {
        let status = self.try_status(name)?;
        let entry = peer_entry(&status, &self.id(peer))
            .ok_or_else(|| format!("{name} has no entry for {peer}: {status:#}"))?;
        if states.contains(&field(entry, "state")) {
            Ok(entry.clone())
        } else {
            Err(format!(
                "{name} sees {peer} as {}, not {states:?}: {entry:#}",
                field(entry, "state")
            ))
        }
    }

    /// Waits until every ordered pair of `names` shows `connected`; returns the time.
    #[track_caller]
    pub fn wait_all_connected(&mut self, names: &[&str], timeout: Duration) -> Duration {
        let what = format!("{names:?} all connected to each other");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.wait(&what, timeout, |net| {
            for x in &names {
                net.assert_alive(x);
                for y in &names {
                    if x != y {
                        net.check_state(x, y, &["connected"])?;
                    }
                }
            }
            Ok(())
        })
        .1
    }

    /// Waits until `name`'s log contains a line with every one of `fragments`; returns it.
    #[track_caller]
    pub fn wait_log_line(&mut self, name: &str, fragments: &[&str], timeout: Duration) -> String {
        let log = self.node(name).log.clone();
        let what = format!("a line with {fragments:?} in {name}'s log");
        wait_for(&what, timeout, || {
            let text = read_lossy(&log);
            text.lines()
                .find(|l| fragments.iter().all(|f| l.contains(f)))
                .map(str::to_string)
                .ok_or_else(|| "(not yet; the log is printed below on failure)".to_string())
        })
        .0
    }

    /// Lines of `name`'s log that contain every one of `fragments`.
    pub fn log_lines(&self, name: &str, fragments: &[&str]) -> Vec<String> {
        self.node(name)
            .log_text()
            .lines()
            .filter(|l| fragments.iter().all(|f| l.contains(f)))
            .map(str::to_string)
            .collect()
    }

    fn report(&mut self) {
        let mut out = String::new();
        out.push_str("\n======== peer-gateway test failed: gateway logs and status ========\n");
        for node in &self.nodes {
            out.push_str(&format!(
                "--- node {} id {} listen {} admin {} ---\n",
                node.name,
                node.id(),
                node.endpoint(),
                node.admin()
            ));
            if node.child.is_some() {
                match admin_status(node.admin()) {
                    Ok(s) => out.push_str(&format!("status: {s:#}\n")),
                    Err(e) => out.push_str(&format!("status: unavailable: {e}\n")),
                }
            }
            let log = node.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let skip = lines.len().saturating_sub(300);
            if skip > 0 {
                out.push_str(&format!("(first {skip} log lines omitted)\n"));
            }
            for l in &lines[skip..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        eprintln!("{out}");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        if failing {
            self.report();
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if failing && std::env::var_os("PEERLINK_KEEP_TEST_DIR").is_some() {
            eprintln!("keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
