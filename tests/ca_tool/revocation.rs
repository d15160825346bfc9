//! `ca-tool revoke` and `crl`: a revoked partner or gateway certificate is
//! refused by `ca-tool verify` and by `openssl verify -crl_check`, the CRL's
//! profile, serials given as openssl prints them, and refused revocations.
//!
//! Run: `cargo test --test ca_tool revocation::`.

use super::*;

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
