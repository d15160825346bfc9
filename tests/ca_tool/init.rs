//! `ca-tool init` and `info`: the identity (node id, subject, fingerprint), the
//! root key at rest (PBES2, file modes, readable by `openssl pkey`), and init
//! refusing to overwrite anything or to leave anything behind.
//!
//! Run: `cargo test --test ca_tool init::`.

use super::*;

fn no_colons_upper(fp: &str) -> String {
    fp.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_uppercase()
}

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

#[test]
fn interop_root_keys_of_every_key_type_open_in_openssl() {
    // docs/ca-tool.md: `openssl pkey` reads the root key with the passphrase,
    // whatever its type. OpenSSL 3.0 could not decode the Ed25519 ones (version 2
    // PKCS#8 with a public key, which ca-tool no longer writes).
    let w = world();
    let t = tmp();
    let mut pass_arg = OsString::from("file:");
    pass_arg.push(&w.pass);
    for (key_type, openssl_says) in [
        ("ecdsa-p256", "NIST CURVE: P-256"),
        ("ecdsa-p384", "NIST CURVE: P-384"),
        ("ed25519", "ED25519 Private-Key"),
        ("rsa-2048", "Private-Key: (2048 bit"),
        ("rsa-3072", "Private-Key: (3072 bit"),
        ("rsa-4096", "Private-Key: (4096 bit"),
    ] {
        let ca = CaFixture::init(
            &t.path().join(key_type),
            ORG,
            "Every Key",
            Some(key_type),
            None,
            &w.pass,
        );
        let key = ca.root_key();
        let text = openssl(args![
            "pkey", "-in", &key, "-passin", &pass_arg, "-noout", "-text"
        ]);
        assert!(
            text.success(),
            "{key_type}: openssl pkey cannot read the root key:\n{text:?}"
        );
        text.assert_stdout_contains(openssl_says);
        // The key is the root certificate's.
        let from_key = openssl(args!["pkey", "-in", &key, "-passin", &pass_arg, "-pubout"]);
        from_key.assert_success();
        let from_cert = openssl(args!["x509", "-in", ca.root_cert(), "-noout", "-pubkey"]);
        assert_eq!(from_key.stdout, from_cert.stdout, "{key_type}");
        // PBES2 with scrypt and AES-256-CBC, for every type.
        let asn1 = openssl(args!["asn1parse", "-in", &key]);
        asn1.assert_success();
        for part in ["PBES2", "scrypt", "aes-256-cbc"] {
            assert!(asn1.stdout.contains(part), "{key_type}: {}", asn1.stdout);
        }
        // The root's subjectKeyIdentifier is the one openssl computes for the
        // key (`subjectKeyIdentifier = hash`, RFC 5280 method 1).
        let mine = t.path().join(format!("{key_type}-openssl.crt"));
        openssl(args![
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-passin",
            &pass_arg,
            "-subj",
            "/CN=x",
            "-days",
            "1",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-out",
            &mine
        ])
        .assert_success();
        assert_eq!(
            ski(&parse_cert(&der_of(&ca.root_cert()))),
            ski(&parse_cert(&der_of(&mine))),
            "{key_type}: root SKI"
        );
    }
}

#[test]
fn bad_input_init_over_an_existing_ca() {
    let w = world();
    let t = tmp();
    let a = w.a.copy_to(&t.path().join("A"));
    for extra in [args![], args!["--key-type", "ed25519"]] {
        refused(&a, None, &["already holds a CA"], || {
            let mut args = init_args(&a.dir, "Other", "x", &w.pass);
            args.extend(extra);
            ca_tool(&args)
        });
    }
    // A directory holding only private/ (a half-restored backup) is not overwritten either.
    let half = t.path().join("half");
    std::fs::create_dir_all(half.join("private")).unwrap();
    let before = snapshot(&half);
    ca_tool(init_args(&half, ORG, "x", &w.pass)).assert_failure_with("refusing");
    assert_unchanged(&half, &before, "init into a half CA");
    // Nor is a non-empty unrelated directory, or a file.
    let busy = t.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    write_file(&busy.join("notes.txt"), "keep me", 0o644);
    let before = snapshot(&busy);
    ca_tool(init_args(&busy, ORG, "x", &w.pass)).assert_failure_with("not empty");
    assert_unchanged(&busy, &before, "init into a non-empty directory");
    let plain = t.path().join("plain-file");
    write_file(&plain, "x", 0o644);
    ca_tool(init_args(&plain, ORG, "x", &w.pass)).assert_failure_with("not a directory");
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
    let o = run(unprivileged_command(&bin).args(init_args(&ca_dir, ORG, "x", &pass)));
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
    run(unprivileged_command(&bin).args(init_args(&writable.join("ca"), ORG, "x", &pass)))
        .assert_success();
}
