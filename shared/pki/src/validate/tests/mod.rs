//! Chain validation tests over certificates generated with rcgen, in the
//! shapes the product issues (see design.md, "Certificate profiles").
//!
//! This module holds the certificate helpers and the project's own chain; the
//! rules are tested by topic in the submodules.

use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CrlIssuingDistributionPoint, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    NameConstraints, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use super::*;
use crate::der::encode as tlv;
use crate::keys::{KeyType, PrivateKey};

mod ca_rules;
mod name_constraints;
mod revocation;
mod robustness;
mod signatures;

/// The validation time of every test.
const AT: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);
const SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];

fn next_serial() -> SerialNumber {
    static NEXT: AtomicU64 = AtomicU64::new(0x4a00_0000_0000_0001);
    SerialNumber::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

fn key(key_type: KeyType) -> KeyPair {
    PrivateKey::generate(key_type)
        .expect("key generation")
        .signing_key()
        .expect("signing key")
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation")
}

/// `O=Net, OU=a, serialNumber=<id>`, as the project's identity module builds it.
fn node_dn(id: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Net");
    dn.push(DnType::OrganizationalUnitName, "a");
    dn.push(
        DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
        DnValue::PrintableString(id.try_into().expect("printable")),
    );
    dn
}

fn with_cn(mut dn: DistinguishedName, cn: &str) -> DistinguishedName {
    dn.push(DnType::CommonName, cn);
    dn
}

const ID_A: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
const ID_B: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
const ID_C: &str = "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c";

/// A CA: its parameters (for issuing), key and certificate.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    fn ski(&self) -> Vec<u8> {
        self.params.key_identifier(&self.key)
    }

    fn dn(&self) -> DistinguishedName {
        self.params.distinguished_name.clone()
    }
}

fn base_params(dn: DistinguishedName, days_before: i64, days_after: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.not_before = AT - Duration::days(days_before);
    params.not_after = AT + Duration::days(days_after);
    params.serial_number = Some(next_serial());
    params
}

fn root_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = base_params(dn, 365, 3650);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A node's self-signed root (pathlen 1, keyCertSign + cRLSign).
fn root_with(
    dn: DistinguishedName,
    key: KeyPair,
    tweak: impl FnOnce(&mut CertificateParams),
) -> Ca {
    let mut params = root_params(dn);
    tweak(&mut params);
    let der = params
        .self_signed(&key)
        .expect("self-signed")
        .der()
        .to_vec();
    Ca { params, key, der }
}

fn root(id: &str) -> Ca {
    root_with(node_dn(id), p256(), |_| {})
}

/// The peer certificate profile: `subject`'s root signed by `issuer`,
/// pathlen 0, critical nameConstraints permitting the subject's DN.
fn cross_params(subject: &Ca) -> CertificateParams {
    let mut params = base_params(subject.dn(), 30, 3650);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DirectoryName(subject.dn())],
        excluded_subtrees: vec![],
    });
    params.key_identifier_method = KeyIdMethod::PreSpecified(subject.ski());
    params.use_authority_key_identifier_extension = true;
    params
}

fn cross_with(issuer: &Ca, subject: &Ca, tweak: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = cross_params(subject);
    tweak(&mut params);
    params
        .signed_by(&subject.key, &issuer.issuer())
        .expect("cross-cert")
        .der()
        .to_vec()
}

fn cross(issuer: &Ca, subject: &Ca) -> Vec<u8> {
    cross_with(issuer, subject, |_| {})
}

/// The server certificate profile: not CA, digitalSignature, serverAuth + clientAuth.
fn leaf_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = base_params(dn, 1, 90);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

fn issue(issuer: &Ca, params: &CertificateParams) -> Vec<u8> {
    issue_key(issuer, params, &p256())
}

fn issue_key(issuer: &Ca, params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
    params
        .signed_by(key, &issuer.issuer())
        .expect("issue")
        .der()
        .to_vec()
}

fn leaf_with(
    issuer: &Ca,
    dn: DistinguishedName,
    tweak: impl FnOnce(&mut CertificateParams),
) -> Vec<u8> {
    let mut params = leaf_params(dn);
    tweak(&mut params);
    issue(issuer, &params)
}

/// The real chain shape: roots A and B, B's root cross-signed by A, B's server cert.
struct Net {
    a: Ca,
    b: Ca,
    c: Ca,
    cross_b: Vec<u8>,
    b_leaf: Vec<u8>,
}

fn net() -> Net {
    let a = root(ID_A);
    let b = root(ID_B);
    let c = root(ID_C);
    let cross_b = cross(&a, &b);
    let b_leaf = leaf_with(&b, with_cn(node_dn(ID_B), "gw1"), |_| {});
    Net {
        a,
        b,
        c,
        cross_b,
        b_leaf,
    }
}

fn validate(
    leaf: &[u8],
    anchor: &[u8],
    intermediates: &[Vec<u8>],
    crls: &[Vec<u8>],
    purpose: Purpose,
) -> Result<ValidatedChain, ValidationError> {
    validate_chain(
        leaf,
        &ValidationOptions {
            anchor,
            intermediates,
            crls,
            at: AT,
            purpose,
        },
    )
}

/// Validates against anchor A with the cross-cert of B, for clientAuth.
fn via_a(net: &Net, leaf: &[u8]) -> Result<ValidatedChain, ValidationError> {
    validate(
        leaf,
        &net.a.der,
        std::slice::from_ref(&net.cross_b),
        &[],
        Purpose::Client,
    )
}

#[track_caller]
fn assert_kind(result: Result<ValidatedChain, ValidationError>, kind: &str) -> ValidationError {
    match result {
        Err(e) => {
            assert_eq!(e.kind(), kind, "unexpected error: {e}");
            assert!(ValidationError::KINDS.contains(&e.kind()));
            e
        }
        Ok(chain) => panic!(
            "expected {kind}, but the chain validated: {}",
            chain.leaf_subject
        ),
    }
}

#[track_caller]
fn assert_ok(result: Result<ValidatedChain, ValidationError>) -> ValidatedChain {
    match result {
        Ok(chain) => chain,
        Err(e) => panic!("expected success, got {} ({e})", e.kind()),
    }
}

fn subject_der(cert: &[u8]) -> Vec<u8> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).expect("parse");
    parsed.subject().as_raw().to_vec()
}

fn serial_of(cert: &[u8]) -> SerialNumber {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).expect("parse");
    SerialNumber::from_slice(parsed.raw_serial())
}

/// A DER Name for `dn`, as rcgen encodes it.
fn name_der(dn: &DistinguishedName) -> Vec<u8> {
    let params = base_params(dn.clone(), 1, 1);
    subject_der(params.self_signed(&p256()).expect("cert").der())
}

fn san_directory_name(dn: &DistinguishedName) -> CustomExtension {
    let value = tlv(0x30, &tlv(0xa4, &name_der(dn)));
    CustomExtension::from_oid_content(&[2, 5, 29, 17], value)
}

fn crl_params(revoked: &[&[u8]]) -> CertificateRevocationListParams {
    CertificateRevocationListParams {
        this_update: AT - Duration::days(1),
        next_update: AT + Duration::days(7),
        crl_number: SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|cert| RevokedCertParams {
                serial_number: serial_of(cert),
                revocation_time: AT - Duration::hours(5),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
}

fn sign_crl(params: &CertificateRevocationListParams, issuer: &Ca) -> Vec<u8> {
    params
        .signed_by(&issuer.issuer())
        .expect("CRL")
        .der()
        .to_vec()
}

// ---------------------------------------------------------------------------
// The project's chain shape.

#[test]
fn project_chain_validates() {
    let net = net();
    let chain = assert_ok(via_a(&net, &net.b_leaf));
    assert_eq!(
        chain.chain,
        vec![net.b_leaf.clone(), net.cross_b.clone(), net.a.der.clone()]
    );
    assert_eq!(
        chain.leaf_subject,
        format!("O=Net, OU=a, serialNumber={ID_B}, CN=gw1")
    );
    assert_eq!(chain.leaf_subject_der, subject_der(&net.b_leaf));
    assert_eq!(chain.leaf_not_after, AT + Duration::days(90));
    // Server purpose, and B's own root as a pinned anchor (the other direction).
    assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        std::slice::from_ref(&net.cross_b),
        &[],
        Purpose::Server,
    ));
    let direct = assert_ok(validate(&net.b_leaf, &net.b.der, &[], &[], Purpose::Server));
    assert_eq!(direct.chain.len(), 2);
    // Junk and B's own self-signed root among the intermediates do not hurt.
    let junk = vec![
        net.c.der.clone(),
        net.b.der.clone(),
        cross(&net.c, &net.a),
        net.cross_b.clone(),
    ];
    assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &junk,
        &[],
        Purpose::Client,
    ));
    // The cross-cert itself verifies as a leaf for Purpose::Any only.
    assert_ok(validate(&net.cross_b, &net.a.der, &[], &[], Purpose::Any));
    assert_kind(
        validate(&net.cross_b, &net.a.der, &[], &[], Purpose::Client),
        "ca_as_leaf",
    );
}
