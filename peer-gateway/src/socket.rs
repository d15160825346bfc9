//! Socket options of a peer connection.
//!
//! Without them a connection whose path drops silently (an expired NAT mapping,
//! a firewall, a pulled cable) with data unacknowledged keeps retransmitting for
//! up to fifteen minutes (`tcp_retries2`) before the kernel reports an error, and
//! an idle one never does. The link's own dead-link rule ([`crate::link`]) ends
//! such a link after `dead_after`; these options make the kernel give up too,
//! also for what the gateway no longer watches (a closed link's unsent data).

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::config::LinkConfig;

/// How long the kernel lets sent data go unacknowledged before it drops the
/// connection: the dead-link bound plus half a heartbeat, so that the gateway's
/// own rule, checked every quarter heartbeat, names the reason first.
pub fn user_timeout(link: &LinkConfig) -> Duration {
    link.dead_after() + link.heartbeat() / 2
}

/// Sets TCP_NODELAY (frames are small and latency-bound), TCP_USER_TIMEOUT
/// ([`user_timeout`]; Linux) and keepalive probes every heartbeat after a
/// heartbeat of silence. A failure is logged, not fatal: the link's own rule
/// still ends a dead link.
pub fn tune_peer_socket(tcp: &TcpStream, link: &LinkConfig) {
    let _ = tcp.set_nodelay(true);
    let sock = SockRef::from(tcp);
    let keepalive = TcpKeepalive::new()
        .with_time(link.heartbeat())
        .with_interval(link.heartbeat())
        .with_retries(link.dead_after_heartbeats);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive on a peer connection");
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(user_timeout(link))) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a peer connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn peer_sockets_get_the_dead_link_bound_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let link = LinkConfig {
            heartbeat_ms: 1_000,
            dead_after_heartbeats: 3,
            ..LinkConfig::default()
        };
        tune_peer_socket(&tcp, &link);
        let sock = SockRef::from(&tcp);
        assert!(tcp.nodelay().expect("nodelay"));
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("keepalive time"),
            Duration::from_secs(1)
        );
        assert_eq!(sock.tcp_keepalive_retries().expect("retries"), 3);
        #[cfg(target_os = "linux")]
        assert_eq!(
            sock.tcp_user_timeout().expect("user timeout"),
            Some(Duration::from_millis(3_500))
        );
    }
}
