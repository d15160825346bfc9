//! Mutual TLS with a node's trust, for any tokio stream.
//!
//! This crate's job is the TLS wrapper: rustls configured for TLS 1.3 with the
//! project's own verifiers ([`identify_client`], [`verify_server`]) over the
//! `peerlink-pki` validator, and the trust snapshot they check against
//! ([`NodeTrust`], read from the public part of a CA directory through
//! `peerlink-cadb`). The gateway, the end-to-end tests and the load generator
//! use it; it must not depend on `peerlink-ca` (issuance, PKCS#11), which only
//! its tests and benchmarks use to make certificates.
//!
//! [`PeerTls`] wraps the rustls configurations the gateway uses, so any Rust
//! program can secure its own connections with the node's trust: accept a
//! partner's connection (its chain must reach our root through the cross-cert
//! we issued it, within its name constraint, not revoked, partner active) or
//! dial a partner (its pinned root is the only anchor and its leaf must carry
//! its DN). TLS 1.3 only, ALPN [`ALPN`], no session resumption, so every
//! connection is validated against the current trust.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use peerlink_tls::{NodeTrust, PeerTls, ServerIdentity};
//!
//! let trust = Arc::new(NodeTrust::load("ca-public".as_ref(), &Default::default()).await?);
//! let identity = Arc::new(ServerIdentity::load("gw.crt".as_ref(), "gw.key".as_ref(), &trust)?);
//! let tls = PeerTls::new(trust, identity)?;
//!
//! // Accept a partner:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7443").await?;
//! let (tcp, _) = listener.accept().await?;
//! let (stream, peer_id) = tls.accept(tcp).await?;
//! println!("authenticated partner {peer_id}");
//!
//! // Dial a partner by its node id:
//! let tcp = tokio::net::TcpStream::connect("partner.example:7443").await?;
//! let stream = tls.connect(tcp, "3f0c5e0a9d3b4c1e8a7f6b5c4d3e2f10").await?;
//! # drop(stream); Ok(()) }
//! ```

mod swaptacular;
#[cfg(test)]
mod tests;
mod trust;
mod verifier;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use x509_parser::prelude::*;

pub use swaptacular::NodeDirLayout;
pub use trust::{
    not_after, parse_unencrypted_key, NodeTrust, PeerStatus, PeerTrust, ServerIdentity, TrustError,
};
pub use verifier::{claimed_peer, identify_client, verify_server, MAX_PRESENTED_INTERMEDIATES};

/// The ALPN protocol id of link protocol version 1.
pub const ALPN: &[u8] = b"peerlink/1";

/// What a connection carries, which decides its ALPN: `peerlink/1` links must
/// negotiate [`ALPN`]; Swaptacular's STOMP links (swpt_stomp) use none, on a
/// listener of their own. Both use the same certificates and the same
/// validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// `peerlink/1` links.
    Peerlink,
    /// STOMP 1.2 links with Swaptacular nodes (no ALPN).
    SwptStomp,
}

/// Why our side refused a peer's certificate chain. `reason` is a stable
/// identifier for metrics (the validator's kinds plus `unknown_peer`,
/// `peer_inactive`, `own_node`, `wrong_peer`); `detail` is for the log only and
/// is never sent to the peer.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Stable reason identifier.
    pub reason: &'static str,
    /// Human-readable explanation (certificate and rule).
    pub detail: String,
    /// The partner the refusal concerns, only when that is authenticated: the
    /// chain was proven to come from it (e.g. it is deactivated), or we dialed it.
    pub peer: Option<String>,
    /// The partner an unauthenticated chain claims to be, for the log only: anyone
    /// can put a partner's name in a certificate, so this never touches its status.
    pub claims: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Refusal {}

/// Why a handshake did not produce an authenticated link.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// We refused the peer's certificate chain.
    #[error("refused the peer's certificate: {0}")]
    Refused(Refusal),
    /// The client presented no certificate.
    #[error("the client presented no certificate")]
    NoCertificate,
    /// The peer refused our certificate or the handshake (TLS alert).
    #[error("the peer refused the handshake ({0}); check that it has registered us and that our certificates are current")]
    RejectedByPeer(String),
    /// The peer did not negotiate the link protocol.
    #[error("the peer did not negotiate ALPN peerlink/1")]
    Alpn,
    /// We have no cross-cert from this peer, or it is unknown or inactive.
    #[error("cannot dial {0}: {1}")]
    NotDialable(String, String),
    /// Any other TLS failure.
    #[error("TLS error: {0}")]
    Tls(String),
    /// Transport failure.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

impl HandshakeError {
    /// Stable identifier for metrics and status.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Refused(r) => r.reason,
            HandshakeError::NoCertificate => "no_certificate",
            HandshakeError::RejectedByPeer(_) => "rejected_by_peer",
            HandshakeError::Alpn => "alpn",
            HandshakeError::NotDialable(..) => "not_dialable",
            HandshakeError::Tls(_) => "tls_error",
            HandshakeError::Io(_) => "io_error",
        }
    }

    fn from_io(e: std::io::Error) -> HandshakeError {
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return HandshakeError::Io(e);
        };
        match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                match other.0.downcast_ref::<Refusal>() {
                    Some(r) => HandshakeError::Refused(r.clone()),
                    None => HandshakeError::Tls(tls.to_string()),
                }
            }
            rustls::Error::NoCertificatesPresented => HandshakeError::NoCertificate,
            rustls::Error::AlertReceived(alert) => {
                HandshakeError::RejectedByPeer(format!("{alert:?}"))
            }
            other => HandshakeError::Tls(other.to_string()),
        }
    }
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS set-up: {0}")]
pub struct TlsSetupError(String);

/// Client configurations by (partner, wire).
type ClientConfigs = HashMap<(String, Wire), Arc<ClientConfig>>;

/// The node's TLS configurations for accepting and dialing partners.
#[derive(Clone)]
pub struct PeerTls {
    trust: Arc<NodeTrust>,
    identity: Arc<ServerIdentity>,
    provider: Arc<CryptoProvider>,
    server: Arc<ServerConfig>,
    /// The same without ALPN, for STOMP links.
    stomp_server: Arc<ServerConfig>,
    /// Client configurations by partner and wire, built on first dial: building
    /// one parses our private key, which costs more than a tenth of a handshake.
    /// The cache lives as long as this trust snapshot, so a reload starts afresh.
    client_configs: Arc<Mutex<ClientConfigs>>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("node_id", &self.trust.identity.node_id)
            .field("peers", &self.trust.peers.len())
            .finish()
    }
}

impl PeerTls {
    /// Builds the configurations for a trust snapshot and the gateway's identity.
    pub fn new(
        trust: Arc<NodeTrust>,
        identity: Arc<ServerIdentity>,
    ) -> Result<PeerTls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let hints = match X509Certificate::from_der(&trust.root_der) {
            Ok((_, root)) => vec![rustls::DistinguishedName::from(
                root.subject().as_raw().to_vec(),
            )],
            Err(_) => Vec::new(),
        };
        let verifier = Arc::new(verifier::PeerClientVerifier {
            trust: trust.clone(),
            algorithms,
            hints,
        });
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsSetupError(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(identity.cert_der.clone())],
                key_der(&identity),
            )
            .map_err(|e| TlsSetupError(format!("server certificate and key: {e}")))?;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let stomp_server = server.clone();
        server.alpn_protocols = vec![ALPN.to_vec()];
        Ok(PeerTls {
            trust,
            identity,
            provider,
            server: Arc::new(server),
            stomp_server: Arc::new(stomp_server),
            client_configs: Arc::default(),
        })
    }

    /// The trust snapshot these configurations use.
    pub fn trust(&self) -> &Arc<NodeTrust> {
        &self.trust
    }

    /// The gateway's identity.
    pub fn identity(&self) -> &Arc<ServerIdentity> {
        &self.identity
    }

    /// The server configuration (for callers driving rustls themselves).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// A client configuration for dialing `peer_id`: presents [our server cert, the
    /// cross-cert the peer issued us] and trusts only the peer's pinned root.
    pub fn client_config(&self, peer_id: &str) -> Result<Arc<ClientConfig>, HandshakeError> {
        self.client_config_for(peer_id, Wire::Peerlink)
    }

    /// [`PeerTls::client_config`] for a wire: STOMP links offer no ALPN.
    pub fn client_config_for(
        &self,
        peer_id: &str,
        wire: Wire,
    ) -> Result<Arc<ClientConfig>, HandshakeError> {
        let peer = self.trust.peers.get(peer_id).ok_or_else(|| {
            HandshakeError::NotDialable(peer_id.into(), "not a registered partner".into())
        })?;
        if peer.status != PeerStatus::Active {
            return Err(HandshakeError::NotDialable(
                peer_id.into(),
                "the partner is revoked or deactivated".into(),
            ));
        }
        let cached = self
            .client_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(peer_id.to_string(), wire))
            .cloned();
        if let Some(config) = cached {
            return Ok(config);
        }
        let cross = peer.issued_to_us_der.clone().ok_or_else(|| {
            HandshakeError::NotDialable(
                peer_id.into(),
                "no cross-certificate from this partner is registered (ca-tool register-peer)"
                    .into(),
            )
        })?;
        let verifier = Arc::new(verifier::PeerServerVerifier {
            trust: self.trust.clone(),
            peer_id: peer_id.to_string(),
            algorithms: self.provider.signature_verification_algorithms,
        });
        let chain = vec![
            CertificateDer::from(self.identity.cert_der.clone()),
            CertificateDer::from(cross),
        ];
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| HandshakeError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key_der(&self.identity))
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
        if wire == Wire::Peerlink {
            config.alpn_protocols = vec![ALPN.to_vec()];
        }
        config.resumption = Resumption::disabled();
        config.enable_sni = false;
        let config = Arc::new(config);
        self.client_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((peer_id.to_string(), wire), config.clone());
        Ok(config)
    }

    /// Accepts a partner's connection; returns the stream and the partner's node id.
    pub async fn accept<S>(
        &self,
        stream: S,
    ) -> Result<(tokio_rustls::server::TlsStream<S>, String), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_as(stream, Wire::Peerlink).await
    }

    /// [`PeerTls::accept`] for a wire: `peerlink/1` must negotiate [`ALPN`],
    /// STOMP links negotiate none.
    pub async fn accept_as<S>(
        &self,
        stream: S,
        wire: Wire,
    ) -> Result<(tokio_rustls::server::TlsStream<S>, String), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = match wire {
            Wire::Peerlink => self.server.clone(),
            Wire::SwptStomp => self.stomp_server.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = acceptor
            .accept(stream)
            .await
            .map_err(HandshakeError::from_io)?;
        let (_, conn) = tls.get_ref();
        if wire == Wire::Peerlink && conn.alpn_protocol() != Some(ALPN) {
            return Err(HandshakeError::Alpn);
        }
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(HandshakeError::NoCertificate)?;
        let peer_id = self.peer_of_leaf(leaf).ok_or_else(|| {
            HandshakeError::Refused(Refusal {
                reason: "unknown_peer",
                detail: "the leaf's issuer is not a registered partner".into(),
                peer: None,
                claims: None,
            })
        })?;
        Ok((tls, peer_id))
    }

    /// Dials partner `peer_id` over `stream`.
    pub async fn connect<S>(
        &self,
        stream: S,
        peer_id: &str,
    ) -> Result<tokio_rustls::client::TlsStream<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.connect_as(stream, peer_id, Wire::Peerlink).await
    }

    /// [`PeerTls::connect`] for a wire.
    pub async fn connect_as<S>(
        &self,
        stream: S,
        peer_id: &str,
        wire: Wire,
    ) -> Result<tokio_rustls::client::TlsStream<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.client_config_for(peer_id, wire)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from("peerlink.invalid")
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(HandshakeError::from_io)?;
        if wire == Wire::Peerlink && tls.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(HandshakeError::Alpn);
        }
        Ok(tls)
    }

    /// The partner whose root issued this (already validated) leaf.
    fn peer_of_leaf(&self, leaf: &[u8]) -> Option<String> {
        // Byte-identical issuer first (the usual case, cheap with many partners,
        // and without decoding the leaf again), then the RFC 5280 comparison.
        let (issuer, _) = peerlink_pki::der::cert_issuer_and_subject(leaf)?;
        if let Some(p) = self.trust.peer_by_subject(issuer) {
            return Some(p.node_id.clone());
        }
        let (_, cert) = X509Certificate::from_der(leaf).ok()?;
        self.trust
            .peers
            .values()
            .find(|p| {
                x509_parser::x509::X509Name::from_der(&p.subject_der)
                    .is_ok_and(|(_, s)| peerlink_pki::validate::names::dn_equal(cert.issuer(), &s))
            })
            .map(|p| p.node_id.clone())
    }
}

fn key_der(identity: &ServerIdentity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.pkcs8_der().to_vec()))
}
