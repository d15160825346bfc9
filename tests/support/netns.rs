//! A small network of network namespaces for tests that need a real path
//! between two gateways: a NAT router, a host behind it, and ways to break the
//! path silently (flush the router's connection tracking, drop packets).
//!
//! ```text
//!  root namespace                 router namespace               host namespace
//!  (gateway a, the test)          (NAT, MASQUERADE)              (gateway b)
//!  10.N.1.1  <--- public veth --->  10.N.1.2
//!                                   10.N.2.1  <--- private veth --->  10.N.2.2 (default route)
//!  10.N.3.1  <------------------ management veth ------------------>  10.N.3.2
//! ```
//!
//! b reaches a only through the router, which masquerades b's connections as
//! 10.N.1.2 and drops packets that belong to no tracked connection (as home and
//! office routers do), so flushing its connection tracking
//! (`nf_conntrack_tcp_loose = 0`) silently cuts every established connection:
//! no RST, no ICMP, just retransmissions into the void. The test talks to b's
//! admin and application APIs over the management veth, which never crosses the
//! router. Nothing is routed to any other address: a is never given a route to
//! b's private network.
//!
//! Needs root, iproute2, iptables and conntrack (`.ci/run` installs them).
//! [`NatLab::create`] fails with what is missing; tests call [`NatLab::require`],
//! which panics under `CI=true` and skips (returns None) elsewhere. Every lab
//! removes its namespaces on drop, and a new lab first removes those of test
//! processes that died without cleaning up.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Serialises lab creation within a test process (address choice, stale clean-up).
static CREATING: Mutex<()> = Mutex::new(());

/// The namespaces, links and addresses of one lab.
#[derive(Debug)]
pub struct NatLab {
    /// Prefix of every name (`pl<pid hex>-<n>`).
    pub tag: String,
    /// The router's namespace.
    pub router_ns: String,
    /// The host behind the NAT (where gateway b runs).
    pub host_ns: String,
    /// Our end of the public veth: where gateway a listens.
    pub public_ip: Ipv4Addr,
    /// The router's public address (what a sees as b's source address).
    pub router_public_ip: Ipv4Addr,
    /// The host's private address.
    pub host_ip: Ipv4Addr,
    /// The host's management address (b's admin and application APIs).
    pub host_mgmt_ip: Ipv4Addr,
}

/// Runs `program args`, returning its stdout or what went wrong.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `program args` inside namespace `ns`.
fn sh_in(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    sh("ip", &full)
}

/// Removes the namespaces of labs whose test process is gone.
fn remove_stale_labs() {
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("pl") else {
            continue;
        };
        let Some((pid_hex, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = u32::from_str_radix(pid_hex, 16) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sh("ip", &["netns", "del", name]);
        }
    }
}

/// Whether any interface of the root namespace already uses `10.{octet}.x.x`.
fn subnet_in_use(octet: u8) -> bool {
    sh("ip", &["-4", "-o", "addr", "show"])
        .map(|text| text.contains(&format!(" 10.{octet}.")))
        .unwrap_or(true)
}

impl NatLab {
    /// Builds a lab, or says why it cannot (not root, a tool missing, no netns support).
    pub fn create() -> Result<NatLab, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let _guard = CREATING.lock().unwrap_or_else(|p| p.into_inner());
        for tool in ["ip", "iptables", "conntrack"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
            {
                return Err(format!(
                    "{tool} is not installed (apt-get install iproute2 iptables conntrack)"
                ));
            }
        }
        if !crate::running_as_root() {
            return Err("network namespaces need root".into());
        }
        remove_stale_labs();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("pl{pid:x}-{n}");
        let octet = (0..128u32)
            .map(|i| (64 + (pid.wrapping_mul(31).wrapping_add(n * 7 + i)) % 128) as u8)
            .find(|o| !subnet_in_use(*o))
            .ok_or("no free 10.x.0.0/16 subnet for the lab")?;
        let lab = NatLab {
            router_ns: format!("{tag}r"),
            host_ns: format!("{tag}h"),
            public_ip: Ipv4Addr::new(10, octet, 1, 1),
            router_public_ip: Ipv4Addr::new(10, octet, 1, 2),
            host_ip: Ipv4Addr::new(10, octet, 2, 2),
            host_mgmt_ip: Ipv4Addr::new(10, octet, 3, 2),
            tag,
        };
        // From here on, Drop removes whatever was made.
        lab.build(octet)?;
        Ok(lab)
    }

    /// A lab, or None (with a note on stderr) where one cannot be made; under
    /// `CI=true` a missing capability fails the test instead.
    pub fn require(test: &str) -> Option<NatLab> {
        match NatLab::create() {
            Ok(lab) => Some(lab),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{test}: cannot build the network namespaces this test needs: {e}")
            }
            Err(e) => {
                eprintln!("skipping {test}: cannot build network namespaces: {e}");
                None
            }
        }
    }

    fn build(&self, octet: u8) -> Result<(), String> {
        let (r, h, t) = (&self.router_ns, &self.host_ns, &self.tag);
        let net = |third: u8, host: u8| format!("10.{octet}.{third}.{host}/24");
        sh("ip", &["netns", "add", r])?;
        sh("ip", &["netns", "add", h])?;
        for ns in [r, h] {
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Public: root <-> router.
        let (p0, p1) = (format!("{t}p0"), format!("{t}p1"));
        sh(
            "ip",
            &[
                "link", "add", &p0, "type", "veth", "peer", "name", &p1, "netns", r,
            ],
        )?;
        sh("ip", &["addr", "add", &net(1, 1), "dev", &p0])?;
        sh("ip", &["link", "set", &p0, "up"])?;
        sh("ip", &["-n", r, "addr", "add", &net(1, 2), "dev", &p1])?;
        sh("ip", &["-n", r, "link", "set", &p1, "up"])?;
        // Private: router <-> host, the host's default route through the router.
        let (q0, q1) = (format!("{t}q0"), format!("{t}q1"));
        sh(
            "ip",
            &[
                "link", "add", &q1, "netns", r, "type", "veth", "peer", "name", &q0, "netns", h,
            ],
        )?;
        sh("ip", &["-n", r, "addr", "add", &net(2, 1), "dev", &q1])?;
        sh("ip", &["-n", r, "link", "set", &q1, "up"])?;
        sh("ip", &["-n", h, "addr", "add", &net(2, 2), "dev", &q0])?;
        sh("ip", &["-n", h, "link", "set", &q0, "up"])?;
        let via = format!("10.{octet}.2.1");
        sh("ip", &["-n", h, "route", "add", "default", "via", &via])?;
        // Management: root <-> host, never through the router.
        let (m0, m1) = (format!("{t}m0"), format!("{t}m1"));
        sh(
            "ip",
            &[
                "link", "add", &m0, "type", "veth", "peer", "name", &m1, "netns", h,
            ],
        )?;
        sh("ip", &["addr", "add", &net(3, 1), "dev", &m0])?;
        sh("ip", &["link", "set", &m0, "up"])?;
        sh("ip", &["-n", h, "addr", "add", &net(3, 2), "dev", &m1])?;
        sh("ip", &["-n", h, "link", "set", &m1, "up"])?;
        // The router: forward, masquerade the host, drop what no connection owns.
        sh_in(r, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        sh_in(
            r,
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &p1,
                "-j",
                "MASQUERADE",
            ],
        )?;
        for chain in ["FORWARD", "INPUT"] {
            sh_in(
                r,
                "iptables",
                &[
                    "-A",
                    chain,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "INVALID",
                    "-j",
                    "DROP",
                ],
            )?;
        }
        // Set after the first rule loaded conntrack in this namespace: mid-stream
        // packets of a forgotten connection are INVALID, not picked up again.
        sh_in(
            r,
            "sysctl",
            &["-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
        )?;
        Ok(())
    }

    /// `ip netns exec <host namespace>`: the prefix that starts a program behind the NAT.
    pub fn host_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.host_ns.clone(),
        ]
    }

    /// Forgets every connection the router tracks: established connections
    /// through it are cut silently; new ones work.
    pub fn flush_conntrack(&self) {
        sh_in(&self.router_ns, "conntrack", &["-F"])
            .unwrap_or_else(|e| panic!("flushing the NAT's connection tracking: {e}"));
    }

    /// Drops every packet through the router (the path is down, silently).
    pub fn cut_path(&self) {
        sh_in(
            &self.router_ns,
            "iptables",
            &["-I", "FORWARD", "1", "-j", "DROP"],
        )
        .unwrap_or_else(|e| panic!("cutting the path: {e}"));
    }

    /// Undoes [`NatLab::cut_path`].
    pub fn restore_path(&self) {
        sh_in(
            &self.router_ns,
            "iptables",
            &["-D", "FORWARD", "-j", "DROP"],
        )
        .unwrap_or_else(|e| panic!("restoring the path: {e}"));
    }

    /// Established TCP connections with local port `port`, in the root namespace
    /// (`None`) or the host namespace.
    pub fn established(&self, in_host: bool, port: u16) -> usize {
        let filter = format!("( sport = :{port} or dport = :{port} )");
        let args = ["-Htn", "state", "established", filter.as_str()];
        let out = if in_host {
            sh_in(&self.host_ns, "ss", &args)
        } else {
            sh("ss", &args)
        };
        out.map(|text| text.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(usize::MAX)
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and with them their peers here.
        for ns in [&self.host_ns, &self.router_ns] {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}
