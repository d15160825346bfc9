//! One gateway process: opens the store, binds the listeners, starts every
//! task (per-partner supervisors, the peer listener, reload, expiry, leases,
//! the outbox watch, the admin and application APIs) and stops them on
//! SIGTERM/SIGINT after saying goodbye to every partner.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::api::{Api, Limits};
use crate::config::{Config, ConfigError};
use crate::crl_store::CrlStore;
use crate::dialer::Dialer;
use crate::leases::Leases;
use crate::link::LinkContext;
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::reload::{LoadError, Reloader, TrustSources};
use crate::signals::Signals;
use crate::store::committer::Committer;
use crate::store::{Store, StoreError};
use crate::trust::TrustHandle;
use crate::{admin, api, expiry, listener, outbox_watch};

/// Why the gateway could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory for partners' CRLs.
    #[error(transparent)]
    CrlStore(#[from] peerlink_pki::fsutil::FsError),
    /// The CA directory, the server certificate or key.
    #[error(transparent)]
    Trust(#[from] LoadError),
    /// A listening address.
    #[error("cannot listen on {what}{addr}: {source}")]
    Listen {
        /// Which one ("", "admin address ", "api_listen ").
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The message store.
    #[error("cannot open the message store: {0}")]
    Store(#[from] StoreError),
    /// Signal handling.
    #[error("cannot listen for stop signals: {0}")]
    Signals(std::io::Error),
}

fn listen_error(
    what: &'static str,
    addr: SocketAddr,
) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Listen { what, addr, source }
}

/// Runs the gateway configured by `config_path` until SIGTERM or SIGINT.
pub async fn run(config_path: &std::path::Path) -> Result<(), ServerError> {
    let config = Config::load(config_path)?;
    let crls = Arc::new(CrlStore::open(&config.state_dir)?);
    let sources = TrustSources::of(&config);
    let tls = crate::reload::load_tls(&sources, &crls).await?;
    let listener = bind_with_backlog(config.listen, config.link.accept_backlog)
        .map_err(listen_error("", config.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(listen_error("admin address ", config.admin_listen))?;
    let stomp_listener = match config.stomp.listen {
        Some(addr) => Some(
            bind_with_backlog(addr, config.link.accept_backlog)
                .map_err(listen_error("[stomp] listen ", addr))?,
        ),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let store =
        Arc::new(Store::open_observed(&config.database_url, metrics.commit_latency()).await?);
    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(listen_error("api_listen ", config.api_listen))?;

    // The shared parts; each task gets the ones it uses.
    let settings = Arc::new(config.link.clone());
    let stomp = Arc::new(config.stomp.clone());
    let trust = Arc::new(TrustHandle::new(tls, config.peers.clone(), stomp.clone()));
    let peers = Arc::new(PeerTable::new(settings.stale_after()));
    let signals = Arc::new(Signals::default());
    let shutdown = CancellationToken::new();
    let leases = Arc::new(Leases::new(store.clone(), Leases::random_replica_id()));
    let links = LinkContext {
        peers: peers.clone(),
        trust: trust.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        crls,
        signals: signals.clone(),
        settings: settings.clone(),
        stomp,
        shutdown: shutdown.clone(),
    };
    let dialer = Dialer {
        links: links.clone(),
        leases: leases.clone(),
    };
    let committer = Committer::start(store.clone());
    {
        let tls = trust.current();
        let t = tls.trust();
        tracing::info!(
            node = %t.identity.node_id,
            store = store.kind(),
            replica = %leases.replica_id,
            api = %config.api_listen,
            listen = %config.listen,
            admin = %config.admin_listen,
            peers = t.peers.len(),
            "gateway started"
        );
        for id in t.peers.keys() {
            peers.ensure(id);
            dialer.spawn(id.clone());
        }
    }
    tokio::spawn(listener::serve(links.clone(), leases.clone(), listener));
    if let Some(l) = stomp_listener {
        tokio::spawn(crate::stomp::driver::serve(links.clone(), l));
    }
    let reloader = Arc::new(Reloader::new(
        dialer.clone(),
        sources,
        Duration::from_millis(settings.reload_poll_ms),
        config.expiry_warning_days.clone(),
    ));
    tokio::spawn(reloader.watch());
    tokio::spawn(expiry::watch(
        trust.clone(),
        config.expiry_warning_days.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(leases.clone().renew(peers.clone(), shutdown.clone()));
    tokio::spawn(outbox_watch::watch(
        store.clone(),
        signals.clone(),
        settings.tick(),
        shutdown.clone(),
    ));
    let admin = Arc::new(Admin {
        peers: peers.clone(),
        trust: trust.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        listen: config.listen,
        replica_id: leases.replica_id.clone(),
        expiry_warning_days: config.expiry_warning_days.clone(),
    });
    let admin = serve_http("admin API", admin_listener, admin::router(admin), &shutdown);
    let api = Arc::new(Api {
        store: store.clone(),
        committer,
        trust: trust.clone(),
        peers: peers.clone(),
        signals: signals.clone(),
        metrics: metrics.clone(),
        limits: Limits {
            stomp: links.stomp.clone(),
            max_message_bytes: config.max_message_bytes,
            max_outbox_messages: config.max_outbox_messages,
            token: config.api_token.clone(),
        },
        shutdown: shutdown.clone(),
    });
    let api_server = serve_http("API", api_listener, api::router(api), &shutdown);
    tokio::spawn(prune_sent_ids(store.clone(), shutdown.clone()));

    wait_for_stop_signal().await?;
    tracing::info!("stopping: saying goodbye to every partner");
    shutdown.cancel();
    // Give link tasks a moment to send their goodbyes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !peers.links().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), api_server).await;
    leases.release().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `app` on `listener` until shutdown.
fn serve_http(
    what: &'static str,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "{what} failed");
        }
    })
}

/// Forgets idempotency keys older than their retention, hourly.
async fn prune_sent_ids(store: Arc<Store>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(e) = store.prune_sent_ids().await {
                    tracing::warn!(error = %e, "cannot prune old message ids");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Binds the peer listener with a bounded accept queue.
fn bind_with_backlog(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn wait_for_stop_signal() -> Result<(), ServerError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
