//! Swaptacular's own software for the interoperability tests: swpt_stomp
//! (installed by `scripts/swpt-venv` into `target/swpt-venv` from the
//! unmodified snapshot in `../shared/third_party/swpt_stomp`), RabbitMQ with a
//! virtual host of the test's own (removed on drop), and copies of swpt_stomp's
//! test node directories (AA accounting authority `1234abcd`, CA creditors
//! agent, DA debtors agent) whose published STOMP servers the test rewrites.
//!
//! [`SwptLab::require`] fails under `CI=true` when something is missing and
//! skips (None, with a note) elsewhere.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod gateway;

pub use gateway::{request_id, take_inbox, Gateway};

/// The node id of test_data's accounting authority.
pub const AA_ID: &str = "1234abcd";
/// The node id of test_data's creditors agent.
pub const CA_ID: &str = "5921983fe0e6eb987aeedca54ad3c708";
/// A peer of the AA that is DEACTIVATED in test_data.
pub const DEACTIVATED_ID: &str = "09cab36b6079e09c32a9dfd60446c469";

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A RabbitMQ vhost, swpt_stomp, and node directories for one test.
pub struct SwptLab {
    /// The virtual environment's bin directory.
    pub bin: PathBuf,
    /// The vhost (deleted on drop).
    pub vhost: String,
    /// Where the node directories were copied (AA, CA, DA).
    pub data: PathBuf,
    _dir: tempfile::TempDir,
    children: Vec<(String, Child, PathBuf)>,
}

fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

impl SwptLab {
    /// Sets up what the test needs, or says why it cannot.
    pub fn create() -> Result<SwptLab, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let status = Command::new(root().join("scripts/swpt-venv"))
            .output()
            .map_err(|e| format!("scripts/swpt-venv: {e}"))?;
        if !status.status.success() {
            return Err(format!(
                "scripts/swpt-venv failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            ));
        }
        let bin = root().join("target/swpt-venv/bin");
        sh("rabbitmqctl", &["status"]).map_err(|e| format!("RabbitMQ is not running: {e}"))?;
        let plugins = sh("rabbitmq-plugins", &["list", "-e", "-m"])?;
        if !plugins.contains("rabbitmq_random_exchange") {
            sh("rabbitmq-plugins", &["enable", "rabbitmq_random_exchange"])?;
        }
        let vhost = format!(
            "peerlink-swpt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh("rabbitmqctl", &["add_vhost", &vhost])?;
        sh(
            "rabbitmqctl",
            &["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"],
        )?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("nodes");
        let src = root().join("../shared/third_party/swpt_stomp/test_data");
        copy_dir(&src, &data).map_err(|e| format!("copy {}: {e}", src.display()))?;
        Ok(SwptLab {
            bin,
            vhost,
            data,
            _dir: dir,
            children: Vec::new(),
        })
    }

    /// A lab, or None with a note; under `CI=true` a failure.
    pub fn require(test: &str) -> Option<SwptLab> {
        match SwptLab::create() {
            Ok(lab) => Some(lab),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{test}: cannot set up Swaptacular's software: {e}")
            }
            Err(e) => {
                eprintln!("skipping {test}: {e}");
                None
            }
        }
    }

    /// The AMQP URL of the test's vhost.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.vhost)
    }

    /// A node's directory (`AA`, `CA`, `DA`, or one added with [`SwptLab::add_node`]).
    pub fn node(&self, name: &str) -> PathBuf {
        self.data.join(name)
    }

    /// Copies node directory `from` (made by swpt_ca_scripts) into the lab as
    /// `name`, so that swpt_stomp can run on it without touching the original.
    pub fn add_node(&self, name: &str, from: &Path) -> PathBuf {
        let to = self.node(name);
        copy_dir(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        to
    }

    /// Makes `node`'s copy say that partner `peer` runs its STOMP servers at
    /// `servers` (its `peers/<peer>/nodeinfo/stomp.toml`).
    pub fn set_peer_servers(&self, node: &str, peer: &str, servers: &[String]) {
        let path = self
            .node(node)
            .join("peers")
            .join(peer)
            .join("nodeinfo/stomp.toml");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let list: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
        let mut out = format!("servers = [{}]\n", list.join(", "));
        let mut in_servers = false;
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with("servers") {
                in_servers = !t.contains(']');
                continue;
            }
            if in_servers {
                if t.contains(']') {
                    in_servers = false;
                }
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        std::fs::write(&path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    fn envs(&self, node: &str) -> Vec<(String, String)> {
        let dir = self.node(node);
        vec![
            (
                "SWPT_NODEDATA_URL".into(),
                format!("file://{}", dir.display()),
            ),
            (
                "SWPT_SERVER_CERT".into(),
                dir.join("server.crt").display().to_string(),
            ),
            (
                "SWPT_SERVER_KEY".into(),
                dir.join("server.key").display().to_string(),
            ),
            ("PROTOCOL_BROKER_URL".into(), self.amqp_url()),
            ("APP_LOG_LEVEL".into(), "info".into()),
        ]
    }

    /// Runs a swpt_stomp command to completion as `node`.
    pub fn run(&self, node: &str, program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join(program))
            .args(args)
            .envs(self.envs(node))
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{program} {} failed: {text}", args.join(" ")))
        }
    }

    /// Starts a swpt_stomp daemon (`swpt-server`, `swpt-client`) as `node`;
    /// its output goes to a log file, killed on drop. Returns its index.
    pub fn start(
        &mut self,
        node: &str,
        program: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> usize {
        let log = self
            ._dir
            .path()
            .join(format!("{program}-{}.log", self.children.len()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(self.bin.join(program))
            .args(args)
            .envs(self.envs(node))
            .envs(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        self.children.push((program.to_string(), child, log));
        self.children.len() - 1
    }

    /// The log of daemon `i` so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.children[i].2).unwrap_or_default()
    }

    /// Whether daemon `i` still runs.
    pub fn running(&mut self, i: usize) -> bool {
        self.children[i].1.try_wait().ok().flatten().is_none()
    }

    /// Stops daemon `i` (SIGKILL).
    pub fn stop(&mut self, i: usize) {
        let _ = self.children[i].1.kill();
        let _ = self.children[i].1.wait();
    }

    /// Runs a Python snippet with the venv's interpreter (aio_pika is there),
    /// with `AMQP_URL` set; returns its standard output.
    pub fn python(&self, code: &str) -> Result<String, String> {
        let mut child = Command::new(self.bin.join("python"))
            .arg("-")
            .env("AMQP_URL", self.amqp_url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("python: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(code.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "python failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Publishes `bodies` (JSON, of message type `message_type`) straight into
    /// `queue`, persistent, as a node's own software would.
    pub fn publish(&self, queue: &str, message_type: &str, bodies: &[String]) {
        let list = serde_json::to_string(bodies).expect("json");
        self.python(&format!(
            r#"
import asyncio, os, json, aio_pika
async def main():
    c = await aio_pika.connect(os.environ["AMQP_URL"])
    ch = await c.channel()
    for b in json.loads({list:?}):
        await ch.default_exchange.publish(aio_pika.Message(b.encode(), type={message_type:?}, content_type="application/json", delivery_mode=2), {queue:?})
    await c.close()
asyncio.run(main())
"#
        ))
        .expect("publish");
    }

    /// Declares topic exchange `exchange` (as a node's own set-up declares its
    /// `accounts_in`, `creditors_in`, ...) and a durable `queue` bound to
    /// everything it receives.
    pub fn queue_bound_to(&self, exchange: &str, queue: &str) {
        self.python(&format!(
            r##"
import asyncio, os, aio_pika
async def main():
    c = await aio_pika.connect(os.environ["AMQP_URL"])
    ch = await c.channel()
    ex = await ch.declare_exchange({exchange:?}, "topic", durable=True)
    q = await ch.declare_queue({queue:?}, durable=True)
    await q.bind(ex, "#")
    await c.close()
asyncio.run(main())
"##
        ))
        .expect("declare an exchange and a queue");
    }

    /// Messages ready in `queue` (which must exist).
    pub fn queue_depth(&self, queue: &str) -> Result<u64, String> {
        let out = self.python(&format!(
            r#"
import asyncio, os, aio_pika
async def main():
    c = await aio_pika.connect(os.environ["AMQP_URL"])
    ch = await c.channel()
    q = await ch.declare_queue({queue:?}, passive=True)
    print(q.declaration_result.message_count)
    await c.close()
asyncio.run(main())
"#
        ))?;
        out.trim().parse().map_err(|e| format!("{out:?}: {e}"))
    }

    /// Waits (bounded) until `probe` holds.
    pub fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&mut SwptLab) -> Result<(), String>,
    ) {
        let start = Instant::now();
        loop {
            match probe(self) {
                Ok(()) => return,
                Err(e) if start.elapsed() > timeout => {
                    for i in 0..self.children.len() {
                        eprintln!("--- {} log ---\n{}", self.children[i].0, self.log(i));
                    }
                    panic!("{what} not within {timeout:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for SwptLab {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = sh("rabbitmqctl", &["delete_vhost", &self.vhost]);
    }
}

/// A creditor of test_data's creditors agent as the agent itself numbers it.
pub const CA_OWN_CREDITOR: u64 = 0x0000_0800_0000_0001;
/// The same creditor as the accounting authority knows it (the subnet it gave the
/// agent): swpt_stomp's client translates one into the other; a gateway standing
/// in for it leaves that to the node's software (docs/swaptacular.md).
pub const CA_CREDITOR_AT_AA: u64 = 0x0000_0100_0000_0001;
/// A debtor of test_data's debtors agent.
pub const DEBTOR: u64 = 0x1234_ABCD_0000_0001;

/// A PrepareTransfer message (valid for swpt_stomp's schemas) numbered `n` (its
/// `coordinator_request_id`) from `creditor` to [`DEBTOR`].
pub fn prepare_transfer(n: u64, creditor: u64) -> String {
    format!(
        r#"{{"type": "PrepareTransfer", "debtor_id": {DEBTOR}, "creditor_id": {creditor}, "min_locked_amount": 1000, "max_locked_amount": 2000, "recipient": "RECIPIENT", "final_interest_rate_ts": "9999-12-31T23:59:59+00:00", "max_commit_delay": 100000, "coordinator_type": "direct", "coordinator_id": {creditor}, "coordinator_request_id": {n}, "ts": "2023-01-01T12:00:00+00:00"}}"#
    )
}
