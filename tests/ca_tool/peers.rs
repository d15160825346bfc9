//! `ca-tool sign-peer`, `register-peer` and `list`: the cross-certificates both
//! ways (every key type a partner's root may have), what each CA stores about
//! its partner, and the cross-certificates and bundles that are refused.
//!
//! Run: `cargo test --test ca_tool peers::`.

use super::*;

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
    ca_tool(
        [
            init_args(&dir, ORG, "H", &w.pass),
            args!["--node-id", hashlike],
        ]
        .concat(),
    )
    .assert_failure_with(hashlike);
    assert_absent(&dir);
    ca_tool(
        [
            init_args(&dir, ORG, "H", &w.pass),
            args!["--node-id", &w.b.node_id],
        ]
        .concat(),
    )
    .assert_failure_with("key-derived");
    assert_absent(&dir);
    ca_tool(
        [
            init_args(&dir, ORG, "H", &w.pass),
            args!["--node-id", "bad/id"],
        ]
        .concat(),
    )
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
fn bad_input_cross_cert_from_the_wrong_issuer() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let b = w.b.copy_to(&t.path().join("B"));
    let (c, c_bundle) = partner_c(t.path(), &[]);
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
