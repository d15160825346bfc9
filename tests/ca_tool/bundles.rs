//! `ca-tool export-bundle` and `show-bundle`: a bundle's signed node info cannot
//! be edited, its root swapped or its signature damaged, and a forged bundle
//! cannot claim the key-derived node id of another key.
//!
//! Run: `cargo test --test ca_tool bundles::`.

use super::*;

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
