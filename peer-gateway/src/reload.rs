//! Reloading certificates, CRLs and the peer list without a restart.
//!
//! Triggered by SIGHUP, by a change under `node_dir` or of the certificate
//! files (polled), and by a newer CRL from a partner. A reload builds a new
//! trust snapshot; if that fails the old one stays and healthy links are
//! untouched. Links of partners that are removed, deactivated or revoked are
//! closed at once; every other link stays up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use peerlink_tls::{
    identify_client, verify_server, NodeTrust, PeerTls, ServerIdentity, TlsSetupError, TrustError,
};

use crate::config::Config;
use crate::crl_store::CrlStore;
use crate::dialer::Dialer;
use crate::frame::GoodbyeCode;
use crate::tiebreak::Direction;

/// The files a trust snapshot is built from.
#[derive(Debug, Clone)]
pub struct TrustSources {
    /// The node's CA directory (public part).
    pub node_dir: PathBuf,
    /// The gateway's certificate.
    pub server_cert: PathBuf,
    /// The gateway's key.
    pub server_key: PathBuf,
}

impl TrustSources {
    /// The files `config` names.
    pub fn of(config: &Config) -> TrustSources {
        TrustSources {
            node_dir: config.node_dir.clone(),
            server_cert: config.server_cert.clone(),
            server_key: config.server_key.clone(),
        }
    }
}

/// Why a trust snapshot could not be built (the previous one stays in force).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The CA directory, the server certificate or its key.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The TLS configurations.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// Loads the trust snapshot and TLS configuration from the configured files.
pub async fn load_tls(sources: &TrustSources, crls: &CrlStore) -> Result<PeerTls, LoadError> {
    let trust = NodeTrust::load(&sources.node_dir, &crls.load_all()).await?;
    let identity = ServerIdentity::load(&sources.server_cert, &sources.server_key, &trust)?;
    Ok(PeerTls::new(Arc::new(trust), Arc::new(identity))?)
}

/// What reloading needs: the links' context (trust, peer table, CRLs), the
/// dialer (to start supervisors for new partners), the files, the expiry
/// thresholds to warn about after a reload.
pub struct Reloader {
    /// Starts supervisors; its link context holds the trust and the peer table.
    pub dialer: Dialer,
    /// The files.
    pub sources: TrustSources,
    /// How often to look at them.
    pub poll: Duration,
    /// Expiry warning thresholds (days).
    pub expiry_warning_days: Vec<u32>,
    /// Serialises reloads.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader of `sources`, polled every `poll`.
    pub fn new(
        dialer: Dialer,
        sources: TrustSources,
        poll: Duration,
        expiry_warning_days: Vec<u32>,
    ) -> Reloader {
        Reloader {
            dialer,
            sources,
            poll,
            expiry_warning_days,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reloads; logs and keeps the current configuration on failure (returns false).
    pub async fn reload(&self, cause: &str) -> bool {
        let ctx = &self.dialer.links;
        let _guard = self.lock.lock().await;
        let tls = match load_tls(&self.sources, &ctx.crls).await {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(cause, error = %e, "reload failed; keeping the current configuration");
                return false;
            }
        };
        let old_crl = ctx.trust.current().trust().crl_der.clone();
        ctx.trust.replace(tls);
        let tls = ctx.trust.current();
        let trust = tls.trust();
        let now = time::OffsetDateTime::now_utc();

        // Partners that appeared or disappeared.
        for id in trust.peers.keys() {
            if ctx.peers.ensure(id) {
                self.dialer.spawn(id.clone());
            }
        }
        for id in ctx.peers.ids() {
            if !trust.peers.contains_key(&id) {
                tracing::info!(peer = %id, "partner removed from node_dir; closing its link");
                ctx.peers.remove(&id);
            }
        }
        // Live links must still pass with the new trust (revocations, deactivations).
        for (id, link) in ctx.peers.links() {
            let Some((leaf, rest)) = link.peer_chain.split_first() else {
                continue;
            };
            let verdict = match link.direction {
                Direction::Inbound => identify_client(trust, leaf, rest, now).and_then(|who| {
                    if who == id {
                        Ok(())
                    } else {
                        Err(peerlink_tls::Refusal {
                            reason: "wrong_peer",
                            detail: format!("the link's certificate now identifies {who}"),
                            peer: Some(id.clone()),
                            claims: None,
                        })
                    }
                }),
                Direction::Outbound => verify_server(trust, &id, leaf, rest, now),
            };
            let still_active = trust
                .peers
                .get(&id)
                .is_some_and(|p| p.status == peerlink_tls::PeerStatus::Active);
            if let Err(refusal) = verdict {
                tracing::warn!(peer = %id, reason = refusal.reason, detail = %refusal.detail, "closing link after reload");
                ctx.record_refusal(refusal.reason, Some(&id), &refusal.detail);
                link.close(GoodbyeCode::Revoked, "certificate no longer accepted");
            } else if !still_active {
                tracing::warn!(peer = %id, "closing link: partner deactivated");
                ctx.record_refusal("peer_inactive", Some(&id), "partner revoked or deactivated");
                link.close(GoodbyeCode::Revoked, "partner deactivated");
            }
        }
        if trust.crl_der != old_crl {
            if let Some(crl) = &trust.crl_der {
                for (_, link) in ctx.peers.links() {
                    let _ = link
                        .commands
                        .try_send(crate::link::LinkCommand::SendCrl(crl.clone()));
                }
            }
        }
        ctx.peers.wake_all();
        tracing::info!(cause, peers = trust.peers.len(), "reloaded");
        crate::expiry::log_warnings(&ctx.trust, &self.expiry_warning_days);
        true
    }

    /// Polls the files and reloads on change; also reloads on SIGHUP and when a
    /// partner's newer CRL was stored.
    pub async fn watch(self: Arc<Self>) {
        let ctx = &self.dialer.links;
        let files = vec![
            self.sources.server_cert.clone(),
            self.sources.server_key.clone(),
        ];
        let node_dir = self.sources.node_dir.clone();
        let mut last = snapshot(&files, &node_dir);
        let mut tick = tokio::time::interval(self.poll);
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; relying on file polling");
                None
            }
        };
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let cause = tokio::select! {
                _ = tick.tick() => {
                    let now = snapshot(&files, &node_dir);
                    if now != last {
                        last = now;
                        "files changed"
                    } else if retry_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                        "retrying a failed reload"
                    } else {
                        continue;
                    }
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    last = snapshot(&files, &node_dir);
                    "SIGHUP"
                }
                _ = ctx.signals.reload.notified() => "partner sent a newer CRL",
                _ = ctx.shutdown.cancelled() => return,
            };
            retry_at = if self.reload(cause).await {
                None
            } else {
                Some(tokio::time::Instant::now() + RETRY_FAILED_RELOAD)
            };
        }
    }
}

/// Delay before retrying a failed reload (e.g. files caught half copied).
const RETRY_FAILED_RELOAD: Duration = Duration::from_secs(3);

/// A cheap fingerprint of everything a reload depends on, taken every
/// `reload_poll_ms`: the server certificate and key, our root, CRL and CA
/// database, and the directories under `peers/` rather than every file in them.
/// Every change `ca-tool` makes writes the database and replaces files by
/// renaming (which changes their directory), and both documented ways of
/// copying the public part (rsync, `cp -a`) rewrite the database; so one stat
/// per partner suffices, where a stat per file plus a listing per partner cost
/// ~1 % of a core at 1,000 partners doing nothing else.
fn snapshot(paths: &[PathBuf], node_dir: &Path) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    let mut files: Vec<PathBuf> = paths.to_vec();
    files.push(node_dir.join(peerlink_pki::layout::ROOT_CERT));
    files.push(node_dir.join(peerlink_pki::layout::CRL_FILE));
    files.push(node_dir.join(peerlink_pki::layout::DB_FILE));
    let peers = node_dir.join(peerlink_pki::layout::PEERS_DIR);
    if let Ok(entries) = std::fs::read_dir(&peers) {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    files.push(peers);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, meta)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sees_what_ca_tool_and_copies_change() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path();
        let peer = node.join(peerlink_pki::layout::PEERS_DIR).join("0b0b");
        std::fs::create_dir_all(&peer).unwrap();
        std::fs::write(node.join(peerlink_pki::layout::DB_FILE), b"db").unwrap();
        std::fs::write(peer.join("root.crt"), b"old").unwrap();
        let cert = node.join("gw.crt");
        std::fs::write(&cert, b"cert").unwrap();
        let files = vec![cert.clone()];
        let before = snapshot(&files, node);
        assert_eq!(snapshot(&files, node), before, "nothing changed");

        // A file replaced by renaming into a partner's directory (ca-tool, rsync).
        std::fs::write(peer.join("tmp"), b"new").unwrap();
        std::fs::rename(peer.join("tmp"), peer.join("root.crt")).unwrap();
        let renamed = snapshot(&files, node);
        assert_ne!(renamed, before);

        // A new partner directory.
        std::fs::create_dir(node.join(peerlink_pki::layout::PEERS_DIR).join("0c0c")).unwrap();
        let added = snapshot(&files, node);
        assert_ne!(added, renamed);

        // The database rewritten in place (cp -a), and the server certificate.
        std::fs::write(node.join(peerlink_pki::layout::DB_FILE), b"db, changed").unwrap();
        let db = snapshot(&files, node);
        assert_ne!(db, added);
        std::fs::write(&cert, b"renewed cert").unwrap();
        assert_ne!(snapshot(&files, node), db);
    }
}
