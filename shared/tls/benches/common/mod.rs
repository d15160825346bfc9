//! Certificates for the TLS and validator benchmarks, made in memory with the
//! product's own profiles (`peerlink_ca::profiles`, as `ca-tool` issues them),
//! and the same shapes without the directoryName constraint for the webpki
//! baseline. Only what both benchmarks use is here; `handshakes.rs` adds the
//! TLS configurations and its own baseline server certificate.
//!
//! Two nodes, A and B, each with an ECDSA P-256 root (`ca-tool init`'s default
//! key type) and a gateway certificate, cross-signed both ways. B dials A:
//!
//! - ours: B presents [B's gateway cert, B's root cross-signed by A (pathlen 0,
//!   critical permitted directoryName = B's DN)], A validates it against A's root;
//!   A presents its gateway cert, B validates it against A's pinned root.
//! - baseline: the same keys, the same leaf, and a cross-cert of the same shape
//!   minus nameConstraints (webpki rejects every directoryName constraint).
//!
//! Optional CRLs (10 revoked serials each) from both roots.

use std::collections::BTreeMap;
use std::sync::Arc;

use peerlink_ca::profiles::{issue_root, random_serial, validity_days, RootSigner};
use peerlink_cadb::RevokedEntry;
use peerlink_pki::identity::{node_id_from_spki, rcgen_name, NodeIdentity, NodeName};
use peerlink_pki::keys::{KeyType, PrivateKey};
use peerlink_tls::{NodeTrust, PeerStatus, PeerTrust, ServerIdentity};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose};
use x509_parser::prelude::FromDer;

/// One node: its root and gateway, as `ca-tool init` + `sign-server` make them.
pub struct Node {
    pub root_key: PrivateKey,
    pub signer: RootSigner,
    pub root_der: Vec<u8>,
    /// The gateway's certificate and key, as the gateway loads them.
    pub gw: ServerIdentity,
    pub crl: Vec<u8>,
}

impl Node {
    pub fn id(&self) -> &NodeIdentity {
        self.signer.identity()
    }
}

/// Makes a node with an ECDSA P-256 root and gateway key.
pub fn node(unit: &str) -> Node {
    let root_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let id = node_id_from_spki(&root_key.public_key_der().unwrap());
    let root_der = issue_root(&root_key, &NodeName::new("Bench", unit, &id).unwrap(), 365).unwrap();
    let signer = RootSigner::new(root_der.clone(), &root_key).unwrap();
    let gw_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let (_, subject) =
        x509_parser::x509::X509Name::from_der(&signer.identity().subject_der).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen_name(&subject).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gw1");
    let csr = params
        .serialize_request(&gw_key.signing_key().unwrap())
        .unwrap();
    let verified = peerlink_ca::csr::verify_csr(csr.der(), &signer.identity().subject_der).unwrap();
    let gw_cert = signer.issue_server_cert(&verified, 90).unwrap().der;
    let revoked: Vec<RevokedEntry> = (0..10u8)
        .map(|i| RevokedEntry {
            serial: vec![0x40, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
            revoked_at: ::time::OffsetDateTime::now_utc() - ::time::Duration::days(1),
            reason: None,
        })
        .collect();
    let crl = signer.issue_crl(1, &revoked, 7).unwrap();
    let gw = ServerIdentity {
        cert_der: gw_cert,
        key: gw_key,
        not_after: ::time::OffsetDateTime::now_utc() + ::time::Duration::days(90),
    };
    Node {
        root_key,
        signer,
        root_der,
        gw,
        crl,
    }
}

/// Both nodes and every certificate the benchmarks present.
pub struct Fixture {
    pub a: Node,
    pub b: Node,
    /// B's root signed by A (with the directoryName constraint): B presents it to A.
    pub cross_b_by_a: Vec<u8>,
    /// A's root signed by B (in A's trust, for A dialing B).
    pub cross_a_by_b: Vec<u8>,
    /// Baseline: B's root signed by A, same shape without nameConstraints.
    pub cross_b_by_a_plain: Vec<u8>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let (a, b) = (node("a"), node("b"));
        let cross_b_by_a = a.signer.issue_cross_cert(b.id(), 100).unwrap().der;
        let cross_a_by_b = b.signer.issue_cross_cert(a.id(), 100).unwrap().der;
        let cross_b_by_a_plain = plain_cross(&a, &b);
        Fixture {
            a,
            b,
            cross_b_by_a,
            cross_a_by_b,
            cross_b_by_a_plain,
        }
    }

    /// A's trust: partner B (plus `extra` other registered partners), with both CRLs or none.
    pub fn a_trust(&self, crls: bool, extra: &[PeerTrust]) -> Arc<NodeTrust> {
        let mut peers: BTreeMap<String, PeerTrust> = extra
            .iter()
            .map(|p| (p.node_id.clone(), p.clone()))
            .collect();
        peers.insert(
            self.b.id().node_id.clone(),
            peer_trust(&self.b, &self.cross_a_by_b, crls),
        );
        Arc::new(NodeTrust {
            node_dir: ".".into(),
            root_der: self.a.root_der.clone(),
            identity: self.a.id().clone(),
            crl_der: crls.then(|| self.a.crl.clone()),
            peers,
        })
    }
}

/// How `partner` appears in the other node's trust.
pub fn peer_trust(partner: &Node, issued_to_us: &[u8], crls: bool) -> PeerTrust {
    let id = partner.id();
    PeerTrust {
        node_id: id.node_id.clone(),
        subject: id.subject.clone(),
        subject_der: id.subject_der.clone(),
        root_der: partner.root_der.clone(),
        issued_to_us_der: Some(issued_to_us.to_vec()),
        endpoints: vec![],
        status: PeerStatus::Active,
        crl_der: crls.then(|| partner.crl.clone()),
        issued_to_us_not_after: None,
        stomp: None,
    }
}

/// `n`'s root as an rcgen issuer, for certificates outside the product's profiles.
pub fn issuer(n: &Node) -> Issuer<'static, rcgen::KeyPair> {
    Issuer::from_ca_cert_der(
        &n.root_der.as_slice().into(),
        n.root_key.signing_key().unwrap(),
    )
    .unwrap()
}

/// B's root signed by A like `issue_cross_cert`, without the nameConstraints extension.
fn plain_cross(a: &Node, b: &Node) -> Vec<u8> {
    let id = b.id();
    let (_, subject) = x509_parser::x509::X509Name::from_der(&id.subject_der).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen_name(&subject).unwrap();
    let (not_before, not_after) = validity_days(100).unwrap();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::PreSpecified(id.ski.clone().unwrap());
    params.use_authority_key_identifier_extension = true;
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&id.spki_der).unwrap();
    params.signed_by(&spki, &issuer(a)).unwrap().der().to_vec()
}
