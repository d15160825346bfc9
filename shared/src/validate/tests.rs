//! Chain validation tests over certificates generated with rcgen, in the
//! shapes the product issues (see design.md, "Certificate profiles").

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
use crate::keys::{KeyType, PrivateKey};

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

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    crate::validate::names::tests::tlv(tag, content)
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

// ---------------------------------------------------------------------------
// Name constraints.

#[test]
fn leaf_with_another_nodes_name_is_rejected() {
    let net = net();
    let evil = leaf_with(&net.b, with_cn(node_dn(ID_C), "gw1"), |_| {});
    let e = assert_kind(via_a(&net, &evil), "name_constraint");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "leaf certificate (O=Net, OU=a, serialNumber={ID_C}, CN=gw1)"
        )),
        "{msg}"
    );
    assert!(msg.contains(&format!("subject is outside the permitted directoryName subtree \"O=Net, OU=a, serialNumber={ID_B}\"")), "{msg}");
    assert!(msg.contains(&format!("of the name constraints of intermediate #1 certificate (O=Net, OU=a, serialNumber={ID_B})")), "{msg}");
    // Without the constraint (B's root pinned directly) the same leaf passes.
    assert_ok(validate(&evil, &net.b.der, &[], &[], Purpose::Client));
}

#[test]
fn subtree_is_a_prefix_match() {
    let net = net();
    let x = leaf_with(&net.b, with_cn(node_dn(ID_B), "x"), |_| {});
    assert_ok(via_a(&net, &x));
    // Exactly B's DN is within the subtree too.
    assert_ok(via_a(&net, &leaf_with(&net.b, node_dn(ID_B), |_| {})));
    // A shorter name (a proper prefix of the base) is not.
    let mut short = DistinguishedName::new();
    short.push(DnType::OrganizationName, "Net");
    short.push(DnType::OrganizationalUnitName, "a");
    assert_kind(
        via_a(&net, &leaf_with(&net.b, short, |_| {})),
        "name_constraint",
    );
    // Another OU is not.
    let mut other = DistinguishedName::new();
    other.push(DnType::OrganizationName, "Net");
    other.push(DnType::OrganizationalUnitName, "b");
    other.push(
        DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
        DnValue::PrintableString(ID_B.try_into().unwrap()),
    );
    assert_kind(
        via_a(&net, &leaf_with(&net.b, other, |_| {})),
        "name_constraint",
    );
}

#[test]
fn case_and_space_differences_are_equal() {
    let net = net();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        DnValue::PrintableString("  net ".try_into().unwrap()),
    );
    dn.push(
        DnType::OrganizationalUnitName,
        DnValue::PrintableString("A".try_into().unwrap()),
    );
    dn.push(
        DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
        DnValue::Utf8String(ID_B.to_uppercase()),
    );
    dn.push(DnType::CommonName, "gw1");
    assert_ok(via_a(&net, &leaf_with(&net.b, dn, |_| {})));
    // An IA5String is compared byte for byte, so it does not match "Net".
    let mut ia5 = node_dn(ID_B);
    ia5.push(
        DnType::OrganizationName,
        DnValue::Ia5String("Net".try_into().unwrap()),
    );
    assert_kind(
        via_a(&net, &leaf_with(&net.b, ia5, |_| {})),
        "name_constraint",
    );
}

#[test]
fn issuer_names_chain_by_rfc5280_comparison() {
    // The cross-cert spells B's DN differently (case, spaces, string types);
    // the leaf's issuer name still chains to it.
    let net = net();
    let mut spelled = DistinguishedName::new();
    spelled.push(
        DnType::OrganizationName,
        DnValue::PrintableString(" NET".try_into().unwrap()),
    );
    spelled.push(DnType::OrganizationalUnitName, "A ");
    spelled.push(
        DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
        DnValue::Utf8String(ID_B.to_uppercase()),
    );
    let xc = cross_with(&net.a, &net.b, |p| p.distinguished_name = spelled);
    assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &[xc],
        &[],
        Purpose::Client,
    ));
}

#[test]
fn excluded_subtree() {
    let net = net();
    let xc = cross_with(&net.a, &net.b, |p| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(net.b.dn())],
            excluded_subtrees: vec![GeneralSubtree::DirectoryName(with_cn(net.b.dn(), "bad"))],
        })
    });
    let bad = leaf_with(&net.b, with_cn(node_dn(ID_B), "BAD"), |_| {});
    let e = assert_kind(
        validate(
            &bad,
            &net.a.der,
            std::slice::from_ref(&xc),
            &[],
            Purpose::Client,
        ),
        "name_constraint",
    );
    assert!(
        e.to_string().contains("excluded directoryName subtree"),
        "{e}"
    );
    assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &[xc],
        &[],
        Purpose::Client,
    ));
}

#[test]
fn subject_alt_name_directory_names_are_constrained() {
    let net = net();
    let outside = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.custom_extensions.push(san_directory_name(&node_dn(ID_C)));
    });
    let e = assert_kind(via_a(&net, &outside), "name_constraint");
    assert!(
        e.to_string().contains("subjectAltName directoryName"),
        "{e}"
    );
    let inside = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.custom_extensions
            .push(san_directory_name(&with_cn(node_dn(ID_B), "alias")));
    });
    assert_ok(via_a(&net, &inside));
}

#[test]
fn empty_subject_is_refused_under_constraints() {
    let net = net();
    let empty = leaf_with(&net.b, DistinguishedName::new(), |p| {
        p.subject_alt_names = vec![rcgen::SanType::DnsName("gw.example".try_into().unwrap())];
    });
    let e = assert_kind(via_a(&net, &empty), "name_constraint");
    assert!(e.to_string().contains("is empty"), "{e}");
    // No constraints in the path: accepted.
    assert_ok(validate(&empty, &net.b.der, &[], &[], Purpose::Client));
}

#[test]
fn other_name_constraint_types_fail_closed() {
    let net = net();
    for extra in [
        GeneralSubtree::DnsName("example.com".into()),
        GeneralSubtree::IpAddress(rcgen::CidrSubnet::V4([10, 0, 0, 0], [255, 0, 0, 0])),
        GeneralSubtree::Rfc822Name("example.com".into()),
    ] {
        let xc = cross_with(&net.a, &net.b, |p| {
            p.name_constraints = Some(NameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DirectoryName(net.b.dn()), extra],
                excluded_subtrees: vec![],
            })
        });
        let e = assert_kind(
            validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
            "unsupported_name_constraint",
        );
        assert!(e.to_string().contains("intermediate #1"), "{e}");
    }
    let xc = cross_with(&net.a, &net.b, |p| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(net.b.dn())],
            excluded_subtrees: vec![GeneralSubtree::DnsName("example.com".into())],
        })
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
        "unsupported_name_constraint",
    );
    assert!(e.to_string().contains("dNSName"), "{e}");
}

#[test]
fn anchor_name_constraints_apply() {
    // A's root constrained to A's own DN: the cross-cert for B falls outside.
    let net = net();
    let a_dn = node_dn(ID_A);
    let a = root_with(a_dn.clone(), p256(), |p| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(a_dn)],
            excluded_subtrees: vec![],
        })
    });
    let xc = cross(&a, &net.b);
    let e = assert_kind(
        validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client),
        "name_constraint",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    assert!(
        e.to_string()
            .contains("of the name constraints of anchor certificate"),
        "{e}"
    );
    let own = leaf_with(&a, with_cn(node_dn(ID_A), "gw"), |_| {});
    assert_ok(validate(&own, &a.der, &[], &[], Purpose::Client));
}

#[test]
fn self_issued_intermediate_is_exempt_from_subject_constraints() {
    // Anchor -> CA "O=Net, OU=ca" (pathlen 0, permits only O=Net, OU=leafs)
    //        -> self-issued "O=Net, OU=ca" with a new key (a key rollover)
    //        -> leaf "O=Net, OU=leafs, CN=x".
    let anchor = root(ID_A);
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::OrganizationName, "Net");
    ca_dn.push(DnType::OrganizationalUnitName, "ca");
    let mut leafs = DistinguishedName::new();
    leafs.push(DnType::OrganizationName, "Net");
    leafs.push(DnType::OrganizationalUnitName, "leafs");

    let old = p256();
    let mut ca_params = root_params(ca_dn.clone());
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.use_authority_key_identifier_extension = true;
    ca_params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DirectoryName(leafs.clone())],
        excluded_subtrees: vec![],
    });
    let ca_der = issue_key(&anchor, &ca_params, &old);
    let ca = Ca {
        params: ca_params,
        key: old,
        der: ca_der,
    };

    let new = p256();
    let mut rollover_params = root_params(ca_dn.clone());
    rollover_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    rollover_params.use_authority_key_identifier_extension = true;
    let rollover_der = issue_key(&ca, &rollover_params, &new);
    let rollover = Ca {
        params: rollover_params,
        key: new,
        der: rollover_der,
    };

    let leaf = leaf_with(&rollover, with_cn(leafs.clone(), "x"), |_| {});
    let chain = assert_ok(validate(
        &leaf,
        &anchor.der,
        &[ca.der.clone(), rollover.der.clone()],
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain.len(), 4);

    // Control: a non-self-issued intermediate with the same out-of-subtree name shape.
    let mut sub_dn = ca_dn.clone();
    sub_dn.push(DnType::CommonName, "sub");
    let mut sub_params = root_params(sub_dn);
    sub_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let sub_key = p256();
    let sub_der = issue_key(&ca, &sub_params, &sub_key);
    let sub = Ca {
        params: sub_params,
        key: sub_key,
        der: sub_der,
    };
    let leaf2 = leaf_with(&sub, with_cn(leafs, "y"), |_| {});
    let e = assert_kind(
        validate(
            &leaf2,
            &anchor.der,
            &[ca.der.clone(), sub.der.clone()],
            &[],
            Purpose::Client,
        ),
        "name_constraint",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
}

// ---------------------------------------------------------------------------
// Basic constraints, path length, key usage, EKU.

#[test]
fn path_len_of_the_cross_cert_is_enforced() {
    let net = net();
    let mut sub_params = root_params(with_cn(node_dn(ID_B), "sub"));
    sub_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let sub_key = p256();
    let sub_der = issue_key(&net.b, &sub_params, &sub_key);
    let sub = Ca {
        params: sub_params,
        key: sub_key,
        der: sub_der,
    };
    let leaf = leaf_with(&sub, with_cn(node_dn(ID_B), "gw9"), |_| {});
    let e = assert_kind(
        validate(
            &leaf,
            &net.a.der,
            &[net.cross_b.clone(), sub.der.clone()],
            &[],
            Purpose::Client,
        ),
        "path_len",
    );
    let msg = e.to_string();
    assert!(msg.starts_with("intermediate #1"), "{msg}");
    assert!(msg.contains("of intermediate #2 certificate"), "{msg}");
    assert!(msg.contains("pathLenConstraint 0"), "{msg}");
    // Under B's own root (pathlen 1) one intermediate is fine.
    assert_ok(validate(
        &leaf,
        &net.b.der,
        std::slice::from_ref(&sub.der),
        &[],
        Purpose::Client,
    ));
}

/// A chain of CAs below `top`, each unconstrained; returns them top-down.
fn ca_chain(top: &Ca, names: &[&str], self_issued_after: Option<usize>) -> Vec<Ca> {
    let mut out: Vec<Ca> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let issuer = out.last().unwrap_or(top);
        // Optionally repeat the issuer's name (a self-issued certificate).
        let dn = if self_issued_after == Some(i) {
            issuer.dn()
        } else {
            with_cn(node_dn(ID_B), name)
        };
        let mut params = root_params(dn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.use_authority_key_identifier_extension = true;
        let key = p256();
        let der = issue_key(issuer, &params, &key);
        out.push(Ca { params, key, der });
    }
    out
}

#[test]
fn path_len_counts_non_self_issued_intermediates() {
    // B's root (pathlen 1) as the anchor: one intermediate below it is fine,
    // two are not, and a self-issued one in between does not count.
    let b = root(ID_B);
    let two = ca_chain(&b, &["one", "two"], None);
    let ders: Vec<Vec<u8>> = two.iter().map(|c| c.der.clone()).collect();
    let leaf = leaf_with(&two[1], with_cn(node_dn(ID_B), "gw"), |_| {});
    let e = assert_kind(
        validate(&leaf, &b.der, &ders, &[], Purpose::Client),
        "path_len",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    assert!(e.to_string().contains("of anchor certificate"), "{e}");
    let leaf = leaf_with(&two[0], with_cn(node_dn(ID_B), "gw"), |_| {});
    assert_ok(validate(&leaf, &b.der, &ders, &[], Purpose::Client));

    let rolled = ca_chain(&b, &["one", "one-again"], Some(1));
    let ders: Vec<Vec<u8>> = rolled.iter().map(|c| c.der.clone()).collect();
    let leaf = leaf_with(&rolled[1], with_cn(node_dn(ID_B), "gw"), |_| {});
    let chain = assert_ok(validate(&leaf, &b.der, &ders, &[], Purpose::Client));
    assert_eq!(chain.chain.len(), 4);
}

#[test]
fn anchor_path_len_applies() {
    let net = net();
    let a0 = root_with(node_dn(ID_A), p256(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0))
    });
    let xc = cross(&a0, &net.b);
    let e = assert_kind(
        validate(&net.b_leaf, &a0.der, &[xc], &[], Purpose::Client),
        "path_len",
    );
    assert!(e.to_string().contains("of anchor certificate"), "{e}");
}

#[test]
fn leaf_that_is_a_ca() {
    let net = net();
    let ca_leaf = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    });
    assert_kind(via_a(&net, &ca_leaf), "ca_as_leaf");
    assert_kind(
        validate(
            &ca_leaf,
            &net.a.der,
            std::slice::from_ref(&net.cross_b),
            &[],
            Purpose::Server,
        ),
        "ca_as_leaf",
    );
    assert_ok(validate(
        &ca_leaf,
        &net.a.der,
        std::slice::from_ref(&net.cross_b),
        &[],
        Purpose::Any,
    ));
}

#[test]
fn extended_key_usage() {
    let net = net();
    let dn = || with_cn(node_dn(ID_B), "gw1");
    let none = leaf_with(&net.b, dn(), |p| p.extended_key_usages.clear());
    let e = assert_kind(via_a(&net, &none), "eku");
    assert!(e.to_string().contains("no extendedKeyUsage"), "{e}");
    let server_only = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    assert_kind(via_a(&net, &server_only), "eku");
    let b = &net.b.der;
    assert_ok(validate(&server_only, b, &[], &[], Purpose::Server));
    let client_only = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
    });
    assert_ok(validate(&client_only, b, &[], &[], Purpose::Client));
    let e = assert_kind(validate(&client_only, b, &[], &[], Purpose::Server), "eku");
    assert!(e.to_string().contains("serverAuth"), "{e}");
    // anyExtendedKeyUsage alone is not enough (strict profile).
    let any = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any]
    });
    assert_kind(validate(&any, b, &[], &[], Purpose::Server), "eku");
    assert_ok(validate(&none, b, &[], &[], Purpose::Any));
}

#[test]
fn key_usage() {
    let net = net();
    let b = &net.b.der;
    // Leaf without digitalSignature.
    let enc_only = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
    });
    assert_kind(
        validate(&enc_only, b, &[], &[], Purpose::Client),
        "key_usage",
    );
    assert_ok(validate(&enc_only, b, &[], &[], Purpose::Any));
    // RSA-style leaf with digitalSignature + keyEncipherment is fine.
    let rsa_style = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    });
    assert_ok(validate(&rsa_style, b, &[], &[], Purpose::Client));
    // Intermediate without keyCertSign.
    let xc = cross_with(&net.a, &net.b, |p| {
        p.key_usages = vec![KeyUsagePurpose::CrlSign]
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
        "key_usage",
    );
    assert!(e.to_string().contains("keyCertSign"), "{e}");
    // Anchor with keyUsage but no keyCertSign.
    let a = root_with(node_dn(ID_A), p256(), |p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature]
    });
    let xc = cross(&a, &net.b);
    assert_kind(
        validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client),
        "key_usage",
    );
}

#[test]
fn issuers_must_be_cas() {
    let net = net();
    // Intermediate with cA=FALSE.
    let not_ca = cross_with(&net.a, &net.b, |p| {
        p.is_ca = IsCa::ExplicitNoCa;
        p.name_constraints = None;
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[not_ca], &[], Purpose::Client),
        "not_ca",
    );
    assert!(e.to_string().contains("cA=FALSE"), "{e}");
    // Intermediate without basicConstraints.
    let no_bc = cross_with(&net.a, &net.b, |p| {
        p.is_ca = IsCa::NoCa;
        p.name_constraints = None;
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[no_bc], &[], Purpose::Client),
        "not_ca",
    );
    assert!(e.to_string().contains("no basicConstraints"), "{e}");
    // Anchor with cA=FALSE.
    let a = root_with(node_dn(ID_A), p256(), |p| {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![];
    });
    let xc = cross(&a, &net.b);
    assert_kind(
        validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client),
        "not_ca",
    );
    // Anchor without any basicConstraints: accepted (v3 root without the extension).
    let a = root_with(node_dn(ID_A), p256(), |p| p.is_ca = IsCa::NoCa);
    let xc = cross(&a, &net.b);
    assert_ok(validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client));
}

// ---------------------------------------------------------------------------
// Validity, signatures, issuers, extensions.

#[test]
fn validity_periods() {
    let net = net();
    let dn = || with_cn(node_dn(ID_B), "gw1");
    let expired = leaf_with(&net.b, dn(), |p| {
        p.not_before = AT - Duration::days(100);
        p.not_after = AT - Duration::seconds(1);
    });
    let e = assert_kind(via_a(&net, &expired), "expired");
    assert!(e.to_string().starts_with("leaf certificate"), "{e}");
    assert!(e.to_string().contains("2026-06-01T11:59:59Z"), "{e}");
    let future = leaf_with(&net.b, dn(), |p| {
        p.not_before = AT + Duration::seconds(1);
        p.not_after = AT + Duration::days(100);
    });
    assert_kind(via_a(&net, &future), "not_yet_valid");
    // Boundaries are inclusive.
    let edge = leaf_with(&net.b, dn(), |p| {
        p.not_before = AT;
        p.not_after = AT;
    });
    assert_ok(via_a(&net, &edge));

    let cross_expired = cross_with(&net.a, &net.b, |p| {
        p.not_before = AT - Duration::days(100);
        p.not_after = AT - Duration::days(1);
    });
    let e = assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[cross_expired],
            &[],
            Purpose::Client,
        ),
        "expired",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    let cross_future = cross_with(&net.a, &net.b, |p| {
        p.not_before = AT + Duration::days(1);
    });
    assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[cross_future],
            &[],
            Purpose::Client,
        ),
        "not_yet_valid",
    );
    // The anchor's validity is not checked.
    let old_a = root_with(node_dn(ID_A), p256(), |p| {
        p.not_before = AT - Duration::days(100);
        p.not_after = AT - Duration::days(1);
    });
    let xc = cross(&old_a, &net.b);
    assert_ok(validate(
        &net.b_leaf,
        &old_a.der,
        &[xc],
        &[],
        Purpose::Client,
    ));
}

fn flip_last_byte(der: &[u8]) -> Vec<u8> {
    let mut out = der.to_vec();
    if let Some(last) = out.last_mut() {
        *last ^= 0x01;
    }
    out
}

#[test]
fn bad_signatures() {
    let net = net();
    let e = assert_kind(via_a(&net, &flip_last_byte(&net.b_leaf)), "bad_signature");
    assert!(e.to_string().starts_with("leaf certificate"), "{e}");
    let e = assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[flip_last_byte(&net.cross_b)],
            &[],
            Purpose::Client,
        ),
        "bad_signature",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    assert!(e.to_string().contains("key of anchor certificate"), "{e}");
    // A leaf with B's name signed by another key (C's).
    let forged = issue(
        &Ca {
            params: net.b.params.clone(),
            key: key(KeyType::EcdsaP256),
            der: vec![],
        },
        &leaf_params(with_cn(node_dn(ID_B), "gw1")),
    );
    assert_kind(via_a(&net, &forged), "bad_signature");
}

#[test]
fn alternative_paths_are_tried() {
    let net = net();
    // An impostor "B" (same name, other key) listed first; the genuine cross-cert second.
    let impostor = root(ID_B);
    let impostor_cross = cross(&net.a, &impostor);
    let inter = vec![impostor.der.clone(), impostor_cross, net.cross_b.clone()];
    let chain = assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &inter,
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain[1], net.cross_b);
    // Two valid cross-certs for B: the one whose SKI matches the leaf's AKI is preferred.
    let other_ski = cross_with(&net.a, &net.b, |p| {
        p.key_identifier_method = KeyIdMethod::PreSpecified(vec![0x42; 20])
    });
    let inter = vec![other_ski.clone(), net.cross_b.clone()];
    let chain = assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &inter,
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain[1], net.cross_b);
    // ... but a key identifier mismatch alone does not disqualify a valid issuer.
    let chain = assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        std::slice::from_ref(&other_ski),
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain[1], other_ski);
    // Without the genuine one, the deepest failure is the leaf's signature.
    let inter = vec![impostor.der.clone(), cross(&net.a, &impostor)];
    assert_kind(
        validate(&net.b_leaf, &net.a.der, &inter, &[], Purpose::Client),
        "bad_signature",
    );
}

#[test]
fn unknown_issuer() {
    let net = net();
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[], &[], Purpose::Client),
        "unknown_issuer",
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("its issuer \"O=Net, OU=a, serialNumber={ID_B}\"")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("trust anchor (O=Net, OU=a, serialNumber={ID_A})")),
        "{msg}"
    );
    // Unrelated intermediates change nothing.
    assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[net.c.der.clone(), cross(&net.a, &net.c)],
            &[],
            Purpose::Client,
        ),
        "unknown_issuer",
    );
    // A loop of cross-signatures that never reaches the anchor terminates.
    let x = root(ID_C);
    let y = root("0d0d");
    let loop_certs = vec![cross(&x, &y), cross(&y, &x)];
    let leaf = leaf_with(&y, with_cn(y.dn(), "z"), |_| {});
    assert_kind(
        validate(&leaf, &net.a.der, &loop_certs, &[], Purpose::Client),
        "unknown_issuer",
    );
}

#[test]
fn critical_extensions() {
    let net = net();
    let dn = || with_cn(node_dn(ID_B), "gw1");
    let unknown = |critical: bool| {
        let mut ext =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
        ext.set_criticality(critical);
        ext
    };
    let critical = leaf_with(&net.b, dn(), |p| p.custom_extensions.push(unknown(true)));
    let e = assert_kind(via_a(&net, &critical), "unsupported_critical_extension");
    assert!(e.to_string().contains("1.3.6.1.4.1.55555.1"), "{e}");
    let lax = leaf_with(&net.b, dn(), |p| p.custom_extensions.push(unknown(false)));
    assert_ok(via_a(&net, &lax));
    // Critical certificatePolicies (anyPolicy) on the cross-cert.
    let mut policies = CustomExtension::from_oid_content(
        &[2, 5, 29, 32],
        tlv(0x30, &tlv(0x30, &tlv(0x06, &[0x55, 0x1d, 0x20, 0x00]))),
    );
    policies.set_criticality(true);
    let xc = cross_with(&net.a, &net.b, |p| p.custom_extensions.push(policies));
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
        "unsupported_critical_extension",
    );
    assert!(e.to_string().contains("certificatePolicies"), "{e}");
    // The same extension twice.
    let twice = leaf_with(&net.b, dn(), |p| {
        p.custom_extensions.push(unknown(false));
        p.custom_extensions.push(unknown(false));
    });
    let e = assert_kind(via_a(&net, &twice), "malformed");
    assert!(e.to_string().contains("more than once"), "{e}");
    // A known extension that does not decode.
    let broken = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages.clear();
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            vec![0x04, 0x00],
        ));
    });
    assert_kind(via_a(&net, &broken), "malformed");
}

// ---------------------------------------------------------------------------
// CRLs.

#[test]
fn revocation_by_crl() {
    let net = net();
    let b = &net.b;
    let inter = std::slice::from_ref(&net.cross_b);
    let check = |crls: &[Vec<u8>]| validate(&net.b_leaf, &net.a.der, inter, crls, Purpose::Client);

    let revoking = crl_params(&[&net.b_leaf]);
    let e = assert_kind(check(&[sign_crl(&revoking, b)]), "revoked");
    let msg = e.to_string();
    assert!(msg.starts_with("leaf certificate"), "{msg}");
    assert!(msg.contains("keyCompromise"), "{msg}");
    assert!(msg.contains("2026-06-01T07:00:00Z"), "{msg}");

    // The same CRL signed by a key that is not B's.
    let forged_issuer = Ca {
        params: b.params.clone(),
        key: p256(),
        der: vec![],
    };
    let e = assert_kind(
        check(&[sign_crl(&revoking, &forged_issuer)]),
        "crl_bad_signature",
    );
    assert!(e.to_string().contains("CRL #1"), "{e}");
    // Even a forged CRL that revokes nothing is refused.
    assert_kind(
        check(&[sign_crl(&crl_params(&[]), &forged_issuer)]),
        "crl_bad_signature",
    );

    // A clean CRL, an unrelated CRL: accepted.
    assert_ok(check(&[
        sign_crl(&crl_params(&[]), b),
        sign_crl(&revoking, &net.c),
    ]));
    // Several CRLs of B: all apply.
    assert_kind(
        check(&[sign_crl(&crl_params(&[]), b), sign_crl(&revoking, b)]),
        "revoked",
    );

    // Expired and not yet valid CRLs.
    let mut stale = crl_params(&[]);
    stale.this_update = AT - Duration::days(10);
    stale.next_update = AT - Duration::days(3);
    let e = assert_kind(check(&[sign_crl(&stale, b)]), "crl_expired");
    assert!(
        e.to_string()
            .contains("a fresh CRL from that issuer is needed"),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("serialNumber={ID_B}")),
        "{e}"
    );
    let mut early = crl_params(&[]);
    early.this_update = AT + Duration::days(1);
    early.next_update = AT + Duration::days(8);
    assert_kind(check(&[sign_crl(&early, b)]), "crl_not_yet_valid");

    // A revokes the cross-cert it issued to B.
    let e = assert_kind(
        check(&[sign_crl(&crl_params(&[&net.cross_b]), &net.a)]),
        "revoked",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");

    // Partitioned CRLs (critical issuingDistributionPoint) are not implemented.
    let mut partitioned = crl_params(&[]);
    partitioned.issuing_distribution_point = Some(CrlIssuingDistributionPoint {
        distribution_point: CrlDistributionPoint {
            uris: vec!["http://crl.example/b.crl".into()],
        },
        scope: None,
    });
    assert_kind(
        check(&[sign_crl(&partitioned, b)]),
        "unsupported_critical_extension",
    );
}

#[test]
fn crl_issuer_needs_crl_sign() {
    // B's root has keyUsage keyCertSign only, yet a CRL signed by its key names it.
    let a = root(ID_A);
    let b_dn = node_dn(ID_B);
    let b = root_with(b_dn, p256(), |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign]
    });
    let leaf = leaf_with(&b, with_cn(node_dn(ID_B), "gw1"), |_| {});
    let xc = cross(&a, &b);
    assert_ok(validate(
        &leaf,
        &a.der,
        std::slice::from_ref(&xc),
        &[],
        Purpose::Client,
    ));
    let mut signer_params = b.params.clone();
    signer_params.key_usages.push(KeyUsagePurpose::CrlSign);
    let crl = crl_params(&[])
        .signed_by(&Issuer::from_params(&signer_params, &b.key))
        .expect("CRL")
        .der()
        .to_vec();
    // The CRL's issuer is B; the cross-cert stands for B in this path and lacks cRLSign.
    let cross_no_crl_sign = cross_with(&a, &b, |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign]
    });
    let e = assert_kind(
        validate(&leaf, &a.der, &[cross_no_crl_sign], &[crl], Purpose::Client),
        "key_usage",
    );
    assert!(e.to_string().contains("cRLSign"), "{e}");
}

// ---------------------------------------------------------------------------
// Key types.

#[test]
fn mixed_key_types() {
    // A: P-384, B: Ed25519, leaf: RSA-2048.
    let a = root_with(node_dn(ID_A), key(KeyType::EcdsaP384), |_| {});
    let b = root_with(node_dn(ID_B), key(KeyType::Ed25519), |_| {});
    let cross_b = cross(&a, &b);
    let leaf = issue_key(
        &b,
        &leaf_params(with_cn(node_dn(ID_B), "gw1")),
        &key(KeyType::Rsa2048),
    );
    assert_ok(validate(
        &leaf,
        &a.der,
        std::slice::from_ref(&cross_b),
        &[],
        Purpose::Client,
    ));
    // CRLs signed with Ed25519.
    assert_kind(
        validate(
            &leaf,
            &a.der,
            &[cross_b],
            &[sign_crl(&crl_params(&[&leaf]), &b)],
            Purpose::Client,
        ),
        "revoked",
    );

    // A: RSA-2048, B: P-256, leaf: Ed25519; RSA-signed cross-cert and CRL.
    let a = root_with(node_dn(ID_A), key(KeyType::Rsa2048), |_| {});
    let b = root(ID_B);
    let cross_b = cross(&a, &b);
    let leaf = issue_key(
        &b,
        &leaf_params(with_cn(node_dn(ID_B), "gw1")),
        &key(KeyType::Ed25519),
    );
    let crl = sign_crl(&crl_params(&[]), &a);
    assert_ok(validate(
        &leaf,
        &a.der,
        std::slice::from_ref(&cross_b),
        &[crl],
        Purpose::Server,
    ));
    let crl = sign_crl(&crl_params(&[&cross_b]), &a);
    assert_kind(
        validate(&leaf, &a.der, &[cross_b], &[crl], Purpose::Server),
        "revoked",
    );
}

// ---------------------------------------------------------------------------
// Path length, leaf == anchor, garbage.

#[test]
fn too_long_paths() {
    let anchor = root_with(node_dn(ID_A), p256(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
    });
    let mut cas = vec![anchor];
    for i in 0..7 {
        let mut params = root_params(node_dn(&format!("ca{i}")));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.use_authority_key_identifier_extension = true;
        let key = p256();
        let der = issue_key(cas.last().unwrap(), &params, &key);
        cas.push(Ca { params, key, der });
    }
    let inter: Vec<Vec<u8>> = cas[1..].iter().map(|c| c.der.clone()).collect();
    // Leaf under ca5: leaf + 6 intermediates + anchor = 8 certificates.
    let ok_leaf = leaf_with(&cas[6], with_cn(node_dn("x"), "gw"), |_| {});
    assert_eq!(
        assert_ok(validate(
            &ok_leaf,
            &cas[0].der,
            &inter,
            &[],
            Purpose::Client
        ))
        .chain
        .len(),
        8
    );
    // Leaf under ca6: 9 certificates.
    let long_leaf = leaf_with(&cas[7], with_cn(node_dn("x"), "gw"), |_| {});
    let e = assert_kind(
        validate(&long_leaf, &cas[0].der, &inter, &[], Purpose::Client),
        "too_long",
    );
    assert!(e.to_string().contains("longer than 8"), "{e}");
}

#[test]
fn path_search_is_bounded() {
    // Six keys that all use the name of B and certify each other: every
    // ordering of them is a candidate path that never reaches the anchor.
    let cas: Vec<Ca> = (0..6)
        .map(|_| {
            let key = p256();
            let mut params = root_params(node_dn(ID_B));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_identifier_method = KeyIdMethod::PreSpecified(params.key_identifier(&key));
            Ca {
                params,
                key,
                der: vec![],
            }
        })
        .collect();
    let mut mesh = Vec::new();
    for subject in &cas {
        for issuer in &cas {
            mesh.push(issue_key(issuer, &subject.params, &subject.key));
        }
    }
    let leaf = leaf_with(&cas[0], with_cn(node_dn(ID_B), "gw"), |_| {});
    let a = root(ID_A);
    let e = assert_kind(
        validate(&leaf, &a.der, &mesh, &[], Purpose::Client),
        "too_complex",
    );
    assert!(e.to_string().contains("gave up"), "{e}");
    // Adding the real way out (a cross-cert from A) still finds it quickly,
    // because candidates with a matching key identifier come first.
    let mut with_exit = vec![cross(&a, &cas[0])];
    with_exit.extend(mesh);
    assert_ok(validate(&leaf, &a.der, &with_exit, &[], Purpose::Client));
}

#[test]
fn reissued_anchor_validates_against_the_old_one() {
    // Same name and key, new validity: [new root, old root] is a valid path.
    let old = root(ID_A);
    let mut params = old.params.clone();
    params.serial_number = Some(next_serial());
    params.not_after = AT + Duration::days(9000);
    let new = params.self_signed(&old.key).unwrap().der().to_vec();
    assert_eq!(
        assert_ok(validate(&new, &old.der, &[], &[], Purpose::Any))
            .chain
            .len(),
        2
    );
}

#[test]
fn leaf_equal_to_anchor() {
    let net = net();
    let chain = assert_ok(validate(&net.a.der, &net.a.der, &[], &[], Purpose::Any));
    assert_eq!(chain.chain, vec![net.a.der.clone()]);
    assert_eq!(
        chain.leaf_subject,
        format!("O=Net, OU=a, serialNumber={ID_A}")
    );
    assert_kind(
        validate(&net.a.der, &net.a.der, &[], &[], Purpose::Client),
        "ca_as_leaf",
    );
    // Another self-signed cert with the anchor's name but a different key is not the anchor.
    let other = root(ID_A);
    assert_kind(
        validate(&other.der, &net.a.der, &[], &[], Purpose::Any),
        "bad_signature",
    );
    // A self-signed server certificate pinned as its own anchor.
    let key = p256();
    let self_signed = leaf_params(with_cn(node_dn(ID_B), "gw1"))
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    assert_ok(validate(
        &self_signed,
        &self_signed,
        &[],
        &[],
        Purpose::Server,
    ));
}

/// A small deterministic generator, to keep the tests reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_is_malformed_without_panicking() {
    let net = net();
    let a = &net.a.der;
    let inter = std::slice::from_ref(&net.cross_b);
    let mut seed = 0x1234_5678_9abc_def0u64;
    for len in [0usize, 1, 2, 16, 300, 2000] {
        let junk: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        let e = assert_kind(validate(&junk, a, inter, &[], Purpose::Client), "malformed");
        assert!(e.to_string().starts_with("the leaf certificate"), "{e}");
        let e = assert_kind(
            validate(&net.b_leaf, &junk, inter, &[], Purpose::Client),
            "malformed",
        );
        assert!(e.to_string().starts_with("the trust anchor"), "{e}");
        let e = assert_kind(
            validate(
                &net.b_leaf,
                a,
                &[net.cross_b.clone(), junk.clone()],
                &[],
                Purpose::Client,
            ),
            "malformed",
        );
        assert!(
            e.to_string().starts_with("intermediate certificate #2"),
            "{e}"
        );
        let e = assert_kind(
            validate(
                &net.b_leaf,
                a,
                inter,
                std::slice::from_ref(&junk),
                Purpose::Client,
            ),
            "malformed",
        );
        assert!(e.to_string().starts_with("CRL #1"), "{e}");
    }
    // Every truncation of the leaf, and a trailing byte.
    for cut in 0..net.b_leaf.len() {
        assert_kind(via_a(&net, &net.b_leaf[..cut]), "malformed");
    }
    let mut long = net.b_leaf.clone();
    long.push(0);
    assert_kind(via_a(&net, &long), "malformed");
    let crl = sign_crl(&crl_params(&[&net.b_leaf]), &net.b);
    for cut in [0, 1, crl.len() / 2, crl.len() - 1] {
        assert_kind(
            validate(
                &net.b_leaf,
                a,
                inter,
                &[crl[..cut].to_vec()],
                Purpose::Client,
            ),
            "malformed",
        );
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let net = net();
    let crl = sign_crl(&crl_params(&[]), &net.b);
    let a = &net.a.der;
    let mut seed = 0xfeed_beef_1234_5678u64;
    for pos in 0..net.b_leaf.len() {
        let mut leaf = net.b_leaf.clone();
        leaf[pos] ^= (xorshift(&mut seed) as u8) | 1;
        let result = validate(
            &leaf,
            a,
            std::slice::from_ref(&net.cross_b),
            std::slice::from_ref(&crl),
            Purpose::Client,
        );
        // Whatever the outcome, a valid chain must still have B's key and name constraints.
        if let Ok(chain) = result {
            assert!(chain
                .leaf_subject
                .starts_with(&format!("O=Net, OU=a, serialNumber={ID_B}")));
        }
    }
    for pos in 0..net.cross_b.len() {
        let mut xc = net.cross_b.clone();
        xc[pos] ^= (xorshift(&mut seed) as u8) | 1;
        let _ = validate(
            &net.b_leaf,
            a,
            &[xc],
            std::slice::from_ref(&crl),
            Purpose::Client,
        );
    }
    for pos in 0..crl.len() {
        let mut bad = crl.clone();
        bad[pos] ^= (xorshift(&mut seed) as u8) | 1;
        let _ = validate(
            &net.b_leaf,
            a,
            std::slice::from_ref(&net.cross_b),
            &[bad],
            Purpose::Client,
        );
    }
}

#[test]
fn error_stays_small() {
    // Callers wrap ValidationError in their own errors; keep it under clippy's
    // result_large_err threshold (128 bytes).
    assert!(std::mem::size_of::<ValidationError>() <= 120);
}

#[test]
fn kinds_are_distinct() {
    let mut kinds = ValidationError::KINDS.to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), ValidationError::KINDS.len());
}

#[test]
fn issuer_and_subject_found_without_full_decoding() {
    let net = net();
    for der in [&net.a.der, &net.cross_b, &net.b_leaf] {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).expect("parses");
        assert_eq!(
            der::cert_issuer_and_subject(der),
            Some((cert.issuer().as_raw(), cert.subject().as_raw()))
        );
    }
    // Anything that is not a certificate gives nothing.
    let leaf = &net.b_leaf;
    assert_eq!(der::cert_issuer_and_subject(&leaf[..leaf.len() - 1]), None);
    assert_eq!(der::cert_issuer_and_subject(&[0x30, 0x00]), None);
    assert_eq!(der::cert_issuer_and_subject(b"not DER"), None);
}
