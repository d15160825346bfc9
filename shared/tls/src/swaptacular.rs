//! A Swaptacular node directory (made by swpt_ca_scripts) read as a node's
//! trust, so that the gateway can take swpt_stomp's place on an existing
//! Swaptacular node without touching its CA.
//!
//! What is read, all read-only, as swpt_stomp reads it:
//!
//! ```text
//! DIR/root-ca.crt                     our root: the only anchor for inbound links
//! DIR/db/nodeid                       if present, must equal the root's serialNumber
//! DIR/peers/<id>/root-ca.crt          the partner's root: the pinned anchor for dialing it
//! DIR/peers/<id>/sub-ca.crt           the certificate it issued us (presented when dialing it)
//! DIR/peers/<id>/ACTIVE               set up for links (swpt_stomp ignores partners without it)
//! DIR/peers/<id>/DEACTIVATED          deactivated for good: links refused
//! DIR/peers/<id>/nodeinfo/stomp.toml  where its STOMP servers are
//! ```
//!
//! A partner is active exactly when swpt_stomp would link with it: it has a
//! `sub-ca.crt` and an `ACTIVE` file and no `DEACTIVATED` file. Partners that
//! are not active are still listed (inactive), so refusals name them.

use std::collections::BTreeMap;
use std::path::Path;

use peerlink_pki::identity::NodeIdentity;
use peerlink_pki::pemfile::{self, ObjectKind};
use peerlink_pki::swaptacular::{layout, NodeType, StompManifest};

use crate::trust::{not_after, PeerStatus, PeerTrust, TrustError};

/// How a node directory is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDirLayout {
    /// The public part of a `ca-tool` CA directory (`ca.db`, `peers/<id>/root.crt`, ...).
    CaTool,
    /// A Swaptacular node directory made by swpt_ca_scripts (`peers/<id>/sub-ca.crt`, ...).
    Swaptacular,
}

impl NodeDirLayout {
    /// Tells the layouts apart: `ca.db` means ca-tool; otherwise a root whose
    /// subject is a Swaptacular node's name means swpt_ca_scripts.
    pub fn detect(node_dir: &Path) -> Result<NodeDirLayout, TrustError> {
        let db = node_dir.join(peerlink_pki::layout::DB_FILE);
        if db.exists() {
            return Ok(NodeDirLayout::CaTool);
        }
        let root_path = node_dir.join(layout::ROOT_CERT);
        let root_der = pemfile::load_one(&root_path, ObjectKind::Certificate)?;
        let identity = NodeIdentity::from_root_der(&root_der)
            .map_err(|e| TrustError::Invalid(format!("{}: {e}", root_path.display())))?;
        if NodeType::of_identity(&identity).is_ok() {
            return Ok(NodeDirLayout::Swaptacular);
        }
        Err(TrustError::Invalid(format!(
            "{} is missing: node_dir must be a copy of the public part of the CA directory \
             (or a Swaptacular node directory, whose root-ca.crt names a Swaptacular node)",
            db.display()
        )))
    }
}

/// Our root, its identity and the partners of a Swaptacular node directory.
pub(crate) struct SwaptacularDir {
    pub root_der: Vec<u8>,
    pub identity: NodeIdentity,
    pub peers: BTreeMap<String, PeerTrust>,
}

/// Reads a Swaptacular node directory; `peer_crls` are the CRLs partners sent us.
pub(crate) fn load(
    node_dir: &Path,
    peer_crls: &BTreeMap<String, Vec<u8>>,
) -> Result<SwaptacularDir, TrustError> {
    let root_path = node_dir.join(layout::ROOT_CERT);
    let root_der = pemfile::load_one(&root_path, ObjectKind::Certificate)?;
    let identity = NodeIdentity::from_root_der(&root_der)
        .map_err(|e| TrustError::Invalid(format!("{}: {e}", root_path.display())))?;
    NodeType::of_identity(&identity)
        .map_err(|e| TrustError::Invalid(format!("{}: {e}", root_path.display())))?;
    let nodeid_path = node_dir.join(layout::NODE_ID);
    if nodeid_path.exists() {
        let text = peerlink_pki::fsutil::read(&nodeid_path)?;
        let recorded = String::from_utf8_lossy(&text).trim().to_string();
        if recorded != identity.node_id {
            return Err(TrustError::Invalid(format!(
                "{} says the node id is {recorded:?}, but {} names {:?}: the directory is inconsistent",
                nodeid_path.display(),
                root_path.display(),
                identity.node_id
            )));
        }
    }
    let mut peers = BTreeMap::new();
    let peers_dir = node_dir.join(layout::PEERS_DIR);
    let entries = match std::fs::read_dir(&peers_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SwaptacularDir {
                root_der,
                identity,
                peers,
            })
        }
        Err(e) => {
            return Err(peerlink_pki::fsutil::FsError::new("cannot read", &peers_dir, e).into())
        }
    };
    for entry in entries {
        let entry =
            entry.map_err(|e| peerlink_pki::fsutil::FsError::new("cannot read", &peers_dir, e))?;
        let dir = entry.path();
        // peers/ also holds the scripts' kustomization files; partners are directories.
        if !dir.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let peer = load_peer(&dir, &name, peer_crls)?;
        peers.insert(name, peer);
    }
    Ok(SwaptacularDir {
        root_der,
        identity,
        peers,
    })
}

/// One partner directory, `peers/<node_id>/`.
fn load_peer(
    dir: &Path,
    node_id: &str,
    peer_crls: &BTreeMap<String, Vec<u8>>,
) -> Result<PeerTrust, TrustError> {
    let root_path = dir.join(layout::PEER_ROOT);
    let root_der = pemfile::load_one(&root_path, ObjectKind::Certificate)?;
    let id = NodeIdentity::from_root_der(&root_der)
        .map_err(|e| TrustError::Invalid(format!("{}: {e}", root_path.display())))?;
    if id.node_id != node_id {
        return Err(TrustError::Invalid(format!(
            "{} belongs to node {:?}, not to {node_id:?} as its directory name says",
            root_path.display(),
            id.node_id
        )));
    }
    let sub_ca = dir.join(layout::SUB_CA);
    let issued_to_us_der = if sub_ca.exists() {
        Some(pemfile::load_one(&sub_ca, ObjectKind::Certificate)?)
    } else {
        None
    };
    let active = issued_to_us_der.is_some()
        && dir.join(layout::ACTIVE).exists()
        && !dir.join(layout::DEACTIVATED).exists();
    let manifest_path = dir.join(layout::PEER_STOMP);
    let stomp = if manifest_path.exists() {
        let bytes = peerlink_pki::fsutil::read(&manifest_path)?;
        Some(StompManifest::parse(&bytes).map_err(|e| {
            TrustError::Invalid(format!(
                "{}: {e}; fix it or ask the partner for a new info-bundle",
                manifest_path.display()
            ))
        })?)
    } else {
        None
    };
    Ok(PeerTrust {
        node_id: node_id.to_string(),
        subject: id.subject,
        subject_der: id.subject_der,
        root_der,
        issued_to_us_not_after: issued_to_us_der.as_deref().and_then(not_after),
        issued_to_us_der,
        // Swaptacular partners speak swpt-stomp, not peerlink/1: their servers are in `stomp`.
        endpoints: Vec::new(),
        status: if active {
            PeerStatus::Active
        } else {
            PeerStatus::Inactive
        },
        crl_der: peer_crls.get(node_id).cloned(),
        stomp,
    })
}
