//! A partner's bundle of either kind, as `sign-peer`, `register-peer` and
//! `show-bundle` read it: the project's text bundle, or a Swaptacular
//! info-bundle zip (told apart by content, not by file name), and the
//! Swaptacular rules `sign-peer` applies between two Swaptacular nodes.

use std::path::Path;

use ::time::OffsetDateTime;
use peerlink_ca::bundle::{self, VerifiedBundle};
use peerlink_ca::swaptacular::infobundle::{self, InfoBundle};
use peerlink_cadb::CaDb;
use peerlink_pki::fsutil::{self, FileTransaction, PUBLIC_FILE_MODE};
use peerlink_pki::identity::NodeIdentity;
use peerlink_pki::layout::{PEER_BUNDLE, PEER_INFOBUNDLE, PEER_ROOT, PEER_STOMP, PEER_SUBNET};
use peerlink_pki::pemfile::pem_certificate;
use peerlink_pki::swaptacular::{self as swpt, NodeType};

use crate::cadir::CaDir;
use crate::error::{CliError, CliResult};

/// A verified partner bundle.
pub struct Partner {
    /// The file as received.
    pub bytes: Vec<u8>,
    /// Its root certificate (DER).
    pub root_der: Vec<u8>,
    /// The identity read from the root.
    pub identity: NodeIdentity,
    /// peerlink/1 gateway endpoints (none for a Swaptacular partner).
    pub endpoints: Vec<String>,
    /// The info-bundle, for a Swaptacular partner.
    pub swaptacular: Option<InfoBundle>,
    /// The bundle's creation time, for a peerlink bundle.
    pub created_at: Option<String>,
}

impl Partner {
    /// Reads and verifies the bundle at `path` (either kind); errors name the file.
    pub fn load(path: &Path) -> CliResult<Partner> {
        let bytes = fsutil::read(path)?;
        let now = OffsetDateTime::now_utc();
        let named = |e: &dyn std::fmt::Display| CliError::new(format!("{}: {e}", path.display()));
        if infobundle::is_zip(&bytes) {
            let b = infobundle::verify(&bytes, now).map_err(|e| named(&e))?;
            return Ok(Partner {
                root_der: b.root_der.clone(),
                identity: b.identity.clone(),
                endpoints: Vec::new(),
                swaptacular: Some(b),
                created_at: None,
                bytes,
            });
        }
        let b: VerifiedBundle = bundle::verify(&bytes, now).map_err(|e| named(&e))?;
        Ok(Partner {
            root_der: b.root_der,
            identity: b.identity,
            endpoints: b.info.endpoints,
            swaptacular: None,
            created_at: Some(b.info.created_at),
            bytes,
        })
    }

    /// Prints what the bundle says (`show-bundle`, `sign-peer`).
    pub fn print(&self) {
        let id = &self.identity;
        println!("Partner:       {}", id.subject);
        println!(
            "Node id:       {}{}",
            id.node_id,
            if id.id_matches_key() {
                " (derived from its root key: reading it verifies the key)"
            } else {
                " (explicit: verify the fingerprint)"
            }
        );
        println!("Fingerprint:   SHA-256 {}", id.fingerprint.phone_form());
        println!(
            "Key type:      {}",
            id.key_type.map_or("unsupported", |k| k.name())
        );
        println!(
            "Root expires:  {}",
            peerlink_pki::timefmt::rfc3339(id.not_after)
        );
        match &self.swaptacular {
            Some(b) => {
                println!("Node type:     {} (Swaptacular)", b.node_type);
                println!("STOMP servers: {}", b.manifest.servers.join(", "));
            }
            None => println!("Endpoints:     {}", self.endpoints.join(", ")),
        }
    }

    /// Writes the partner's files into its directory: the bundle as received, its
    /// root, and a Swaptacular partner's manifest (which gateways read).
    pub fn write_files(&self, files: &mut FileTransaction, peer_dir: &Path) -> CliResult {
        let bundle_name = if self.swaptacular.is_some() {
            PEER_INFOBUNDLE
        } else {
            PEER_BUNDLE
        };
        files.write(&peer_dir.join(bundle_name), &self.bytes, PUBLIC_FILE_MODE)?;
        files.write(
            &peer_dir.join(PEER_ROOT),
            pem_certificate(&self.root_der).as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        if let Some(b) = &self.swaptacular {
            files.write(
                &peer_dir.join(PEER_STOMP),
                &b.manifest_bytes,
                PUBLIC_FILE_MODE,
            )?;
        }
        Ok(())
    }

    /// Whether the partner's files are already in `peer_dir`.
    pub fn files_present(&self, peer_dir: &Path) -> bool {
        peer_dir.join(PEER_BUNDLE).exists() || peer_dir.join(PEER_INFOBUNDLE).exists()
    }
}

/// What signing a Swaptacular partner needs beyond the default profile.
pub struct SwaptacularTerms {
    /// The `Subnet:` we give the partner, when we are an accounting authority.
    pub subnet: Option<String>,
}

/// Applies Swaptacular's rules to our signing `partner` (of type `theirs`), as
/// swpt_ca_scripts' sign-peercert would: we must be a Swaptacular node too, the
/// pair must be an accounting authority and an agent, a debtors agent has one
/// partner only, and an accounting authority gives each agent a subnet of its
/// own (`--subnet`), which nobody else has.
pub async fn swaptacular_terms(
    ca: &CaDir,
    db: &mut CaDb,
    theirs: NodeType,
    partner_id: &str,
    subnet: Option<&str>,
) -> CliResult<SwaptacularTerms> {
    let ours = NodeType::of_identity(&ca.identity).map_err(|e| {
        CliError::new(format!(
            "this CA cannot sign a Swaptacular info-bundle: {e}. Swaptacular nodes only link with \
             Swaptacular nodes; create a CA with `ca-tool init --profile swaptacular`"
        ))
    })?;
    if !ours.may_peer_with(theirs) {
        return Err(CliError::new(format!(
            "Swaptacular nodes link accounting authorities with agents only: we are {ours}, \
             the partner is {theirs}; refusing"
        )));
    }
    if ours == NodeType::DebtorsAgent {
        if let Some(other) = db
            .peers()
            .await?
            .into_iter()
            .find(|p| p.node_id != partner_id)
        {
            return Err(CliError::new(format!(
                "a Swaptacular debtors agent has exactly one accounting authority, and this one \
                 already has {}; refusing",
                other.node_id
            )));
        }
    }
    if ours != NodeType::AccountingAuthority {
        if subnet.is_some() {
            return Err(CliError::new(
                "--subnet is given by accounting authorities only; drop it",
            ));
        }
        return Ok(SwaptacularTerms { subnet: None });
    }
    let Some(subnet) = subnet else {
        return Err(CliError::new(format!(
            "an accounting authority gives every agent a subnet: add --subnet HEX ({})",
            match theirs {
                NodeType::CreditorsAgent => "6 hex digits, the creditor ids it manages".to_string(),
                _ => format!(
                    "{}XX, 8 to 16 hex digits starting with our id: the debtor ids it manages",
                    ca.identity.node_id
                ),
            }
        )));
    };
    swpt::check_subnet(subnet, theirs, &ca.identity.node_id)
        .map_err(|e| CliError::new(e.to_string()))?;
    for peer in db.peers().await? {
        if peer.node_id == partner_id {
            continue;
        }
        let path = ca.peer_dir(&peer.node_id).join(PEER_SUBNET);
        if let Ok(given) = std::fs::read_to_string(&path) {
            if given.trim() == subnet {
                return Err(CliError::new(format!(
                    "subnet {subnet} is already given to {} ({}); choose another",
                    peer.node_id,
                    path.display()
                )));
            }
        }
    }
    Ok(SwaptacularTerms {
        subnet: Some(subnet.to_string()),
    })
}
