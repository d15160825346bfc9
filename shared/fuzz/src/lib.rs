//! What the fuzz targets share: a fixed, valid certificate chain in the
//! product's shapes (node root A, node root B cross-signed by A with a
//! directoryName constraint, B's server certificate, a CRL from B), built
//! once per process with rcgen from fixed Ed25519 seeds, so that it is the
//! same bytes every time and the seed corpus (written by
//! `examples/make_seeds.rs`) chains to it.

use std::sync::OnceLock;

use peerlink_pki::validate::{validate_chain, Purpose, ValidationOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, NameConstraints, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// The validation time used with the fixed chain.
pub const AT: OffsetDateTime = datetime!(2027-01-01 12:00 UTC);

/// Ed25519 keys from fixed seeds: signatures are deterministic too, so the
/// chain is the same bytes in every process and in the seed corpus.
fn fixed_key(seed_byte: u8) -> KeyPair {
    // PKCS#8 v1 wrapping of a 32-byte Ed25519 seed (RFC 8410).
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend([seed_byte; 32]);
    KeyPair::try_from(pkcs8.as_slice()).expect("fixed key")
}

/// Node ids of the two roots.
pub const ID_A: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
/// Node id of B.
pub const ID_B: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

/// The fixed chain, DER.
pub struct FixedChain {
    /// Root A, the trust anchor.
    pub anchor: Vec<u8>,
    /// B's root cross-signed by A (pathlen 0, nameConstraints permitting B's DN).
    pub cross_b: Vec<u8>,
    /// B's server certificate (clientAuth + serverAuth), issued by B.
    pub leaf: Vec<u8>,
    /// A CRL issued by B revoking an unrelated serial.
    pub crl_b: Vec<u8>,
    /// B's self-signed root (valid as a bundle root).
    pub root_b: Vec<u8>,
    /// The DER subject of B (what B's CA signs CSRs for).
    pub subject_b: Vec<u8>,
    /// A CSR for `subject_b` plus CN=gw2, made with the leaf key.
    pub csr: Vec<u8>,
}

fn node_dn(id: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Fuzz Net");
    dn.push(DnType::OrganizationalUnitName, "unit");
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        DnValue::PrintableString(id.try_into().expect("printable")),
    );
    dn
}

fn params(dn: DistinguishedName, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.not_before = AT - Duration::days(365);
    p.not_after = AT + Duration::days(3650);
    p.serial_number = Some(SerialNumber::from(serial));
    p
}

fn ca_params(dn: DistinguishedName, serial: u64, path_len: u8) -> CertificateParams {
    let mut p = params(dn, serial);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn build() -> FixedChain {
    let (key_a, key_b, key_leaf) = (fixed_key(0xa1), fixed_key(0xb1), fixed_key(0x1e));

    let a_params = ca_params(node_dn(ID_A), 1, 1);
    let anchor = a_params.self_signed(&key_a).expect("root A").der().to_vec();
    let b_params = ca_params(node_dn(ID_B), 2, 1);
    let root_b = b_params.self_signed(&key_b).expect("root B").der().to_vec();

    let mut cross = ca_params(node_dn(ID_B), 3, 0);
    cross.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DirectoryName(node_dn(ID_B))],
        excluded_subtrees: vec![],
    });
    cross.key_identifier_method = KeyIdMethod::PreSpecified(b_params.key_identifier(&key_b));
    cross.use_authority_key_identifier_extension = true;
    let issuer_a = Issuer::from_params(&a_params, &key_a);
    let cross_b = cross
        .signed_by(&key_b, &issuer_a)
        .expect("cross")
        .der()
        .to_vec();

    let mut leaf_dn = node_dn(ID_B);
    leaf_dn.push(DnType::CommonName, "gw1");
    let mut leaf_params = params(leaf_dn, 4);
    leaf_params.not_before = AT - Duration::days(1);
    leaf_params.not_after = AT + Duration::days(90);
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf_params.use_authority_key_identifier_extension = true;
    let issuer_b = Issuer::from_params(&b_params, &key_b);
    let leaf = leaf_params
        .signed_by(&key_leaf, &issuer_b)
        .expect("leaf")
        .der()
        .to_vec();

    let crl_b = CertificateRevocationListParams {
        this_update: AT - Duration::days(1),
        next_update: AT + Duration::days(30),
        crl_number: SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(99u64),
            revocation_time: AT - Duration::days(2),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer_b)
    .expect("CRL")
    .der()
    .to_vec();

    let subject_b = {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(&root_b).expect("root B parses");
        cert.subject().as_raw().to_vec()
    };
    let mut csr_dn = node_dn(ID_B);
    csr_dn.push(DnType::CommonName, "gw2");
    let mut csr_params = CertificateParams::default();
    csr_params.distinguished_name = csr_dn;
    let csr = csr_params
        .serialize_request(&key_leaf)
        .expect("CSR")
        .der()
        .to_vec();

    let chain = FixedChain {
        anchor,
        cross_b,
        leaf,
        crl_b,
        root_b,
        subject_b,
        csr,
    };
    // The harnesses rely on the chain being valid: check it once.
    let crls = [chain.crl_b.clone()];
    let intermediates = [chain.cross_b.clone()];
    validate_chain(&chain.leaf, &chain.options(&intermediates, &crls))
        .expect("the fixed chain validates");
    peerlink_ca::csr::verify_csr(&chain.csr, &chain.subject_b).expect("the fixed CSR verifies");
    chain
}

impl FixedChain {
    /// Validation options with the fixed anchor and the given extra inputs.
    pub fn options<'a>(
        &'a self,
        intermediates: &'a [Vec<u8>],
        crls: &'a [Vec<u8>],
    ) -> ValidationOptions<'a> {
        ValidationOptions {
            anchor: &self.anchor,
            intermediates,
            crls,
            at: AT,
            purpose: Purpose::Client,
        }
    }
}

/// The fixed chain (built on first use).
pub fn fixed_chain() -> &'static FixedChain {
    static CHAIN: OnceLock<FixedChain> = OnceLock::new();
    CHAIN.get_or_init(build)
}
