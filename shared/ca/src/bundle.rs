//! Node bundles: what one organization e-mails to a partner.
//!
//! A bundle is a text file holding the node's self-signed root certificate and
//! a small JSON document (node id, DN, gateway endpoints, creation time, the
//! root's fingerprint) signed by the root key. The human-readable header at
//! the top is for the person reading the e-mail and is never trusted. The
//! format is specified in `docs/bundle-format.md`.

use ::time::OffsetDateTime;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::*;

use peerlink_pki::endpoint::{check_endpoint, EndpointError};
use peerlink_pki::identity::{is_hash_id, node_id_from_spki, Fingerprint, NodeIdentity};
use peerlink_pki::pemfile::{pem_certificate, pem_encode};
use peerlink_pki::signature::{self, SignatureError};
use peerlink_pki::timefmt::rfc3339_in_offset;

use crate::profiles::RootSigner;

/// PEM label of the signed node information.
pub const INFO_LABEL: &str = "PEERLINK NODE INFO";
/// PEM label of the signature over the node information.
pub const SIGNATURE_LABEL: &str = "PEERLINK NODE INFO SIGNATURE";
/// The format identifier inside the node information.
pub const FORMAT: &str = "peerlink-bundle/1";
/// Bundles larger than this are refused before parsing.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

/// The signed node information.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Always [`FORMAT`].
    pub format: String,
    /// The node id (equals the root subject's serialNumber).
    pub node_id: String,
    /// The root subject as text (informational; the certificate is authoritative).
    pub subject: String,
    /// SHA-256 of the root certificate DER, lowercase hex: binds this info to that certificate.
    pub root_sha256: String,
    /// Where the node's gateways listen, `host:port`.
    pub endpoints: Vec<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Structure problems.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// The root certificate is not a valid self-signed CA.
    #[error("the bundle's root certificate is not acceptable: {0}")]
    BadRoot(String),
    /// The node information signature does not verify.
    #[error("the bundle's signature does not verify: it was altered after export or not signed by its root key; ask the partner for a fresh bundle")]
    BadSignature,
    /// The info does not match the certificate.
    #[error("the bundle is inconsistent: {0}")]
    Inconsistent(String),
    /// Endpoint syntax.
    #[error(transparent)]
    BadEndpoint(#[from] EndpointError),
    /// Signing failed.
    #[error(transparent)]
    Issue(#[from] crate::profiles::IssueError),
}

/// Creates a signed bundle for our node.
pub fn export(
    signer: &RootSigner,
    endpoints: &[String],
    now: OffsetDateTime,
) -> Result<String, BundleError> {
    for e in endpoints {
        check_endpoint(e)?;
    }
    let id = signer.identity();
    let info = NodeInfo {
        format: FORMAT.into(),
        node_id: id.node_id.clone(),
        subject: id.subject.clone(),
        root_sha256: hex::encode(id.fingerprint.0),
        endpoints: endpoints.to_vec(),
        created_at: rfc3339_in_offset(now).map_err(|e| BundleError::Malformed(e.to_string()))?,
    };
    let info_json =
        serde_json::to_vec_pretty(&info).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let signature = signer.sign(&info_json)?;
    let mut out = String::new();
    out.push_str(
        "Peer-link node bundle (the text above the first BEGIN line is informational only)\n",
    );
    out.push_str(&format!("Node id:      {}\n", id.node_id));
    out.push_str(&format!("Subject:      {}\n", id.subject));
    out.push_str(&format!(
        "Fingerprint:  SHA-256 {}\n",
        id.fingerprint.phone_form()
    ));
    out.push_str(&format!("Endpoints:    {}\n", endpoints.join(", ")));
    out.push_str(&format!("Created at:   {}\n\n", info.created_at));
    out.push_str(&pem_certificate(signer.cert_der()));
    out.push_str(&pem_encode(INFO_LABEL, &info_json));
    out.push_str(&pem_encode(SIGNATURE_LABEL, &signature));
    Ok(out)
}

/// A bundle whose root and signature have been checked.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The partner's root certificate (DER).
    pub root_der: Vec<u8>,
    /// The identity read from it.
    pub identity: NodeIdentity,
    /// The signed node information.
    pub info: NodeInfo,
}

/// Parses and verifies a bundle: self-signed CA root, signature over the node info by the
/// root key, info bound to the certificate, node id equal to the subject's and derived from
/// the key when it has the form of a key-derived id, root valid at `now`.
pub fn verify(bytes: &[u8], now: OffsetDateTime) -> Result<VerifiedBundle, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::Malformed(format!(
            "{} bytes is larger than the {MAX_BUNDLE_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| BundleError::Malformed("not a text file".into()))?;
    let blocks = ::pem::parse_many(pem_body(text))
        .map_err(|e| BundleError::Malformed(format!("corrupt or truncated PEM: {e}")))?;
    let one = |label: &str| -> Result<Vec<u8>, BundleError> {
        let mut found = blocks.iter().filter(|b| b.tag() == label);
        let first = found
            .next()
            .ok_or_else(|| BundleError::Malformed(format!("no {label} block (truncated file?)")))?;
        if found.next().is_some() {
            return Err(BundleError::Malformed(format!(
                "more than one {label} block"
            )));
        }
        Ok(first.contents().to_vec())
    };
    let root_der = one("CERTIFICATE")?;
    let info_bytes = one(INFO_LABEL)?;
    let signature = one(SIGNATURE_LABEL)?;

    let (rest, cert) = X509Certificate::from_der(&root_der)
        .map_err(|e| BundleError::BadRoot(format!("unparsable: {e}")))?;
    if !rest.is_empty() {
        return Err(BundleError::BadRoot(
            "trailing bytes after the certificate".into(),
        ));
    }
    check_self_signed_ca(&cert, now)?;
    let identity =
        NodeIdentity::from_root_der(&root_der).map_err(|e| BundleError::BadRoot(e.to_string()))?;
    let key_type = identity
        .key_type
        .ok_or_else(|| BundleError::BadRoot("unsupported key type".into()))?;

    let (spki_alg, key_bits) = signature::split_spki(&identity.spki_der)
        .map_err(|e| BundleError::BadRoot(e.to_string()))?;
    let alg = signature::algorithm_for(key_type);
    if alg.public_key_alg_id().as_ref() != spki_alg.as_slice() {
        return Err(BundleError::BadRoot("key parameters not supported".into()));
    }
    alg.verify_signature(&key_bits, &info_bytes, &signature)
        .map_err(|_| BundleError::BadSignature)?;

    let info: NodeInfo = serde_json::from_slice(&info_bytes)
        .map_err(|e| BundleError::Malformed(format!("node info: {e}")))?;
    if info.format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "unknown bundle format {:?} (this tool reads {FORMAT})",
            info.format
        )));
    }
    if info.root_sha256 != hex::encode(Fingerprint::of(&root_der).0) {
        return Err(BundleError::Inconsistent(
            "the signed info names a different root certificate".into(),
        ));
    }
    if info.node_id != identity.node_id {
        return Err(BundleError::Inconsistent(format!(
            "node id {:?} in the info differs from {:?} in the certificate",
            info.node_id, identity.node_id
        )));
    }
    if is_hash_id(&identity.node_id) && node_id_from_spki(&identity.spki_der) != identity.node_id {
        return Err(BundleError::Inconsistent(format!(
            "node id {} has the key-derived form but the root key hashes to {}",
            identity.node_id,
            node_id_from_spki(&identity.spki_der)
        )));
    }
    for e in &info.endpoints {
        check_endpoint(e)?;
    }
    Ok(VerifiedBundle {
        root_der,
        identity,
        info,
    })
}

/// The text from the first BEGIN line on (the header above it is not trusted or parsed).
fn pem_body(text: &str) -> &str {
    text.find("-----BEGIN ").map_or("", |i| &text[i..])
}

fn check_self_signed_ca(
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> Result<(), BundleError> {
    check_root(cert, now).map_err(BundleError::BadRoot)
}

/// What a partner's root must be, whatever the bundle format: self-signed (issuer =
/// subject, signature verifies with its own key), a CA, keyCertSign if it has a
/// keyUsage, valid at `now`. `Err` says why not.
pub(crate) fn check_root(cert: &X509Certificate<'_>, now: OffsetDateTime) -> Result<(), String> {
    let bad = |m: &str| m.to_string();
    if cert.issuer().as_raw() != cert.subject().as_raw() {
        return Err(bad("it is not self-signed (issuer differs from subject)"));
    }
    signature::verify_signed(
        cert.public_key().raw,
        &cert.signature_algorithm,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )
    .map_err(|e| match e {
        SignatureError::MalformedKey(_) => e.to_string(),
        e => format!("self-signature: {e}"),
    })?;
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => {
            return Err(bad(
                "it is not a CA certificate (basicConstraints cA missing)",
            ))
        }
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        if !ku.value.key_cert_sign() {
            return Err(bad("its keyUsage lacks keyCertSign"));
        }
    }
    let validity = cert.validity();
    if now < validity.not_before.to_datetime() {
        return Err(bad(&format!("not valid before {}", validity.not_before)));
    }
    if now > validity.not_after.to_datetime() {
        return Err(bad(&format!("expired on {}", validity.not_after)));
    }
    Ok(())
}
