//! Info-bundles written and read back, and the ways a partner's can be wrong.

use ::time::OffsetDateTime;

use super::archive::{write_members, ArchiveError};
use super::infobundle::{self, InfoBundleError};
use crate::profiles::{issue_root_up_to, RootSigner};
use peerlink_pki::identity::{node_id_from_spki, NodeName};
use peerlink_pki::keys::{KeyType, PrivateKey};
use peerlink_pki::swaptacular::{self as swpt, NodeType};

const MANIFEST: &[u8] =
    b"servers = [\"127.0.0.1:1234\"]\nhost = \"/\"\ndestination = \"/exchange/creditors_in\"\n";

fn agent(key_type: KeyType) -> RootSigner {
    let key = PrivateKey::generate(key_type).unwrap();
    let id = node_id_from_spki(&key.public_key_der().unwrap());
    let name = NodeName::new(swpt::ORG, NodeType::CreditorsAgent.unit(), &id).unwrap();
    let root = issue_root_up_to(&key, &name, swpt::DEFAULT_DAYS, swpt::MAX_DAYS).unwrap();
    RootSigner::new(root, &key).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The members of an info-bundle, for rebuilding it with one changed.
fn members(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let limits = super::archive::Limits {
        archive: 1 << 20,
        members: 8,
        member: 1 << 20,
        total: 1 << 20,
        subdirectories: false,
    };
    super::archive::read_members(bundle, &limits, "t").unwrap()
}

fn rebuilt(bundle: &[u8], name: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut m = members(bundle);
    m.retain(|(n, _)| n != name);
    if let Some(d) = data {
        m.push((name.to_string(), d.to_vec()));
    }
    let refs: Vec<(&str, &[u8])> = m.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    write_members(&refs, now()).unwrap()
}

#[test]
fn an_exported_info_bundle_reads_back() {
    let me = agent(KeyType::EcdsaP256);
    let bundle = infobundle::export(&me, MANIFEST, now()).unwrap();
    assert!(infobundle::is_zip(&bundle));
    let read = infobundle::verify(&bundle, now()).unwrap();
    assert_eq!(read.identity.node_id, me.identity().node_id);
    assert_eq!(read.node_type, NodeType::CreditorsAgent);
    assert_eq!(read.manifest.servers, ["127.0.0.1:1234"]);
    assert_eq!(read.manifest_bytes, MANIFEST);
    assert!(read.updated_at.is_some());
}

#[test]
fn keys_that_cannot_sign_sha256_and_foreign_names_are_refused_for_export() {
    for kt in [KeyType::EcdsaP384, KeyType::Ed25519] {
        let err = infobundle::export(&agent(kt), MANIFEST, now()).unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
    }
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let id = node_id_from_spki(&key.public_key_der().unwrap());
    let root = crate::profiles::issue_root(&key, &NodeName::new("Net", "gw", &id).unwrap(), 30);
    let plain = RootSigner::new(root.unwrap(), &key).unwrap();
    let err = infobundle::export(&plain, MANIFEST, now()).unwrap_err();
    assert!(err.to_string().contains("--profile swaptacular"), "{err}");
    let err = infobundle::export(&agent(KeyType::EcdsaP256), b"servers = []", now()).unwrap_err();
    assert!(err.to_string().contains("stomp.toml"), "{err}");
}

#[test]
fn altered_or_inconsistent_bundles_are_refused() {
    let me = agent(KeyType::EcdsaP256);
    let other = agent(KeyType::EcdsaP256);
    let bundle = infobundle::export(&me, MANIFEST, now()).unwrap();
    let their_manifest = b"servers = [\"127.0.0.1:9\"]\nhost = \"/\"\ndestination = \"/x\"\n";
    let theirs = members(&infobundle::export(&other, their_manifest, now()).unwrap());
    let member =
        |m: &[(String, Vec<u8>)], name: &str| m.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let check = |bytes: Vec<u8>, fragment: &str| {
        let err = infobundle::verify(&bytes, now()).unwrap_err();
        assert!(err.to_string().contains(fragment), "{fragment}: {err}");
    };
    // Another node's signed node info.
    let b = rebuilt(
        &bundle,
        "nodeinfo.zip",
        Some(&member(&theirs, "nodeinfo.zip")),
    );
    check(b, "does not verify");
    // Another node's CSR.
    let b = rebuilt(
        &bundle,
        "root-ca.csr",
        Some(&member(&theirs, "root-ca.csr")),
    );
    check(b, "different key");
    // Missing and unexpected members.
    check(rebuilt(&bundle, "root-ca.csr", None), "no root-ca.csr");
    check(
        rebuilt(&bundle, "extra.txt", Some(b"x")),
        "unexpected member",
    );
    check(
        rebuilt(&bundle, "root-ca.crt", Some(b"junk")),
        "no certificate",
    );
    // A node info without stomp.toml, properly signed.
    let nodeinfo = write_members(&[("updated-at.txt", b"2026-01-01\n")], now()).unwrap();
    let sig = me.sign(&nodeinfo).unwrap();
    let b = rebuilt(
        &rebuilt(&bundle, "nodeinfo.zip", Some(&nodeinfo)),
        "nodeinfo.signature",
        Some(&sig),
    );
    check(b, "no stomp.toml");
    // Not a zip at all.
    let err = infobundle::verify(b"hello", now()).unwrap_err();
    assert!(
        matches!(err, InfoBundleError::Archive(ArchiveError::Corrupt { .. })),
        "{err}"
    );
}

#[test]
fn node_id_rules_are_enforced_on_bundles() {
    // An accounting authority whose id is not 8 hex digits.
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let name = NodeName::new(swpt::ORG, NodeType::AccountingAuthority.unit(), "1234abc").unwrap();
    let root = issue_root_up_to(&key, &name, 3650, swpt::MAX_DAYS).unwrap();
    let signer = RootSigner::new(root, &key).unwrap();
    let err = infobundle::export(&signer, MANIFEST, now()).unwrap_err();
    assert!(err.to_string().contains("8 lowercase hex"), "{err}");
    // An agent whose id is not its key's.
    let name = NodeName::new(swpt::ORG, NodeType::DebtorsAgent.unit(), &"0".repeat(32)).unwrap();
    let root = issue_root_up_to(&key, &name, 3650, swpt::MAX_DAYS).unwrap();
    let signer = RootSigner::new(root, &key).unwrap();
    let err = infobundle::export(&signer, MANIFEST, now()).unwrap_err();
    assert!(
        err.to_string().contains("derived from its root key"),
        "{err}"
    );
}

#[test]
fn cross_certs_carry_the_subnet_comment() {
    let aa_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let name = NodeName::new(swpt::ORG, NodeType::AccountingAuthority.unit(), "1234abcd").unwrap();
    let root = issue_root_up_to(&aa_key, &name, swpt::DEFAULT_DAYS, swpt::MAX_DAYS).unwrap();
    let aa = RootSigner::new(root, &aa_key).unwrap();
    let ca = agent(KeyType::EcdsaP256);
    let options = crate::profiles::CrossCertOptions {
        max_days: swpt::MAX_DAYS,
        ns_comment: Some(swpt::subnet_comment("000001")),
    };
    let issued = aa
        .issue_cross_cert_with(ca.identity(), swpt::DEFAULT_DAYS, &options)
        .unwrap();
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(&issued.der).unwrap();
    let comment = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::NsCertComment(c) => Some(c.to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(swpt::subnet_of_comment(&comment), Some("000001"));
    assert!(issued.not_after.year() > OffsetDateTime::now_utc().year() + 500);
}
