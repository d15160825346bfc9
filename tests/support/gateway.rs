//! Helpers for the `peer-gateway` end-to-end tests: a network of nodes whose CAs are
//! made and cross-signed with the real `ca-tool`, gateway processes started from the
//! built binary, their admin API, and bounded waits.
//!
//! Every gateway's stderr (its log) goes to a file in the network's temporary
//! directory. When a test fails, [`Net`]'s `Drop` kills the gateways that are still
//! running and prints every log and the last status it could read, so a failure
//! explains itself.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{binary, openssl, run, run_program, write_passphrase, CaFixture, Outcome, PASSPHRASE};

/// Default deadline of the bounded waits.
pub const WAIT: Duration = Duration::from_secs(20);
/// How often the bounded waits poll.
pub const POLL: Duration = Duration::from_millis(100);

/// The `[link]` table of the tests: fast heartbeats, reconnects and handshakes, with
/// `reload_poll_ms` as given (the one setting the test suites tune differently).
#[macro_export]
macro_rules! fast_link_table {
    ($reload_poll_ms:literal) => {
        concat!(
            "[link]\n",
            "heartbeat_ms = 500\n",
            "backoff_base_ms = 100\n",
            "backoff_cap_ms = 1000\n",
            "stable_after_ms = 2000\n",
            "reload_poll_ms = ",
            $reload_poll_ms,
            "\n",
            "connect_timeout_ms = 1000\n",
            "handshake_timeout_ms = 3000\n",
        )
    };
}

/// Link tuning that keeps the tests fast (`[link]` in every config written here).
pub const FAST_LINK: &str = crate::fast_link_table!(200);

/// Extensions of a gateway (server) certificate, for certificates made with openssl.
pub const LEAF_EXTENSIONS: &str = "\
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Path of the built `peer-gateway`.
pub fn peer_gateway_path() -> PathBuf {
    binary("peer-gateway")
}

/// Runs the built `peer-gateway` with `args` (must not be `run`: that never returns).
pub fn peer_gateway<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_program(peer_gateway_path(), args)
}

/// A loopback port nobody listens on right now. Ports are never handed out twice in
/// one test process, so tests running in parallel do not collide.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most `timeout`; panics
/// with `what` and the last `Err` otherwise. Returns the value and the time it took.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return (v, start.elapsed()),
            Err(last) => {
                if start.elapsed() >= timeout {
                    panic!(
                        "timed out after {:.1} s waiting for {what}; last observation:\n{last}",
                        timeout.as_secs_f64()
                    );
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// A file as text, invalid UTF-8 replaced (openssl transcripts hold binary frames);
/// "" when it cannot be read (yet).
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// One HTTP/1.0 request to an admin address; returns (status code, body).
pub fn http(admin: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .map_err(|e| format!("connect {admin}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {admin}\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| format!("write to {admin}: {e}"))?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .map_err(|e| format!("read from {admin}: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP response from {admin}: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP status line from {admin}: {head:?}"))?;
    Ok((code, body.to_string()))
}

/// `GET /v1/status`, parsed.
pub fn admin_status(admin: SocketAddr) -> Result<Value, String> {
    let (code, body) = http(admin, "GET", "/v1/status")?;
    if code != 200 {
        return Err(format!("GET /v1/status: HTTP {code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("status is not JSON ({e}): {body}"))
}

/// The entry of `peer_id` in a status document.
pub fn peer_entry<'a>(status: &'a Value, peer_id: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == peer_id)
}

/// A string member of a peer entry ("" when null or missing).
pub fn field<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key].as_str().unwrap_or("")
}

/// The refused-handshake counters of a status document.
pub fn refusals(status: &Value) -> BTreeMap<String, u64> {
    status["refused_handshakes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// A node: its CA (made by `ca-tool init`), bundle, gateway key and certificate, and
/// gateway config with its ports.
#[derive(Debug)]
pub struct Node {
    /// Short name (`a`, `b`, ...), also the CA's `--unit`.
    pub name: String,
    /// The CA.
    pub ca: CaFixture,
    /// Its exported bundle (endpoint = the gateway's listen address).
    pub bundle: PathBuf,
    /// Peer listener port.
    pub port: u16,
    /// Admin API port.
    pub admin_port: u16,
    /// Local application API port.
    pub api_port: u16,
    /// The gateway key made by `peer-gateway keygen`.
    pub server_key: PathBuf,
    /// The gateway certificate made by `ca-tool sign-server`.
    pub server_cert: PathBuf,
    /// The gateway config.
    pub config: PathBuf,
    /// The gateway's log (stderr of every run, appended).
    pub log: PathBuf,
    /// Where its admin and application APIs listen (loopback unless the gateway
    /// runs in a network namespace, see [`crate::netns`]).
    pub api_ip: std::net::IpAddr,
    /// A command that runs the gateway (e.g. `ip netns exec NS`); empty: run it directly.
    pub launcher: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// The node id.
    pub fn id(&self) -> &str {
        &self.ca.node_id
    }

    /// `127.0.0.1:<port>` of the peer listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.api_ip, self.admin_port)
    }

    /// The admin address as `--admin` takes it.
    pub fn admin_arg(&self) -> String {
        self.admin().to_string()
    }

    /// The gateway's log so far.
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Whether the gateway process is running (started and not yet reaped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// The process id of the running gateway.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("gateway {} is not running", self.name))
            .id()
    }
}

/// Config text for a gateway of `node` presenting `cert`/`key`. Every gateway gets its
/// own ports (peers, admin, local API), state directory and SQLite database, so that
/// gateways whose configs share a directory do not collide. `extra` goes after the
/// top-level keys (e.g. `[peers."<id>"]` tables).
pub fn config_text(node: &Node, cert: &Path, key: &Path, extra: &str) -> String {
    let base = node
        .ca
        .dir
        .parent()
        .expect("the CA is in the network directory");
    format!(
        "node_dir = {:?}\nserver_cert = {:?}\nserver_key = {:?}\nlisten = \"127.0.0.1:{}\"\n\
         admin_listen = \"127.0.0.1:{}\"\napi_listen = \"127.0.0.1:{}\"\n\
         database_url = {:?}\nstate_dir = {:?}\n{extra}\n{FAST_LINK}",
        node.ca.dir.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
        node.port,
        node.admin_port,
        node.api_port,
        format!(
            "sqlite://{}",
            base.join(format!("{}-gateway.db", node.name)).display()
        ),
        format!("{}-state", node.name),
    )
}

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
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open log");
        writeln!(
            log,
            "=== test harness: starting gateway {name} with {}",
            config.display()
        )
        .expect("write log");
        let stdout = log.try_clone().expect("clone log handle");
        let mut command = match node.launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(peer_gateway_path());
                c
            }
            None => Command::new(peer_gateway_path()),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("PEERLINK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start peer-gateway for {name}: {e}"));
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
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for gateway") {
                return status;
            }
            if start.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gateway {name} did not exit within {WAIT:?} of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Decrypts `name`'s root key with `openssl pkey` (as an operator could) into a
    /// file in the temporary directory and returns its path.
    pub fn decrypted_root_key(&self, name: &str) -> PathBuf {
        let node = self.node(name);
        let out = self.path(&format!("{name}-root-plain.key"));
        let mut passin = OsString::from("file:");
        passin.push(&self.pass);
        openssl(args![
            "pkey",
            "-in",
            node.ca.root_key(),
            "-passin",
            passin,
            "-out",
            &out
        ])
        .assert_success();
        out
    }

    /// Signs `csr` with `issuer`'s root key using `openssl x509 -req` (bypassing
    /// `ca-tool`'s checks, e.g. a subject that is not the issuer's DN) into `out`.
    pub fn openssl_sign_leaf(&self, issuer: &str, csr: &Path, out: &Path) {
        let key = self.decrypted_root_key(issuer);
        let ext = self.path("leaf.ext");
        fs::write(&ext, LEAF_EXTENSIONS).expect("write leaf.ext");
        openssl(args![
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            self.node(issuer).ca.root_cert(),
            "-CAkey",
            &key,
            "-set_serial",
            "0x5eed0123456789abcdef",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-extensions",
            "leaf",
            "-out",
            out
        ])
        .assert_success();
    }

    /// Signs `csr` with `issuer`'s root key using `openssl ca` with explicit validity
    /// dates (`YYYYMMDDHHMMSSZ`), e.g. a certificate that has already expired.
    pub fn openssl_sign_leaf_dated(
        &self,
        issuer: &str,
        csr: &Path,
        out: &Path,
        start: &str,
        end: &str,
    ) {
        let key = self.decrypted_root_key(issuer);
        let db = self.path(&format!("openssl-ca-{issuer}"));
        fs::create_dir_all(&db).expect("mkdir");
        fs::write(db.join("index.txt"), "").expect("index.txt");
        let cnf = db.join("ca.cnf");
        fs::write(
            &cnf,
            format!(
                "[ca]\ndefault_ca = the_ca\n[the_ca]\ndatabase = {db}/index.txt\n\
                 new_certs_dir = {db}\nrand_serial = yes\ndefault_md = sha256\n\
                 policy = any\nunique_subject = no\nemail_in_dn = no\n\
                 [any]\norganizationName = supplied\norganizationalUnitName = supplied\n\
                 serialNumber = supplied\ncommonName = optional\n{LEAF_EXTENSIONS}",
                db = db.display()
            ),
        )
        .expect("write ca.cnf");
        openssl(args![
            "ca",
            "-batch",
            "-config",
            &cnf,
            "-cert",
            self.node(issuer).ca.root_cert(),
            "-keyfile",
            &key,
            "-in",
            csr,
            "-out",
            out,
            "-startdate",
            start,
            "-enddate",
            end,
            "-extensions",
            "leaf",
            "-preserveDN",
            "-notext"
        ])
        .assert_success();
    }

    /// `peer-gateway keygen` for `name`'s DN plus `CN=cn` into `<file>.key`/`<file>.csr`
    /// in the temporary directory; returns (key, csr).
    pub fn keygen(&self, name: &str, cn: &str, file: &str) -> (PathBuf, PathBuf) {
        let key = self.path(&format!("{file}.key"));
        let csr = self.path(&format!("{file}.csr"));
        peer_gateway(args![
            "keygen",
            "--node-dir",
            &self.node(name).ca.dir,
            "--out-key",
            &key,
            "--out-csr",
            &csr,
            "--cn",
            cn
        ])
        .assert_success();
        (key, csr)
    }

    /// `timeout 10 openssl s_client -connect <name's listener> -tls1_3 -alpn peerlink/1
    /// -CAfile <name's root> <extra>` with stdin at end of file.
    pub fn s_client(&self, name: &str, extra: &[OsString]) -> Outcome {
        let node = self.node(name);
        let mut a = args![
            "10",
            "openssl",
            "s_client",
            "-connect",
            node.endpoint(),
            "-tls1_3",
            "-alpn",
            "peerlink/1",
            "-CAfile",
            node.ca.root_cert()
        ];
        a.extend(extra.iter().cloned());
        run(Command::new("timeout").args(&a))
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

/// A loopback TCP proxy whose first connection is held until every proxy of its group
/// has received its first connection (or `hold` has passed), then all are forwarded
/// at once. Put one in front of each gateway of a pair (as their `[peers]` endpoint
/// overrides) and both dials are in flight together: a true simultaneous open that
/// the tie-break must resolve. Later connections are forwarded at once.
pub struct GatedProxy {
    /// The port to dial.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Gate = Arc<(Mutex<usize>, Condvar)>;

impl GatedProxy {
    /// One proxy per target port, sharing one gate.
    pub fn group(targets: &[u16], hold: Duration) -> Vec<GatedProxy> {
        let gate: Gate = Arc::new((Mutex::new(0), Condvar::new()));
        let members = targets.len();
        targets
            .iter()
            .map(|&target| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
                listener.set_nonblocking(true).expect("nonblocking");
                let port = listener.local_addr().expect("addr").port();
                let stop = Arc::new(AtomicBool::new(false));
                let thread = {
                    let (stop, gate) = (stop.clone(), gate.clone());
                    std::thread::spawn(move || {
                        proxy_loop(listener, target, &stop, &gate, members, hold)
                    })
                };
                GatedProxy {
                    port,
                    stop,
                    thread: Some(thread),
                }
            })
            .collect()
    }
}

fn proxy_loop(
    listener: TcpListener,
    target: u16,
    stop: &AtomicBool,
    gate: &Gate,
    members: usize,
    hold: Duration,
) {
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => return,
        };
        let gated = std::mem::replace(&mut first, false);
        let gate = gate.clone();
        std::thread::spawn(move || {
            if gated {
                let (count, cv) = &*gate;
                let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
                *n += 1;
                cv.notify_all();
                let deadline = Instant::now() + hold;
                while *n < members && Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    n = cv
                        .wait_timeout(n, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            let _ = client.set_nonblocking(false);
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            pipe(client, upstream);
        });
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one = std::thread::spawn(move || copy_then_shutdown(a, b));
    copy_then_shutdown(b2, a2);
    let _ = one.join();
}

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_nodelay(true);
    let _ = to.set_nodelay(true);
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
