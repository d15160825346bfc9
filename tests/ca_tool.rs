//! End-to-end tests of `ca-tool`, run as an operator would run it, with `openssl`
//! as the independent judge of what it produces.
//!
//! Most tests start from one shared "world" built once per run (it costs an
//! RSA-3072 key generation): two organizations A (ecdsa-p256, the default) and
//! B (rsa-3072) that exchanged bundles, cross-signed, registered each other's
//! cross-certificates and signed one gateway certificate each. The world is
//! never modified: tests that run commands against a CA work on a copy.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use peerlink_e2e::*;
use serde_json::Value;
use x509_parser::prelude::*;

const ORG: &str = "Example Network";
const UNIT_A: &str = "Alpha Clearing";
const UNIT_B: &str = "Beta Registry";

// ---------------------------------------------------------------------------
// The shared world
// ---------------------------------------------------------------------------

struct World {
    _tmp: tempfile::TempDir,
    pass: PathBuf,
    a: CaFixture,
    b: CaFixture,
    a_info: Value,
    b_info: Value,
    a_bundle: PathBuf,
    b_bundle: PathBuf,
    show_b_json: Outcome,
    show_b_text: Outcome,
    /// A signs B's bundle.
    sign_b: Outcome,
    /// B signs A's bundle.
    sign_a: Outcome,
    register_at_a: Outcome,
    register_at_b: Outcome,
    /// The cross-cert A issued for B.
    xb: PathBuf,
    /// The cross-cert B issued for A.
    xa: PathBuf,
    gwb_key: PathBuf,
    gwb_csr: PathBuf,
    gwb_crt: PathBuf,
    sign_server_b: Outcome,
    gwa_crt: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build_world)
}

fn build_world() -> World {
    // Statics are never dropped, so the world outlives the test process: keep it under
    // target/tmp, and remove worlds that earlier runs left behind (an hour old or more).
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if old
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with("ca-tool-world-")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("ca-tool-world-")
        .tempdir_in(base)
        .expect("temp dir");
    let root = tmp.path().to_path_buf();
    let pass = write_passphrase(&root.join("pass"), PASSPHRASE);

    let a = CaFixture::init(&root.join("A"), ORG, UNIT_A, None, None, &pass);
    let b = CaFixture::init(&root.join("B"), ORG, UNIT_B, Some("rsa-3072"), None, &pass);
    let a_info = a.info_json();
    let b_info = b.info_json();

    let a_bundle = root.join("A.bundle");
    let b_bundle = root.join("B.bundle");
    a.export_bundle(&a_bundle, &["127.0.0.1:7001"]);
    b.export_bundle(&b_bundle, &["127.0.0.1:7002"]);
    let show_b_json = ca_tool(args!["show-bundle", "--bundle", &b_bundle, "--json"]);
    show_b_json.assert_success();
    let show_b_text = ca_tool(args!["show-bundle", "--bundle", &b_bundle]);
    show_b_text.assert_success();

    let xb = root.join("xB.crt");
    let xa = root.join("xA.crt");
    let sign_b = a.sign_peer(&b_bundle, &xb, Some(&b.fingerprint));
    sign_b.assert_success();
    let sign_a = b.sign_peer(&a_bundle, &xa, Some(&a.fingerprint));
    sign_a.assert_success();
    let register_at_a = a.register_peer(&b_bundle, &xa);
    register_at_a.assert_success();
    let register_at_b = b.register_peer(&a_bundle, &xb);
    register_at_b.assert_success();

    let gwb_key = root.join("gwB.key");
    let gwb_csr = root.join("gwB.csr");
    let gwb_crt = root.join("gwB.crt");
    openssl_csr(&gwb_key, &gwb_csr, "p256", &b.openssl_subject(Some("gw1")));
    let sign_server_b = b.sign_server(&gwb_csr, &gwb_crt);
    sign_server_b.assert_success();

    let gwa_crt = root.join("gwA.crt");
    openssl_csr(
        &root.join("gwA.key"),
        &root.join("gwA.csr"),
        "p256",
        &a.openssl_subject(Some("gw1")),
    );
    a.sign_server(&root.join("gwA.csr"), &gwa_crt)
        .assert_success();

    World {
        _tmp: tmp,
        pass,
        a,
        b,
        a_info,
        b_info,
        a_bundle,
        b_bundle,
        show_b_json,
        show_b_text,
        sign_b,
        sign_a,
        register_at_a,
        register_at_b,
        xb,
        xa,
        gwb_key,
        gwb_csr,
        gwb_crt,
        sign_server_b,
        gwa_crt,
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ca-tool-e2e-")
        .tempdir()
        .expect("temp dir")
}

/// A fast (ecdsa-p256) CA in `dir` with the world's passphrase.
fn small_ca(dir: &Path, unit: &str, node_id: Option<&str>) -> CaFixture {
    CaFixture::init(dir, ORG, unit, None, node_id, &world().pass)
}

// ---------------------------------------------------------------------------
// Certificate helpers
// ---------------------------------------------------------------------------

/// DER of the single certificate (or other PEM object) in a PEM or DER file.
fn der_of(path: &Path) -> Vec<u8> {
    let bytes = read_bytes(path);
    if bytes.first() == Some(&0x30) {
        return bytes;
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
        .unwrap_or_else(|e| panic!("{} is not PEM: {e:?}", path.display()));
    pem.contents
}

fn parse_cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("certificate parses");
    assert!(rest.is_empty(), "trailing bytes after certificate");
    cert
}

fn ski(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn aki_of(exts: &[X509Extension<'_>]) -> Option<Vec<u8>> {
    exts.iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => {
            a.key_identifier.as_ref().map(|k| k.0.to_vec())
        }
        _ => None,
    })
}

fn serial_hex(path: &Path) -> String {
    let der = der_of(path);
    hex(parse_cert(&der).raw_serial())
}

/// Attribute (OID, tag, content) triples of a name, in order.
fn name_attributes(name: &X509Name<'_>) -> Vec<(String, u32, Vec<u8>)> {
    name.iter()
        .map(|rdn| {
            let avas: Vec<_> = rdn.iter().collect();
            assert_eq!(avas.len(), 1, "multi-valued RDN");
            let ava = avas[0];
            (
                ava.attr_type().to_id_string(),
                ava.attr_value().header.tag().0,
                ava.attr_value().data.to_vec(),
            )
        })
        .collect()
}

/// Checks a cross-certificate against the design's peer-certificate profile.
fn check_cross_cert(cross: &Path, issuer_root: &Path, partner_root: &Path) {
    let (cross_der, issuer_der, partner_der) =
        (der_of(cross), der_of(issuer_root), der_of(partner_root));
    let (c, issuer, partner) = (
        parse_cert(&cross_der),
        parse_cert(&issuer_der),
        parse_cert(&partner_der),
    );
    let what = cross.display();
    assert_eq!(c.version(), X509Version::V3, "{what}: v3");
    assert_eq!(
        c.issuer().as_raw(),
        issuer.subject().as_raw(),
        "{what}: issuer is the issuing root's subject"
    );
    assert_eq!(
        c.subject().as_raw(),
        partner.subject().as_raw(),
        "{what}: subject byte-identical to the partner's root subject"
    );
    assert_eq!(
        c.public_key().raw,
        partner.public_key().raw,
        "{what}: the partner's root key"
    );
    let bc = c
        .basic_constraints()
        .expect("one basicConstraints")
        .expect("basicConstraints present");
    assert!(bc.critical, "{what}: basicConstraints critical");
    assert!(bc.value.ca, "{what}: CA");
    assert_eq!(bc.value.path_len_constraint, Some(0), "{what}: pathlen 0");
    let ku = c
        .key_usage()
        .expect("one keyUsage")
        .expect("keyUsage present");
    assert!(ku.critical, "{what}: keyUsage critical");
    assert!(
        ku.value.key_cert_sign() && ku.value.crl_sign(),
        "{what}: keyCertSign, cRLSign"
    );
    assert!(
        !ku.value.digital_signature() && !ku.value.key_encipherment(),
        "{what}: only keyCertSign, cRLSign"
    );
    let nc = c
        .name_constraints()
        .expect("one nameConstraints")
        .expect("nameConstraints present");
    assert!(nc.critical, "{what}: nameConstraints critical");
    let permitted = nc.value.permitted_subtrees.as_deref().unwrap_or(&[]);
    assert_eq!(permitted.len(), 1, "{what}: exactly one permitted subtree");
    match &permitted[0].base {
        GeneralName::DirectoryName(n) => assert_eq!(
            name_attributes(n),
            name_attributes(partner.subject()),
            "{what}: permitted directoryName is the partner's DN"
        ),
        other => panic!("{what}: permitted subtree is {other:?}, not a directoryName"),
    }
    assert!(
        nc.value
            .excluded_subtrees
            .as_deref()
            .unwrap_or(&[])
            .is_empty(),
        "{what}: no excluded subtrees"
    );
    assert!(
        c.extended_key_usage().expect("one EKU").is_none(),
        "{what}: no EKU"
    );
    assert_eq!(ski(&c), ski(&partner), "{what}: SKI = partner root's SKI");
    assert!(ski(&c).is_some(), "{what}: has an SKI");
    assert_eq!(
        aki_of(c.extensions()),
        ski(&issuer),
        "{what}: AKI = issuing root's SKI"
    );
    let serial = c.raw_serial();
    assert!(serial.len() >= 8, "{what}: serial of at least 64 bits");
    assert!(serial[0] & 0x80 == 0, "{what}: positive serial");
    assert!(
        c.validity().not_after.timestamp() <= partner.validity().not_after.timestamp()
            && c.validity().not_after.timestamp() <= issuer.validity().not_after.timestamp(),
        "{what}: valid no longer than both roots"
    );
    c.verify_signature(Some(issuer.public_key()))
        .unwrap_or_else(|e| panic!("{what}: not signed by the issuing root: {e:?}"));
}

/// `openssl verify [extra] -CAfile anchor [-untrusted u] leaf`.
fn openssl_verify(extra: &[&str], anchor: &Path, untrusted: &[&Path], leaf: &Path) -> Outcome {
    let mut a = args!["verify"];
    a.extend(extra.iter().map(OsString::from));
    a.extend(args!["-CAfile", anchor]);
    for u in untrusted {
        a.extend(args!["-untrusted", *u]);
    }
    a.push(leaf.into());
    openssl(&a)
}

/// `ca-tool verify --anchor anchor [--untrusted u]... [--crl c]... [extra] leaf`.
fn ca_verify(
    anchor: &Path,
    untrusted: &[&Path],
    crls: &[&Path],
    extra: &[&str],
    leaf: &Path,
) -> Outcome {
    let mut a = args!["verify", "--anchor", anchor];
    for u in untrusted {
        a.extend(args!["--untrusted", *u]);
    }
    for c in crls {
        a.extend(args!["--crl", *c]);
    }
    a.extend(extra.iter().map(OsString::from));
    a.push(leaf.into());
    ca_tool(&a)
}

#[track_caller]
fn assert_openssl_ok(out: &Outcome) {
    out.assert_success();
    assert!(
        out.stdout.trim_end().ends_with(": OK"),
        "openssl verify did not print OK:\n{out:?}"
    );
}

/// A chain rejected by `ca-tool verify`: exit 3 (invalid) and the reason on stderr.
#[track_caller]
fn assert_invalid(out: &Outcome, fragments: &[&str]) {
    out.assert_failure_with_any(fragments);
    assert_eq!(
        out.code(),
        Some(3),
        "verify rejects a chain with exit 3\n{out:?}"
    );
}

fn assert_absent(path: &Path) {
    assert!(
        !path.exists(),
        "{} was created by a failed command",
        path.display()
    );
}

fn no_colons_upper(fp: &str) -> String {
    fp.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_uppercase()
}

// ---------------------------------------------------------------------------
// 1. The full flow
// ---------------------------------------------------------------------------

#[test]
fn full_flow_info_json_and_node_ids() {
    let w = world();
    for (ca, info, key_type) in [
        (&w.a, &w.a_info, "ecdsa-p256"),
        (&w.b, &w.b_info, "rsa-3072"),
    ] {
        for key in [
            "node_id",
            "subject",
            "fingerprint_sha256",
            "not_after",
            "key_type",
        ] {
            assert!(info.get(key).is_some(), "info --json lacks {key}: {info:#}");
        }
        let id = json_str(info, "node_id");
        assert!(
            id.len() == 32 && id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "node id {id:?} is not 32 lowercase hex digits"
        );
        assert_eq!(json_str(info, "key_type"), key_type);
        // The subject is O, OU, serialNumber in that order.
        let subject = json_str(info, "subject");
        let (o, ou, sn) = (
            subject.find(&format!("O={ORG}")),
            subject.find(&format!("OU={}", ca.unit)),
            subject.find(&format!("serialNumber={id}")),
        );
        assert!(
            matches!((o, ou, sn), (Some(o), Some(ou), Some(sn)) if o < ou && ou < sn),
            "subject {subject:?} is not O, OU, serialNumber"
        );
        // The fingerprint is the root certificate's SHA-256, as openssl computes it.
        assert_eq!(
            no_colons_upper(&json_str(info, "fingerprint_sha256")),
            no_colons_upper(&openssl_fingerprint(&ca.root_cert())),
            "fingerprint_sha256 is the root certificate's SHA-256"
        );
        // The node id is the first 16 bytes of SHA-256 over the SPKI, computed by openssl.
        let t = tmp();
        let pubkey = t.path().join("pub.pem");
        let spki = t.path().join("spki.der");
        openssl(args![
            "x509",
            "-in",
            ca.root_cert(),
            "-noout",
            "-pubkey",
            "-out",
            &pubkey
        ])
        .assert_success();
        openssl(args![
            "pkey", "-pubin", "-in", &pubkey, "-outform", "DER", "-out", &spki
        ])
        .assert_success();
        let dgst = openssl(args!["dgst", "-sha256", "-r", &spki]);
        dgst.assert_success();
        assert_eq!(
            &dgst.stdout[..32],
            id,
            "node id is the first 16 bytes of SHA-256(SPKI)"
        );
        // Default validity is long: not_after at least 9 years after not_before.
        let years = |k: &str| json_str(info, k)[..4].parse::<i32>().expect("year");
        assert!(years("not_after") - years("not_before") >= 9, "{info:#}");
        // init printed the identity.
        ca.init_output
            .assert_stdout_contains(&id)
            .assert_stdout_contains(key_type);
    }
    assert_ne!(w.a.node_id, w.b.node_id);
}

#[test]
fn full_flow_bundles_and_cross_signing() {
    let w = world();
    // show-bundle --json tells what the bundle says, matching B's own info.
    let shown: Value = serde_json::from_str(&w.show_b_json.stdout).expect("show-bundle --json");
    assert_eq!(json_str(&shown, "node_id"), w.b.node_id);
    assert_eq!(json_str(&shown, "fingerprint_sha256"), w.b.fingerprint);
    assert_eq!(json_str(&shown, "key_type"), "rsa-3072");
    assert_eq!(shown["endpoints"], serde_json::json!(["127.0.0.1:7002"]));
    w.show_b_text.assert_stdout_contains(&w.b.node_id);
    w.show_b_text.assert_stdout_contains("127.0.0.1:7002");
    // sign-peer shows who is being signed and that the fingerprint matched.
    w.sign_b.assert_stdout_contains(&w.b.node_id);
    w.sign_b.assert_stdout_contains("matches");
    w.sign_a.assert_stdout_contains(&w.a.node_id);

    // The cross-certificates follow the profile, in both directions (ECDSA and RSA issuers).
    check_cross_cert(&w.xb, &w.a.root_cert(), &w.b.root_cert());
    check_cross_cert(&w.xa, &w.b.root_cert(), &w.a.root_cert());

    // What each CA stored about its partner.
    let a_peer = w.a.dir.join("peers").join(&w.b.node_id);
    assert_eq!(
        read_bytes(&a_peer.join("bundle.pem")),
        read_bytes(&w.b_bundle)
    );
    assert_eq!(der_of(&a_peer.join("root.crt")), der_of(&w.b.root_cert()));
    assert_eq!(der_of(&a_peer.join("issued-by-us.crt")), der_of(&w.xb));
    assert_eq!(der_of(&a_peer.join("issued-to-us.crt")), der_of(&w.xa));
    let b_peer = w.b.dir.join("peers").join(&w.a.node_id);
    assert_eq!(der_of(&b_peer.join("issued-by-us.crt")), der_of(&w.xa));
    assert_eq!(der_of(&b_peer.join("issued-to-us.crt")), der_of(&w.xb));
    w.register_at_a.assert_stdout_contains(&serial_hex(&w.xa));
    w.register_at_b.assert_stdout_contains(&serial_hex(&w.xb));

    // list --json: the peer, registered, and the certificates issued.
    let list = w.a.list_json();
    let peers = list["peers"].as_array().expect("peers array");
    assert_eq!(peers.len(), 1, "{list:#}");
    assert_eq!(json_str(&peers[0], "node_id"), w.b.node_id);
    assert_eq!(json_str(&peers[0], "status"), "active");
    assert_eq!(
        json_str(&peers[0], "registered_cert_serial"),
        serial_hex(&w.xa)
    );
    assert_eq!(peers[0]["endpoints"], serde_json::json!(["127.0.0.1:7002"]));
    let certs = list["certificates"].as_array().expect("certificates array");
    let find = |serial: &str| {
        certs
            .iter()
            .find(|c| c["serial_hex"] == serial)
            .unwrap_or_else(|| panic!("serial {serial} not listed: {list:#}"))
    };
    let root_row = find(&serial_hex(&w.a.root_cert()));
    assert_eq!(json_str(root_row, "kind"), "root");
    let xb_row = find(&serial_hex(&w.xb));
    assert_eq!(json_str(xb_row, "kind"), "peer");
    assert_eq!(json_str(xb_row, "peer_node_id"), w.b.node_id);
    assert_eq!(json_str(xb_row, "status"), "valid");
    assert_eq!(json_str(find(&serial_hex(&w.gwa_crt)), "kind"), "server");
    assert_eq!(certs.len(), 3, "root, cross-cert, server cert: {list:#}");
    // B lists its server certificate; the text form mentions the peer too.
    let b_list = w.b.list_json();
    assert!(b_list["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .any(|c| c["serial_hex"] == serial_hex(&w.gwb_crt).as_str() && c["kind"] == "server"));
    w.a.cmd("list", &[])
        .assert_success()
        .assert_stdout_contains(&w.b.node_id);

    // info counts the peer and the certificates.
    let info = w.a.info_json();
    assert_eq!(info["peers"], 1, "{info:#}");
    assert_eq!(info["issued_certificates"], 2, "{info:#}");
    assert_eq!(info["revoked_certificates"], 0, "{info:#}");
}

#[test]
fn full_flow_openssl_accepts_gateway_chain() {
    let w = world();
    // A validates B's dialing gateway: A's root as the only anchor, B's cross-cert as intermediate.
    for purpose in ["sslclient", "sslserver"] {
        assert_openssl_ok(&openssl_verify(
            &["-x509_strict", "-purpose", purpose],
            &w.a.root_cert(),
            &[&w.xb],
            &w.gwb_crt,
        ));
    }
    // And the mirror image: B validates A's gateway through the cross-cert B issued.
    assert_openssl_ok(&openssl_verify(
        &["-x509_strict", "-purpose", "sslclient"],
        &w.b.root_cert(),
        &[&w.xa],
        &w.gwa_crt,
    ));
    // The dialer's side: B's root, pinned from B's bundle, anchors B's server cert directly.
    let pinned = w.a.dir.join("peers").join(&w.b.node_id).join("root.crt");
    assert_openssl_ok(&openssl_verify(
        &["-x509_strict", "-purpose", "sslserver"],
        &pinned,
        &[],
        &w.gwb_crt,
    ));
    // Control: without the cross-cert there is no path from A's root.
    openssl_verify(
        &["-purpose", "sslclient"],
        &w.a.root_cert(),
        &[],
        &w.gwb_crt,
    )
    .assert_failure();
    // Control: the cross-cert A issued for B does not chain A's gateway to B's root.
    openssl_verify(
        &["-purpose", "sslclient"],
        &w.b.root_cert(),
        &[&w.xb],
        &w.gwa_crt,
    )
    .assert_failure();
}

#[test]
fn full_flow_ca_tool_verify_accepts_gateway_chain() {
    let w = world();
    for purpose in ["client", "server", "any"] {
        ca_verify(
            &w.a.root_cert(),
            &[&w.xb],
            &[],
            &["--purpose", purpose],
            &w.gwb_crt,
        )
        .assert_success()
        .assert_stdout_contains("OK")
        .assert_stdout_contains(&w.b.node_id);
    }
    ca_verify(
        &w.b.root_cert(),
        &[&w.xa],
        &[],
        &["--purpose", "client"],
        &w.gwa_crt,
    )
    .assert_success();
    let pinned = w.a.dir.join("peers").join(&w.b.node_id).join("root.crt");
    ca_verify(&pinned, &[], &[], &["--purpose", "server"], &w.gwb_crt).assert_success();
    // The cross-cert itself validates under the issuing root.
    ca_verify(&w.a.root_cert(), &[], &[], &["--purpose", "any"], &w.xb).assert_success();
    // Controls: no path without the cross-cert; the wrong cross-cert does not help.
    assert_invalid(
        &ca_verify(
            &w.a.root_cert(),
            &[],
            &[],
            &["--purpose", "client"],
            &w.gwb_crt,
        ),
        &["issuer", "path", "chain", "anchor"],
    );
    assert_invalid(
        &ca_verify(
            &w.a.root_cert(),
            &[&w.xa],
            &[],
            &["--purpose", "client"],
            &w.gwb_crt,
        ),
        &["issuer", "path", "chain", "anchor"],
    );
    // A cross-cert is not a TLS client certificate.
    ca_verify(&w.a.root_cert(), &[], &[], &["--purpose", "client"], &w.xb).assert_failure();
}

#[test]
fn full_flow_server_certificate_profile() {
    let w = world();
    let (der, root_der) = (der_of(&w.gwb_crt), der_of(&w.b.root_cert()));
    let (c, root) = (parse_cert(&der), parse_cert(&root_der));
    assert_eq!(c.version(), X509Version::V3);
    assert_eq!(c.issuer().as_raw(), root.subject().as_raw());
    // Our DN, byte-stable, plus the CSR's CN.
    let mut expected = name_attributes(root.subject());
    expected.push(("2.5.4.3".into(), 12, b"gw1".to_vec())); // CN as UTF8String
    let got = name_attributes(c.subject());
    assert_eq!(
        got[..3],
        expected[..3],
        "server cert subject starts with the root's DN"
    );
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].0, "2.5.4.3");
    assert_eq!(got[3].2, b"gw1");
    // The CSR's key.
    let csr_pub = openssl(args!["req", "-in", &w.gwb_csr, "-noout", "-pubkey"]);
    csr_pub.assert_success();
    let key_pub = openssl(args!["pkey", "-in", &w.gwb_key, "-pubout"]);
    key_pub.assert_success();
    assert_eq!(csr_pub.stdout, key_pub.stdout);
    let t = tmp();
    let spki = t.path().join("spki.der");
    openssl(args![
        "pkey", "-in", &w.gwb_key, "-pubout", "-outform", "DER", "-out", &spki
    ])
    .assert_success();
    assert_eq!(c.public_key().raw, read_bytes(&spki).as_slice());
    let bc = c.basic_constraints().unwrap().expect("basicConstraints");
    assert!(bc.critical && !bc.value.ca, "critical, not a CA");
    let ku = c.key_usage().unwrap().expect("keyUsage");
    assert!(ku.critical && ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert!(
        !ku.value.key_encipherment(),
        "no keyEncipherment for an EC key"
    );
    let eku = c.extended_key_usage().unwrap().expect("EKU");
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(ski(&c).is_some(), "SKI");
    assert_eq!(aki_of(c.extensions()), ski(&root), "AKI = root SKI");
    assert!(c.raw_serial().len() >= 8);
    assert!(c.name_constraints().unwrap().is_none());
    // Default validity 90 days (give or take a backdate).
    let days = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400;
    assert!((89..=92).contains(&days), "server cert valid {days} days");
    w.sign_server_b
        .assert_stdout_contains(&serial_hex(&w.gwb_crt));

    // The root's own profile.
    let bc = root
        .basic_constraints()
        .unwrap()
        .expect("root basicConstraints");
    assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint == Some(1));
    let ku = root.key_usage().unwrap().expect("root keyUsage");
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(ski(&root).is_some());
    assert!(root.name_constraints().unwrap().is_none());
    assert!(root.extended_key_usage().unwrap().is_none());
    assert_eq!(root.subject().as_raw(), root.issuer().as_raw());
    assert!(root.raw_serial().len() >= 8);
}

#[test]
fn full_flow_root_key_storage() {
    let w = world();
    let t = tmp();
    let wrong = write_passphrase(&t.path().join("wrong"), WRONG_PASSPHRASE);
    for ca in [&w.a, &w.b] {
        let key = ca.root_key();
        assert_eq!(mode_of(&ca.dir.join("private")), 0o700, "private/ is 0700");
        assert_eq!(mode_of(&key), 0o600, "root-ca.key is 0600");
        assert_eq!(
            mode_of(&ca.root_cert()) & 0o022,
            0,
            "root-ca.crt not writable by others"
        );
        let text = read_text(&key);
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{text}"
        );
        // openssl decrypts it with the passphrase file...
        let mut pass_arg = OsString::from("file:");
        pass_arg.push(&w.pass);
        openssl(args!["pkey", "-in", &key, "-passin", &pass_arg, "-noout"]).assert_success();
        // ...and not with a wrong or empty passphrase.
        let mut wrong_arg = OsString::from("file:");
        wrong_arg.push(&wrong);
        openssl(args!["pkey", "-in", &key, "-passin", &wrong_arg, "-noout"]).assert_failure();
        openssl(args!["pkey", "-in", &key, "-passin", "pass:", "-noout"]).assert_failure();
        // PBES2 with AES-256.
        let asn1 = openssl(args!["asn1parse", "-in", &key]);
        asn1.assert_success();
        assert!(asn1.stdout.contains("PBES2"), "{}", asn1.stdout);
        assert!(
            asn1.stdout.contains("scrypt") || asn1.stdout.contains("PBKDF2"),
            "{}",
            asn1.stdout
        );
        assert!(asn1.stdout.contains("aes-256"), "{}", asn1.stdout);
        // The decrypted key is the root certificate's key.
        let from_key = openssl(args!["pkey", "-in", &key, "-passin", &pass_arg, "-pubout"]);
        from_key.assert_success();
        let from_cert = openssl(args!["x509", "-in", ca.root_cert(), "-noout", "-pubkey"]);
        assert_eq!(from_key.stdout, from_cert.stdout);
        // No unencrypted private key anywhere in the CA directory.
        for (path, (_, bytes)) in snapshot(&ca.dir) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("BEGIN PRIVATE KEY")
                    && !text.contains("BEGIN EC PRIVATE KEY")
                    && !text.contains("BEGIN RSA PRIVATE KEY"),
                "plaintext private key in {}",
                path.display()
            );
        }
    }
    let mut pass_arg = OsString::from("file:");
    pass_arg.push(&w.pass);
    let text = openssl(args![
        "pkey",
        "-in",
        w.b.root_key(),
        "-passin",
        &pass_arg,
        "-noout",
        "-text"
    ]);
    text.assert_success().assert_stdout_contains("3072 bit");
}

// ---------------------------------------------------------------------------
// 2. Revocation
// ---------------------------------------------------------------------------

fn cat(out: &Path, parts: &[&Path]) {
    let mut all = Vec::new();
    for p in parts {
        all.extend(read_bytes(p));
    }
    write_file(out, all, 0o644);
}

#[test]
fn revocation_of_a_peer_is_enforced_by_crl() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let b = w.b.copy_to(&t.path().join("B"));
    let (a0, a1, bcrl, both0, both1) = (
        t.path().join("a0.crl"),
        t.path().join("a1.crl"),
        t.path().join("b.crl"),
        t.path().join("both0.crl"),
        t.path().join("both1.crl"),
    );

    // Before: fresh CRLs do not hurt the chain.
    a.cmd_with_pass("crl", &args!["--out", &a0])
        .assert_success();
    b.cmd_with_pass("crl", &args!["--out", &bcrl])
        .assert_success();
    assert_eq!(read_bytes(&a0), read_bytes(&a.dir.join("crl.pem")));
    ca_verify(
        &a.root_cert(),
        &[&w.xb],
        &[&a0, &bcrl],
        &["--purpose", "client"],
        &w.gwb_crt,
    )
    .assert_success();
    cat(&both0, &[&a0, &bcrl]);
    assert_openssl_ok(&openssl_verify(
        &[
            "-crl_check_all",
            "-purpose",
            "sslclient",
            "-CRLfile",
            both0.to_str().unwrap(),
        ],
        &a.root_cert(),
        &[&w.xb],
        &w.gwb_crt,
    ));

    // Revoke B at A and publish.
    let revoke = a.cmd_with_pass(
        "revoke",
        &args!["--peer", &b.node_id, "--reason", "key-compromise"],
    );
    revoke
        .assert_success()
        .assert_stdout_contains(&serial_hex(&w.xb));
    a.cmd_with_pass("crl", &args!["--out", &a1])
        .assert_success();
    assert_eq!(read_bytes(&a1), read_bytes(&a.dir.join("crl.pem")));

    // ca-tool verify now refuses the chain, naming revocation; without the CRL it cannot know.
    assert_invalid(
        &ca_verify(
            &a.root_cert(),
            &[&w.xb],
            &[&a1],
            &["--purpose", "client"],
            &w.gwb_crt,
        ),
        &["revoked"],
    );
    assert_invalid(
        &ca_verify(
            &a.root_cert(),
            &[&w.xb],
            &[&a1, &bcrl],
            &["--purpose", "server"],
            &w.gwb_crt,
        ),
        &["revoked"],
    );
    ca_verify(
        &a.root_cert(),
        &[&w.xb],
        &[],
        &["--purpose", "client"],
        &w.gwb_crt,
    )
    .assert_success();
    // A's CRL is irrelevant to B's own chain (B's root as anchor).
    ca_verify(
        &b.root_cert(),
        &[],
        &[&a1],
        &["--purpose", "server"],
        &w.gwb_crt,
    )
    .assert_success();

    // openssl reads the CRL: v2, CRL number, AKI, the serial and the reason.
    let text = openssl(args!["crl", "-in", &a1, "-noout", "-text"]);
    text.assert_success();
    let xb_serial = serial_hex(&w.xb).to_uppercase();
    for needle in [
        "Version 2",
        "X509v3 CRL Number",
        "X509v3 Authority Key Identifier",
        xb_serial.as_str(),
        "Key Compromise",
    ] {
        text.assert_stdout_contains(needle);
    }
    openssl(args!["crl", "-in", &a1, "-noout", "-CAfile", a.root_cert()]).assert_success();
    let crl_numbers: Vec<String> = [&a0, &a1]
        .iter()
        .map(|p| {
            let der = der_of(p);
            let (_, crl) = CertificateRevocationList::from_der(&der).expect("CRL parses");
            let root_der = der_of(&a.root_cert());
            crl.verify_signature(parse_cert(&root_der).public_key())
                .expect("CRL signed by A's root");
            assert_eq!(aki_of(crl.extensions()), ski(&parse_cert(&root_der)));
            crl.crl_number().expect("CRL number").to_string()
        })
        .collect();
    let n: Vec<u64> = crl_numbers.iter().map(|s| s.parse().unwrap()).collect();
    assert!(n[1] > n[0], "CRL numbers increase: {crl_numbers:?}");

    // openssl with -crl_check_all (B's CRL covers the leaf, A's the cross-cert) now fails.
    cat(&both1, &[&a1, &bcrl]);
    let o = openssl_verify(
        &[
            "-crl_check_all",
            "-purpose",
            "sslclient",
            "-CRLfile",
            both1.to_str().unwrap(),
        ],
        &a.root_cert(),
        &[&w.xb],
        &w.gwb_crt,
    );
    o.assert_failure();
    assert!(o.all_output().contains("certificate revoked"), "{o:?}");

    // The database and list say so.
    let list = a.list_json();
    let peer = &list["peers"][0];
    assert_eq!(json_str(peer, "status"), "revoked", "{list:#}");
    let row = list["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["serial_hex"] == serial_hex(&w.xb).as_str())
        .expect("cross-cert listed")
        .clone();
    assert_eq!(json_str(&row, "status"), "revoked");
    assert_eq!(json_str(&row, "revocation_reason"), "key-compromise");
    assert_eq!(a.info_json()["revoked_certificates"], 1);

    // A stale CRL (past its nextUpdate) and a CRL with a bad signature fail closed.
    let short = t.path().join("short.crl");
    a.cmd_with_pass("crl", &args!["--out", &short, "--days", "1"])
        .assert_success();
    let in_three_days = {
        let o = run_program("date", ["-u", "-d", "+3 days", "+%Y-%m-%dT%H:%M:%SZ"]);
        o.assert_success();
        o.stdout.trim().to_string()
    };
    assert_invalid(
        &ca_verify(
            &a.root_cert(),
            &[&w.xb],
            &[&short],
            &["--at", &in_three_days],
            &w.gwb_crt,
        ),
        &["CRL"],
    );
    let crl_text = read_text(&a0);
    let mut crl_der = pem_block(&crl_text, "X509 CRL");
    let n = crl_der.len();
    crl_der[n - 3] ^= 0x01;
    let tampered = t.path().join("tampered.crl");
    write_file(&tampered, pem_encode("X509 CRL", &crl_der), 0o644);
    assert_invalid(
        &ca_verify(&a.root_cert(), &[&w.xb], &[&tampered], &[], &w.gwb_crt),
        &["signature"],
    );

    // Refusals leave the CA as it is.
    let before = snapshot(&a.dir);
    a.cmd_with_pass("revoke", &args!["--peer", &b.node_id])
        .assert_failure_with("already revoked");
    a.cmd_with_pass("revoke", &args!["--peer", "no-such-peer"])
        .assert_failure_with("no-such-peer");
    a.cmd_with_pass("revoke", &args!["--serial", serial_hex(&a.root_cert())])
        .assert_failure_with("root");
    a.cmd_with_pass("revoke", &args!["--serial", "0123456789abcdef"])
        .assert_failure_with("0123456789abcdef");
    a.cmd_with_pass(
        "revoke",
        &args!["--serial", serial_hex(&w.gwa_crt), "--reason", "because"],
    )
    .assert_failure_with("reason");
    assert_unchanged(&a.dir, &before, "refused revocations");
}

#[test]
fn revocation_of_a_gateway_certificate_by_its_own_node() {
    let w = world();
    let t = tmp();
    let b = w.b.copy_to(&t.path().join("B"));
    let crl = t.path().join("b.crl");
    b.cmd_with_pass(
        "revoke",
        &args!["--serial", serial_hex(&w.gwb_crt), "--reason", "superseded"],
    )
    .assert_success();
    b.cmd_with_pass("crl", &args!["--out", &crl])
        .assert_success();
    // Seen from A (through the cross-cert) and from B's own root.
    assert_invalid(
        &ca_verify(
            &w.a.root_cert(),
            &[&w.xb],
            &[&crl],
            &["--purpose", "client"],
            &w.gwb_crt,
        ),
        &["revoked"],
    );
    assert_invalid(
        &ca_verify(
            &b.root_cert(),
            &[],
            &[&crl],
            &["--purpose", "server"],
            &w.gwb_crt,
        ),
        &["revoked"],
    );
    let o = openssl_verify(
        &["-crl_check", "-CRLfile", crl.to_str().unwrap()],
        &b.root_cert(),
        &[],
        &w.gwb_crt,
    );
    o.assert_failure();
    assert!(o.all_output().contains("certificate revoked"), "{o:?}");
    // The peer relationship is untouched.
    let list = b.list_json();
    assert_eq!(json_str(&list["peers"][0], "status"), "active");
}

// ---------------------------------------------------------------------------
// 3. Bad input: a clear message, a non-zero exit, nothing changed on disk
// ---------------------------------------------------------------------------

/// Runs `f` (which must fail with one of `fragments`) and checks `ca` is unchanged and
/// `out` (if any) was not created.
#[track_caller]
fn refused(
    ca: &CaFixture,
    out: Option<&Path>,
    fragments: &[&str],
    f: impl FnOnce() -> Outcome,
) -> Outcome {
    let before = snapshot(&ca.dir);
    let o = f();
    o.assert_failure_with_any(fragments);
    assert_unchanged(&ca.dir, &before, &o.command);
    if let Some(out) = out {
        assert_absent(out);
    }
    o
}

#[test]
fn bad_input_wrong_passphrase() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let wrong = write_passphrase(&t.path().join("wrong"), WRONG_PASSPHRASE);
    let out = t.path().join("out");
    let frag = &["wrong passphrase"];
    // (A valid CSR, so only the passphrase is wrong.)
    let csr = t.path().join("gw.csr");
    openssl_csr(
        &t.path().join("gw.key"),
        &csr,
        "p256",
        &a.openssl_subject(Some("gw2")),
    );
    refused(&a, Some(&out), frag, || {
        a.cmd_with_pass_file("sign-server", &args!["--csr", &csr, "--out", &out], &wrong)
    });
    refused(&a, Some(&out), frag, || {
        a.cmd_with_pass_file("export-bundle", &args!["--out", &out], &wrong)
    });
    let c = small_ca(&t.path().join("C"), "Gamma", None);
    let c_bundle = t.path().join("C.bundle");
    c.export_bundle(&c_bundle, &[]);
    refused(&a, Some(&out), frag, || {
        a.cmd_with_pass_file(
            "sign-peer",
            &args!["--bundle", &c_bundle, "--out", &out],
            &wrong,
        )
    });
    refused(&a, Some(&out), frag, || {
        a.cmd_with_pass_file("crl", &args!["--out", &out], &wrong)
    });
    refused(&a, None, frag, || {
        a.cmd_with_pass_file("revoke", &args!["--peer", &w.b.node_id], &wrong)
    });
    // An empty passphrase file and a missing one.
    let empty = write_passphrase(&t.path().join("empty"), "");
    refused(&a, Some(&out), &["passphrase"], || {
        a.cmd_with_pass_file("export-bundle", &args!["--out", &out], &empty)
    });
    refused(&a, Some(&out), &["no-such-file"], || {
        a.cmd_with_pass_file(
            "export-bundle",
            &args!["--out", &out],
            &t.path().join("no-such-file"),
        )
    });
    // The right passphrase works on the same copy (the refusals were about the passphrase).
    a.cmd_with_pass("export-bundle", &args!["--out", &out])
        .assert_success();
}

/// `text` with the body of its first `label` block replaced by garbage.
fn garbage_body(text: &str, label: &str) -> String {
    let r = pem_body_range(text, label);
    format!(
        "{}this is not base64 @@@ ***\n{}",
        &text[..r.start],
        &text[r.end..]
    )
}

/// The first half of a file.
fn first_half(text: &str) -> String {
    text[..text.len() / 2].to_string()
}

#[test]
fn bad_input_corrupt_and_truncated_pem() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let out = t.path().join("out.crt");
    let file = |name: &str, text: String| {
        let p = t.path().join(name);
        write_file(&p, text, 0o644);
        p
    };
    let frags = &["corrupt", "truncated"];

    // The CSR given to sign-server.
    let csr = t.path().join("gw.csr");
    openssl_csr(
        &t.path().join("gw.key"),
        &csr,
        "p256",
        &a.openssl_subject(None),
    );
    let csr_text = read_text(&csr);
    let corrupt_csr = file(
        "corrupt.csr",
        garbage_body(&csr_text, "CERTIFICATE REQUEST"),
    );
    let truncated_csr = file("truncated.csr", first_half(&csr_text));
    let empty_csr = file("empty.csr", String::new());
    for bad in [&corrupt_csr, &truncated_csr] {
        refused(&a, Some(&out), frags, || a.sign_server(bad, &out));
    }
    refused(&a, Some(&out), &["empty"], || {
        a.sign_server(&empty_csr, &out)
    });
    // Valid base64 that is not a CSR.
    let not_der = file(
        "notder.csr",
        pem_encode(
            "CERTIFICATE REQUEST",
            b"definitely not DER, but valid base64",
        ),
    );
    refused(&a, Some(&out), &["malformed", "corrupt", "request"], || {
        a.sign_server(&not_der, &out)
    });

    // The bundle given to sign-peer, register-peer and show-bundle (a fresh partner C).
    let c = small_ca(&t.path().join("C"), "Gamma", None);
    let c_bundle = t.path().join("C.bundle");
    c.export_bundle(&c_bundle, &["127.0.0.1:7003"]);
    let bundle_text = read_text(&c_bundle);
    let xa_by_c = t.path().join("xA-by-C.crt");
    // (C's cross-cert for A, so register-peer's other input is fine.)
    let c_copy = c.copy_to(&t.path().join("C2"));
    c_copy
        .sign_peer(&w.a_bundle, &xa_by_c, None)
        .assert_success();
    for (name, text) in [
        (
            "corrupt-cert.bundle",
            garbage_body(&bundle_text, "CERTIFICATE"),
        ),
        (
            "corrupt-info.bundle",
            garbage_body(&bundle_text, "PEERLINK NODE INFO"),
        ),
        (
            "corrupt-sig.bundle",
            garbage_body(&bundle_text, "PEERLINK NODE INFO SIGNATURE"),
        ),
        ("truncated.bundle", first_half(&bundle_text)),
    ] {
        let bad = file(name, text);
        refused(&a, Some(&out), frags, || a.sign_peer(&bad, &out, None));
        refused(&a, None, frags, || a.register_peer(&bad, &xa_by_c));
        ca_tool(args!["show-bundle", "--bundle", &bad]).assert_failure_with_any(frags);
    }

    // The cross-cert given to register-peer.
    let x_text = read_text(&xa_by_c);
    for (name, text) in [
        ("corrupt.crt", garbage_body(&x_text, "CERTIFICATE")),
        ("truncated.crt", first_half(&x_text)),
    ] {
        let bad = file(name, text);
        refused(&a, None, frags, || a.register_peer(&c_bundle, &bad));
    }
    // Control: the intact files are accepted.
    a.register_peer(&c_bundle, &xa_by_c).assert_success();
}

#[test]
fn bad_input_bundle_signature_and_tampering() {
    let w = world();
    let t = tmp();
    let out = t.path().join("x.crt");
    let file = |name: &str, text: String| {
        let p = t.path().join(name);
        write_file(&p, text, 0o644);
        p
    };
    // A fresh CA D that knows nobody, so only the bundle can be the reason for a refusal.
    let d = small_ca(&t.path().join("D"), "Delta", None);
    let sig_frags = &["signature"];
    for (bundle, endpoint, other_root) in [
        (&w.b_bundle, "127.0.0.1:7002", w.a.root_cert()),
        (&w.a_bundle, "127.0.0.1:7001", w.b.root_cert()),
    ] {
        let text = read_text(bundle);
        // One base64 character of the signature changed.
        let flipped = file(
            "flipped.bundle",
            flip_base64_char(&text, "PEERLINK NODE INFO SIGNATURE", 20),
        );
        refused(&d, Some(&out), sig_frags, || {
            d.sign_peer(&flipped, &out, None)
        });
        ca_tool(args!["show-bundle", "--bundle", &flipped]).assert_failure_with_any(sig_frags);
        // The endpoints changed inside the signed node info.
        let info = String::from_utf8(pem_block(&text, "PEERLINK NODE INFO")).expect("JSON info");
        assert!(info.contains(endpoint), "{info}");
        let edited = info.replace(endpoint, "203.0.113.66:7002");
        let moved = file(
            "moved.bundle",
            replace_pem_block(&text, "PEERLINK NODE INFO", edited.as_bytes()),
        );
        refused(&d, Some(&out), sig_frags, || {
            d.sign_peer(&moved, &out, None)
        });
        refused(&d, None, sig_frags, || d.register_peer(&moved, &w.xa));
        // Another node's root certificate put in front of the signed info.
        let swapped = file(
            "swapped.bundle",
            replace_pem_block(&text, "CERTIFICATE", &der_of(&other_root)),
        );
        refused(&d, Some(&out), sig_frags, || {
            d.sign_peer(&swapped, &out, None)
        });
        // The root certificate's own signature damaged.
        let cert_chars = text[pem_body_range(&text, "CERTIFICATE")]
            .bytes()
            .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
            .count();
        let bad_root = file(
            "badroot.bundle",
            flip_base64_char(&text, "CERTIFICATE", cert_chars - 12),
        );
        refused(&d, Some(&out), &["not acceptable"], || {
            d.sign_peer(&bad_root, &out, None)
        });
        // The header above the first BEGIN line is informational only: editing it is harmless,
        // and the signed endpoints are the ones shown.
        let header_edit = file(
            "header.bundle",
            text.replacen(endpoint, "198.51.100.1:9999", 1),
        );
        assert!(read_text(&header_edit).contains("198.51.100.1:9999"));
        let shown = ca_tool(args!["show-bundle", "--bundle", &header_edit, "--json"]);
        shown.assert_success();
        let v: Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(v["endpoints"], serde_json::json!([endpoint]));
    }
    // A fingerprint that does not match what was read over the phone.
    let wrong_fp = w.a.fingerprint.clone();
    refused(&d, Some(&out), &["fingerprint"], || {
        d.sign_peer(&w.b_bundle, &out, Some(&wrong_fp))
    });
    refused(&d, Some(&out), &["fingerprint"], || {
        d.sign_peer(&w.b_bundle, &out, Some("12:34"))
    });
    // Control: the intact bundle with the right fingerprint is signed.
    d.sign_peer(&w.b_bundle, &out, Some(&w.b.fingerprint))
        .assert_success();
}

/// A bundle forged with openssl: an Ed25519 self-signed root with subject
/// `O=ORG/OU=Mallory/serialNumber=<node_id>`, and node info signed by its key.
fn forge_bundle(dir: &Path, node_id: &str) -> PathBuf {
    let cfg = dir.join("req.cnf");
    write_file(
        &cfg,
        "[req]\ndistinguished_name = dn\nx509_extensions = v3\nprompt = no\n[dn]\nCN = unused\n\
         [v3]\nbasicConstraints = critical,CA:TRUE,pathlen:1\n\
         keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        0o644,
    );
    let key = dir.join(format!("{node_id}.key"));
    let crt = dir.join(format!("{node_id}.crt"));
    openssl(args![
        "req",
        "-x509",
        "-new",
        "-config",
        &cfg,
        "-newkey",
        "ed25519",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &crt,
        "-days",
        "365",
        "-subj",
        format!("/O={ORG}/OU=Mallory/serialNumber={node_id}")
    ])
    .assert_success();
    let der = der_of(&crt);
    let der_file = dir.join(format!("{node_id}.der"));
    write_file(&der_file, &der, 0o644);
    let dgst = openssl(args!["dgst", "-sha256", "-r", &der_file]);
    dgst.assert_success();
    let info = serde_json::to_string_pretty(&serde_json::json!({
        "format": "peerlink-bundle/1",
        "node_id": node_id,
        "subject": format!("O={ORG}, OU=Mallory, serialNumber={node_id}"),
        "root_sha256": &dgst.stdout[..64],
        "endpoints": ["127.0.0.1:7666"],
        "created_at": "2025-01-01T00:00:00Z",
    }))
    .unwrap();
    let info_file = dir.join(format!("{node_id}.json"));
    write_file(&info_file, &info, 0o644);
    let sig_file = dir.join(format!("{node_id}.sig"));
    openssl(args![
        "pkeyutl", "-sign", "-rawin", "-inkey", &key, "-in", &info_file, "-out", &sig_file
    ])
    .assert_success();
    let bundle = dir.join(format!("{node_id}.bundle"));
    write_file(
        &bundle,
        format!(
            "{}{}{}",
            pem_encode("CERTIFICATE", &der),
            pem_encode("PEERLINK NODE INFO", info.as_bytes()),
            pem_encode("PEERLINK NODE INFO SIGNATURE", &read_bytes(&sig_file))
        ),
        0o644,
    );
    bundle
}

#[test]
fn bad_input_bundle_claiming_a_key_derived_id_of_another_key() {
    let w = world();
    let t = tmp();
    let d = small_ca(&t.path().join("D"), "Delta", None);
    let out = t.path().join("x.crt");
    // Control: a bundle forged this way with an explicit id is well-formed and accepted.
    let honest = forge_bundle(t.path(), "mallory-1");
    ca_tool(args!["show-bundle", "--bundle", &honest])
        .assert_success()
        .assert_stdout_contains("mallory-1");
    // The same with B's key-derived id: B's id is not Mallory's key hash.
    let forged = forge_bundle(t.path(), &w.b.node_id);
    ca_tool(args!["show-bundle", "--bundle", &forged])
        .assert_failure_with_any(&["key-derived", "hashes"]);
    refused(&d, Some(&out), &["key-derived", "hashes"], || {
        d.sign_peer(&forged, &out, None)
    });
}

#[test]
fn bad_input_own_bundle() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let out = t.path().join("x.crt");
    refused(&a, Some(&out), &["own bundle"], || {
        a.sign_peer(&w.a_bundle, &out, None)
    });
    refused(&a, None, &["own bundle"], || {
        a.register_peer(&w.a_bundle, &w.xa)
    });
    // A fresh bundle of our own, too.
    let fresh = t.path().join("A2.bundle");
    a.export_bundle(&fresh, &["10.0.0.1:443"]);
    refused(&a, Some(&out), &["own bundle"], || {
        a.sign_peer(&fresh, &out, None)
    });
}

#[test]
fn bad_input_second_key_for_a_known_node_id() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    // Explicit ids that look like a key hash are refused at init.
    let hashlike = "0123456789abcdef0123456789abcdef";
    let dir = t.path().join("H");
    ca_tool(args![
        "init",
        "--dir",
        &dir,
        "--org",
        ORG,
        "--unit",
        "H",
        "--node-id",
        hashlike,
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with(hashlike);
    assert_absent(&dir);
    ca_tool(args![
        "init",
        "--dir",
        &dir,
        "--org",
        ORG,
        "--unit",
        "H",
        "--node-id",
        &w.b.node_id,
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("key-derived");
    assert_absent(&dir);
    ca_tool(args![
        "init",
        "--dir",
        &dir,
        "--org",
        ORG,
        "--unit",
        "H",
        "--node-id",
        "bad/id",
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("node id");
    assert_absent(&dir);

    // Two CAs with the same explicit id and different keys.
    let p1 = small_ca(&t.path().join("P1"), "Partner", Some("partner-1"));
    let p2 = small_ca(&t.path().join("P2"), "Partner", Some("partner-1"));
    assert_eq!(p1.node_id, "partner-1");
    assert_eq!(p2.node_id, "partner-1");
    assert_ne!(p1.fingerprint, p2.fingerprint);
    assert_eq!(p1.info_json()["node_id_is_key_derived"], false);
    let (b1, b2) = (t.path().join("p1.bundle"), t.path().join("p2.bundle"));
    p1.export_bundle(&b1, &[]);
    p2.export_bundle(&b2, &[]);
    ca_tool(args!["show-bundle", "--bundle", &b2])
        .assert_success()
        .assert_stdout_contains("explicit");
    let x1 = t.path().join("x1.crt");
    a.sign_peer(&b1, &x1, Some(&p1.fingerprint))
        .assert_success();
    // Signing the first again is fine (re-issue); the second key is refused.
    let out = t.path().join("x2.crt");
    let o = refused(&a, Some(&out), &["different root key"], || {
        a.sign_peer(&b2, &out, None)
    });
    o.assert_stderr_contains("partner-1");
    // Even with its fingerprint confirmed: the known key wins until the operator acts.
    refused(&a, Some(&out), &["different root key"], || {
        a.sign_peer(&b2, &out, Some(&p2.fingerprint))
    });
    // register-peer refuses it too (with a cross-cert P2 really issued to A).
    let xa_by_p2 = t.path().join("xA-by-P2.crt");
    p2.sign_peer(&w.a_bundle, &xa_by_p2, None).assert_success();
    refused(&a, None, &["different root key"], || {
        a.register_peer(&b2, &xa_by_p2)
    });
}

#[test]
fn bad_input_csr_for_another_name() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let out = t.path().join("gw.crt");
    let mut n = 0;
    let mut csr_for = |subject: &str| {
        n += 1;
        let csr = t.path().join(format!("{n}.csr"));
        openssl_csr(&t.path().join(format!("{n}.key")), &csr, "p256", subject);
        csr
    };
    let id = &a.node_id;
    let cases = [
        (
            format!("/O=Other Org/OU={UNIT_A}/serialNumber={id}/CN=gw1"),
            "Other Org",
        ),
        (
            format!("/O={ORG}/OU={UNIT_A}/serialNumber={}/CN=gw1", w.b.node_id),
            w.b.node_id.as_str(),
        ),
        (
            format!("/O={ORG}/OU={UNIT_B}/serialNumber={}", w.b.node_id),
            UNIT_B,
        ),
        (format!("/O={ORG}/OU={UNIT_A}/CN=gw1"), "CN=gw1"),
        (
            format!("/O={ORG}/OU={UNIT_A}/serialNumber={id}/OU=extra"),
            "extra",
        ),
        (
            format!("/O={ORG}/OU={UNIT_A}/serialNumber={id}/CN=gw1/CN=gw2"),
            "gw2",
        ),
        (
            format!("/O={ORG}/OU={UNIT_A}/serialNumber={id}/L=Sofia"),
            "Sofia",
        ),
        (
            format!("/CN=gw1/O={ORG}/OU={UNIT_A}/serialNumber={id}"),
            "CN=gw1",
        ),
    ];
    for (subject, offending) in &cases {
        let csr = csr_for(subject);
        let o = refused(&a, Some(&out), &["own name"], || a.sign_server(&csr, &out));
        o.assert_stderr_contains(offending);
    }
    // A CSR whose signature does not verify (DER, last byte of the signature changed).
    let good = csr_for(&a.openssl_subject(Some("gw1")));
    let der_csr = t.path().join("good.der");
    openssl(args![
        "req", "-in", &good, "-outform", "DER", "-out", &der_csr
    ])
    .assert_success();
    let mut bytes = read_bytes(&der_csr);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let bad_sig = t.path().join("badsig.der");
    write_file(&bad_sig, &bytes, 0o644);
    refused(&a, Some(&out), &["signature"], || {
        a.sign_server(&bad_sig, &out)
    });
    // Controls: the DER CSR itself, and the DN without a CN, are signed.
    a.sign_server(&der_csr, &out).assert_success();
    let plain = csr_for(&a.openssl_subject(None));
    a.sign_server(&plain, &t.path().join("plain.crt"))
        .assert_success();
    assert_eq!(
        name_attributes(parse_cert(&der_of(&t.path().join("plain.crt"))).subject()),
        name_attributes(parse_cert(&der_of(&a.root_cert())).subject())
    );
}

#[test]
fn bad_input_cross_cert_from_the_wrong_issuer() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let b = w.b.copy_to(&t.path().join("B"));
    let c = small_ca(&t.path().join("C"), "Gamma", None);
    let c_bundle = t.path().join("C.bundle");
    c.export_bundle(&c_bundle, &[]);
    // C's cross-cert for A, presented with B's bundle.
    let xa_by_c = t.path().join("xA-by-C.crt");
    c.sign_peer(&w.a_bundle, &xa_by_c, None).assert_success();
    let o = refused(&a, None, &["issued by"], || {
        a.register_peer(&w.b_bundle, &xa_by_c)
    });
    o.assert_stderr_contains("Gamma");
    // B's cross-cert for C (right issuer, somebody else's name and key).
    let xc_by_b = t.path().join("xC-by-B.crt");
    b.sign_peer(&c_bundle, &xc_by_b, None).assert_success();
    refused(&a, None, &["not our subject"], || {
        a.register_peer(&w.b_bundle, &xc_by_b)
    });
    // The cross-cert A itself issued for B, and B's gateway certificate.
    refused(&a, None, &["issued by"], || {
        a.register_peer(&w.b_bundle, &w.xb)
    });
    refused(&a, None, &["not our subject", "CA certificate"], || {
        a.register_peer(&w.b_bundle, &w.gwb_crt)
    });
    // A's own root certificate.
    refused(&a, None, &["not by the partner's root"], || {
        a.register_peer(&w.b_bundle, &a.root_cert())
    });
    // Control: C's cross-cert is accepted with C's bundle.
    a.register_peer(&c_bundle, &xa_by_c).assert_success();
}

#[test]
fn bad_input_init_over_an_existing_ca() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    for extra in [args![], args!["--key-type", "ed25519"]] {
        refused(&a, None, &["already holds a CA"], || {
            let mut args = args![
                "init",
                "--dir",
                &a.dir,
                "--org",
                "Other",
                "--unit",
                "x",
                "--passphrase-file",
                &w.pass
            ];
            args.extend(extra);
            ca_tool(&args)
        });
    }
    // A directory holding only private/ (a half-restored backup) is not overwritten either.
    let half = t.path().join("half");
    std::fs::create_dir_all(half.join("private")).unwrap();
    let before = snapshot(&half);
    ca_tool(args![
        "init",
        "--dir",
        &half,
        "--org",
        ORG,
        "--unit",
        "x",
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("refusing");
    assert_unchanged(&half, &before, "init into a half CA");
    // Nor is a non-empty unrelated directory, or a file.
    let busy = t.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    write_file(&busy.join("notes.txt"), "keep me", 0o644);
    let before = snapshot(&busy);
    ca_tool(args![
        "init",
        "--dir",
        &busy,
        "--org",
        ORG,
        "--unit",
        "x",
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("not empty");
    assert_unchanged(&busy, &before, "init into a non-empty directory");
    let plain = t.path().join("plain-file");
    write_file(&plain, "x", 0o644);
    ca_tool(args![
        "init",
        "--dir",
        &plain,
        "--org",
        ORG,
        "--unit",
        "x",
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("not a directory");
    assert_eq!(read_text(&plain), "x");
    // An empty existing directory is fine.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    small_ca(&empty, "Epsilon", None);
    assert!(empty.join("root-ca.crt").is_file());
    // Nothing was left next to the CA directories (no staging directories).
    let names: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "leftovers: {names:?}");
}

#[test]
fn bad_input_init_into_an_unwritable_directory() {
    let t = tempfile::Builder::new()
        .prefix("ca-tool-e2e-unwritable-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let root = running_as_root();
    // The unprivileged user must reach everything but the directory under test.
    set_mode(t.path(), 0o755);
    let bin = unprivileged_ca_tool(t.path());
    let pass = write_passphrase(&t.path().join("pass"), PASSPHRASE);
    let parent = t.path().join("readonly");
    std::fs::create_dir(&parent).unwrap();
    if root {
        std::os::unix::fs::chown(&pass, Some(NOBODY), Some(NOBODY)).unwrap();
        std::os::unix::fs::chown(&parent, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    set_mode(&parent, 0o500);
    let ca_dir = parent.join("ca");
    let o = run(unprivileged_command(&bin).args(args![
        "init",
        "--dir",
        &ca_dir,
        "--org",
        ORG,
        "--unit",
        "x",
        "--passphrase-file",
        &pass
    ]));
    o.assert_failure_with_any(&["permission denied", "cannot create"]);
    o.assert_stderr_contains("nothing was created");
    set_mode(&parent, 0o700);
    let left: Vec<_> = std::fs::read_dir(&parent).unwrap().collect();
    assert!(
        left.is_empty(),
        "init left {left:?} in an unwritable directory"
    );
    // Control: the same user can init in a writable directory.
    let writable = t.path().join("writable");
    std::fs::create_dir(&writable).unwrap();
    if root {
        std::os::unix::fs::chown(&writable, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    run(unprivileged_command(&bin).args(args![
        "init",
        "--dir",
        writable.join("ca"),
        "--org",
        ORG,
        "--unit",
        "x",
        "--passphrase-file",
        &pass
    ]))
    .assert_success();
}

#[test]
fn bad_input_invalid_days_and_arguments() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let out = t.path().join("out");
    let dir = t.path().join("new");
    ca_tool(args![
        "init",
        "--dir",
        &dir,
        "--org",
        ORG,
        "--unit",
        "x",
        "--days",
        "0",
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("days");
    assert_absent(&dir);
    let csr = t.path().join("gw.csr");
    openssl_csr(
        &t.path().join("gw.key"),
        &csr,
        "p256",
        &a.openssl_subject(None),
    );
    refused(&a, Some(&out), &["days"], || {
        a.cmd_with_pass(
            "sign-server",
            &args!["--csr", &csr, "--out", &out, "--days", "0"],
        )
    });
    let c = small_ca(&t.path().join("C"), "Gamma", None);
    let c_bundle = t.path().join("C.bundle");
    c.export_bundle(&c_bundle, &[]);
    refused(&a, Some(&out), &["days"], || {
        a.cmd_with_pass(
            "sign-peer",
            &args!["--bundle", &c_bundle, "--out", &out, "--days", "0"],
        )
    });
    refused(&a, Some(&out), &["days"], || {
        a.cmd_with_pass("crl", &args!["--out", &out, "--days", "0"])
    });
    refused(&a, Some(&out), &["endpoint"], || {
        a.cmd_with_pass(
            "export-bundle",
            &args!["--out", &out, "--endpoint", "no-port"],
        )
    });
    refused(&a, Some(&out), &["endpoint"], || {
        a.cmd_with_pass(
            "export-bundle",
            &args!["--out", &out, "--endpoint", "host:99999"],
        )
    });
    // Commands on a directory that is not a CA.
    let not_ca = t.path().join("not-a-ca");
    std::fs::create_dir(&not_ca).unwrap();
    ca_tool(args!["info", "--dir", &not_ca]).assert_failure_with("not a CA directory");
    ca_tool(args!["list", "--dir", &not_ca]).assert_failure_with("not a CA directory");
    // An empty org is refused before anything is created.
    ca_tool(args![
        "init",
        "--dir",
        &dir,
        "--org",
        "",
        "--unit",
        "x",
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("org");
    assert_absent(&dir);
}

#[test]
fn verify_expiry_and_input_formats() {
    let w = world();
    let t = tmp();
    // Expired at 2100, not yet valid in 2000.
    assert_invalid(
        &ca_verify(
            &w.a.root_cert(),
            &[&w.xb],
            &[],
            &["--purpose", "client", "--at", "2100-01-01T00:00:00Z"],
            &w.gwb_crt,
        ),
        &["expired"],
    );
    assert_invalid(
        &ca_verify(
            &w.a.root_cert(),
            &[&w.xb],
            &[],
            &["--at", "2000-01-01T00:00:00Z"],
            &w.gwb_crt,
        ),
        &["not yet valid", "not valid before", "before"],
    );
    ca_verify(
        &w.a.root_cert(),
        &[&w.xb],
        &[],
        &["--at", "tomorrow"],
        &w.gwb_crt,
    )
    .assert_failure_with("RFC 3339");
    // PEM with the text openssl prints before the block.
    let text_pem = t.path().join("t.pem");
    let o = openssl(args!["x509", "-in", &w.gwb_crt, "-text"]);
    o.assert_success();
    assert!(o.stdout.starts_with("Certificate:"));
    write_file(&text_pem, &o.stdout, 0o644);
    ca_verify(
        &w.a.root_cert(),
        &[&w.xb],
        &[],
        &["--purpose", "client"],
        &text_pem,
    )
    .assert_success();
    // DER, for the leaf, the intermediate and the anchor.
    let der = |src: &Path, name: &str| {
        let p = t.path().join(name);
        openssl(args!["x509", "-in", src, "-outform", "DER", "-out", &p]).assert_success();
        p
    };
    let (leaf_der, xb_der, anchor_der) = (
        der(&w.gwb_crt, "gwB.der"),
        der(&w.xb, "xB.der"),
        der(&w.a.root_cert(), "A.der"),
    );
    ca_verify(
        &anchor_der,
        &[&xb_der],
        &[],
        &["--purpose", "client"],
        &leaf_der,
    )
    .assert_success();
    // Several intermediates in one file (the right one among them).
    let many = t.path().join("many.pem");
    cat(&many, &[&w.xa, &w.xb]);
    ca_verify(
        &w.a.root_cert(),
        &[&many],
        &[],
        &["--purpose", "client"],
        &w.gwb_crt,
    )
    .assert_success();
    // Not a certificate at all.
    let junk = t.path().join("junk.txt");
    write_file(&junk, "hello\n", 0o644);
    ca_verify(&w.a.root_cert(), &[&w.xb], &[], &[], &junk).assert_failure_with("no certificate");
    ca_verify(&junk, &[&w.xb], &[], &[], &w.gwb_crt).assert_failure_with("no certificate");
    // The leaf file must hold exactly one certificate.
    let two = t.path().join("two.pem");
    cat(&two, &[&w.gwb_crt, &w.gwa_crt]);
    ca_verify(&w.a.root_cert(), &[&w.xb], &[], &[], &two).assert_failure();
}

// ---------------------------------------------------------------------------
// 4. Interop and the security property
// ---------------------------------------------------------------------------

#[test]
fn interop_openssl_csrs_of_every_key_type() {
    let w = world();
    let t = tmp();
    let b = w.b.copy_to(&t.path().join("B"));
    for kind in ["rsa2048", "ed25519", "p384", "p256"] {
        let (key, csr, crt) = (
            t.path().join(format!("{kind}.key")),
            t.path().join(format!("{kind}.csr")),
            t.path().join(format!("{kind}.crt")),
        );
        openssl_csr(
            &key,
            &csr,
            kind,
            &b.openssl_subject(Some(&format!("gw-{kind}"))),
        );
        b.sign_server(&csr, &crt).assert_success();
        for purpose in ["sslclient", "sslserver"] {
            assert_openssl_ok(&openssl_verify(
                &["-x509_strict", "-purpose", purpose],
                &w.a.root_cert(),
                &[&w.xb],
                &crt,
            ));
        }
        ca_verify(
            &w.a.root_cert(),
            &[&w.xb],
            &[],
            &["--purpose", "client"],
            &crt,
        )
        .assert_success();
        ca_verify(&b.root_cert(), &[], &[], &["--purpose", "server"], &crt).assert_success();
        let der = der_of(&crt);
        let c = parse_cert(&der);
        let ku = *c.key_usage().unwrap().expect("keyUsage").value;
        assert!(ku.digital_signature());
        assert_eq!(
            ku.key_encipherment(),
            kind == "rsa2048",
            "{kind}: keyEncipherment exactly for RSA"
        );
        // The certified key is the one in the CSR.
        let from_key = openssl(args!["pkey", "-in", &key, "-pubout"]);
        let from_crt = openssl(args!["x509", "-in", &crt, "-noout", "-pubkey"]);
        assert_eq!(from_key.stdout, from_crt.stdout, "{kind}");
    }
}

#[test]
fn interop_partner_roots_of_every_key_type() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    for key_type in ["ed25519", "ecdsa-p384"] {
        let p = CaFixture::init(
            &t.path().join(key_type),
            ORG,
            key_type,
            Some(key_type),
            None,
            &w.pass,
        );
        assert_eq!(json_str(&p.info_json(), "key_type"), key_type);
        let bundle = t.path().join(format!("{key_type}.bundle"));
        p.export_bundle(&bundle, &["[2001:db8::1]:7010"]);
        let (x_p, x_a) = (
            t.path().join(format!("x-{key_type}.crt")),
            t.path().join(format!("xA-by-{key_type}.crt")),
        );
        a.sign_peer(&bundle, &x_p, Some(&p.fingerprint))
            .assert_success();
        p.sign_peer(&w.a_bundle, &x_a, Some(&w.a.fingerprint))
            .assert_success();
        a.register_peer(&bundle, &x_a).assert_success();
        p.register_peer(&w.a_bundle, &x_p).assert_success();
        check_cross_cert(&x_p, &a.root_cert(), &p.root_cert());
        check_cross_cert(&x_a, &p.root_cert(), &a.root_cert());
        let (key, csr, crt) = (
            t.path().join(format!("gw-{key_type}.key")),
            t.path().join(format!("gw-{key_type}.csr")),
            t.path().join(format!("gw-{key_type}.crt")),
        );
        openssl_csr(&key, &csr, "p256", &p.openssl_subject(Some("gw1")));
        p.sign_server(&csr, &crt).assert_success();
        assert_openssl_ok(&openssl_verify(
            &["-x509_strict", "-purpose", "sslclient"],
            &a.root_cert(),
            &[&x_p],
            &crt,
        ));
        ca_verify(&a.root_cert(), &[&x_p], &[], &["--purpose", "client"], &crt).assert_success();
        assert_openssl_ok(&openssl_verify(
            &["-x509_strict", "-purpose", "sslclient"],
            &p.root_cert(),
            &[&x_a],
            &w.gwa_crt,
        ));
        ca_verify(
            &p.root_cert(),
            &[&x_a],
            &[],
            &["--purpose", "client"],
            &w.gwa_crt,
        )
        .assert_success();
    }
    assert_eq!(a.list_json()["peers"].as_array().unwrap().len(), 3);
}

/// Signs `csr` with B's root key directly with openssl (as a partner's compromised or
/// malicious root could), with the given extensions.
fn sign_with_b_root(t: &Path, csr: &Path, out: &Path, ca: &Path, ca_key: &Path, exts: &str) {
    let ext = t.join(format!(
        "{}.ext",
        out.file_name().unwrap().to_string_lossy()
    ));
    write_file(&ext, exts, 0o644);
    let mut pass_arg = OsString::from("file:");
    pass_arg.push(&world().pass);
    openssl(args![
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-passin",
        &pass_arg,
        "-set_serial",
        "0x5a5a5a5a5a5a5a5a5a",
        "-days",
        "30",
        "-extfile",
        &ext,
        "-out",
        out
    ])
    .assert_success();
}

const CA_EXTS: &str = "basicConstraints = critical,CA:TRUE\n\
keyUsage = critical,keyCertSign,cRLSign\n\
subjectKeyIdentifier = hash\n\
authorityKeyIdentifier = keyid\n";

const LEAF_EXTS: &str = "basicConstraints = critical,CA:FALSE\n\
keyUsage = critical,digitalSignature\n\
extendedKeyUsage = serverAuth,clientAuth\n\
subjectKeyIdentifier = hash\n\
authorityKeyIdentifier = keyid\n";

#[test]
fn security_partner_root_cannot_pass_as_another_node() {
    let w = world();
    let t = tmp();
    let b_key = w.b.root_key();
    let b_crt = w.b.root_cert();
    let p = t.path();
    // Control: a certificate B's root makes by hand inside B's name is accepted.
    let legit_csr = p.join("legit.csr");
    openssl_csr(
        &p.join("legit.key"),
        &legit_csr,
        "p256",
        &w.b.openssl_subject(Some("by-hand")),
    );
    let legit = p.join("legit.crt");
    sign_with_b_root(p, &legit_csr, &legit, &b_crt, &b_key, LEAF_EXTS);
    assert_openssl_ok(&openssl_verify(
        &["-purpose", "sslclient"],
        &w.a.root_cert(),
        &[&w.xb],
        &legit,
    ));
    ca_verify(
        &w.a.root_cert(),
        &[&w.xb],
        &[],
        &["--purpose", "client"],
        &legit,
    )
    .assert_success();

    // B's root issues certificates naming A, or another organization: outside the constraint.
    for (name, subject) in [
        ("as-a", w.a.openssl_subject(Some("gw1"))),
        ("as-a-root-name", w.a.openssl_subject(None)),
        (
            "other-org",
            format!("/O=Other Org/OU={UNIT_B}/serialNumber={}", w.b.node_id),
        ),
        (
            "b-id-other-unit",
            format!("/O={ORG}/OU=Gamma/serialNumber={}", w.b.node_id),
        ),
        ("no-id", format!("/O={ORG}/OU={UNIT_B}")),
    ] {
        let csr = p.join(format!("{name}.csr"));
        openssl_csr(&p.join(format!("{name}.key")), &csr, "p256", &subject);
        let forged = p.join(format!("{name}.crt"));
        sign_with_b_root(p, &csr, &forged, &b_crt, &b_key, LEAF_EXTS);
        let o = openssl_verify(
            &["-purpose", "sslclient"],
            &w.a.root_cert(),
            &[&w.xb],
            &forged,
        );
        o.assert_failure();
        assert!(
            o.all_output().contains("permitted subtree violation"),
            "{name}: {o:?}"
        );
        assert_invalid(
            &ca_verify(
                &w.a.root_cert(),
                &[&w.xb],
                &[],
                &["--purpose", "client"],
                &forged,
            ),
            &["constraint", "permitted", "outside", "not within"],
        );
    }

    // B's root makes a sub-CA inside its own name: the cross-cert's pathlen 0 forbids it.
    let sub_csr = p.join("sub.csr");
    let sub_key = p.join("sub.key");
    openssl_csr(
        &sub_key,
        &sub_csr,
        "p256",
        &w.b.openssl_subject(Some("sub-ca")),
    );
    let sub = p.join("sub.crt");
    sign_with_b_root(p, &sub_csr, &sub, &b_crt, &b_key, CA_EXTS);
    let leaf_csr = p.join("subleaf.csr");
    openssl_csr(
        &p.join("subleaf.key"),
        &leaf_csr,
        "p256",
        &w.b.openssl_subject(Some("gw9")),
    );
    let leaf = p.join("subleaf.crt");
    // (The sub-CA's key is unencrypted: the -passin that sign_with_b_root adds is ignored.)
    sign_with_b_root(p, &leaf_csr, &leaf, &sub, &sub_key, LEAF_EXTS);
    // Control: under B's own root (pathlen 1) the chain is fine.
    assert_openssl_ok(&openssl_verify(
        &["-purpose", "sslclient"],
        &b_crt,
        &[&sub],
        &leaf,
    ));
    ca_verify(&b_crt, &[&sub], &[], &["--purpose", "client"], &leaf).assert_success();
    // Through A's cross-cert it is not.
    let o = openssl_verify(
        &["-purpose", "sslclient"],
        &w.a.root_cert(),
        &[&w.xb, &sub],
        &leaf,
    );
    o.assert_failure();
    assert!(
        o.all_output().contains("path length constraint exceeded"),
        "{o:?}"
    );
    assert_invalid(
        &ca_verify(
            &w.a.root_cert(),
            &[&w.xb, &sub],
            &[],
            &["--purpose", "client"],
            &leaf,
        ),
        &["path length"],
    );

    // A self-issued sub-CA (B's own name, a new key) does not count against pathlen 0
    // (RFC 5280 6.1.4 (l)): openssl and ca-tool agree it may issue inside B's name...
    let si_key = p.join("si.key");
    let si_csr = p.join("si.csr");
    openssl_csr(&si_key, &si_csr, "p256", &w.b.openssl_subject(None));
    let si = p.join("si.crt");
    sign_with_b_root(p, &si_csr, &si, &b_crt, &b_key, CA_EXTS);
    let inside_csr = p.join("si-leaf.csr");
    openssl_csr(
        &p.join("si-leaf.key"),
        &inside_csr,
        "p256",
        &w.b.openssl_subject(Some("gwx")),
    );
    let inside = p.join("si-leaf.crt");
    sign_with_b_root(p, &inside_csr, &inside, &si, &si_key, LEAF_EXTS);
    assert_openssl_ok(&openssl_verify(
        &["-purpose", "sslclient"],
        &w.a.root_cert(),
        &[&w.xb, &si],
        &inside,
    ));
    ca_verify(
        &w.a.root_cert(),
        &[&w.xb, &si],
        &[],
        &["--purpose", "client"],
        &inside,
    )
    .assert_success();
    // ...and never outside it.
    let outside_csr = p.join("si-out.csr");
    openssl_csr(
        &p.join("si-out.key"),
        &outside_csr,
        "p256",
        &w.a.openssl_subject(Some("gwx")),
    );
    let outside = p.join("si-out.crt");
    sign_with_b_root(p, &outside_csr, &outside, &si, &si_key, LEAF_EXTS);
    openssl_verify(
        &["-purpose", "sslclient"],
        &w.a.root_cert(),
        &[&w.xb, &si],
        &outside,
    )
    .assert_failure();
    assert_invalid(
        &ca_verify(
            &w.a.root_cert(),
            &[&w.xb, &si],
            &[],
            &["--purpose", "client"],
            &outside,
        ),
        &["constraint", "permitted", "outside", "not within"],
    );
}

#[test]
fn revocation_by_serial_as_openssl_prints_it() {
    let w = world();
    let t = tmp();
    // openssl prints serials in uppercase; operators also paste them with colons.
    let upper = serial_hex(&w.gwa_crt).to_uppercase();
    let colons = upper
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let printed = openssl(args!["x509", "-in", &w.gwa_crt, "-noout", "-serial"]);
    assert_eq!(printed.stdout.trim(), format!("serial={upper}"));
    for (name, serial) in [("upper", &upper), ("colons", &colons)] {
        let a = w.a.copy_to(&t.path().join(name));
        a.cmd_with_pass("revoke", &args!["--serial", serial])
            .assert_success()
            .assert_stdout_contains(&serial_hex(&w.gwa_crt));
        let crl = a.dir.join("crl.pem");
        assert_invalid(
            &ca_verify(
                &a.root_cert(),
                &[],
                &[&crl],
                &["--purpose", "server"],
                &w.gwa_crt,
            ),
            &["revoked"],
        );
    }
}

// ---------------------------------------------------------------------------
// Failed writes, validity caps, small conveniences
// ---------------------------------------------------------------------------

#[test]
fn bad_input_unwritable_output_changes_nothing() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let c = small_ca(&t.path().join("C"), "Gamma", None);
    let c_bundle = t.path().join("C.bundle");
    c.export_bundle(&c_bundle, &[]);
    let csr = t.path().join("gw.csr");
    openssl_csr(
        &t.path().join("gw.key"),
        &csr,
        "p256",
        &a.openssl_subject(None),
    );
    // --out in a directory that does not exist: every command fails and names the place.
    let nowhere = t.path().join("no-such-dir");
    let frag = &["no-such-dir"];
    refused(&a, None, frag, || {
        a.sign_server(&csr, &nowhere.join("gw.crt"))
    });
    refused(&a, None, frag, || {
        a.cmd_with_pass("crl", &args!["--out", nowhere.join("a.crl")])
    });
    refused(&a, None, frag, || {
        a.cmd_with_pass("export-bundle", &args!["--out", nowhere.join("a.bundle")])
    });
    // sign-peer must not leave the partner's files (or an unrecorded cross-cert) behind.
    refused(&a, None, frag, || {
        a.sign_peer(&c_bundle, &nowhere.join("x.crt"), None)
    });
    assert_absent(&nowhere);
    // Control: the same commands succeed with a writable --out.
    a.sign_peer(&c_bundle, &t.path().join("x.crt"), None)
        .assert_success();
}

#[test]
fn validity_is_capped_at_the_root_and_fingerprints_in_phone_form() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let csr = t.path().join("gw.csr");
    openssl_csr(
        &t.path().join("gw.key"),
        &csr,
        "p256",
        &a.openssl_subject(None),
    );
    let long = t.path().join("long.crt");
    a.cmd_with_pass(
        "sign-server",
        &args!["--csr", &csr, "--out", &long, "--days", "36500"],
    )
    .assert_success()
    .assert_stdout_contains("shortened");
    let (leaf_der, root_der) = (der_of(&long), der_of(&a.root_cert()));
    assert!(
        parse_cert(&leaf_der).validity().not_after.timestamp()
            <= parse_cert(&root_der).validity().not_after.timestamp()
    );
    // --expect-fingerprint accepts the grouped form read over the phone, in any case.
    let phone = json_str(&w.b_info, "fingerprint_phone").to_lowercase();
    assert!(phone.contains(' '), "{phone}");
    a.sign_peer(&w.b_bundle, &t.path().join("x.crt"), Some(&phone))
        .assert_success()
        .assert_stdout_contains("matches");
    // The passphrase file: a warning when others can read it, a refusal when too short.
    let loose = t.path().join("loose");
    write_file(&loose, PASSPHRASE, 0o644);
    a.cmd_with_pass_file(
        "export-bundle",
        &args!["--out", t.path().join("a.bundle")],
        &loose,
    )
    .assert_success()
    .assert_stderr_contains("readable by other users");
    let short = write_passphrase(&t.path().join("short"), "abc\n");
    let dir = t.path().join("short-ca");
    ca_tool(args![
        "init",
        "--dir",
        &dir,
        "--org",
        ORG,
        "--unit",
        "x",
        "--passphrase-file",
        &short
    ])
    .assert_failure_with("8 characters");
    assert_absent(&dir);
    // A missing parent directory is named, and nothing is created.
    let deep = t.path().join("missing").join("ca");
    ca_tool(args![
        "init",
        "--dir",
        &deep,
        "--org",
        ORG,
        "--unit",
        "x",
        "--passphrase-file",
        &w.pass
    ])
    .assert_failure_with("does not exist");
    assert_absent(&t.path().join("missing"));
}

#[test]
fn bad_input_cross_cert_without_the_peer_profile() {
    let w = world();
    let t = tmp();
    let p = t.path();
    let a = w.a.copy_to(&p.join("A"));
    // B's root certifies A's name and key by hand (openssl), with variations of the profile.
    let mut pass_arg = OsString::from("file:");
    pass_arg.push(&w.pass);
    let csr = p.join("a-root.csr");
    openssl(args![
        "req",
        "-new",
        "-key",
        a.root_key(),
        "-passin",
        &pass_arg,
        "-subj",
        a.openssl_subject(None),
        "-out",
        &csr
    ])
    .assert_success();
    let a_dn = format!(
        "[dn]\nO = {ORG}\nOU = {UNIT_A}\nserialNumber = {}\n",
        a.node_id
    );
    let common = "keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n\
                  authorityKeyIdentifier = keyid\n";
    let cases = [
        (
            "no-pathlen",
            format!("basicConstraints = critical,CA:TRUE\n{common}nameConstraints = critical,permitted;dirName:dn\n{a_dn}"),
            "pathlenconstraint 0",
        ),
        (
            "no-constraint",
            format!("basicConstraints = critical,CA:TRUE,pathlen:0\n{common}"),
            "nameConstraints",
        ),
        (
            "not-critical",
            format!("basicConstraints = critical,CA:TRUE,pathlen:0\n{common}nameConstraints = permitted;dirName:dn\n{a_dn}"),
            "nameConstraints",
        ),
        (
            "too-broad",
            format!("basicConstraints = critical,CA:TRUE,pathlen:0\n{common}nameConstraints = critical,permitted;dirName:dn\n[dn]\nO = {ORG}\n"),
            "exactly our name",
        ),
        (
            "not-a-ca",
            format!("basicConstraints = critical,CA:FALSE\n{common}"),
            "CA certificate",
        ),
    ];
    for (name, exts, fragment) in &cases {
        let crt = p.join(format!("{name}.crt"));
        sign_with_b_root(p, &csr, &crt, &w.b.root_cert(), &w.b.root_key(), exts);
        refused(&a, None, &[fragment], || a.register_peer(&w.b_bundle, &crt));
    }
    // Control: the same, made to the profile, is accepted (openssl-made cross-certs interoperate).
    let good = p.join("good.crt");
    sign_with_b_root(
        p,
        &csr,
        &good,
        &w.b.root_cert(),
        &w.b.root_key(),
        &format!("basicConstraints = critical,CA:TRUE,pathlen:0\n{common}nameConstraints = critical,permitted;dirName:dn\n{a_dn}"),
    );
    a.register_peer(&w.b_bundle, &good).assert_success();
}

#[test]
fn re_signing_a_revoked_peer_needs_reactivate() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let b_id = w.b_info["node_id"].as_str().unwrap().to_string();
    a.cmd_with_pass(
        "revoke",
        &args!["--peer", &b_id, "--reason", "key-compromise"],
    )
    .assert_success();
    let before = snapshot(&a.dir);
    let out = t.path().join("again.crt");
    a.cmd_with_pass("sign-peer", &args!["--bundle", &w.b_bundle, "--out", &out])
        .assert_failure_with("--reactivate");
    assert_unchanged(&a.dir, &before, "sign-peer of a revoked peer");
    assert_absent(&out);
    a.cmd_with_pass(
        "sign-peer",
        &args!["--bundle", &w.b_bundle, "--out", &out, "--reactivate"],
    )
    .assert_success();
    let peers = a.list_json()["peers"].clone();
    assert_eq!(peers[0]["status"], "active", "{peers}");
}
