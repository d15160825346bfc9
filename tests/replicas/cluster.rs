//! Node a as two `peer-gateway` replica processes (a1, a2) sharing one fresh
//! PostgreSQL database, and node b (SQLite) that knows both replicas' endpoints:
//! the processes, their configs, and the start-up that checks who owns b's link.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use peerlink_e2e::gateway::{
    admin_status, free_port, read_lossy, spawn_gateway, wait_exit, wait_for, Net, Node, WAIT,
};
use peerlink_e2e::messaging::{
    messaging_config_text, tail, write_messaging_config, Api, PgDatabase, Ports,
};
use peerlink_e2e::run_program;

use super::status::{lease_in_db, link_owner, replica_id};
use super::{lock, NAMES};

/// One gateway process of node a, with its own ports, config, state and log.
pub(crate) struct Replica {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    pub(crate) admin_port: u16,
    pub(crate) api_port: u16,
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
}

impl Replica {
    pub(crate) fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn admin(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    pub(crate) fn api(&self) -> Api {
        Api::new(self.api_port)
    }

    pub(crate) fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub(crate) fn start(&mut self) {
        assert!(!self.running(), "replica {} is already running", self.name);
        let what = format!("replica {}", self.name);
        self.child = Some(spawn_gateway(&what, &self.config, &self.log, &[]));
    }

    /// SIGKILL and reap.
    pub(crate) fn kill9(&mut self) {
        let mut child = self.child.take().expect("replica running");
        child.kill().expect("kill -9 replica");
        let status = child.wait().expect("reap replica");
        assert!(
            status.code().is_none(),
            "replica {} was not killed: {status}",
            self.name
        );
    }

    /// Sends `signal` (e.g. "STOP") to the running replica.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("replica running").id();
        run_program("kill", [format!("-{signal}"), pid.to_string()]).assert_success();
    }

    /// SIGTERM; Err unless it exits 0 within [`WAIT`].
    pub(crate) fn terminate(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        run_program("kill", ["-TERM".to_string(), child.id().to_string()]).assert_success();
        match wait_exit(&mut child, WAIT) {
            Ok(status) if status.code() == Some(0) => Ok(()),
            Ok(status) => Err(format!(
                "replica {} exited with {status} on SIGTERM",
                self.name
            )),
            Err(e) => Err(format!("replica {} {e} of SIGTERM", self.name)),
        }
    }
}

/// The replicas of node a; killed on drop, logs printed when the test fails.
pub(crate) struct Replicas(pub(crate) Vec<Replica>);

impl Drop for Replicas {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for r in &mut self.0 {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if failing {
            for r in &self.0 {
                eprintln!(
                    "--- replica {} (listen {}, admin {}, api {}): last 300 log lines ---\n{}",
                    r.name,
                    r.endpoint(),
                    r.admin(),
                    r.api_port,
                    tail(&read_lossy(&r.log), 300)
                );
            }
        }
    }
}

/// Config of replica `name` of node a: a's node directory, certificate and key,
/// its own ports and state directory, the shared `database_url`.
pub(crate) fn replica_config(a: &Node, r: &Replica, database_url: &str, link: &str) -> String {
    let ports = Ports {
        listen: r.port,
        admin: r.admin_port,
        api: r.api_port,
    };
    let state_dir = format!("{}-state", r.name);
    messaging_config_text(
        a,
        ports,
        &state_dir,
        database_url,
        "max_message_bytes = 65536\n",
        link,
    )
}

/// Node a as two replicas sharing one fresh PostgreSQL database, node b as one
/// gateway on SQLite whose config lists both replicas' endpoints. Fields drop in
/// declaration order: the replicas first, then the network (b), then the database.
pub(crate) struct Cluster {
    pub(crate) replicas: Mutex<Replicas>,
    pub(crate) net: Net,
    pub(crate) db: PgDatabase,
    /// Name in `net` of the replicated node ("a" unless roles were swapped).
    pub(crate) a_name: &'static str,
    /// Name in `net` of the partner node.
    pub(crate) b_name: &'static str,
    pub(crate) aid: String,
    pub(crate) bid: String,
    pub(crate) admins: [SocketAddr; 2],
    pub(crate) a_apis: [Api; 2],
    pub(crate) b_api: Api,
    pub(crate) b_admin: SocketAddr,
}

impl Cluster {
    /// Makes the nodes (real `ca-tool`), the database and the configs; `link` is
    /// the `[link]` table of every gateway. With `partner_id_smaller`, the node
    /// with the larger id is the replicated one (node ids are random).
    pub(crate) fn new(link: &str, partner_id_smaller: bool) -> Cluster {
        let db = PgDatabase::create("replicas");
        let net = Net::mesh(&["a", "b"]);
        let (a_name, b_name) = if partner_id_smaller && net.id("a") < net.id("b") {
            ("b", "a")
        } else {
            ("a", "b")
        };
        let (aid, bid) = (net.id(a_name), net.id(b_name));
        let a = net.node(a_name);
        let replicas: Vec<Replica> = NAMES
            .iter()
            .enumerate()
            .map(|(i, &name)| {
                // a1 uses the ports of a's bundle; a2 its own.
                let (port, admin_port, api_port) = if i == 0 {
                    (a.port, a.admin_port, a.api_port)
                } else {
                    (free_port(), free_port(), free_port())
                };
                Replica {
                    name,
                    port,
                    admin_port,
                    api_port,
                    config: net.path(&format!("{name}.toml")),
                    log: net.path(&format!("{name}.log")),
                    child: None,
                }
            })
            .collect();
        for r in &replicas {
            fs::write(&r.config, replica_config(a, r, &db.url, link))
                .expect("write replica config");
        }
        let admins = [replicas[0].admin(), replicas[1].admin()];
        let a_apis = [replicas[0].api(), replicas[1].api()];
        // b dials both replicas: a `[peers."<a>"]` table before `[link]`.
        let b_top = format!(
            "max_message_bytes = 65536\n[peers.\"{aid}\"]\nendpoints = [\"{}\", \"{}\"]\n",
            replicas[0].endpoint(),
            replicas[1].endpoint()
        );
        let b_url = format!("sqlite://{}", net.path("b-messages.db").display());
        let b = net.node(b_name);
        write_messaging_config(b, &b_url, &b_top, link);
        let (b_api, b_admin) = (Api::of(b), b.admin());
        Cluster {
            replicas: Mutex::new(Replicas(replicas)),
            net,
            db,
            a_name,
            b_name,
            aid,
            bid,
            admins,
            a_apis,
            b_api,
            b_admin,
        }
    }

    /// Starts both replicas and b at once (both replicas migrate the same database
    /// together) and waits until b shows a connected, one replica shows b
    /// connected and the other standby, and the lease row names the first.
    /// Returns the owner's index and the time it took.
    pub(crate) fn start(&mut self, timeout: Duration) -> (usize, Duration) {
        for r in &mut lock(&self.replicas).0 {
            r.start();
        }
        self.net.start(self.b_name);
        let (admins, bid) = (self.admins, self.bid.clone());
        let (replicas, net, a_name, b_name) = (&self.replicas, &self.net, self.a_name, self.b_name);
        let (owner, took) = wait_for(
            "b connected to a, one replica connected to b and the other standby",
            timeout,
            || {
                for r in &mut lock(replicas).0 {
                    if !r.running() {
                        panic!("replica {} exited during start-up", r.name);
                    }
                }
                net.check_state(b_name, a_name, &["connected"])?;
                link_owner(&admins, &bid)
            },
        );
        for (i, admin) in admins.iter().enumerate() {
            let status = admin_status(*admin).expect("replica status");
            assert_eq!(status["store"], "postgres", "{} status: {status}", NAMES[i]);
            assert_eq!(
                status["node_id"],
                self.aid.as_str(),
                "{} status: {status}",
                NAMES[i]
            );
        }
        let ids = [
            replica_id(admins[0]).expect("a1 replica id"),
            replica_id(admins[1]).expect("a2 replica id"),
        ];
        assert_ne!(
            ids[0], ids[1],
            "the replicas must have distinct replica ids"
        );
        let holder = lease_in_db(&self.db.url, &bid).expect("lease row");
        assert_eq!(
            holder, ids[owner],
            "the lease in link_leases must name the replica showing b connected ({})",
            NAMES[owner]
        );
        (owner, took)
    }
}
