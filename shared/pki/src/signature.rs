//! Signature verification over X.509 structures.
//!
//! Every signature the project checks (certificates, CRLs, CSRs, bundles) goes
//! through this one table of algorithms, borrowed from rustls-webpki's ring
//! back end, so that what `ca-tool verify` accepts is exactly what the gateway
//! accepts.

use rustls_pki_types::SignatureVerificationAlgorithm;
use webpki::ring as algs;

/// The algorithms a partner's key or signature may use: ECDSA P-256/P-384,
/// Ed25519, RSA 2048 to 8192 bits with PKCS#1 v1.5 or PSS.
pub static SUPPORTED_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    algs::ECDSA_P256_SHA256,
    algs::ECDSA_P256_SHA384,
    algs::ECDSA_P384_SHA256,
    algs::ECDSA_P384_SHA384,
    algs::ED25519,
    algs::RSA_PKCS1_2048_8192_SHA256,
    algs::RSA_PKCS1_2048_8192_SHA384,
    algs::RSA_PKCS1_2048_8192_SHA512,
    algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The (key algorithm, signature algorithm) pair is not in [`SUPPORTED_ALGORITHMS`].
    #[error("unsupported signature algorithm or key type")]
    UnsupportedAlgorithm,
    /// The signature does not verify with the key.
    #[error("signature does not verify")]
    BadSignature,
    /// The public key could not be parsed.
    #[error("malformed public key: {0}")]
    MalformedKey(String),
}

/// Verifies `signature` over `message`.
///
/// `spki_algorithm` and `signature_algorithm` are the DER *contents* (without
/// the outer SEQUENCE header) of the SubjectPublicKeyInfo algorithm and the
/// signature AlgorithmIdentifier, as they appear in certificates; `public_key`
/// is the content of the subjectPublicKey BIT STRING.
pub fn verify(
    spki_algorithm: &[u8],
    public_key: &[u8],
    signature_algorithm: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    for alg in SUPPORTED_ALGORITHMS {
        if alg.public_key_alg_id().as_ref() == spki_algorithm
            && alg.signature_alg_id().as_ref() == signature_algorithm
        {
            return alg
                .verify_signature(public_key, message, signature)
                .map_err(|_| SignatureError::BadSignature);
        }
    }
    Err(SignatureError::UnsupportedAlgorithm)
}

/// Splits a DER SubjectPublicKeyInfo into (algorithm contents, key bits) for [`verify`].
pub fn split_spki(spki_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SignatureError> {
    use x509_parser::prelude::FromDer;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| SignatureError::MalformedKey(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SignatureError::MalformedKey(
            "trailing bytes after SubjectPublicKeyInfo".into(),
        ));
    }
    Ok((
        algorithm_contents(&spki.algorithm),
        spki.subject_public_key.data.to_vec(),
    ))
}

/// Verifies a signed X.509 structure (certificate, CRL, CSR) with the key of
/// `signer_spki_der` (a DER SubjectPublicKeyInfo): `signed` is the DER that was
/// signed (tbsCertificate, tbsCertList, certificationRequestInfo) and
/// `signature_algorithm` the structure's outer AlgorithmIdentifier. A key that
/// does not parse is [`SignatureError::MalformedKey`]; everything else is as
/// [`verify`] says.
pub fn verify_signed(
    signer_spki_der: &[u8],
    signature_algorithm: &x509_parser::x509::AlgorithmIdentifier<'_>,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let (spki_algorithm, public_key) = split_spki(signer_spki_der)?;
    verify(
        &spki_algorithm,
        &public_key,
        &algorithm_contents(signature_algorithm),
        signed,
        signature,
    )
}

/// Re-encodes a parsed AlgorithmIdentifier as the DER contents webpki compares against.
pub fn algorithm_contents(alg: &x509_parser::x509::AlgorithmIdentifier<'_>) -> Vec<u8> {
    use x509_parser::der_parser::asn1_rs::ToDer;
    let mut out = alg.algorithm.to_der_vec().unwrap_or_default();
    if let Some(params) = &alg.parameters {
        out.extend(params.to_der_vec().unwrap_or_default());
    }
    out
}

/// The algorithm matching signatures that rcgen makes with a key of `key_type`
/// (used for data the root key signs outside certificates, such as bundles).
pub fn algorithm_for(
    key_type: crate::keys::KeyType,
) -> &'static dyn SignatureVerificationAlgorithm {
    use crate::keys::KeyType;
    match key_type {
        KeyType::EcdsaP256 => algs::ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => algs::ECDSA_P384_SHA384,
        KeyType::Ed25519 => algs::ED25519,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => algs::RSA_PKCS1_2048_8192_SHA256,
    }
}

/// The algorithm of a signature made with SHA-256 by a key of `key_type`, as
/// `openssl dgst -sha256 -sign` makes them (Swaptacular's info-bundles):
/// PKCS#1 v1.5 for RSA, ECDSA (DER) for P-256 and P-384. `None` for Ed25519,
/// which signs no SHA-256 digest.
pub fn sha256_algorithm_for(
    key_type: crate::keys::KeyType,
) -> Option<&'static dyn SignatureVerificationAlgorithm> {
    use crate::keys::KeyType;
    match key_type {
        KeyType::EcdsaP256 => Some(algs::ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => Some(algs::ECDSA_P384_SHA256),
        KeyType::Ed25519 => None,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            Some(algs::RSA_PKCS1_2048_8192_SHA256)
        }
    }
}
