//! Certificate signing requests for gateway server certificates.
//!
//! The gateway's key is generated on the gateway host; only the CSR travels to
//! the air-gapped laptop. A CSR is accepted only if its signature proves
//! possession of the key and its subject is the node's own DN (optionally with
//! one CN), so a CSR for somebody else's name can never be signed by mistake.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::*;
use x509_parser::x509::X509Name;

use peerlink_pki::keys::{key_type_of, KeyType};
use peerlink_pki::signature::{self, SignatureError};
use peerlink_pki::validate::names;

/// A CSR whose signature and subject have been checked.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The requested key (DER SubjectPublicKeyInfo).
    pub spki_der: Vec<u8>,
    /// Its type.
    pub key_type: KeyType,
    /// The CN the gateway asked for, if any.
    pub common_name: Option<String>,
    /// The subject as text.
    pub subject: String,
    /// Whether the CSR asked for extensions (these are ignored: the profile decides).
    pub requested_extensions: bool,
}

/// Why a CSR was refused.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Not a parsable PKCS#10 request.
    #[error("malformed certificate signing request: {0}")]
    Malformed(String),
    /// The self-signature does not verify.
    #[error("the CSR's signature does not verify ({0}); it was altered or not made with its key")]
    BadSignature(String),
    /// The subject is not our DN (+ optional CN).
    #[error("the CSR is for {subject}, but this CA only signs its own name {ours} (optionally plus one CN); create the CSR with `peer-gateway keygen --node-dir` or `openssl req -subj` using exactly that name")]
    WrongSubject {
        /// Requested subject.
        subject: String,
        /// Our subject.
        ours: String,
    },
    /// Unsupported key type.
    #[error("the CSR's key type is not supported (use ECDSA P-256/P-384, Ed25519 or RSA 2048/3072/4096)")]
    UnsupportedKey,
}

/// A CSR whose signature verifies, whatever its subject.
#[derive(Debug, Clone)]
pub struct SignedCsr {
    /// The requested key (DER SubjectPublicKeyInfo).
    pub spki_der: Vec<u8>,
    /// The requested subject, raw DER.
    pub subject_der: Vec<u8>,
}

/// Parses a DER CSR and verifies its signature (proof of possession of its key),
/// without judging its subject: a Swaptacular info-bundle's CSR names the
/// partner, and is compared with the partner's root.
pub fn parse_csr(der: &[u8]) -> Result<SignedCsr, CsrError> {
    let csr = parse_signed(der)?;
    let info = &csr.certification_request_info;
    Ok(SignedCsr {
        spki_der: info.subject_pki.raw.to_vec(),
        subject_der: info.subject.as_raw().to_vec(),
    })
}

/// The parsed request, once its self-signature verified.
fn parse_signed(der: &[u8]) -> Result<X509CertificationRequest<'_>, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(
            "trailing data after the request".into(),
        ));
    }
    let info = &csr.certification_request_info;
    signature::verify_signed(
        info.subject_pki.raw,
        &csr.signature_algorithm,
        info.raw,
        &csr.signature_value.data,
    )
    .map_err(|e| match e {
        SignatureError::MalformedKey(_) => CsrError::Malformed(e.to_string()),
        e => CsrError::BadSignature(e.to_string()),
    })?;
    Ok(csr)
}

/// Parses a DER CSR, verifies its signature, and checks that its subject is `our_subject_der`
/// optionally followed by a single CN.
pub fn verify_csr(der: &[u8], our_subject_der: &[u8]) -> Result<VerifiedCsr, CsrError> {
    let csr = parse_signed(der)?;
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let key_type = key_type_of(spki).ok_or(CsrError::UnsupportedKey)?;

    let (_, ours) = X509Name::from_der(our_subject_der)
        .map_err(|e| CsrError::Malformed(format!("our subject: {e}")))?;
    let subject = &info.subject;
    let wrong = || CsrError::WrongSubject {
        subject: names::display_dn(subject),
        ours: names::display_dn(&ours),
    };
    let ours_len = ours.iter_rdn().count();
    let theirs: Vec<_> = subject.iter_rdn().collect();
    if !names::dn_within(subject, &ours) {
        return Err(wrong());
    }
    let common_name = match &theirs[ours_len.min(theirs.len())..] {
        [] => None,
        [cn] => {
            let avas: Vec<_> = cn.iter().collect();
            match avas.as_slice() {
                [ava] if *ava.attr_type() == x509_parser::oid_registry::OID_X509_COMMON_NAME => {
                    let text = ava.as_str().map_err(|_| wrong())?;
                    if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
                        return Err(wrong());
                    }
                    Some(text.to_string())
                }
                _ => return Err(wrong()),
            }
        }
        _ => return Err(wrong()),
    };
    Ok(VerifiedCsr {
        spki_der: spki.raw.to_vec(),
        key_type,
        common_name,
        subject: names::display_dn(subject),
        requested_extensions: csr
            .requested_extensions()
            .is_some_and(|mut e| e.next().is_some()),
    })
}
