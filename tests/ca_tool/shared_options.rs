//! What every signing command shares, refused with a clear message, a non-zero
//! exit and nothing changed on disk: a wrong, empty or missing passphrase file;
//! corrupt or truncated input files; invalid `--days`, `--endpoint` and
//! directories; an `--out` that cannot be written. Also what they shorten or
//! accept: validity capped at the root's, fingerprints in the grouped phone form.
//!
//! Run: `cargo test --test ca_tool shared_options::`.

use super::*;

#[test]
fn bad_input_wrong_passphrase() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let wrong = write_passphrase(&t.path().join("wrong"), WRONG_PASSPHRASE);
    let out = t.path().join("out");
    let frag = &["wrong passphrase"];
    // (A valid CSR, so only the passphrase is wrong.)
    let csr = openssl_csr_in(t.path(), "gw", "p256", &a.openssl_subject(Some("gw2")));
    refused(&a, Some(&out), frag, || {
        a.cmd_with_pass_file("sign-server", &args!["--csr", &csr, "--out", &out], &wrong)
    });
    refused(&a, Some(&out), frag, || {
        a.cmd_with_pass_file("export-bundle", &args!["--out", &out], &wrong)
    });
    let (_, c_bundle) = partner_c(t.path(), &[]);
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
    let csr = openssl_csr_in(t.path(), "gw", "p256", &a.openssl_subject(None));
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
    let (c, c_bundle) = partner_c(t.path(), &["127.0.0.1:7003"]);
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
fn bad_input_invalid_days_and_arguments() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let out = t.path().join("out");
    let dir = t.path().join("new");
    ca_tool([init_args(&dir, ORG, "x", &w.pass), args!["--days", "0"]].concat())
        .assert_failure_with("days");
    assert_absent(&dir);
    let csr = openssl_csr_in(t.path(), "gw", "p256", &a.openssl_subject(None));
    refused(&a, Some(&out), &["days"], || {
        a.cmd_with_pass(
            "sign-server",
            &args!["--csr", &csr, "--out", &out, "--days", "0"],
        )
    });
    let (_, c_bundle) = partner_c(t.path(), &[]);
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
    ca_tool(init_args(&dir, "", "x", &w.pass)).assert_failure_with("org");
    assert_absent(&dir);
}

#[test]
fn bad_input_unwritable_output_changes_nothing() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    let (_, c_bundle) = partner_c(t.path(), &[]);
    let csr = openssl_csr_in(t.path(), "gw", "p256", &a.openssl_subject(None));
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
    let csr = openssl_csr_in(t.path(), "gw", "p256", &a.openssl_subject(None));
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
    ca_tool(init_args(&dir, ORG, "x", &short)).assert_failure_with("8 characters");
    assert_absent(&dir);
    // A missing parent directory is named, and nothing is created.
    let deep = t.path().join("missing").join("ca");
    ca_tool(init_args(&deep, ORG, "x", &w.pass)).assert_failure_with("does not exist");
    assert_absent(&t.path().join("missing"));
}
