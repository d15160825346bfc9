//! The X.509 chain validator shared by the gateway and `ca-tool verify`.
//!
//! rustls-webpki rejects every chain that carries a directoryName name
//! constraint, and the peer-link design depends on exactly those (each node
//! signs its partner's root as a sub-CA constrained to the partner's DN), so
//! this module implements RFC 5280 section 6.1 path validation itself, for the
//! profiles the product issues and accepts:
//!
//! - one trust anchor (a certificate; its signature is not checked, but its
//!   validity period is, as openssl and Go check it, and its
//!   basicConstraints, keyUsage and nameConstraints apply when present);
//! - untrusted intermediates in any order; the path is built depth-first from
//!   the leaf, matching issuer and subject names (RFC 5280 7.1 comparison),
//!   trying AKI/SKI matches first, at most [`MAX_PATH_LEN`]
//!   certificates;
//! - a candidate issuer that the certificate's authorityKeyIdentifier rules
//!   out (keyIdentifier not its subjectKeyIdentifier, or another
//!   authorityCertSerialNumber or authorityCertIssuer) is not its issuer, as
//!   in openssl's chain building, so no chain passes here that an
//!   openssl-based partner refuses for a key identifier mismatch;
//! - signatures (ECDSA P-256/P-384, Ed25519, RSA PKCS#1 and PSS) through
//!   [`crate::signature`], validity periods, basicConstraints, pathLen,
//!   keyUsage, extendedKeyUsage of the leaf;
//! - directoryName name constraints (permitted and excluded, across every CA
//!   in the path including the anchor), applied to the subject and to
//!   directoryName entries of subjectAltName;
//! - complete CRLs from the issuers in the path.
//!
//! Everything it does not understand fails closed: critical extensions other
//! than the ones above (certificate policies included), name constraints of
//! any other name type or with minimum/maximum, delta and indirect CRLs.
//! Certificate policies are not processed at all.

mod cert;
mod crl;
mod error;
mod extensions;
pub mod names;
mod path;

#[cfg(test)]
mod tests;

use std::collections::HashSet;

pub use error::{CertRef, NameViolation, Position, ValidationError};
pub use path::{MAX_ATTEMPTS, MAX_PATH_LEN};

/// What the leaf certificate will be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A TLS client: extendedKeyUsage must include clientAuth.
    Client,
    /// A TLS server: extendedKeyUsage must include serverAuth.
    Server,
    /// No end-entity checks on the leaf (no EKU, keyUsage or CA checks), so
    /// that operators can verify a CA or cross-certificate as the leaf.
    Any,
}

/// The inputs of [`validate_chain`] besides the leaf.
#[derive(Debug, Clone)]
pub struct ValidationOptions<'a> {
    /// DER of the single trust anchor certificate.
    pub anchor: &'a [u8],
    /// DER of untrusted certificates that may help build the path, any order;
    /// unrelated certificates are ignored (but each must decode).
    pub intermediates: &'a [Vec<u8>],
    /// DER CRLs; each applies to the certificates issued by its issuer.
    pub crls: &'a [Vec<u8>],
    /// The validation time.
    pub at: time::OffsetDateTime,
    /// What the leaf is used for.
    pub purpose: Purpose,
}

/// A chain that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedChain {
    /// DER certificates, leaf first, anchor last.
    pub chain: Vec<Vec<u8>>,
    /// The leaf subject as [`names::display_dn`] renders it.
    pub leaf_subject: String,
    /// The raw DER of the leaf subject Name.
    pub leaf_subject_der: Vec<u8>,
    /// The leaf's notAfter.
    pub leaf_not_after: time::OffsetDateTime,
}

/// Validates `leaf_der` up to `opts.anchor` (see the module documentation for
/// the rules). On failure the error names the certificate and the rule; when
/// several candidate paths fail, the failure of the path that got furthest is
/// reported.
pub fn validate_chain(
    leaf_der: &[u8],
    opts: &ValidationOptions<'_>,
) -> Result<ValidatedChain, ValidationError> {
    let leaf = cert::parse_cert(leaf_der, || "the leaf certificate".into())?;
    let anchor = cert::parse_cert(opts.anchor, || "the trust anchor certificate".into())?;
    let mut intermediates = Vec::with_capacity(opts.intermediates.len());
    for (k, der) in opts.intermediates.iter().enumerate() {
        let label = || {
            format!(
                "intermediate certificate #{} of the supplied intermediates",
                k + 1
            )
        };
        intermediates.push(cert::parse_cert(der, label)?);
    }
    let crls = opts
        .crls
        .iter()
        .enumerate()
        .map(|(k, der)| crl::parse_crl(k, der))
        .collect::<Result<Vec<_>, _>>()?;

    let summary = |leaf: &cert::ParsedCert<'_>, chain: Vec<Vec<u8>>| ValidatedChain {
        chain,
        leaf_subject: leaf.subject_text(),
        leaf_subject_der: leaf.x509.subject().as_raw().to_vec(),
        leaf_not_after: leaf.x509.validity().not_after.to_datetime(),
    };

    if leaf_der == opts.anchor {
        path::validate_leaf_is_anchor(&leaf, opts.at, opts.purpose)?;
        return Ok(summary(&leaf, vec![leaf_der.to_vec()]));
    }

    // Table: leaf, anchor, then the distinct intermediates.
    let mut seen: HashSet<&[u8]> = HashSet::from([leaf_der, opts.anchor]);
    let mut certs = vec![leaf, anchor];
    for cert in intermediates {
        if seen.insert(cert.der) {
            certs.push(cert);
        }
    }
    let ctx = path::Context {
        certs: &certs,
        crls: &crls,
        at: opts.at,
        purpose: opts.purpose,
    };
    let found = path::PathBuilder::new(&ctx).build()?;
    let chain = found
        .iter()
        .filter_map(|&i| certs.get(i).map(|c| c.der.to_vec()))
        .collect();
    Ok(summary(&certs[path::LEAF], chain))
}
