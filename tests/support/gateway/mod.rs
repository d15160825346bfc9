//! Helpers for the `peer-gateway` end-to-end tests: a network of nodes whose CAs are
//! made and cross-signed with the real `ca-tool`, gateway processes started from the
//! built binary, their admin API, and bounded waits.
//!
//! Here: timings, the built `peer-gateway`, ports, bounded waits, a [`Node`] and
//! its config. The admin API client is in `admin.rs`, the network and its
//! processes in `net.rs` ([`Net`]), extra keys and certificates in `certs.rs`, the
//! simultaneous-dial proxy in `proxy.rs` ([`GatedProxy`]).
//!
//! Every gateway's stderr (its log) goes to a file in the network's temporary
//! directory. When a test fails, [`Net`]'s `Drop` kills the gateways that are still
//! running and prints every log and the last status it could read, so a failure
//! explains itself.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{binary, run_program, CaFixture, Outcome};

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

/// Starts `peer-gateway run --config <config>` (through `launcher`, e.g. `ip netns
/// exec NS`, when not empty) with stdout and stderr appended to `log`, after a line
/// that says the test harness started `what` (e.g. "gateway a").
pub fn spawn_gateway(what: &str, config: &Path, log: &Path, launcher: &[String]) -> Child {
    let mut log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    writeln!(
        log_file,
        "=== test harness: starting {what} with {}",
        config.display()
    )
    .expect("write log");
    let stdout = log_file.try_clone().expect("clone log handle");
    let mut command = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(peer_gateway_path());
            c
        }
        None => Command::new(peer_gateway_path()),
    };
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("PEERLINK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start peer-gateway for {what}: {e}"))
}

/// Waits until `child` exits, for at most `within`; kills and reaps it and says so
/// ("did not exit within ...") when it does not.
pub fn wait_exit(child: &mut Child, within: Duration) -> Result<ExitStatus, String> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("cannot wait: {e}"))? {
            return Ok(status);
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not exit within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nobody listens on right now. Ports are never handed out twice in
/// one test process, so tests running in parallel do not collide.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // Below the kernel's ephemeral range: a port from that range can be taken by
    // any outgoing connection (a gateway redialing, a flood test) between this
    // check and the gateway binding it seconds later.
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut x = u64::from(std::process::id()) * 0x9E37_79B9 + given.len() as u64 + 1;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = low + (x % u64::from(high - low)) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
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

mod admin;
mod certs;
mod net;
mod proxy;

pub use admin::{admin_status, field, http, peer_entry, refusals};
pub use net::Net;
pub use proxy::GatedProxy;
