//! Swaptacular info-bundles: what swpt_ca_scripts' `create-infobundle` writes
//! and its `sign-peercert` reads, both ways.
//!
//! An info-bundle is a zip archive of exactly four files:
//!
//! - `root-ca.crt`: the node's self-signed root (PEM, possibly after openssl's text);
//! - `root-ca.csr`: a CSR for the same subject and key, signed by the root key,
//!   which the partner's `openssl ca` turns into the peer certificate;
//! - `nodeinfo.zip`: the node's `nodeinfo/` directory (at least `stomp.toml`);
//! - `nodeinfo.signature`: `openssl dgst -sha256 -sign` of `nodeinfo.zip` by the root key.
//!
//! Reading checks what sign-peercert checks, and a little more: the root is a
//! valid self-signed CA, the CSR's key is the root's and its subject the
//! root's, the signature over `nodeinfo.zip` verifies, the subject is a
//! Swaptacular node's and its id follows its node type's rule, and the
//! manifest is one swpt_stomp would accept. Archives are read within tight
//! limits ([`super::archive`]).

use ::time::OffsetDateTime;
use x509_parser::prelude::*;

use peerlink_pki::identity::NodeIdentity;
use peerlink_pki::keys::KeyType;
use peerlink_pki::pemfile::{self, pem_certificate, pem_encode, ObjectKind};
use peerlink_pki::signature;
use peerlink_pki::swaptacular::{NodeType, StompManifest, SwaptacularError};
use peerlink_pki::validate::names;

use super::archive::{self, ArchiveError, Limits};
use crate::profiles::RootSigner;

/// The four members of an info-bundle.
pub const ROOT_CERT: &str = "root-ca.crt";
/// The CSR member.
pub const ROOT_CSR: &str = "root-ca.csr";
/// The node info member.
pub const NODEINFO_ZIP: &str = "nodeinfo.zip";
/// The signature member.
pub const NODEINFO_SIGNATURE: &str = "nodeinfo.signature";
/// The manifest inside `nodeinfo.zip`.
pub const STOMP_TOML: &str = "stomp.toml";
/// The date of the node info inside `nodeinfo.zip` (`date -I`).
pub const UPDATED_AT: &str = "updated-at.txt";

/// Largest info-bundle read (real ones are about 5 KiB).
pub const MAX_INFOBUNDLE_BYTES: usize = 256 * 1024;

/// The outer archive: four plain files, none over 64 KiB (`nodeinfo.zip` 128 KiB).
const OUTER: Limits = Limits {
    archive: MAX_INFOBUNDLE_BYTES,
    members: 8,
    member: 128 * 1024,
    total: 256 * 1024,
    subdirectories: false,
};

/// `nodeinfo.zip`: a directory of small files ("random files" the node adds).
const NODEINFO: Limits = Limits {
    archive: 128 * 1024,
    members: 64,
    member: 64 * 1024,
    total: 512 * 1024,
    subdirectories: true,
};

/// Why an info-bundle was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InfoBundleError {
    /// The zip archive (or the nested `nodeinfo.zip`) is unsafe or unreadable.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A member is missing, duplicated or unexpected, or does not parse.
    #[error("malformed info-bundle: {0}")]
    Malformed(String),
    /// The root certificate is not a valid self-signed CA.
    #[error("the info-bundle's root-ca.crt is not acceptable: {0}")]
    BadRoot(String),
    /// The CSR does not belong to the root.
    #[error("the info-bundle's root-ca.csr does not match its root-ca.crt: {0}")]
    BadCsr(String),
    /// The signature over `nodeinfo.zip` does not verify.
    #[error("the signature over nodeinfo.zip does not verify: the node info was altered or not signed by the root key; ask the partner for a fresh info-bundle")]
    BadSignature,
    /// Swaptacular's naming, id or manifest rules.
    #[error(transparent)]
    Swaptacular(#[from] SwaptacularError),
    /// Our root cannot make a bundle Swaptacular nodes accept.
    #[error("cannot write a Swaptacular info-bundle: {0}")]
    Unsupported(String),
    /// Signing failed.
    #[error(transparent)]
    Issue(#[from] crate::profiles::IssueError),
}

/// An info-bundle whose every check passed.
#[derive(Debug, Clone)]
pub struct InfoBundle {
    /// The partner's root certificate (DER).
    pub root_der: Vec<u8>,
    /// The identity read from it.
    pub identity: NodeIdentity,
    /// Its Swaptacular node type (from the OU).
    pub node_type: NodeType,
    /// Its STOMP servers manifest.
    pub manifest: StompManifest,
    /// The manifest's bytes as the partner wrote them.
    pub manifest_bytes: Vec<u8>,
    /// `updated-at.txt`, if present (first line).
    pub updated_at: Option<String>,
}

/// Whether `bytes` look like a zip archive (a local file header or an empty
/// archive's end record), as opposed to a peerlink text bundle.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// Reads and checks an info-bundle at `now`.
pub fn verify(bytes: &[u8], now: OffsetDateTime) -> Result<InfoBundle, InfoBundleError> {
    let mut members = archive::read_members(bytes, &OUTER, "the info-bundle")?;
    let cert_bytes = take_member(&mut members, ROOT_CERT)?;
    let csr_bytes = take_member(&mut members, ROOT_CSR)?;
    let nodeinfo_zip = take_member(&mut members, NODEINFO_ZIP)?;
    let signature_bytes = take_member(&mut members, NODEINFO_SIGNATURE)?;
    if let Some((extra, _)) = members.first() {
        return Err(InfoBundleError::Malformed(format!(
            "unexpected member {extra:?} (an info-bundle holds exactly {ROOT_CERT}, {ROOT_CSR}, \
             {NODEINFO_ZIP} and {NODEINFO_SIGNATURE})"
        )));
    }

    let root_der = exactly_one(&cert_bytes, ObjectKind::Certificate, ROOT_CERT)?;
    let (rest, cert) = X509Certificate::from_der(&root_der)
        .map_err(|e| InfoBundleError::BadRoot(format!("unparsable: {e}")))?;
    if !rest.is_empty() {
        return Err(InfoBundleError::BadRoot(
            "trailing bytes after the certificate".into(),
        ));
    }
    crate::bundle::check_root(&cert, now).map_err(InfoBundleError::BadRoot)?;
    let identity = NodeIdentity::from_root_der(&root_der)
        .map_err(|e| InfoBundleError::BadRoot(e.to_string()))?;
    let node_type = NodeType::of_identity(&identity)?;

    let csr_der = exactly_one(&csr_bytes, ObjectKind::Csr, ROOT_CSR)?;
    let csr =
        crate::csr::parse_csr(&csr_der).map_err(|e| InfoBundleError::BadCsr(e.to_string()))?;
    if csr.spki_der != identity.spki_der {
        return Err(InfoBundleError::BadCsr(
            "it requests a different key than the root's".into(),
        ));
    }
    let (_, csr_subject) = X509Name::from_der(&csr.subject_der)
        .map_err(|e| InfoBundleError::BadCsr(format!("its subject: {e}")))?;
    if !names::dn_equal(&csr_subject, cert.subject()) {
        return Err(InfoBundleError::BadCsr(format!(
            "it requests {}, the root is {}",
            names::display_dn(&csr_subject),
            identity.subject
        )));
    }

    let key_type = identity
        .key_type
        .ok_or_else(|| InfoBundleError::BadRoot("unsupported key type".into()))?;
    let alg = signature::sha256_algorithm_for(key_type).ok_or_else(|| {
        InfoBundleError::BadRoot(format!(
            "its {key_type} key cannot sign with SHA-256 as swpt_ca_scripts does"
        ))
    })?;
    let (spki_alg, key_bits) = signature::split_spki(&identity.spki_der)
        .map_err(|e| InfoBundleError::BadRoot(e.to_string()))?;
    if alg.public_key_alg_id().as_ref() != spki_alg.as_slice() {
        return Err(InfoBundleError::BadRoot(
            "key parameters not supported".into(),
        ));
    }
    alg.verify_signature(&key_bits, &nodeinfo_zip, &signature_bytes)
        .map_err(|_| InfoBundleError::BadSignature)?;

    let nodeinfo =
        archive::read_members(&nodeinfo_zip, &NODEINFO, "the info-bundle's nodeinfo.zip")?;
    let manifest_bytes = nodeinfo
        .iter()
        .find(|(n, _)| n == STOMP_TOML)
        .map(|(_, d)| d.clone())
        .ok_or_else(|| {
            InfoBundleError::Malformed(format!(
                "its nodeinfo.zip has no {STOMP_TOML} (where the node's STOMP servers are)"
            ))
        })?;
    let manifest = StompManifest::parse(&manifest_bytes)?;
    let updated_at = nodeinfo
        .iter()
        .find(|(n, _)| n == UPDATED_AT)
        .and_then(|(_, d)| std::str::from_utf8(d).ok())
        .and_then(|t| t.lines().next())
        .map(|t| t.trim().to_string());
    Ok(InfoBundle {
        root_der,
        identity,
        node_type,
        manifest,
        manifest_bytes,
        updated_at,
    })
}

/// Removes the member `name` from `members` and returns its bytes.
fn take_member(
    members: &mut Vec<(String, Vec<u8>)>,
    name: &str,
) -> Result<Vec<u8>, InfoBundleError> {
    let at = members.iter().position(|(n, _)| n == name).ok_or_else(|| {
        InfoBundleError::Malformed(format!(
            "it has no {name} (an info-bundle holds {ROOT_CERT}, {ROOT_CSR}, {NODEINFO_ZIP} \
             and {NODEINFO_SIGNATURE}, as create-infobundle writes them)"
        ))
    })?;
    Ok(members.swap_remove(at).1)
}

/// The single object of `kind` in a member.
fn exactly_one(bytes: &[u8], kind: ObjectKind, name: &str) -> Result<Vec<u8>, InfoBundleError> {
    let mut all = pemfile::parse_all(bytes, kind, name)
        .map_err(|e| InfoBundleError::Malformed(e.to_string()))?;
    if all.len() != 1 {
        return Err(InfoBundleError::Malformed(format!(
            "{name} holds {} objects where exactly one is expected",
            all.len()
        )));
    }
    Ok(all.remove(0))
}

/// Writes our info-bundle: the root, a CSR for it, and a node info holding
/// `manifest` (our STOMP servers) and today's date, signed with SHA-256 by the
/// root key. Swaptacular nodes verify the signature with `openssl dgst -sha256`,
/// so the root key must be RSA or ECDSA P-256 (the keys that sign SHA-256 here).
pub fn export(
    signer: &RootSigner,
    manifest: &[u8],
    now: OffsetDateTime,
) -> Result<Vec<u8>, InfoBundleError> {
    let key_type = signer.key_type();
    if !matches!(
        key_type,
        KeyType::EcdsaP256 | KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
    ) {
        return Err(InfoBundleError::Unsupported(format!(
            "Swaptacular nodes verify the node info signature with SHA-256 (openssl dgst -sha256), \
             which this CA's {key_type} root key does not sign with; only RSA or ECDSA P-256 roots \
             can join a Swaptacular network (create one with `ca-tool init --profile swaptacular`)"
        )));
    }
    NodeType::of_identity(signer.identity()).map_err(|e| {
        InfoBundleError::Unsupported(format!(
            "{e}; Swaptacular nodes only sign peers named as Swaptacular nodes \
             (create the CA with `ca-tool init --profile swaptacular`)"
        ))
    })?;
    StompManifest::parse(manifest)?;
    let err = |e: String| InfoBundleError::Malformed(e);
    let date = format!(
        "{:04}-{:02}-{:02}\n",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let nodeinfo = archive::write_members(
        &[(STOMP_TOML, manifest), (UPDATED_AT, date.as_bytes())],
        now,
    )
    .map_err(err)?;
    let sig = signer.sign(&nodeinfo)?;
    let csr = pem_encode("CERTIFICATE REQUEST", &signer.root_csr()?);
    let cert = pem_certificate(signer.cert_der());
    let bundle = archive::write_members(
        &[
            (ROOT_CERT, cert.as_bytes()),
            (ROOT_CSR, csr.as_bytes()),
            (NODEINFO_ZIP, &nodeinfo),
            (NODEINFO_SIGNATURE, &sig),
        ],
        now,
    )
    .map_err(err)?;
    // What we write must pass our own reading, as a partner's would.
    verify(&bundle, now)?;
    Ok(bundle)
}
