//! Configuration errors name the key and the line; `peer-gateway keygen` writes
//! a private key and refuses to overwrite one.
//!
//! Run: `cargo test --test gateway config::`.

use super::*;

// ---------------------------------------------------------------------------
// 8. Configuration errors and keygen
// ---------------------------------------------------------------------------

#[test]
fn config_errors_name_the_key_and_the_line() {
    let mut net = Net::empty();
    net.add_node("a");
    let node = net.node("a");
    let good = config_text(node, &node.server_cert, &node.server_key, "");
    let dir = net.dir.as_path();
    let line_of = |text: &str, start: &str| {
        text.lines()
            .position(|l| l.starts_with(start))
            .expect("line")
            + 1
    };

    // Unknown top-level key.
    let text = good.replacen("listen =", "lisen = \"x\"\nlisten =", 1);
    let n = line_of(&text, "lisen");
    let out = run_config(dir, "unknown.toml", &text);
    out.assert_stderr_contains("lisen")
        .assert_stderr_contains(&format!("line {n}"));

    // Unknown key under [link].
    let text = good.replace("heartbeat_ms = 500", "heartbeat_ms = 500\nheartbeat = 5");
    let n = line_of(&text, "heartbeat =");
    run_config(dir, "unknown-link.toml", &text)
        .assert_stderr_contains("heartbeat")
        .assert_stderr_contains(&format!("line {n}"));

    // Bad listen address.
    let text = good.replacen(
        &format!("listen = \"{}\"", node.endpoint()),
        "listen = \"localhost:7443\"",
        1,
    );
    assert_ne!(text, good);
    let n = line_of(&text, "listen =");
    run_config(dir, "listen.toml", &text)
        .assert_stderr_contains("listen")
        .assert_stderr_contains(&format!("line {n}"));

    // Bad admin address (no port).
    let text = good.replacen(
        &format!("admin_listen = \"{}\"", node.admin()),
        "admin_listen = \"127.0.0.1\"",
        1,
    );
    assert_ne!(text, good);
    let n = line_of(&text, "admin_listen");
    run_config(dir, "admin.toml", &text)
        .assert_stderr_contains("admin_listen")
        .assert_stderr_contains(&format!("line {n}"));

    // A zero where a positive value is needed.
    let text = good.replace("heartbeat_ms = 500", "heartbeat_ms = 0");
    let n = line_of(&text, "heartbeat_ms");
    run_config(dir, "zero.toml", &text)
        .assert_stderr_contains("heartbeat_ms")
        .assert_stderr_contains(&format!("line {n}"));

    // A wrong type.
    let text = good.replace("heartbeat_ms = 500", "heartbeat_ms = \"500\"");
    let n = line_of(&text, "heartbeat_ms");
    run_config(dir, "type.toml", &text)
        .assert_stderr_contains("heartbeat_ms")
        .assert_stderr_contains(&format!("line {n}"));

    // A missing required key.
    let text: String = good
        .lines()
        .filter(|l| !l.starts_with("server_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    run_config(dir, "missing.toml", &text).assert_stderr_contains("server_key");

    // Well-formed, but node_dir is not a CA directory.
    let text = good.replacen(
        &format!("{:?}", node.ca.dir.display().to_string()),
        "\"nowhere\"",
        1,
    );
    assert_ne!(text, good);
    run_config(dir, "nodedir.toml", &text).assert_stderr_contains("nowhere");
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let mut net = Net::empty();
    net.add_node("a");
    let node = net.node("a");
    assert_eq!(
        mode_of(&node.server_key) & 0o077,
        0,
        "the key is readable by others"
    );

    // The CSR carries the node's DN plus the CN.
    let csr = net.path("a-gw.csr");
    let subject = openssl(args![
        "req", "-in", &csr, "-noout", "-subject", "-nameopt", "RFC2253"
    ]);
    subject.assert_success();
    let expected = format!("subject=CN=gw1,serialNumber={},OU=a,O=Net", node.id());
    assert_eq!(subject.stdout.trim(), expected);

    let key_before = read_bytes(&node.server_key);
    let other_csr = net.path("again.csr");
    let out = peer_gateway(args![
        "keygen",
        "--node-dir",
        &node.ca.dir,
        "--out-key",
        &node.server_key,
        "--out-csr",
        &other_csr
    ]);
    out.assert_failure_with_any(&["exists", "overwrite"]);
    assert_eq!(
        read_bytes(&node.server_key),
        key_before,
        "the key was changed"
    );
    assert!(
        !other_csr.exists(),
        "a CSR was written for a refused keygen"
    );
}
