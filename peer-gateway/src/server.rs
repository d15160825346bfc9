//! One gateway process: opens the store, binds the listeners, starts every
//! task (per-partner supervisors, the peer listener, reload, expiry, leases,
//! the outbox watch, the admin and application APIs) and stops them on
//! SIGTERM/SIGINT after saying goodbye to every partner.

use std::sync::Arc;
use std::time::Duration;

use crate::{
    admin, api, committer, config, crl_store, dialer, expiry, gateway, leases, listener,
    outbox_watch, reload, store,
};

/// Runs the gateway configured by `config_path` until SIGTERM or SIGINT.
pub async fn run(config_path: &std::path::Path) -> Result<(), String> {
    let config = config::Config::load(config_path).map_err(|e| e.to_string())?;
    let crls = crl_store::CrlStore::open(&config.state_dir).map_err(|e| e.to_string())?;
    let tls = reload::load_tls(&config, &crls).await?;
    let listener = bind_with_backlog(config.listen, config.link.accept_backlog)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on admin address {}: {e}",
                config.admin_listen
            )
        })?;
    let store = Arc::new(
        store::Store::open(&config.database_url)
            .await
            .map_err(|e| format!("cannot open the message store: {e}"))?,
    );
    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(|e| format!("cannot listen on api_listen {}: {e}", config.api_listen))?;
    let gw = gateway::Gateway::new(config, tls, crls, store.clone());
    let committer = committer::Committer::start(store.clone());
    let trust = gw.tls().trust().clone();
    tracing::info!(
        node = %trust.identity.node_id,
        store = gw.store.kind(),
        replica = %gw.replica_id,
        api = %gw.config.api_listen,
        listen = %gw.config.listen,
        admin = %gw.config.admin_listen,
        peers = trust.peers.len(),
        "gateway started"
    );
    for id in trust.peers.keys() {
        gw.ensure_peer(id);
        tokio::spawn(dialer::supervise(gw.clone(), id.clone()));
    }
    tokio::spawn(listener::serve(gw.clone(), listener));
    tokio::spawn(reload::watch(gw.clone()));
    tokio::spawn(expiry::watch(gw.clone()));
    tokio::spawn(leases::renew(gw.clone()));
    tokio::spawn(outbox_watch::watch(gw.clone()));
    let admin = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let shutdown = gw.shutdown.clone();
            let app = admin::router(gw);
            if let Err(e) = axum::serve(admin_listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "admin API failed");
            }
        })
    };

    let api_server = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let shutdown = gw.shutdown.clone();
            let app = api::router(gw, committer);
            if let Err(e) = axum::serve(api_listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "API failed");
            }
        })
    };
    tokio::spawn({
        let gw = gw.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if let Err(e) = gw.store.prune_sent_ids().await {
                            tracing::warn!(error = %e, "cannot prune old message ids");
                        }
                    }
                    _ = gw.shutdown.cancelled() => return,
                }
            }
        }
    });

    wait_for_stop_signal().await?;
    tracing::info!("stopping: saying goodbye to every partner");
    gw.shutdown.cancel();
    // Give link tasks a moment to send their goodbyes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !gw.links().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), api_server).await;
    leases::release(&gw).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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

async fn wait_for_stop_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
