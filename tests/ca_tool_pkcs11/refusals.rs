//! What must be refused cleanly, changing nothing: a wrong PIN, a token that is not
//! plugged in, a module that is gone, a key file and a token reference at once,
//! another CA's token key; and `init` on a token (wrong PIN, unknown token, a
//! key label already taken, a CA directory that cannot be created).
//!
//! Run: `cargo test --test ca_tool_pkcs11 refusals::`.

use super::*;

#[test]
fn wrong_pin_missing_token_or_module_change_nothing() {
    let Some(hsm) = SoftHsm::new("wrong_pin_missing_token_or_module_change_nothing") else {
        return;
    };
    let t = hsm.path();
    let a = hsm.init_ca(&t.join("A"), "Alpha Clearing", &[]);
    let pass = write_passphrase(&t.join("pass"), PASSPHRASE);
    let b = CaFixture::init(&t.join("B"), ORG, "Beta Registry", None, None, &pass);
    let b_bundle = t.join("B.bundle");
    b.export_bundle(&b_bundle, &[]);
    let csr = openssl_csr_in(t, "gw", "p256", &a.openssl_subject("gw"));
    // Something to revoke.
    let gw = t.join("gw.crt");
    a.sign_ok(&hsm, "sign-server", &args!["--csr", &csr, "--out", &gw]);
    let gw_serial = serial_hex(&gw);

    let out = t.join("out");
    let commands: Vec<(&str, Vec<OsString>)> = vec![
        ("export-bundle", args!["--out", &out]),
        ("sign-peer", args!["--bundle", &b_bundle, "--out", &out]),
        ("sign-server", args!["--csr", &csr, "--out", &out]),
        ("revoke", args!["--serial", &gw_serial]),
        ("crl", args!["--out", &out]),
    ];

    // A wrong PIN: a clear refusal, nothing written.
    let before = snapshot(&a.dir);
    for (sub, extra) in &commands {
        let o = a.signing(&hsm, sub, extra, &hsm.wrong_pin_file);
        o.assert_failure_with("the token refused the PIN");
        assert_unchanged(&a.dir, &before, &format!("{sub} with a wrong PIN"));
        assert!(
            !out.exists(),
            "{sub} with a wrong PIN wrote {}",
            out.display()
        );
    }

    // The token is not plugged in (a SoftHSM2 without it).
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let other_conf = write_softhsm_conf(elsewhere.path(), "tokens");
    for (sub, extra) in &commands {
        let args = signing_args(sub, &a.dir, extra, &hsm.pin_file);
        hsm.tool_with_conf(&args, &other_conf)
            .assert_failure_with("no token labelled");
        assert_unchanged(&a.dir, &before, &format!("{sub} without the token"));
        assert!(!out.exists());
    }

    // The module is gone (the path recorded in pkcs11.json no longer exists).
    let moved = a.dir.parent().expect("parent").join("A-moved");
    copy_dir(&a.dir, &moved);
    let config_path = moved.join("private").join("pkcs11.json");
    let mut config: Value = serde_json::from_str(&read_text(&config_path)).expect("json");
    config["module"] = t.join("no-such-module.so").display().to_string().into();
    write_file(&config_path, config.to_string(), 0o600);
    let moved_before = snapshot(&moved);
    for (sub, extra) in &commands {
        hsm.tool(&signing_args(sub, &moved, extra, &hsm.pin_file))
            .assert_failure_with("does not exist");
        assert_unchanged(&moved, &moved_before, &format!("{sub} without the module"));
        assert!(!out.exists());
    }

    // Both a key file and a token reference: refused rather than guessed.
    let both = t.join("A-both");
    copy_dir(&a.dir, &both);
    std::fs::copy(b.root_key(), both.join("private").join("root-ca.key")).expect("copy key");
    hsm.tool(&signing_args(
        "crl",
        &both,
        &args!["--out", &out],
        &hsm.pin_file,
    ))
    .assert_failure_with("both exist");
    assert!(!out.exists());

    // A token key that is not the CA's (another CA's reference) is refused.
    let c = hsm.init_ca(&t.join("C"), "Gamma", &args!["--key-label", "gamma"]);
    let swapped = t.join("A-swapped");
    copy_dir(&a.dir, &swapped);
    std::fs::copy(
        c.dir.join("private").join("pkcs11.json"),
        swapped.join("private").join("pkcs11.json"),
    )
    .expect("copy reference");
    let swapped_before = snapshot(&swapped);
    hsm.tool(&signing_args(
        "crl",
        &swapped,
        &args!["--out", &out],
        &hsm.pin_file,
    ))
    .assert_failure_with("does not match");
    assert_unchanged(&swapped, &swapped_before, "crl with another CA's key");

    // The right PIN still works afterwards (the wrong ones did not lock the token).
    a.sign_ok(&hsm, "crl", &args!["--out", &out]);
    assert_crl_signed_by(&out, &a.root_cert());
}

#[test]
fn init_on_a_token_refuses_cleanly() {
    let Some(hsm) = SoftHsm::new("init_on_a_token_refuses_cleanly") else {
        return;
    };
    let t = hsm.path();
    let dir = t.join("A");
    let init = |extra: &[OsString], pin_file: &Path| {
        let mut args = init_args(&dir, ORG, "Alpha", pin_file);
        args.extend(extra.iter().cloned());
        let out = hsm.tool(&args);
        assert_no_pin(&out);
        out
    };
    let token_args = |label: &str| {
        args![
            "--pkcs11-module",
            &hsm.module,
            "--token-label",
            TOKEN_LABEL,
            "--key-label",
            label
        ]
    };

    // Wrong PIN: nothing created, and no key left on the token (the label is still free).
    init(&token_args("root"), &hsm.wrong_pin_file).assert_failure_with("the token refused the PIN");
    assert!(!dir.exists());
    // Unknown token, missing module: refused before asking for the PIN.
    init(
        &args![
            "--pkcs11-module",
            &hsm.module,
            "--token-label",
            "no such token"
        ],
        &hsm.pin_file,
    )
    .assert_failure_with("no token labelled");
    init(
        &args![
            "--pkcs11-module",
            t.join("missing.so"),
            "--token-label",
            TOKEN_LABEL
        ],
        &hsm.pin_file,
    )
    .assert_failure_with("does not exist");
    // Half the token options: a usage error.
    let usage = init(&args!["--token-label", TOKEN_LABEL], &hsm.pin_file);
    usage.assert_failure();
    assert_eq!(usage.code(), Some(2), "{usage:?}");
    assert!(!dir.exists());

    // The label is free: init succeeds with it.
    let first = init(&token_args("root"), &hsm.pin_file);
    first.assert_success();
    assert!(dir.join("private").join("pkcs11.json").is_file());

    // A second CA may not reuse a key label: the existing key is never taken over.
    let second_dir = t.join("B");
    let mut args = init_args(&second_dir, ORG, "Beta", &hsm.pin_file);
    args.extend(token_args("root"));
    hsm.tool(&args)
        .assert_failure_with("already holds an object labelled");
    assert!(!second_dir.exists());

    // A CA directory that cannot be created after the key was generated (the name leaves
    // no room for the hidden staging directory's): the key is removed from the token
    // again, so its label is free for the next attempt.
    let try_init = |dir: &Path| {
        let mut args = init_args(dir, ORG, "Gamma", &hsm.pin_file);
        args.extend(token_args("gamma"));
        hsm.tool(&args)
    };
    let too_long = t.join("c".repeat(250));
    try_init(&too_long)
        .assert_failure_with("nothing was created")
        .assert_stderr_contains("removed again");
    assert!(!too_long.exists());
    try_init(&t.join("C")).assert_success();
}
