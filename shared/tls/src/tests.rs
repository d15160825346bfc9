//! In-process handshakes over `tokio::io::duplex` with certificates made by
//! the real profiles: the API other programs use, accepted and refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use peerlink_ca::profiles::{issue_root, RootSigner};
use peerlink_pki::identity::{NodeIdentity, NodeName};
use peerlink_pki::keys::{KeyType, PrivateKey};

struct Node {
    signer: RootSigner,
    root_der: Vec<u8>,
    gw_cert: Vec<u8>,
    gw_key: PrivateKey,
}

fn node(unit: &str) -> Node {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let id = peerlink_pki::identity::node_id_from_spki(&key.public_key_der().unwrap());
    let root_der = issue_root(&key, &NodeName::new("Net", unit, &id).unwrap(), 365).unwrap();
    let signer = RootSigner::new(root_der.clone(), &key).unwrap();
    let gw_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let (_, subject) =
        x509_parser::x509::X509Name::from_der(&signer.identity().subject_der).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = peerlink_pki::identity::rcgen_name(&subject).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gw1");
    let csr = params
        .serialize_request(&gw_key.signing_key().unwrap())
        .unwrap();
    let verified = peerlink_ca::csr::verify_csr(csr.der(), &signer.identity().subject_der).unwrap();
    let gw_cert = signer.issue_server_cert(&verified, 100).unwrap().der;
    Node {
        signer,
        root_der,
        gw_cert,
        gw_key,
    }
}

/// `me`'s trust, with `partner` cross-signed both ways and `status`.
fn trust(me: &Node, partner: &Node, status: PeerStatus) -> Arc<NodeTrust> {
    let partner_id = NodeIdentity::from_root_der(&partner.root_der).unwrap();
    let issued_to_us = partner
        .signer
        .issue_cross_cert(me.signer.identity(), 100)
        .unwrap()
        .der;
    let mut peers = BTreeMap::new();
    peers.insert(
        partner_id.node_id.clone(),
        PeerTrust {
            node_id: partner_id.node_id.clone(),
            subject: partner_id.subject.clone(),
            subject_der: partner_id.subject_der.clone(),
            root_der: partner.root_der.clone(),
            issued_to_us_der: Some(issued_to_us),
            endpoints: vec![],
            status,
            crl_der: None,
            issued_to_us_not_after: None,
            stomp: None,
        },
    );
    Arc::new(NodeTrust {
        node_dir: ".".into(),
        root_der: me.root_der.clone(),
        identity: me.signer.identity().clone(),
        crl_der: None,
        peers,
    })
}

fn tls(me: &Node, trust: Arc<NodeTrust>) -> PeerTls {
    let identity = ServerIdentity {
        cert_der: me.gw_cert.clone(),
        key: PrivateKey::from_pkcs8_der(me.gw_key.pkcs8_der(), "gw").unwrap(),
        not_after: ::time::OffsetDateTime::now_utc(),
    };
    PeerTls::new(trust, Arc::new(identity)).unwrap()
}

async fn handshake(
    server: &PeerTls,
    client: &PeerTls,
    dial: &str,
) -> (Result<String, HandshakeError>, Result<(), HandshakeError>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = async {
        let (mut s, id) = server.accept(a).await?;
        // TLS 1.3 clients learn of a refusal only on their first read: exchange a byte.
        s.write_all(b"x").await?;
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await?;
        Ok(id)
    };
    let connect = async {
        let mut c = client.connect(b, dial).await?;
        c.write_all(b"y").await?;
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf).await?;
        Ok(())
    };
    tokio::join!(accept, connect)
}

#[tokio::test]
async fn partners_authenticate_each_other() {
    let (a, b) = (node("a"), node("b"));
    let a_tls = tls(&a, trust(&a, &b, PeerStatus::Active));
    let b_tls = tls(&b, trust(&b, &a, PeerStatus::Active));
    let (accepted, connected) = handshake(&a_tls, &b_tls, &a.signer.identity().node_id).await;
    assert_eq!(accepted.unwrap(), b.signer.identity().node_id);
    connected.unwrap();
    let conn = a_tls.server_config();
    assert!(conn.alpn_protocols.contains(&ALPN.to_vec()));
}

#[tokio::test]
async fn repeated_dials_reuse_one_client_configuration() {
    let (a, b) = (node("a"), node("b"));
    let a_id = a.signer.identity().node_id.clone();
    let a_tls = tls(&a, trust(&a, &b, PeerStatus::Active));
    let b_tls = tls(&b, trust(&b, &a, PeerStatus::Active));
    let first = b_tls.client_config(&a_id).unwrap();
    // Clones of a PeerTls share the cache; a second handshake still authenticates.
    let clone = b_tls.clone();
    assert!(Arc::ptr_eq(&first, &clone.client_config(&a_id).unwrap()));
    for _ in 0..2 {
        let (accepted, connected) = handshake(&a_tls, &clone, &a_id).await;
        assert_eq!(accepted.unwrap(), b.signer.identity().node_id);
        connected.unwrap();
    }
    // A new trust snapshot (a reload) builds its own; an inactive partner is
    // refused before any cached configuration could be used.
    let reloaded = tls(&b, trust(&b, &a, PeerStatus::Active));
    assert!(!Arc::ptr_eq(
        &first,
        &reloaded.client_config(&a_id).unwrap()
    ));
    let deactivated = tls(&b, trust(&b, &a, PeerStatus::Inactive));
    assert!(matches!(
        deactivated.client_config(&a_id),
        Err(HandshakeError::NotDialable(..))
    ));
}

#[tokio::test]
async fn inactive_partner_is_refused_with_its_reason() {
    let (a, b) = (node("a"), node("b"));
    let a_tls = tls(&a, trust(&a, &b, PeerStatus::Inactive));
    let b_tls = tls(&b, trust(&b, &a, PeerStatus::Active));
    let (accepted, connected) = handshake(&a_tls, &b_tls, &a.signer.identity().node_id).await;
    match accepted {
        Err(HandshakeError::Refused(r)) => {
            assert_eq!(r.reason, "peer_inactive");
            assert_eq!(
                r.peer.as_deref(),
                Some(b.signer.identity().node_id.as_str())
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(connected.is_err());
}

#[tokio::test]
async fn a_partner_missing_from_the_registry_is_refused() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    // A's root did sign C's root (the fixture issues it), but C is not in A's peer list.
    let a_tls = tls(&a, trust(&a, &b, PeerStatus::Active));
    let c_tls = tls(&c, trust(&c, &a, PeerStatus::Active));
    let (accepted, _) = handshake(&a_tls, &c_tls, &a.signer.identity().node_id).await;
    match accepted {
        Err(HandshakeError::Refused(r)) => assert_eq!(r.reason, "unknown_peer", "{r}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn dialing_checks_the_partner_name() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    // B believes it dials A, but the server is C: C's leaf does not chain to A's pinned root.
    let c_tls = tls(&c, trust(&c, &b, PeerStatus::Active));
    let b_tls = tls(&b, trust(&b, &a, PeerStatus::Active));
    let (_, connected) = handshake(&c_tls, &b_tls, &a.signer.identity().node_id).await;
    match connected {
        Err(HandshakeError::Refused(r)) => assert_eq!(r.reason, "unknown_issuer", "{r}"),
        other => panic!("expected our refusal of the server, got {other:?}"),
    }
}

#[tokio::test]
async fn no_dial_without_a_cross_certificate() {
    let (a, b) = (node("a"), node("b"));
    let mut t = (*trust(&b, &a, PeerStatus::Active)).clone();
    for p in t.peers.values_mut() {
        p.issued_to_us_der = None;
    }
    let b_tls = tls(&b, Arc::new(t));
    let err = b_tls
        .client_config(&a.signer.identity().node_id)
        .unwrap_err();
    assert_eq!(err.reason(), "not_dialable");
}

#[test]
fn overlong_presented_chains_are_refused_before_validation() {
    let (a, b) = (node("a"), node("b"));
    let trust = trust(&a, &b, PeerStatus::Active);
    let junk = vec![b.root_der.clone(); MAX_PRESENTED_INTERMEDIATES + 1];
    let now = ::time::OffsetDateTime::now_utc();
    let err = identify_client(&trust, &b.gw_cert, &junk, now).unwrap_err();
    assert_eq!(err.reason, "chain_too_long");
    let err =
        verify_server(&trust, &b.signer.identity().node_id, &b.gw_cert, &junk, now).unwrap_err();
    assert_eq!(err.reason, "chain_too_long");
}

#[test]
fn a_stale_partner_crl_still_revokes_but_does_not_lock_the_partner_out() {
    let (a, b) = (node("a"), node("b"));
    let later = ::time::OffsetDateTime::now_utc() + ::time::Duration::days(40);
    // b's CRL (valid 1 day) is 39 days stale at `later`; it revokes nothing.
    let mut t = (*trust(&a, &b, PeerStatus::Active)).clone();
    // a must also have cross-signed b for the inbound chain.
    let cross = a
        .signer
        .issue_cross_cert(b.signer.identity(), 100)
        .unwrap()
        .der;
    let clean = b.signer.issue_crl(1, &[], 1).unwrap();
    for p in t.peers.values_mut() {
        p.crl_der = Some(clean.clone());
    }
    let trust_clean = Arc::new(t.clone());
    identify_client(
        &trust_clean,
        &b.gw_cert,
        std::slice::from_ref(&cross),
        later,
    )
    .expect("a stale partner CRL must not refuse the partner");
    // The same, but the stale CRL lists b's gateway certificate: still revoked.
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&b.gw_cert).unwrap();
    let revoking = b
        .signer
        .issue_crl(
            2,
            &[peerlink_cadb::RevokedEntry {
                serial: leaf.raw_serial().to_vec(),
                revoked_at: ::time::OffsetDateTime::now_utc(),
                reason: None,
            }],
            1,
        )
        .unwrap();
    for p in t.peers.values_mut() {
        p.crl_der = Some(revoking.clone());
    }
    let err = identify_client(&Arc::new(t), &b.gw_cert, &[cross], later).unwrap_err();
    assert_eq!(err.reason, "revoked", "{err}");
}

/// A node like [`node`] whose root expired yesterday, with a gateway
/// certificate (made by hand, since the profiles cap it at the root's expiry)
/// that is valid now: only the root is out of date.
fn node_with_expired_root(unit: &str) -> Node {
    let now = ::time::OffsetDateTime::now_utc();
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let signing = key.signing_key().unwrap();
    let id = peerlink_pki::identity::node_id_from_spki(&key.public_key_der().unwrap());
    let name = NodeName::new("Net", unit, &id).unwrap();
    let mut root = rcgen::CertificateParams::default();
    root.distinguished_name = name.to_rcgen().unwrap();
    root.not_before = now - ::time::Duration::days(400);
    root.not_after = now - ::time::Duration::days(1);
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    root.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let root_der = root.self_signed(&signing).unwrap().der().to_vec();
    let signer = RootSigner::new(root_der.clone(), &key).unwrap();
    let gw_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let mut gw = rcgen::CertificateParams::default();
    gw.distinguished_name = name.to_rcgen().unwrap();
    gw.distinguished_name.push(rcgen::DnType::CommonName, "gw1");
    gw.not_before = now - ::time::Duration::days(1);
    gw.not_after = now + ::time::Duration::days(30);
    gw.is_ca = rcgen::IsCa::ExplicitNoCa;
    gw.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    gw.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    gw.use_authority_key_identifier_extension = true;
    let issuer = rcgen::Issuer::from_ca_cert_der(&root_der.as_slice().into(), &signing).unwrap();
    let gw_cert = gw
        .signed_by(&gw_key.signing_key().unwrap(), &issuer)
        .unwrap()
        .der()
        .to_vec();
    Node {
        signer,
        root_der,
        gw_cert,
        gw_key,
    }
}

#[tokio::test]
async fn an_expired_root_is_refused_as_the_anchor_on_both_sides() {
    let (a, b) = (node("a"), node_with_expired_root("b"));
    let b_id = b.signer.identity().node_id.clone();
    let expired_anchor = |side: &str, r: &Refusal| {
        assert_eq!(r.reason, "expired", "{side}: {r}");
        assert!(
            r.detail.starts_with("anchor certificate") && r.detail.contains("expired at"),
            "{side}: {r}"
        );
    };
    // A dials B: A validates B's server certificate (valid now) with B's pinned
    // root, which has expired, as the anchor. A refuses in the handshake.
    let a_tls = tls(&a, trust(&a, &b, PeerStatus::Active));
    let b_tls = tls(&b, trust(&b, &a, PeerStatus::Active));
    let (_, connected) = handshake(&b_tls, &a_tls, &b_id).await;
    match connected {
        Err(HandshakeError::Refused(r)) => expired_anchor("dialer", &r),
        other => panic!("dialer: expected a refusal of the expired anchor, got {other:?}"),
    }
    // B's listener validates A's client chain with its own (expired) root as
    // the anchor: the function its client verifier calls refuses it the same way.
    let b_trust = trust(&b, &a, PeerStatus::Active);
    let cross_a = b
        .signer
        .issue_cross_cert(a.signer.identity(), 100)
        .unwrap()
        .der;
    let now = ::time::OffsetDateTime::now_utc();
    let err = identify_client(&b_trust, &a.gw_cert, &[cross_a], now).unwrap_err();
    expired_anchor("listener", &err);
    // Control: B's server certificate itself is valid now.
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&b.gw_cert).unwrap();
    assert!(leaf
        .validity()
        .is_valid_at(x509_parser::time::ASN1Time::from(now)));
}

// ---------------------------------------------------------------------------
// Swaptacular node directories: the real ones in ../shared/third_party
// ---------------------------------------------------------------------------

/// swpt_stomp's test node directories (AA, CA, DA; made by swpt_ca_scripts),
/// in the `shared/` folder beside the repository.
fn swpt_test_data(node: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/third_party/swpt_stomp/test_data")
        .join(node)
}

async fn swpt_node(node: &str) -> PeerTls {
    let dir = swpt_test_data(node);
    let trust = Arc::new(NodeTrust::load(&dir, &BTreeMap::new()).await.unwrap());
    let identity =
        ServerIdentity::load(&dir.join("server.crt"), &dir.join("server.key"), &trust).unwrap();
    PeerTls::new(trust, Arc::new(identity)).unwrap()
}

#[tokio::test]
async fn a_swaptacular_node_directory_is_read_as_swpt_stomp_reads_it() {
    let dir = swpt_test_data("AA");
    assert_eq!(
        NodeDirLayout::detect(&dir).unwrap(),
        NodeDirLayout::Swaptacular
    );
    let trust = NodeTrust::load(&dir, &BTreeMap::new()).await.unwrap();
    assert_eq!(trust.identity.node_id, "1234abcd");
    let ids: Vec<_> = trust.peers.keys().cloned().collect();
    assert_eq!(
        ids,
        [
            "060791aeca7637fa3357dfc0299fb4c5",
            "09cab36b6079e09c32a9dfd60446c469",
            "5921983fe0e6eb987aeedca54ad3c708"
        ]
    );
    let creditors = &trust.peers["5921983fe0e6eb987aeedca54ad3c708"];
    assert_eq!(creditors.status, PeerStatus::Active);
    assert!(creditors.can_dial());
    assert!(creditors.endpoints.is_empty());
    let stomp = creditors.stomp.as_ref().unwrap();
    assert_eq!(stomp.servers, ["127.0.0.1:1235"]);
    assert_eq!(stomp.host_for("1234abcd"), "/1234abcd");
    assert_eq!(stomp.destination_for("1234abcd"), "/exchange/creditors_in");
    assert!(stomp.accepts("application/json"));
    // DEACTIVATED: listed, but inactive.
    let deactivated = &trust.peers["09cab36b6079e09c32a9dfd60446c469"];
    assert_eq!(deactivated.status, PeerStatus::Inactive);
    assert!(deactivated.stomp.is_some());
    assert_eq!(
        trust
            .peer_by_subject(&creditors.subject_der)
            .map(|p| p.node_id.as_str()),
        Some("5921983fe0e6eb987aeedca54ad3c708")
    );
}

#[tokio::test]
async fn swaptacular_nodes_authenticate_each_other_with_their_real_certificates() {
    let aa = swpt_node("AA").await;
    let ca = swpt_node("CA").await;
    let da = swpt_node("DA").await;
    // The creditors agent dials the accounting authority and the other way round.
    let (accepted, connected) = handshake(&aa, &ca, "1234abcd").await;
    assert_eq!(accepted.unwrap(), "5921983fe0e6eb987aeedca54ad3c708");
    connected.unwrap();
    let (accepted, connected) = handshake(&ca, &aa, "5921983fe0e6eb987aeedca54ad3c708").await;
    assert_eq!(accepted.unwrap(), "1234abcd");
    connected.unwrap();
    let (accepted, connected) = handshake(&aa, &da, "1234abcd").await;
    assert_eq!(accepted.unwrap(), "060791aeca7637fa3357dfc0299fb4c5");
    connected.unwrap();
    // Agents are no partners of each other: the debtors agent does not know the creditors agent.
    let (accepted, _) = handshake(&da, &ca, "1234abcd").await;
    assert!(accepted.is_err());
}

#[tokio::test]
async fn a_swaptacular_directory_that_contradicts_itself_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("AA");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::copy(
        swpt_test_data("AA").join("root-ca.crt"),
        dir.join("root-ca.crt"),
    )
    .unwrap();
    std::fs::write(dir.join("db/nodeid"), "deadbeef\n").unwrap();
    let err = NodeTrust::load(&dir, &BTreeMap::new()).await.unwrap_err();
    assert!(err.to_string().contains("inconsistent"), "{err}");
    std::fs::write(dir.join("db/nodeid"), "1234abcd\n").unwrap();
    let peer = dir.join("peers/0000000000000000000000000000000a");
    std::fs::create_dir_all(peer.join("nodeinfo")).unwrap();
    let real = swpt_test_data("AA").join("peers/5921983fe0e6eb987aeedca54ad3c708");
    std::fs::copy(real.join("root-ca.crt"), peer.join("root-ca.crt")).unwrap();
    let err = NodeTrust::load(&dir, &BTreeMap::new()).await.unwrap_err();
    assert!(err.to_string().contains("directory name"), "{err}");
    std::fs::remove_dir_all(&peer).unwrap();
    let peer = dir.join("peers/5921983fe0e6eb987aeedca54ad3c708");
    std::fs::create_dir_all(peer.join("nodeinfo")).unwrap();
    std::fs::copy(real.join("root-ca.crt"), peer.join("root-ca.crt")).unwrap();
    std::fs::write(peer.join("nodeinfo/stomp.toml"), "servers = []\n").unwrap();
    let err = NodeTrust::load(&dir, &BTreeMap::new()).await.unwrap_err();
    assert!(err.to_string().contains("stomp.toml"), "{err}");
    std::fs::remove_file(peer.join("nodeinfo/stomp.toml")).unwrap();
    let trust = NodeTrust::load(&dir, &BTreeMap::new()).await.unwrap();
    // No sub-ca.crt and no ACTIVE: known, but not linked with.
    assert_eq!(
        trust.peers["5921983fe0e6eb987aeedca54ad3c708"].status,
        PeerStatus::Inactive
    );
}
