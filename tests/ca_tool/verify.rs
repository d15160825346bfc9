//! `ca-tool verify`, with `openssl verify` as the second opinion: the gateway
//! chains both ways, expiry and input formats, and the security property: a
//! partner's root cannot issue a certificate that passes as another node
//! (name constraints, pathlen 0, self-issued sub-CAs).
//!
//! Run: `cargo test --test ca_tool verify::`.

use super::*;

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

#[test]
fn security_partner_root_cannot_pass_as_another_node() {
    let w = world();
    let t = tmp();
    let b_key = w.b.root_key();
    let b_crt = w.b.root_cert();
    let p = t.path();
    // Control: a certificate B's root makes by hand inside B's name is accepted.
    let legit_csr = openssl_csr_in(p, "legit", "p256", &w.b.openssl_subject(Some("by-hand")));
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
        let csr = openssl_csr_in(p, name, "p256", &subject);
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
    let sub_csr = openssl_csr_in(p, "sub", "p256", &w.b.openssl_subject(Some("sub-ca")));
    let sub_key = p.join("sub.key");
    let sub = p.join("sub.crt");
    sign_with_b_root(p, &sub_csr, &sub, &b_crt, &b_key, CA_EXTS);
    let leaf_csr = openssl_csr_in(p, "subleaf", "p256", &w.b.openssl_subject(Some("gw9")));
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
    let si_csr = openssl_csr_in(p, "si", "p256", &w.b.openssl_subject(None));
    let si_key = p.join("si.key");
    let si = p.join("si.crt");
    sign_with_b_root(p, &si_csr, &si, &b_crt, &b_key, CA_EXTS);
    let inside_csr = openssl_csr_in(p, "si-leaf", "p256", &w.b.openssl_subject(Some("gwx")));
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
    let outside_csr = openssl_csr_in(p, "si-out", "p256", &w.a.openssl_subject(Some("gwx")));
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

/// `date -u -d +<offset> +<format>`.
fn date_in(offset: &str, format: &str) -> String {
    let o = run_program("date", ["-u", "-d", offset, format]);
    o.assert_success();
    o.stdout.trim().to_string()
}

#[test]
fn security_an_expired_anchor_is_refused() {
    // A root valid for one day, and a leaf it signed (by hand, with openssl)
    // for 30 days: three days from now only the root has expired. openssl, Go
    // and x509-limbo (rfc5280::validity::expired-root) refuse such a chain.
    let w = world();
    let t = tmp();
    let dir = t.path().join("short");
    let mut init = init_args(&dir, ORG, "Short", &w.pass);
    init.extend(args!["--days", "1"]);
    ca_tool(&init).assert_success();
    let root = dir.join("root-ca.crt");
    let csr = openssl_csr_in(
        t.path(),
        "leaf",
        "p256",
        "/O=Example Network/OU=Short/CN=gw",
    );
    let ext = t.path().join("leaf.ext");
    write_file(&ext, LEAF_EXTS, 0o644);
    let leaf = t.path().join("leaf.crt");
    let mut pass_arg = OsString::from("file:");
    pass_arg.push(&w.pass);
    openssl_sign_csr(
        &csr,
        &root,
        &dir.join("private").join("root-ca.key"),
        "0x6b6b6b6b6b6b6b6b6b",
        &ext,
        &args!["-passin", pass_arg],
        &leaf,
    );
    // Today the chain is valid for both.
    assert_openssl_ok(&openssl_verify(
        &["-purpose", "sslclient"],
        &root,
        &[],
        &leaf,
    ));
    ca_verify(&root, &[], &[], &["--purpose", "client"], &leaf).assert_success();
    // In three days: openssl refuses (error 10, certificate has expired, at the root)...
    let later_epoch = date_in("+3 days", "+%s");
    let o = openssl_verify(
        &["-purpose", "sslclient", "-attime", &later_epoch],
        &root,
        &[],
        &leaf,
    );
    o.assert_failure();
    assert!(o.all_output().contains("error 10"), "{o:?}");
    // ...and so does ca-tool, naming the anchor.
    let later = date_in("+3 days", "+%Y-%m-%dT%H:%M:%SZ");
    let out = ca_verify(
        &root,
        &[],
        &[],
        &["--purpose", "client", "--at", &later],
        &leaf,
    );
    assert_invalid(&out, &["expired"]);
    out.assert_stderr_contains("anchor certificate (O=Example Network, OU=Short");
    // The root alone, verified as the leaf, is refused the same way.
    assert_invalid(
        &ca_verify(
            &root,
            &[],
            &[],
            &["--purpose", "any", "--at", &later],
            &root,
        ),
        &["expired"],
    );
}
