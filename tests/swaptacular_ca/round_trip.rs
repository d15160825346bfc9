//! A Swaptacular node made by swpt_ca_scripts and one made by ca-tool become
//! partners the way operators do it, both ways round, and openssl judges the
//! chains each side will present.

use super::*;

/// Two partners after the whole exchange, and the files it produced.
pub(crate) struct Pair {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) ours: ToolNode,
    pub(crate) ours_id: String,
    pub(crate) theirs: ScriptNode,
    /// The cross-certificate ca-tool issued the script node.
    pub(crate) cross_for_them: PathBuf,
    /// The peer certificate the script node issued us (its peers/<our id>/peercert.crt).
    pub(crate) cross_for_us: PathBuf,
    /// Their gateway leaf (generate-serverkey + sign-servercert).
    pub(crate) their_leaf: PathBuf,
    /// Our gateway leaf (openssl req + ca-tool sign-server).
    pub(crate) our_leaf: PathBuf,
    /// What our register-peer printed.
    pub(crate) our_register: Outcome,
    /// What their register-peer printed.
    pub(crate) their_register: String,
}

/// How the two nodes are made.
struct Flavor {
    /// `--node-type` and extra `init` options for ca-tool.
    ours: (&'static str, &'static [&'static str]),
    /// init-ca's menu choice and accounting authority prefix for the scripts.
    theirs: (&'static str, &'static str),
    /// `--subnet` ca-tool gives (when it is the accounting authority).
    subnet: Option<&'static str>,
}

/// ca-tool as an accounting authority (RSA-3072, the profile's default), the
/// scripts as a creditors agent.
const TOOL_AA: Flavor = Flavor {
    ours: ("accounting-authority", &["--node-id", "a1b2c3d4"]),
    theirs: ("1", ""),
    subnet: Some("000001"),
};

/// ca-tool as a creditors agent with a P-256 root, the scripts as an accounting authority.
const TOOL_CA: Flavor = Flavor {
    ours: ("creditors-agent", &["--key-type", "ecdsa-p256"]),
    theirs: ("3", "1234abcd"),
    subnet: None,
};

fn pair(flavor: &Flavor) -> Pair {
    let tmp = run_tmp();
    let root = tmp.path().to_path_buf();
    let pass = write_passphrase(&root.join("pass"), &format!("{PASS}\n"));
    let theirs = ScriptNode::create(
        &root.join("S"),
        flavor.theirs.0,
        flavor.theirs.1,
        "127.0.0.1:1235",
    );
    let ours = ToolNode::create(&root.join("T"), &pass, flavor.ours.0, flavor.ours.1);
    let ours_id = ours.node_id();

    // Info-bundles both ways.
    let their_bundle = root.join("S.zip");
    theirs.run("create-infobundle", &[their_bundle.to_str().unwrap()], &[]);
    let our_bundle = root.join("T.zip");
    ours.export_infobundle(&our_bundle, "127.0.0.1:1234");

    // Each signs the other's root.
    let cross_for_them = root.join("for-S.crt");
    let mut sign = args!["--bundle", &their_bundle, "--out", &cross_for_them];
    if let Some(s) = flavor.subnet {
        sign.extend(args!["--subnet", s]);
    }
    ours.cmd_with_pass("sign-peer", sign).assert_success();
    theirs.run("sign-peercert", &[our_bundle.to_str().unwrap()], &[]);
    let cross_for_us = theirs.dir.join("peers").join(&ours_id).join("peercert.crt");

    // Each registers what the other issued.
    let our_register = ours.cmd(
        "register-peer",
        args!["--bundle", &their_bundle, "--cert", &cross_for_us],
    );
    our_register.assert_success();
    let their_register = theirs.run("register-peer", &[cross_for_them.to_str().unwrap()], &[]);

    // A gateway certificate each.
    let their_key = root.join("S-server.key");
    let their_csr = root.join("S-server.csr");
    let their_leaf = root.join("S-server.crt");
    theirs.run(
        "generate-serverkey",
        &[their_key.to_str().unwrap(), their_csr.to_str().unwrap()],
        &[],
    );
    theirs.run(
        "sign-servercert",
        &[their_csr.to_str().unwrap(), their_leaf.to_str().unwrap()],
        &[],
    );
    let our_subject = format!(
        "/O=Swaptacular Nodes Registry/OU={}/serialNumber={ours_id}",
        match flavor.ours.0 {
            "accounting-authority" => "Accounting Authorities",
            _ => "Creditors Agents",
        }
    );
    let our_csr = openssl_csr_in(&root, "T-server", "p256", &our_subject);
    let our_leaf = root.join("T-server.crt");
    ours.cmd_with_pass("sign-server", args!["--csr", &our_csr, "--out", &our_leaf])
        .assert_success();
    Pair {
        _tmp: tmp,
        ours,
        ours_id,
        theirs,
        cross_for_them,
        cross_for_us,
        their_leaf,
        our_leaf,
        our_register,
        their_register,
    }
}

fn tool_aa() -> Option<&'static Pair> {
    static PAIR: OnceLock<Option<Pair>> = OnceLock::new();
    PAIR.get_or_init(|| {
        scripts_can_run("round_trip (ca-tool accounting authority)").then(|| pair(&TOOL_AA))
    })
    .as_ref()
}

pub(crate) fn tool_ca() -> Option<&'static Pair> {
    static PAIR: OnceLock<Option<Pair>> = OnceLock::new();
    PAIR.get_or_init(|| {
        scripts_can_run("round_trip (ca-tool creditors agent)").then(|| pair(&TOOL_CA))
    })
    .as_ref()
}

/// `openssl verify -x509_strict -purpose P -trusted anchor [-untrusted cross] leaf` accepts.
#[track_caller]
fn openssl_accepts(purpose: &str, anchor: &Path, cross: Option<&Path>, leaf: &Path) {
    let mut a = args![
        "verify",
        "-x509_strict",
        "-purpose",
        purpose,
        "-trusted",
        anchor
    ];
    if let Some(c) = cross {
        a.extend(args!["-untrusted", c]);
    }
    a.push(leaf.into());
    let out = openssl(&a);
    assert!(
        out.success() && out.stdout.contains(": OK"),
        "openssl refused the chain\n{out:?}"
    );
}

/// `ca-tool verify` accepts the same chain.
#[track_caller]
fn ca_tool_accepts(purpose: &str, anchor: &Path, cross: Option<&Path>, leaf: &Path) {
    let mut a = args!["verify", "--anchor", anchor, "--purpose", purpose];
    if let Some(c) = cross {
        a.extend(args!["--untrusted", c]);
    }
    a.push(leaf.into());
    ca_tool(&a).assert_success();
}

/// The exchange itself: both register-peer commands accept, the agent learns its subnet.
fn registered(p: &Pair, subnet_for: Option<&str>) {
    assert!(
        p.their_register.contains("has been verified and stored"),
        "{}",
        p.their_register
    );
    assert!(p
        .theirs
        .dir
        .join("peers")
        .join(&p.ours_id)
        .join("sub-ca.crt")
        .exists());
    p.our_register
        .assert_stdout_contains("Registered the cross-certificate");
    if let Some(s) = subnet_for {
        p.our_register
            .assert_stdout_contains(&format!("subnet {s}"));
    }
    let list = p.ours.cmd("list", args!["--json"]);
    list.assert_success();
    let their_id = p.theirs.node_id();
    assert!(list.stdout.contains(&their_id), "{}", list.stdout);
    // Their STOMP manifest is kept for the gateway.
    let manifest = read_text(&p.ours.dir.join("peers").join(&their_id).join("stomp.toml"));
    assert!(manifest.contains("127.0.0.1:1235"), "{manifest}");
}

/// The three chains whose key identifiers openssl can match today: their leaf through
/// the cross-cert we issued under our root, and each leaf under its own root.
fn chains_without_key_identifier_dependence(p: &Pair) {
    openssl_accepts(
        "sslclient",
        &p.ours.root(),
        Some(&p.cross_for_them),
        &p.their_leaf,
    );
    openssl_accepts("sslserver", &p.theirs.root(), None, &p.their_leaf);
    openssl_accepts("sslserver", &p.ours.root(), None, &p.our_leaf);
    openssl_accepts("sslclient", &p.ours.root(), None, &p.our_leaf);
    // The project's validator agrees, on all four.
    ca_tool_accepts(
        "client",
        &p.ours.root(),
        Some(&p.cross_for_them),
        &p.their_leaf,
    );
    ca_tool_accepts(
        "client",
        &p.theirs.root(),
        Some(&p.cross_for_us),
        &p.our_leaf,
    );
    ca_tool_accepts("server", &p.theirs.root(), None, &p.their_leaf);
    ca_tool_accepts("server", &p.ours.root(), None, &p.our_leaf);
}

/// Our leaf through the peer certificate the scripts issued us, under their root:
/// openssl matches our leaf's authorityKeyIdentifier against that certificate's
/// subjectKeyIdentifier, which openssl computed as SHA-1 of our key.
fn our_leaf_through_their_cross_cert(p: &Pair) {
    openssl_accepts(
        "sslclient",
        &p.theirs.root(),
        Some(&p.cross_for_us),
        &p.our_leaf,
    );
}

#[test]
fn tool_accounting_authority_and_script_creditors_agent_register_each_other() {
    let Some(p) = tool_aa() else { return };
    registered(p, None);
    // The scripts' creditors agent took the subnet we gave it.
    let masq = read_text(
        &p.theirs
            .dir
            .join("peers")
            .join(&p.ours_id)
            .join("masq-subnet.txt"),
    );
    assert_eq!(masq.trim(), "000001");
}

#[test]
fn tool_accounting_authority_chains_pass_openssl() {
    let Some(p) = tool_aa() else { return };
    chains_without_key_identifier_dependence(p);
}

#[test]
fn tool_accounting_authority_leaf_through_their_cross_cert_passes_openssl() {
    let Some(p) = tool_aa() else { return };
    our_leaf_through_their_cross_cert(p);
}

#[test]
fn tool_creditors_agent_and_script_accounting_authority_register_each_other() {
    let Some(p) = tool_ca() else { return };
    registered(p, Some("000001"));
}

#[test]
fn tool_creditors_agent_chains_pass_openssl() {
    let Some(p) = tool_ca() else { return };
    chains_without_key_identifier_dependence(p);
}

#[test]
fn tool_creditors_agent_leaf_through_their_cross_cert_passes_openssl() {
    let Some(p) = tool_ca() else { return };
    our_leaf_through_their_cross_cert(p);
}

#[test]
fn the_scripts_refuse_a_second_root_for_a_known_node() {
    let Some(p) = tool_aa() else { return };
    // sign-peercert for a node it already signed, with a different root: refused.
    let tmp = tmp();
    let other = ToolNode::create_in(
        tmp.path(),
        "X",
        "accounting-authority",
        &["--node-id", "a1b2c3d4"],
    );
    let bundle = tmp.path().join("X.zip");
    other.export_infobundle(&bundle, "127.0.0.1:9");
    let transcript = p
        .theirs
        .run_failing("sign-peercert", &[bundle.to_str().unwrap()]);
    assert!(
        transcript.contains("has been approved already"),
        "{transcript}"
    );
}
