//! A CA whose root key is on the token, through the whole flow with a partner
//! whose root key is in a file (bundles, cross-signing, gateway certificates,
//! revocation and CRLs, all judged by openssl), and a token root of every other
//! key type.
//!
//! Run: `cargo test --test ca_tool_pkcs11 flow::`.

use super::*;

#[test]
fn token_root_full_flow_with_a_file_key_partner() {
    let Some(hsm) = SoftHsm::new("token_root_full_flow_with_a_file_key_partner") else {
        return;
    };
    let t = hsm.path();
    let a = hsm.init_ca(&t.join("A"), "Alpha Clearing", &[]);
    assert_private_dir_holds_no_key(&a, &hsm, "ecdsa-p256", "peerlink-root");
    a.init_output.assert_stdout_contains("ecdsa-p256");

    // The root the token signed is a valid self-signed CA certificate for openssl, and its
    // node id is derived from the token's public key.
    assert_openssl_ok(&openssl_verify_strict(
        &[],
        &a.root_cert(),
        &[],
        &a.root_cert(),
    ));
    let info = ca_tool(args!["info", "--dir", &a.dir, "--json"]);
    info.assert_success();
    let info: Value = serde_json::from_str(&info.stdout).expect("info --json");
    assert_eq!(json_str(&info, "key_type"), "ecdsa-p256", "{info:#}");
    assert_eq!(info["node_id_is_key_derived"], true, "{info:#}");

    // B keeps its root key in an encrypted file.
    let pass = write_passphrase(&t.join("pass"), PASSPHRASE);
    let b = CaFixture::init(&t.join("B"), ORG, "Beta Registry", None, None, &pass);

    // Bundles: A's is signed by the token and verifies as any other.
    let a_bundle = t.join("A.bundle");
    let b_bundle = t.join("B.bundle");
    a.sign_ok(
        &hsm,
        "export-bundle",
        &args!["--out", &a_bundle, "--endpoint", "127.0.0.1:7001"],
    );
    b.export_bundle(&b_bundle, &["127.0.0.1:7002"]);
    let shown = ca_tool(args!["show-bundle", "--bundle", &a_bundle, "--json"]);
    shown.assert_success();
    let shown: Value = serde_json::from_str(&shown.stdout).expect("show-bundle --json");
    assert_eq!(json_str(&shown, "node_id"), a.node_id);
    assert_eq!(json_str(&shown, "fingerprint_sha256"), a.fingerprint);

    // Cross-signing both ways: the token CA signs the file CA's root and vice versa.
    let xb = t.join("xB.crt");
    let xa = t.join("xA.crt");
    a.sign_ok(
        &hsm,
        "sign-peer",
        &args![
            "--bundle",
            &b_bundle,
            "--out",
            &xb,
            "--expect-fingerprint",
            &b.fingerprint
        ],
    )
    .assert_stdout_contains("matches");
    b.sign_peer(&a_bundle, &xa, Some(&a.fingerprint))
        .assert_success();
    hsm.tool(&args![
        "register-peer",
        "--dir",
        &a.dir,
        "--bundle",
        &b_bundle,
        "--cert",
        &xa
    ])
    .assert_success();
    b.register_peer(&a_bundle, &xb).assert_success();
    // The cross-certificates verify under their issuers' roots.
    assert_openssl_ok(&openssl_verify_strict(&[], &a.root_cert(), &[], &xb));
    assert_openssl_ok(&openssl_verify_strict(&[], &b.root_cert(), &[], &xa));
    ca_verify(&a.root_cert(), &[], &[], &["--purpose", "any"], &xb).assert_success();

    // Gateway certificates from openssl CSRs, one signed by the token.
    let gwa_csr = openssl_csr_in(t, "gwA", "p256", &a.openssl_subject("gw1"));
    let gwa_crt = t.join("gwA.crt");
    a.sign_ok(
        &hsm,
        "sign-server",
        &args!["--csr", &gwa_csr, "--out", &gwa_crt],
    );
    let gwb_csr = openssl_csr_in(t, "gwB", "rsa2048", &b.openssl_subject(Some("gw1")));
    let gwb_crt = t.join("gwB.crt");
    b.sign_server(&gwb_csr, &gwb_crt).assert_success();

    // Chains through the token-made root and the cross-certificates, as openssl sees them.
    for purpose in ["sslserver", "sslclient"] {
        assert_openssl_ok(&openssl_verify_strict(
            &["-purpose", purpose],
            &a.root_cert(),
            &[],
            &gwa_crt,
        ));
    }
    // B accepts A's dialing gateway through the cross-cert B issued A (token-signed leaf).
    assert_openssl_ok(&openssl_verify_strict(
        &["-purpose", "sslclient"],
        &b.root_cert(),
        &[&xa],
        &gwa_crt,
    ));
    // A accepts B's dialing gateway through the cross-cert the token signed for B.
    assert_openssl_ok(&openssl_verify_strict(
        &["-purpose", "sslclient"],
        &a.root_cert(),
        &[&xb],
        &gwb_crt,
    ));
    // And so does the project's own validator.
    ca_verify(
        &a.root_cert(),
        &[&xb],
        &[],
        &["--purpose", "client"],
        &gwb_crt,
    )
    .assert_success()
    .assert_stdout_contains(&b.node_id);
    ca_verify(
        &b.root_cert(),
        &[&xa],
        &[],
        &["--purpose", "client"],
        &gwa_crt,
    )
    .assert_success()
    .assert_stdout_contains(&a.node_id);
    ca_verify(&a.root_cert(), &[], &[], &["--purpose", "server"], &gwa_crt).assert_success();

    // list: the peer, the cross-cert and the server certificate are recorded.
    let list = ca_tool(args!["list", "--dir", &a.dir, "--json"]);
    list.assert_success();
    let list: Value = serde_json::from_str(&list.stdout).expect("list --json");
    assert_eq!(list["peers"][0]["node_id"], b.node_id.as_str(), "{list:#}");
    assert_eq!(
        list["certificates"].as_array().map(Vec::len),
        Some(3),
        "{list:#}"
    );

    // Revocation: the token signs the CRL; the partner's chain is then refused.
    let xb_serial = serial_hex(&xb);
    a.sign_ok(
        &hsm,
        "revoke",
        &args!["--peer", &b.node_id, "--reason", "key-compromise"],
    )
    .assert_stdout_contains(&xb_serial);
    let crl = a.dir.join("crl.pem");
    assert_crl_signed_by(&crl, &a.root_cert());
    let crl_text = crl.to_str().expect("UTF-8 temp path");
    let revoked = openssl_verify_strict(
        &["-crl_check", "-CRLfile", crl_text],
        &a.root_cert(),
        &[],
        &xb,
    );
    revoked.assert_failure();
    assert!(
        revoked.all_output().contains("revoked"),
        "openssl should refuse the revoked cross-cert:\n{revoked:?}"
    );
    // Control: the same CRL does not refuse what was not revoked.
    assert_openssl_ok(&openssl_verify_strict(
        &["-crl_check", "-CRLfile", crl_text],
        &a.root_cert(),
        &[],
        &gwa_crt,
    ));
    let refused = ca_verify(
        &a.root_cert(),
        &[&xb],
        &[&crl],
        &["--purpose", "client"],
        &gwb_crt,
    );
    refused.assert_failure_with("revoked");
    assert_eq!(refused.code(), Some(3), "{refused:?}");

    // crl: a fresh CRL with the next number, signed by the token.
    let out = t.join("published.crl");
    a.sign_ok(&hsm, "crl", &args!["--out", &out, "--days", "7"])
        .assert_stdout_contains("#2");
    assert_crl_signed_by(&out, &a.root_cert());
    assert_eq!(read_bytes(&out), read_bytes(&crl));
    let text = openssl(args!["crl", "-in", &out, "-noout", "-text"]);
    text.assert_success();
    assert!(
        text.stdout.to_lowercase().contains(&xb_serial),
        "the CRL lists the revoked cross-cert:\n{}",
        text.stdout
    );
    // The server certificate is still good.
    ca_verify(
        &a.root_cert(),
        &[],
        &[&out],
        &["--purpose", "server"],
        &gwa_crt,
    )
    .assert_success();
}

#[test]
fn token_root_of_every_other_key_type() {
    let Some(hsm) = SoftHsm::new("token_root_of_every_other_key_type") else {
        return;
    };
    let t = hsm.path();
    for key_type in ["ecdsa-p384", "ed25519", "rsa-2048"] {
        let ca = hsm.init_ca(
            &t.join(key_type),
            key_type,
            &args![
                "--key-type",
                key_type,
                "--key-label",
                format!("root {key_type}")
            ],
        );
        assert_private_dir_holds_no_key(&ca, &hsm, key_type, &format!("root {key_type}"));
        assert_openssl_ok(&openssl_verify_strict(
            &[],
            &ca.root_cert(),
            &[],
            &ca.root_cert(),
        ));
        // The bundle signature (bare signing, outside X.509) verifies.
        let bundle = t.join(format!("{key_type}.bundle"));
        ca.sign_ok(&hsm, "export-bundle", &args!["--out", &bundle]);
        let shown = ca_tool(args!["show-bundle", "--bundle", &bundle, "--json"]);
        shown.assert_success();
        let shown: Value = serde_json::from_str(&shown.stdout).expect("show-bundle --json");
        assert_eq!(json_str(&shown, "key_type"), key_type);
        // A server certificate and a CRL signed by the token.
        let csr = openssl_csr_in(t, key_type, "p256", &ca.openssl_subject("gw"));
        let crt = t.join(format!("{key_type}.crt"));
        ca.sign_ok(&hsm, "sign-server", &args!["--csr", &csr, "--out", &crt]);
        assert_openssl_ok(&openssl_verify_strict(
            &["-purpose", "sslserver"],
            &ca.root_cert(),
            &[],
            &crt,
        ));
        let crl = t.join(format!("{key_type}.crl"));
        ca.sign_ok(&hsm, "crl", &args!["--out", &crl]);
        assert_crl_signed_by(&crl, &ca.root_cert());
    }
}
