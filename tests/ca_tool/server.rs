//! `ca-tool sign-server`: the gateway certificate profile, CSRs of every key type
//! made by openssl, and CSRs for any name but the node's own refused.
//!
//! Run: `cargo test --test ca_tool server::`.

use super::*;

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
