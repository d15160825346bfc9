//! `ca-tool import-swaptacular` on a copy of swpt_stomp's creditors agent test node.

use super::*;

/// `ca-tool import-swaptacular --from from --dir dir` with the two passphrase files.
fn import(from: &Path, dir: &Path, old: &Path, new: &Path) -> Outcome {
    ca_tool(args![
        "import-swaptacular",
        "--from",
        from,
        "--dir",
        dir,
        "--from-passphrase-file",
        old,
        "--passphrase-file",
        new
    ])
}

/// A writable copy of one of swpt_stomp's test nodes in `dir/swpt`.
fn writable_copy_of_test_node(dir: &Path, node: &str) -> PathBuf {
    let from = dir.join("swpt");
    copy_dir(
        &third_party().join("swpt_stomp/test_data").join(node),
        &from,
    );
    run_program("chmod", args!["-R", "u+w", &from]).assert_success();
    from
}

#[test]
fn a_swaptacular_ca_moves_to_ca_tool_without_new_certificates() {
    let tmp = tmp();
    let from = writable_copy_of_test_node(tmp.path(), "CA");
    let old = write_passphrase(&tmp.path().join("old"), "123456\n");
    let new = write_passphrase(&tmp.path().join("new"), &format!("{PASS}\n"));
    let dir = tmp.path().join("ca");
    let before = snapshot(&from);

    // A wrong passphrase: nothing is created, nothing changed.
    let wrong = write_passphrase(&tmp.path().join("wrong"), "654321\n");
    import(&from, &dir, &wrong, &new).assert_failure_with("wrong passphrase");
    assert!(!dir.exists());
    assert_unchanged(&from, &before, "import with a wrong passphrase");

    let out = import(&from, &dir, &old, &new);
    out.assert_success();
    assert_unchanged(&from, &before, "import");
    out.assert_stdout_contains("deactivated");

    // The key now opens with the new passphrase, as PKCS#8 openssl reads.
    let key = dir.join("private/root-ca.key");
    assert!(read_text(&key).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let pubkey = openssl(args![
        "pkey",
        "-in",
        &key,
        "-passin",
        format!("file:{}", new.display()),
        "-pubout"
    ]);
    pubkey.assert_success();
    let root_pub = openssl(args![
        "x509",
        "-in",
        dir.join("root-ca.crt"),
        "-noout",
        "-pubkey"
    ]);
    assert_eq!(pubkey.stdout, root_pub.stdout);

    // Partners and certificates are in the database; the deactivated one is not active.
    let list = ca_tool(args!["list", "--dir", &dir, "--json"]);
    list.assert_success();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).expect("list --json");
    let text = v.to_string();
    assert!(
        text.contains("1234abcd") && text.contains("deac00ed"),
        "{text}"
    );
    assert!(text.contains("\"revoked\""), "{text}");

    // A gateway on the new CA directory sees the same partners, active as before.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trust = rt
        .block_on(peerlink_tls::NodeTrust::load(&dir, &Default::default()))
        .expect("trust of the imported CA");
    assert_eq!(
        trust.peers["1234abcd"].status,
        peerlink_tls::PeerStatus::Active
    );
    assert!(trust.peers["1234abcd"].can_dial());
    assert_eq!(
        trust.peers["deac00ed"].status,
        peerlink_tls::PeerStatus::Inactive
    );
    assert!(trust.peers["1234abcd"].stomp.is_some());

    // The new CA signs with the new passphrase.
    let csr = openssl_csr_in(
        tmp.path(),
        "gw",
        "p256",
        "/O=Swaptacular Nodes Registry/OU=Creditors Agents/serialNumber=5921983fe0e6eb987aeedca54ad3c708",
    );
    ca_tool(args![
        "sign-server",
        "--dir",
        &dir,
        "--csr",
        &csr,
        "--out",
        tmp.path().join("gw.crt"),
        "--passphrase-file",
        &new
    ])
    .assert_success();

    // Importing again into the same place is refused; into a non-empty directory too.
    import(&from, &dir, &old, &new).assert_failure_with("already holds a CA");
}

#[test]
fn an_inconsistent_swaptacular_ca_is_not_imported() {
    let tmp = tmp();
    let from = writable_copy_of_test_node(tmp.path(), "CA");
    // A partner directory holding someone else's root.
    std::fs::copy(
        from.join("peers/deac00ed/root-ca.crt"),
        from.join("peers/1234abcd/root-ca.crt"),
    )
    .expect("copy");
    let old = write_passphrase(&tmp.path().join("old"), "123456\n");
    let new = write_passphrase(&tmp.path().join("new"), &format!("{PASS}\n"));
    let dir = tmp.path().join("ca");
    let before = snapshot(&from);
    import(&from, &dir, &old, &new).assert_failure_with("nothing was created");
    assert!(!dir.exists());
    assert_unchanged(&from, &before, "failed import");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read tmp")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}
