//! What a node trusts, read from the public part of its CA directory.
//!
//! A [`NodeTrust`] is an immutable snapshot: the node's own root (the only
//! anchor for inbound links), its newest CRL, and every partner with its
//! pinned root (the only anchor when dialing it), the cross-cert it issued us,
//! its status and the newest CRL it sent us. Reloading builds a new snapshot;
//! links in flight keep the one they started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use x509_parser::prelude::*;

use peerlink_cadb::CaDb;
use peerlink_pki::identity::NodeIdentity;
use peerlink_pki::keys::PrivateKey;
use peerlink_pki::layout;
use peerlink_pki::pemfile::{self, ObjectKind};
use peerlink_pki::swaptacular::StompManifest;
use peerlink_pki::validate::{validate_chain, Purpose, ValidationOptions};

use crate::swaptacular::{self, NodeDirLayout};

/// Why the trust data or the gateway identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file is missing or unreadable.
    #[error(transparent)]
    Load(#[from] pemfile::LoadError),
    /// The database could not be read.
    #[error(transparent)]
    Db(#[from] peerlink_cadb::DbError),
    /// The node directory is not a CA directory.
    #[error("{0}")]
    Invalid(String),
    /// The server key.
    #[error(transparent)]
    Key(#[from] peerlink_pki::keys::KeyError),
    /// File system.
    #[error(transparent)]
    Fs(#[from] peerlink_pki::fsutil::FsError),
}

/// Whether links with a partner are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    /// Cross-signed and not revoked.
    Active,
    /// Revoked or deactivated by our operator: refused, links closed.
    Inactive,
}

/// One partner, as this node trusts it.
#[derive(Debug, Clone)]
pub struct PeerTrust {
    /// The partner's node id.
    pub node_id: String,
    /// Its root subject, text.
    pub subject: String,
    /// Its root subject, raw DER (the subject of the cross-cert we issued).
    pub subject_der: Vec<u8>,
    /// Its root certificate: the pinned, only anchor when we dial it.
    pub root_der: Vec<u8>,
    /// The cross-cert it issued us (our root signed by it), presented when we dial it.
    pub issued_to_us_der: Option<Vec<u8>>,
    /// Endpoints from its bundle.
    pub endpoints: Vec<String>,
    /// Active or not.
    pub status: PeerStatus,
    /// The newest CRL it sent us over a link, applied to its certificates.
    pub crl_der: Option<Vec<u8>>,
    /// Expiry of the cross-cert it issued us, if registered.
    pub issued_to_us_not_after: Option<::time::OffsetDateTime>,
    /// A Swaptacular partner's STOMP servers manifest (its `stomp.toml`, checked
    /// as swpt_stomp checks it): where to dial it with swpt-stomp and which
    /// CONNECT and SEND headers to use. `None` for peerlink/1 partners.
    pub stomp: Option<StompManifest>,
}

impl PeerTrust {
    /// Whether we can dial this partner: active and holding the cross-cert it issued us.
    pub fn can_dial(&self) -> bool {
        self.status == PeerStatus::Active && self.issued_to_us_der.is_some()
    }
}

/// A snapshot of everything a node trusts.
#[derive(Debug, Clone)]
pub struct NodeTrust {
    /// The CA directory it was read from.
    pub node_dir: PathBuf,
    /// Our root certificate (anchor for inbound links).
    pub root_der: Vec<u8>,
    /// Our identity.
    pub identity: NodeIdentity,
    /// Our newest CRL, if published.
    pub crl_der: Option<Vec<u8>>,
    /// Partners by node id.
    pub peers: BTreeMap<String, PeerTrust>,
}

impl NodeTrust {
    /// Reads the public part of a CA directory, or a Swaptacular node directory
    /// (the layout is detected: [`NodeDirLayout::detect`]). `peer_crls` are the CRLs
    /// partners sent us (already verified when received), by node id.
    pub async fn load(
        node_dir: &Path,
        peer_crls: &BTreeMap<String, Vec<u8>>,
    ) -> Result<NodeTrust, TrustError> {
        let layout = NodeDirLayout::detect(node_dir)?;
        NodeTrust::load_layout(node_dir, peer_crls, layout).await
    }

    /// Like [`NodeTrust::load`], for a directory of a known layout.
    pub async fn load_layout(
        node_dir: &Path,
        peer_crls: &BTreeMap<String, Vec<u8>>,
        dir_layout: NodeDirLayout,
    ) -> Result<NodeTrust, TrustError> {
        let crl_path = node_dir.join(layout::CRL_FILE);
        let crl_der = if crl_path.exists() {
            Some(pemfile::load_one(&crl_path, ObjectKind::Crl)?)
        } else {
            None
        };
        if dir_layout == NodeDirLayout::Swaptacular {
            let dir = swaptacular::load(node_dir, peer_crls)?;
            return Ok(NodeTrust {
                node_dir: node_dir.to_path_buf(),
                root_der: dir.root_der,
                identity: dir.identity,
                crl_der,
                peers: dir.peers,
            });
        }
        let root_path = node_dir.join(layout::ROOT_CERT);
        let root_der = pemfile::load_one(&root_path, ObjectKind::Certificate)?;
        let identity = NodeIdentity::from_root_der(&root_der)
            .map_err(|e| TrustError::Invalid(format!("{}: {e}", root_path.display())))?;
        let db_path = node_dir.join(layout::DB_FILE);
        if !db_path.exists() {
            return Err(TrustError::Invalid(format!(
                "{} is missing: node_dir must be a copy of the public part of the CA directory",
                db_path.display()
            )));
        }
        let mut db = CaDb::open_read_only(&db_path).await?;
        let records = db.peers().await?;
        db.close().await?;
        let mut peers = BTreeMap::new();
        for record in records {
            let dir = layout::peer_dir(node_dir, &record.node_id);
            let root_der =
                pemfile::load_one(&dir.join(layout::PEER_ROOT), ObjectKind::Certificate)?;
            let issued_path = dir.join(layout::ISSUED_TO_US);
            let issued_to_us_der = if issued_path.exists() {
                Some(pemfile::load_one(&issued_path, ObjectKind::Certificate)?)
            } else {
                None
            };
            let issued_to_us_not_after = issued_to_us_der.as_deref().and_then(not_after);
            // A partner whose cross-cert we revoked is not trusted either way, even if
            // the operator revoked it by serial rather than with --peer.
            let revoked_by_us = match (
                &crl_der,
                pemfile::load_one(&dir.join(layout::ISSUED_BY_US), ObjectKind::Certificate),
            ) {
                (Some(crl), Ok(cert)) => serial_listed(crl, &cert),
                _ => false,
            };
            let stomp = load_manifest(&dir.join(layout::PEER_STOMP))?;
            peers.insert(
                record.node_id.clone(),
                PeerTrust {
                    crl_der: peer_crls.get(&record.node_id).cloned(),
                    node_id: record.node_id,
                    subject: record.subject,
                    subject_der: record.subject_der,
                    root_der,
                    issued_to_us_der,
                    endpoints: record.endpoints,
                    status: if record.status == "active" && !revoked_by_us {
                        PeerStatus::Active
                    } else {
                        PeerStatus::Inactive
                    },
                    issued_to_us_not_after,
                    stomp,
                },
            );
        }
        Ok(NodeTrust {
            node_dir: node_dir.to_path_buf(),
            root_der,
            identity,
            crl_der,
            peers,
        })
    }

    /// The partner whose root subject is exactly `subject_der`.
    pub fn peer_by_subject(&self, subject_der: &[u8]) -> Option<&PeerTrust> {
        self.peers.values().find(|p| p.subject_der == subject_der)
    }
}

/// A Swaptacular partner's manifest stored by `ca-tool sign-peer`, if any.
fn load_manifest(path: &Path) -> Result<Option<StompManifest>, TrustError> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = peerlink_pki::fsutil::read(path)?;
    StompManifest::parse(&bytes)
        .map(Some)
        .map_err(|e| TrustError::Invalid(format!("{}: {e}", path.display())))
}

/// Whether `crl` lists the serial of `cert` (both DER; unparsable means no).
fn serial_listed(crl: &[u8], cert: &[u8]) -> bool {
    let (Ok((_, crl)), Ok((_, cert))) = (
        CertificateRevocationList::from_der(crl),
        X509Certificate::from_der(cert),
    ) else {
        return false;
    };
    let listed = crl
        .iter_revoked_certificates()
        .any(|r| r.raw_serial() == cert.raw_serial());
    listed
}

/// Expiry of a DER certificate, if it parses.
pub fn not_after(der: &[u8]) -> Option<::time::OffsetDateTime> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, c)| c.validity().not_after.to_datetime())
}

/// The gateway's own certificate and key.
pub struct ServerIdentity {
    /// The server certificate (DER), issued by our root.
    pub cert_der: Vec<u8>,
    /// Its key.
    pub key: PrivateKey,
    /// Its expiry.
    pub not_after: ::time::OffsetDateTime,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl ServerIdentity {
    /// Loads the server certificate (PEM/DER; the first certificate is the leaf) and its
    /// unencrypted PKCS#8 key, checking that they belong together and that the
    /// certificate chains to `trust`'s root for both TLS roles.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        trust: &NodeTrust,
    ) -> Result<ServerIdentity, TrustError> {
        let certs = pemfile::load_file(cert_path, ObjectKind::Certificate)?;
        let cert_der = certs.into_iter().next().ok_or_else(|| {
            TrustError::Invalid(format!("{}: no certificate", cert_path.display()))
        })?;
        let key_bytes = peerlink_pki::fsutil::read(key_path)?;
        let key = parse_unencrypted_key(&key_bytes, &key_path.display().to_string())?;
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| TrustError::Invalid(format!("{}: {e}", cert_path.display())))?;
        if cert.public_key().raw != key.public_key_der()?.as_slice() {
            return Err(TrustError::Invalid(format!(
                "the key {} does not belong to the certificate {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        for purpose in [Purpose::Client, Purpose::Server] {
            validate_chain(
                &cert_der,
                &ValidationOptions {
                    anchor: &trust.root_der,
                    intermediates: &[],
                    crls: trust.crl_der.as_slice(),
                    at: ::time::OffsetDateTime::now_utc(),
                    purpose,
                },
            )
            .map_err(|e| {
                TrustError::Invalid(format!(
                    "the server certificate {} is not usable with this node's root: {e}",
                    cert_path.display()
                ))
            })?;
        }
        Ok(ServerIdentity {
            not_after: cert.validity().not_after.to_datetime(),
            cert_der,
            key,
        })
    }
}

/// Parses an unencrypted PKCS#8 `PRIVATE KEY` PEM (or DER).
pub fn parse_unencrypted_key(bytes: &[u8], name: &str) -> Result<PrivateKey, TrustError> {
    if bytes.first() == Some(&0x30) {
        return Ok(PrivateKey::from_pkcs8_der(bytes, name)?);
    }
    let text = String::from_utf8_lossy(bytes);
    let start = text.find("-----BEGIN PRIVATE KEY-----").ok_or_else(|| {
        TrustError::Invalid(format!(
            "{name}: expected an unencrypted PKCS#8 key (-----BEGIN PRIVATE KEY-----), as `peer-gateway keygen` writes"
        ))
    })?;
    let parsed = ::pem::parse(&text[start..])
        .map_err(|e| TrustError::Invalid(format!("{name}: corrupt key PEM: {e}")))?;
    Ok(PrivateKey::from_pkcs8_der(parsed.contents(), name)?)
}
