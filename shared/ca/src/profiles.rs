//! The certificate profiles of design.md: root CA, peer cross-certificate,
//! server certificate, and the CRL.
//!
//! Every issued certificate is parsed back and checked against what was meant
//! (subject bytes, key, issuer) before it leaves this module: a cross-cert
//! whose subject differs from the partner's by one byte would silently break
//! their chains, so that is an error here, not a surprise in production.

use ::time::{Duration, OffsetDateTime};
use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use x509_parser::prelude::*;

use peerlink_cadb::{Issued, Reason, RevokedEntry};
use peerlink_pki::identity::{rcgen_name, NodeIdentity, NodeName};
use peerlink_pki::keys::{KeyType, PrivateKey};

/// Certificates start this long before "now" to tolerate clock skew between hosts.
pub const BACKDATE: Duration = Duration::minutes(5);

/// The key identifier of a public key by RFC 5280 section 4.2.1.2 method 1: the
/// SHA-1 hash of the subjectPublicKey BIT STRING's contents (without tag,
/// length or unused-bits octet).
///
/// This is what openssl writes for `subjectKeyIdentifier = hash` and
/// `authorityKeyIdentifier = keyid`, and openssl refuses an issuer whose
/// subjectKeyIdentifier differs from the authorityKeyIdentifier of the
/// certificate below it. Partners with openssl-made CAs (every Swaptacular
/// node) cross-sign our root with this identifier, so our certificates must
/// name it too. SHA-1 serves as a name here, not as a signature hash.
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>, IssueError> {
    let spki = match x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der) {
        Ok(([], spki)) => spki,
        Ok(_) => {
            return Err(IssueError::Build(
                "public key: trailing data after the SubjectPublicKeyInfo".into(),
            ))
        }
        Err(e) => return Err(IssueError::Build(format!("public key: {e}"))),
    };
    if spki.subject_public_key.unused_bits != 0 {
        return Err(IssueError::Build(
            "public key: the subjectPublicKey BIT STRING has unused bits".into(),
        ));
    }
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &spki.subject_public_key.data,
    );
    Ok(digest.as_ref().to_vec())
}

/// The subjectKeyIdentifier of a certificate, if it has one.
fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// Why a certificate or CRL could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// rcgen refused the parameters.
    #[error("cannot build certificate: {0}")]
    Build(String),
    /// The result does not match what was intended (e.g. subject not byte-identical).
    #[error("issued certificate does not match the intended profile: {0}")]
    Mismatch(String),
    /// The key does not belong to the CA certificate.
    #[error(
        "the private key does not match the root certificate {0}; is this the right CA directory?"
    )]
    KeyMismatch(String),
    /// A name problem.
    #[error(transparent)]
    Identity(#[from] peerlink_pki::identity::IdentityError),
    /// A key problem.
    #[error(transparent)]
    Key(#[from] peerlink_pki::keys::KeyError),
    /// Bad validity request.
    #[error("invalid validity: {0}")]
    Validity(String),
    /// The PKCS#11 token failed to sign.
    #[cfg(feature = "pkcs11")]
    #[error(transparent)]
    Token(#[from] crate::hsm::HsmError),
}

fn build_err(e: rcgen::Error) -> IssueError {
    IssueError::Build(e.to_string())
}

/// The root key a [`RootSigner`] signs with: decrypted from the key file, or on a
/// PKCS#11 token.
#[derive(Debug)]
pub enum RootKey {
    /// A key held in memory (decrypted from `private/root-ca.key`).
    File(KeyPair),
    /// A key that never leaves its PKCS#11 token.
    #[cfg(feature = "pkcs11")]
    Token(crate::hsm::TokenKey),
}

impl RootKey {
    /// Turns an rcgen error into ours; a token's failure carries its own reason.
    fn error(&self, e: rcgen::Error) -> IssueError {
        match self {
            #[cfg(feature = "pkcs11")]
            RootKey::Token(key) => token_error(key, e),
            RootKey::File(_) => build_err(e),
        }
    }
}

impl rcgen::PublicKeyData for RootKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            RootKey::File(k) => k.der_bytes(),
            #[cfg(feature = "pkcs11")]
            RootKey::Token(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            RootKey::File(k) => k.algorithm(),
            #[cfg(feature = "pkcs11")]
            RootKey::Token(k) => k.algorithm(),
        }
    }
}

impl rcgen::SigningKey for RootKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            RootKey::File(k) => k.sign(msg),
            #[cfg(feature = "pkcs11")]
            RootKey::Token(k) => k.sign(msg),
        }
    }
}

/// A fresh random positive serial of 128 bits (at least 64 bits of entropy, RFC 5280 compliant).
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // no leading zero byte to strip: always exactly 16 bytes
    SerialNumber::from_slice(&bytes)
}

/// Longest validity (days) of the default profile: 100 years.
pub const MAX_DAYS: u32 = 365 * 100;

/// Validity window starting now (minus [`BACKDATE`]) for `days`, at most [`MAX_DAYS`].
pub fn validity_days(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), IssueError> {
    validity_days_up_to(days, MAX_DAYS)
}

/// Validity window starting now (minus [`BACKDATE`]) for `days`, at most
/// `max_days` (the Swaptacular profile allows centuries: its peers refuse
/// anything shorter than 500 years).
pub fn validity_days_up_to(
    days: u32,
    max_days: u32,
) -> Result<(OffsetDateTime, OffsetDateTime), IssueError> {
    if days == 0 || days > max_days {
        return Err(IssueError::Validity(format!(
            "--days {days} must be between 1 and {max_days}"
        )));
    }
    let now = OffsetDateTime::now_utc();
    let now = now - Duration::nanoseconds(now.nanosecond() as i64);
    Ok((now - BACKDATE, now + Duration::days(days as i64)))
}

/// Creates the self-signed root CA certificate (pathlen 1, keyCertSign + cRLSign,
/// SKI by method 1: [`key_identifier`]).
pub fn issue_root(key: &PrivateKey, name: &NodeName, days: u32) -> Result<Vec<u8>, IssueError> {
    issue_root_up_to(key, name, days, MAX_DAYS)
}

/// Like [`issue_root`], allowing up to `max_days` (the Swaptacular profile's roots
/// last about 1000 years, as swpt_ca_scripts makes them).
pub fn issue_root_up_to(
    key: &PrivateKey,
    name: &NodeName,
    days: u32,
    max_days: u32,
) -> Result<Vec<u8>, IssueError> {
    let signing = key.signing_key()?;
    issue_root_with(&signing, name, days, max_days, build_err)
}

/// Creates the self-signed root CA certificate with a key on a PKCS#11 token, and
/// checks the token's self-signature.
#[cfg(feature = "pkcs11")]
pub fn issue_root_on_token(
    key: &crate::hsm::TokenKey,
    name: &NodeName,
    days: u32,
    max_days: u32,
) -> Result<Vec<u8>, IssueError> {
    let der = issue_root_with(key, name, days, max_days, |e| token_error(key, e))?;
    check_self_signature(&der)?;
    Ok(der)
}

/// Turns an rcgen error into ours; a token's failure carries its own reason.
#[cfg(feature = "pkcs11")]
fn token_error(key: &crate::hsm::TokenKey, e: rcgen::Error) -> IssueError {
    match (&e, key.take_error()) {
        (rcgen::Error::RemoteKeyError, Some(token_error)) => IssueError::Token(token_error),
        _ => build_err(e),
    }
}

/// Verifies the signature of a self-signed certificate with its own key.
#[cfg(feature = "pkcs11")]
fn check_self_signature(der: &[u8]) -> Result<(), IssueError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IssueError::Mismatch(e.to_string()))?;
    use peerlink_pki::signature::{verify_signed, SignatureError};
    verify_signed(
        cert.public_key().raw,
        &cert.signature_algorithm,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )
    .map_err(|e| match e {
        SignatureError::MalformedKey(_) => IssueError::Mismatch(e.to_string()),
        e => IssueError::Mismatch(format!("root self-signature: {e}")),
    })
}

fn issue_root_with<K: rcgen::SigningKey>(
    key: &K,
    name: &NodeName,
    days: u32,
    max_days: u32,
    error: impl Fn(rcgen::Error) -> IssueError,
) -> Result<Vec<u8>, IssueError> {
    let (not_before, not_after) = validity_days_up_to(days, max_days)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name.to_rcgen()?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let spki = rcgen::PublicKeyData::subject_public_key_info(key);
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_identifier(&spki)?);
    let cert = params.self_signed(key).map_err(error)?;
    Ok(cert.der().to_vec())
}

/// The node's root CA, ready to sign: certificate plus its key (decrypted, or on a token).
pub struct RootSigner {
    cert_der: Vec<u8>,
    identity: NodeIdentity,
    issuer: Issuer<'static, RootKey>,
    /// What the authorityKeyIdentifier of everything this root signs names.
    key_id: Vec<u8>,
    key_type: KeyType,
}

/// The rcgen issuer for a root certificate, and the key identifier that the
/// authorityKeyIdentifier of every certificate and CRL it signs names.
///
/// That identifier is the root's own subjectKeyIdentifier, byte for byte,
/// whatever method made it: openssl accepts an issuer only when the two are
/// equal, and a CA whose root predates method-1 identifiers (ca-tool wrote a
/// truncated SHA-256 then) must keep naming the SKI its root carries so that
/// its old and new certificates chain under the same root. A root without an
/// SKI is named by the method-1 identifier of its key, as openssl does.
fn root_issuer<K: rcgen::SigningKey>(
    cert_der: &[u8],
    identity: &NodeIdentity,
    key: K,
) -> Result<(Issuer<'static, K>, Vec<u8>), IssueError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| IssueError::Mismatch(format!("root certificate: {e}")))?;
    let key_id = match subject_key_id(&cert) {
        Some(ski) => ski,
        None => key_identifier(&identity.spki_der)?,
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen_name(cert.subject())?;
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id.clone());
    // rcgen refuses to sign a CRL with an issuer whose keyUsage lacks cRLSign;
    // keep that check by handing it the root's actual keyUsage.
    if let Ok(Some(ku)) = cert.key_usage() {
        let bits = [
            (
                ku.value.digital_signature(),
                KeyUsagePurpose::DigitalSignature,
            ),
            (ku.value.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
            (ku.value.crl_sign(), KeyUsagePurpose::CrlSign),
        ];
        params.key_usages = bits
            .into_iter()
            .filter_map(|(set, purpose)| set.then_some(purpose))
            .collect();
    }
    Ok((Issuer::new(params, key), key_id))
}

impl RootSigner {
    /// Pairs the root certificate with its key, checking that they belong together.
    pub fn new(cert_der: Vec<u8>, key: &PrivateKey) -> Result<RootSigner, IssueError> {
        let identity = NodeIdentity::from_root_der(&cert_der)?;
        let signing = key.signing_key()?;
        if key.public_key_der()? != identity.spki_der {
            return Err(IssueError::KeyMismatch(identity.subject));
        }
        let (issuer, key_id) = root_issuer(&cert_der, &identity, RootKey::File(signing))?;
        Ok(RootSigner {
            cert_der,
            identity,
            issuer,
            key_id,
            key_type: key.key_type(),
        })
    }

    /// Pairs the root certificate with its key on a PKCS#11 token, checking that
    /// they belong together.
    #[cfg(feature = "pkcs11")]
    pub fn with_token_key(
        cert_der: Vec<u8>,
        key: crate::hsm::TokenKey,
    ) -> Result<RootSigner, IssueError> {
        let identity = NodeIdentity::from_root_der(&cert_der)?;
        if key.spki_der() != identity.spki_der.as_slice() {
            return Err(IssueError::KeyMismatch(identity.subject));
        }
        let key_type = key.key_type();
        let (issuer, key_id) = root_issuer(&cert_der, &identity, RootKey::Token(key))?;
        Ok(RootSigner {
            cert_der,
            identity,
            issuer,
            key_id,
            key_type,
        })
    }

    /// Whether the key is on a PKCS#11 token.
    pub fn is_token_key(&self) -> bool {
        match self.issuer.key() {
            RootKey::File(_) => false,
            #[cfg(feature = "pkcs11")]
            RootKey::Token(_) => true,
        }
    }

    fn err(&self, e: rcgen::Error) -> IssueError {
        self.issuer.key().error(e)
    }

    /// The root's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The root certificate DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signs arbitrary bytes with the root key (bundle node info).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IssueError> {
        use rcgen::SigningKey;
        self.issuer.key().sign(message).map_err(|e| self.err(e))
    }

    /// A certificate signing request for our own root (its subject, byte for byte,
    /// and key, signed by the root key): what a Swaptacular info-bundle carries so
    /// that the partner's `openssl ca` can cross-sign our root.
    pub fn root_csr(&self) -> Result<Vec<u8>, IssueError> {
        let (_, subject) = X509Name::from_der(&self.identity.subject_der)
            .map_err(|e| IssueError::Mismatch(format!("root subject: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen_name(&subject)?;
        let csr = params
            .serialize_request(self.issuer.key())
            .map_err(|e| self.err(e))?;
        let der = csr.der().to_vec();
        let verified = crate::csr::parse_csr(&der)
            .map_err(|e| IssueError::Mismatch(format!("root CSR: {e}")))?;
        if verified.subject_der != self.identity.subject_der
            || verified.spki_der != self.identity.spki_der
        {
            return Err(IssueError::Mismatch(
                "the root CSR does not carry the root's subject and key byte for byte".into(),
            ));
        }
        Ok(der)
    }

    /// The root key's type, which determines the bundle signature algorithm.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Caps a validity end at the root's own expiry, returning whether it was capped.
    fn cap(&self, not_after: OffsetDateTime) -> (OffsetDateTime, bool) {
        if not_after > self.identity.not_after {
            (self.identity.not_after, true)
        } else {
            (not_after, false)
        }
    }

    /// Issues the peer cross-certificate: the partner's root subject (byte-identical)
    /// and key, pathlen 0, critical permitted directoryName = the partner's DN.
    pub fn issue_cross_cert(
        &self,
        partner: &NodeIdentity,
        days: u32,
    ) -> Result<Issued, IssueError> {
        self.issue_cross_cert_with(partner, days, &CrossCertOptions::default())
    }

    /// [`RootSigner::issue_cross_cert`] with the options of another profile
    /// (the Swaptacular one: centuries, and an accounting authority's `Subnet:`
    /// comment).
    pub fn issue_cross_cert_with(
        &self,
        partner: &NodeIdentity,
        days: u32,
        options: &CrossCertOptions,
    ) -> Result<Issued, IssueError> {
        let (not_before, not_after) = validity_days_up_to(days, options.max_days)?;
        let (mut not_after, mut capped) = self.cap(not_after);
        if not_after > partner.not_after {
            not_after = partner.not_after;
            capped = true;
        }
        let (_, subject) = X509Name::from_der(&partner.subject_der)
            .map_err(|e| IssueError::Mismatch(format!("partner subject: {e}")))?;
        let dn = rcgen_name(&subject)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn.clone();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(dn)],
            excluded_subtrees: vec![],
        });
        // The partner's root SKI, byte for byte, whatever method made it: the
        // partner's certificates name it in their AKI.
        params.key_identifier_method = KeyIdMethod::PreSpecified(match &partner.ski {
            Some(ski) => ski.clone(),
            None => key_identifier(&partner.spki_der)?,
        });
        params.use_authority_key_identifier_extension = true;
        if let Some(comment) = &options.ns_comment {
            params.custom_extensions.push(ns_comment(comment)?);
        }
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&partner.spki_der)
            .map_err(|e| IssueError::Build(format!("partner key: {e}")))?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| self.err(e))?;
        let der = cert.der().to_vec();
        self.check_issued(&der, &partner.subject_der, &partner.spki_der)?;
        issued(der, capped)
    }

    /// Issues a server certificate for a verified CSR: our DN (plus the CSR's CN if any),
    /// not a CA, digitalSignature (+keyEncipherment for RSA), EKU serverAuth + clientAuth.
    pub fn issue_server_cert(
        &self,
        csr: &crate::csr::VerifiedCsr,
        days: u32,
    ) -> Result<Issued, IssueError> {
        let (not_before, not_after) = validity_days(days)?;
        let (not_after, capped) = self.cap(not_after);
        let (_, our_subject) = X509Name::from_der(&self.identity.subject_der)
            .map_err(|e| IssueError::Mismatch(format!("root subject: {e}")))?;
        let mut dn = rcgen_name(&our_subject)?;
        if let Some(cn) = &csr.common_name {
            dn.push(rcgen::DnType::CommonName, cn.as_str());
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if matches!(
            csr.key_type,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
        ) {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_identifier(&csr.spki_der)?);
        params.use_authority_key_identifier_extension = true;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
            .map_err(|e| IssueError::Build(format!("CSR key: {e}")))?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| self.err(e))?;
        let der = cert.der().to_vec();
        let (_, parsed) =
            X509Certificate::from_der(&der).map_err(|e| IssueError::Mismatch(e.to_string()))?;
        if parsed.issuer().as_raw() != self.identity.subject_der.as_slice() {
            return Err(IssueError::Mismatch(
                "issuer is not byte-identical to the root subject".into(),
            ));
        }
        if parsed.public_key().raw != csr.spki_der.as_slice() {
            return Err(IssueError::Mismatch(
                "public key differs from the CSR's".into(),
            ));
        }
        self.check_key_ids(&parsed)?;
        issued(der, capped)
    }

    /// Signs an X.509 v2 CRL with CRL number and AKI, valid for `days`.
    pub fn issue_crl(
        &self,
        crl_number: u64,
        revoked: &[RevokedEntry],
        days: u32,
    ) -> Result<Vec<u8>, IssueError> {
        let (this_update, next_update) = validity_days(days)?;
        let revoked_certs = revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: r.revoked_at,
                reason_code: r.reason.map(rcgen_reason),
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_id.clone()),
        };
        let crl = params.signed_by(&self.issuer).map_err(|e| self.err(e))?;
        Ok(crl.der().to_vec())
    }

    fn check_issued(
        &self,
        der: &[u8],
        subject_der: &[u8],
        spki_der: &[u8],
    ) -> Result<(), IssueError> {
        let (_, parsed) =
            X509Certificate::from_der(der).map_err(|e| IssueError::Mismatch(e.to_string()))?;
        if parsed.subject().as_raw() != subject_der {
            return Err(IssueError::Mismatch(
                "the partner's subject cannot be reproduced byte for byte (unusual string types?)"
                    .into(),
            ));
        }
        if parsed.public_key().raw != spki_der {
            return Err(IssueError::Mismatch(
                "the partner's public key cannot be reproduced byte for byte".into(),
            ));
        }
        if parsed.issuer().as_raw() != self.identity.subject_der.as_slice() {
            return Err(IssueError::Mismatch(
                "issuer is not byte-identical to the root subject".into(),
            ));
        }
        self.check_key_ids(&parsed)
    }

    /// Checks that an issued certificate's authorityKeyIdentifier names this
    /// root's subjectKeyIdentifier: openssl refuses the chain otherwise.
    fn check_key_ids(&self, parsed: &X509Certificate<'_>) -> Result<(), IssueError> {
        let aki = parsed
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0)
                }
                _ => None,
            });
        if aki != Some(self.key_id.as_slice()) {
            return Err(IssueError::Mismatch(
                "authorityKeyIdentifier does not name the root's subjectKeyIdentifier".into(),
            ));
        }
        Ok(())
    }
}

/// What distinguishes the cross-certificates of one profile from another's.
#[derive(Debug, Clone)]
pub struct CrossCertOptions {
    /// Longest validity accepted (days).
    pub max_days: u32,
    /// A Netscape comment (`nsComment`, non-critical), such as the `Subnet: ...`
    /// an accounting authority gives a Swaptacular agent.
    pub ns_comment: Option<String>,
}

impl Default for CrossCertOptions {
    fn default() -> CrossCertOptions {
        CrossCertOptions {
            max_days: MAX_DAYS,
            ns_comment: None,
        }
    }
}

/// The `nsComment` extension: an IA5String, non-critical, as openssl writes it.
fn ns_comment(text: &str) -> Result<rcgen::CustomExtension, IssueError> {
    if !text.is_ascii() || text.chars().any(|c| c.is_ascii_control()) || text.len() > 1024 {
        return Err(IssueError::Build(format!(
            "the certificate comment {text:?} must be at most 1024 printable ASCII characters"
        )));
    }
    Ok(rcgen::CustomExtension::from_oid_content(
        peerlink_pki::swaptacular::OID_NS_COMMENT,
        peerlink_pki::der::encode(0x16, text.as_bytes()),
    ))
}

/// Describes a certificate just issued, for the database and the operator.
fn issued(der: Vec<u8>, capped: bool) -> Result<Issued, IssueError> {
    let issued = Issued::from_der(der).map_err(|e| IssueError::Mismatch(e.0))?;
    Ok(Issued { capped, ..issued })
}

/// rcgen's form of a revocation reason.
fn rcgen_reason(reason: Reason) -> RevocationReason {
    match reason {
        Reason::Unspecified => RevocationReason::Unspecified,
        Reason::KeyCompromise => RevocationReason::KeyCompromise,
        Reason::CaCompromise => RevocationReason::CaCompromise,
        Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
        Reason::Superseded => RevocationReason::Superseded,
        Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        Reason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Self-signed certificates made by `openssl req -x509 -addext
    /// subjectKeyIdentifier=hash` (P-256, RSA-2048, Ed25519): the reference for
    /// method-1 key identifiers.
    const OPENSSL_SKI: &str = include_str!("testdata/openssl_ski.pem");

    fn ski_of(der: &[u8]) -> Option<Vec<u8>> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        subject_key_id(&cert)
    }

    fn aki_of(der: &[u8]) -> Option<Vec<u8>> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        cert.extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            })
    }

    fn spki_of(der: &[u8]) -> Vec<u8> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        cert.public_key().raw.to_vec()
    }

    fn name(unit: &str) -> NodeName {
        NodeName::new("Net", unit, &format!("{unit}-id")).unwrap()
    }

    fn signer(key_type: KeyType, unit: &str) -> RootSigner {
        let key = PrivateKey::generate(key_type).unwrap();
        let root = issue_root(&key, &name(unit), 30).unwrap();
        RootSigner::new(root, &key).unwrap()
    }

    /// A root made the way another CA might: `tweak` decides its key identifier.
    fn foreign_root(
        unit: &str,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (Vec<u8>, PrivateKey) {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(unit).to_rcgen().unwrap();
        let (not_before, not_after) = validity_days(30).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        tweak(&mut params);
        let der = params
            .self_signed(&key.signing_key().unwrap())
            .unwrap()
            .der()
            .to_vec();
        (der, key)
    }

    fn csr_for(signer: &RootSigner) -> crate::csr::VerifiedCsr {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        crate::csr::VerifiedCsr {
            spki_der: key.public_key_der().unwrap(),
            key_type: KeyType::EcdsaP256,
            common_name: None,
            subject: signer.identity().subject.clone(),
            requested_extensions: false,
        }
    }

    #[test]
    fn key_identifiers_are_openssl_method_1() {
        let pems = ::pem::parse_many(OPENSSL_SKI).unwrap();
        assert_eq!(pems.len(), 3);
        for pem in pems {
            let der = pem.contents();
            assert_eq!(
                Some(key_identifier(&spki_of(der)).unwrap()),
                ski_of(der),
                "openssl's subjectKeyIdentifier = hash"
            );
        }
        assert!(key_identifier(b"\x30\x00").is_err());
        assert!(key_identifier(b"not DER").is_err());
    }

    #[test]
    fn everything_issued_names_method_1_identifiers() {
        for key_type in [KeyType::EcdsaP256, KeyType::Ed25519, KeyType::Rsa2048] {
            let ours = signer(key_type, "ours");
            let root_ski = ski_of(ours.cert_der()).unwrap();
            assert_eq!(
                root_ski,
                key_identifier(&ours.identity().spki_der).unwrap(),
                "{key_type}: root SKI"
            );
            assert_eq!(aki_of(ours.cert_der()), None, "{key_type}: root has no AKI");

            let csr = csr_for(&ours);
            let server = ours.issue_server_cert(&csr, 30).unwrap();
            assert_eq!(
                ski_of(&server.der),
                Some(key_identifier(&csr.spki_der).unwrap())
            );
            assert_eq!(aki_of(&server.der), Some(root_ski.clone()));

            let partner = signer(KeyType::EcdsaP256, "partner");
            let cross = ours.issue_cross_cert(partner.identity(), 30).unwrap();
            assert_eq!(ski_of(&cross.der), ski_of(partner.cert_der()));
            assert_eq!(aki_of(&cross.der), Some(root_ski.clone()));

            let crl = ours.issue_crl(1, &[], 7).unwrap();
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).unwrap();
            let crl_aki = crl
                .extensions()
                .iter()
                .find_map(|ext| match ext.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(aki) => {
                        aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                    }
                    _ => None,
                });
            assert_eq!(crl_aki, Some(root_ski));
        }
    }

    #[test]
    fn an_existing_root_keeps_the_identifier_it_carries() {
        // A root from before method 1 (ca-tool wrote a truncated SHA-256): what
        // it issues still names that SKI, so old and new certificates chain.
        let (old_root, key) =
            foreign_root("old", |p| p.key_identifier_method = KeyIdMethod::Sha256);
        let old_ski = ski_of(&old_root).unwrap();
        assert_ne!(old_ski, key_identifier(&spki_of(&old_root)).unwrap());
        let old = RootSigner::new(old_root, &key).unwrap();
        let server = old.issue_server_cert(&csr_for(&old), 30).unwrap();
        assert_eq!(aki_of(&server.der), Some(old_ski.clone()));
        let partner = signer(KeyType::EcdsaP256, "partner");
        let cross = old.issue_cross_cert(partner.identity(), 30).unwrap();
        assert_eq!(aki_of(&cross.der), Some(old_ski));

        // A root without any SKI is named by the method-1 identifier of its key.
        let (bare_root, key) = foreign_root("bare", |p| p.is_ca = IsCa::NoCa);
        assert_eq!(ski_of(&bare_root), None);
        let bare = RootSigner::new(bare_root.clone(), &key).unwrap();
        let server = bare.issue_server_cert(&csr_for(&bare), 30).unwrap();
        assert_eq!(
            aki_of(&server.der),
            Some(key_identifier(&spki_of(&bare_root)).unwrap())
        );
    }

    #[test]
    fn a_cross_cert_repeats_the_partner_root_identifier() {
        let ours = signer(KeyType::EcdsaP256, "ours");
        // Whatever method made the partner's SKI, the cross-cert carries it byte for byte.
        for id in [vec![0x42; 20], vec![7; 8], vec![1; 32]] {
            let (root, _) = foreign_root("partner", |p| {
                p.key_identifier_method = KeyIdMethod::PreSpecified(id.clone())
            });
            let partner = NodeIdentity::from_root_der(&root).unwrap();
            let cross = ours.issue_cross_cert(&partner, 30).unwrap();
            assert_eq!(ski_of(&cross.der), Some(id));
        }
        // A partner root without an SKI: the cross-cert gets the method-1 identifier.
        let (root, _) = foreign_root("partner", |p| p.is_ca = IsCa::NoCa);
        let partner = NodeIdentity::from_root_der(&root).unwrap();
        let cross = ours.issue_cross_cert(&partner, 30).unwrap();
        assert_eq!(
            ski_of(&cross.der),
            Some(key_identifier(&partner.spki_der).unwrap())
        );
    }
}
