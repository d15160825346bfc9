//! Info-bundles a stranger could send: every one is refused with a message
//! naming the problem, exit 1, the CA directory byte for byte as it was, and no
//! output file.

use std::io::Write;

use super::*;

/// A ca-tool accounting authority (P-256, fast) and a genuine agent's info-bundle.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    aa: ToolNode,
    /// The members of a genuine creditors agent's info-bundle.
    members: Vec<(String, Vec<u8>)>,
}

fn setup() -> Setup {
    let tmp = tmp();
    let root = tmp.path().to_path_buf();
    let pass = write_passphrase(&root.join("pass"), &format!("{PASS}\n"));
    let aa = ToolNode::create(
        &root.join("AA"),
        &pass,
        "accounting-authority",
        &["--node-id", "0a0b0c0d", "--key-type", "ecdsa-p256"],
    );
    let agent = ToolNode::create(
        &root.join("CA"),
        &pass,
        "creditors-agent",
        &["--key-type", "ecdsa-p256"],
    );
    let bundle = root.join("agent.zip");
    agent.export_infobundle(&bundle, "127.0.0.1:1");
    let members = unzip(&read_bytes(&bundle));
    Setup {
        _tmp: tmp,
        root,
        aa,
        members,
    }
}

/// Another creditors agent in `dir/O` and its info-bundle `dir/o.zip`.
fn other_agent(dir: &Path) -> (ToolNode, PathBuf) {
    let other = ToolNode::create_in(dir, "O", "creditors-agent", &["--key-type", "ecdsa-p256"]);
    let bundle = dir.join("o.zip");
    other.export_infobundle(&bundle, "h:1");
    (other, bundle)
}

fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("zip");
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).expect("member");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("read");
            (f.name().expect("name").to_string(), data)
        })
        .collect()
}

fn zip_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(name.as_str(), opts).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

/// `members` with `name` replaced by `data` (or removed).
fn with(
    members: &[(String, Vec<u8>)],
    name: &str,
    data: Option<Vec<u8>>,
) -> Vec<(String, Vec<u8>)> {
    let mut m: Vec<_> = members.iter().filter(|(n, _)| n != name).cloned().collect();
    if let Some(d) = data {
        m.push((name.to_string(), d));
    }
    m
}

/// Renames member `from` to `to` in the raw bytes (zip writers refuse hostile names).
fn renamed(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    for (sig, off) in [(&b"PK\x03\x04"[..], 30), (&b"PK\x01\x02"[..], 46)] {
        for i in 0..out.len().saturating_sub(off + from.len()) {
            if &out[i..i + 4] == sig && &out[i + off..i + off + from.len()] == from.as_bytes() {
                out[i + off..i + off + from.len()].copy_from_slice(to.as_bytes());
            }
        }
    }
    out
}

#[test]
fn hostile_info_bundles_are_refused_and_change_nothing() {
    let s = setup();
    let m = &s.members;
    let nodeinfo = m
        .iter()
        .find(|(n, _)| n == "nodeinfo.zip")
        .unwrap()
        .1
        .clone();
    let mut cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "truncated",
            zip_of(m)[..200].to_vec(),
            &["not a readable zip", "zip archive"],
        ),
        (
            "zip magic then junk",
            b"PK\x03\x04garbage".to_vec(),
            &["not a readable zip"],
        ),
        (
            "bomb",
            zip_of(&with(m, "nodeinfo.signature", Some(vec![0u8; 8 << 20]))),
            &["larger than"],
        ),
        (
            "oversized archive",
            {
                let noise: Vec<u8> = (0..300_000u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                zip_of(&with(m, "nodeinfo.signature", Some(noise)))
            },
            &["limit", "larger than"],
        ),
        (
            "missing CSR",
            zip_of(&with(m, "root-ca.csr", None)),
            &["no root-ca.csr"],
        ),
        (
            "extra member",
            zip_of(&with(m, "evil.sh", Some(b"rm -rf /".to_vec()))),
            &["unexpected member"],
        ),
        (
            "path traversal",
            renamed(
                &zip_of(&with(m, "xxxxxxxxxxxxxxxx", Some(b"x".to_vec()))),
                "xxxxxxxxxxxxxxxx",
                "../../etc/passwd",
            ),
            &["not a plain relative path"],
        ),
        (
            "absolute path",
            renamed(
                &zip_of(&with(m, "xxxxxxxxxxx", Some(b"x".to_vec()))),
                "xxxxxxxxxxx",
                "/etc/passwd",
            ),
            &["absolute path"],
        ),
        (
            "duplicate member",
            renamed(
                &zip_of(&with(m, "root-ca.crx", Some(b"x".to_vec()))),
                "root-ca.crx",
                "root-ca.crt",
            ),
            &["appears twice"],
        ),
        (
            "tampered node info",
            {
                let mut other = unzip(&nodeinfo);
                other[0].1.extend_from_slice(b"\nlogin = \"x\"\n");
                zip_of(&with(m, "nodeinfo.zip", Some(zip_of(&other))))
            },
            &["does not verify"],
        ),
        (
            "node info with traversal",
            {
                let evil = renamed(
                    &zip_of(&[("xxxxxxxx".to_string(), b"x".to_vec())]),
                    "xxxxxxxx",
                    "../../up",
                );
                zip_of(&with(m, "nodeinfo.zip", Some(evil)))
            },
            // The signature is checked before the node info is read.
            &["does not verify", "not a plain relative path"],
        ),
        (
            "not a certificate",
            zip_of(&with(m, "root-ca.crt", Some(b"hello".to_vec()))),
            &["no certificate"],
        ),
    ];
    // A CSR for another key (another agent's bundle's CSR).
    let tmp2 = tmp();
    let (_other, other_bundle) = other_agent(tmp2.path());
    let other_csr = unzip(&read_bytes(&other_bundle))
        .into_iter()
        .find(|(n, _)| n == "root-ca.csr")
        .unwrap()
        .1;
    cases.push((
        "someone else's CSR",
        zip_of(&with(m, "root-ca.csr", Some(other_csr))),
        &["different key"],
    ));
    // A peerlink text bundle that is no bundle at all.
    cases.push((
        "garbage",
        b"\x00\x01\x02".to_vec(),
        &["malformed", "bundle"],
    ));

    for (what, bytes, fragments) in cases {
        let bundle = s.root.join(format!("{}.zip", what.replace(' ', "-")));
        write_file(&bundle, &bytes, 0o644);
        let out = s.root.join("out.crt");
        let before = snapshot(&s.aa.dir);
        let o = s.aa.cmd_with_pass(
            "sign-peer",
            args!["--bundle", &bundle, "--out", &out, "--subnet", "000001"],
        );
        o.assert_failure_with_any(fragments);
        assert_eq!(o.code(), Some(1), "{what}: {o:?}");
        assert_unchanged(&s.aa.dir, &before, what);
        assert!(!out.exists(), "{what}: --out was written");
        // show-bundle and register-peer refuse it as well.
        ca_tool(args!["show-bundle", "--bundle", &bundle]).assert_failure_with_any(fragments);
        let r = s.aa.cmd(
            "register-peer",
            args!["--bundle", &bundle, "--cert", &bundle],
        );
        r.assert_failure();
        assert_unchanged(&s.aa.dir, &before, what);
    }
}

#[test]
fn swaptacular_rules_are_enforced_when_signing() {
    let s = setup();
    let bundle = s.root.join("agent.zip");
    let out = s.root.join("x.crt");
    let before = snapshot(&s.aa.dir);
    let sign = |extra: Vec<std::ffi::OsString>| {
        let mut a = args!["--bundle", &bundle, "--out", &out];
        a.extend(extra);
        s.aa.cmd_with_pass("sign-peer", a)
    };
    sign(args![]).assert_failure_with("--subnet");
    sign(args!["--subnet", "00001"]).assert_failure_with("6 lowercase hex");
    sign(args!["--subnet", "000001", "--days", "3650"]).assert_failure_with("500 years");
    assert_unchanged(&s.aa.dir, &before, "refused sign-peer");
    assert!(!out.exists());
    sign(args!["--subnet", "000001"]).assert_success();
    // The subnet is taken now: another agent cannot get it.
    let tmp2 = tmp();
    let (other, other_bundle) = other_agent(tmp2.path());
    let o = s.aa.cmd_with_pass(
        "sign-peer",
        args![
            "--bundle",
            &other_bundle,
            "--out",
            tmp2.path().join("y.crt"),
            "--subnet",
            "000001"
        ],
    );
    o.assert_failure_with("already given");
    // Agents do not sign agents; a default-profile CA does not sign Swaptacular nodes.
    other
        .cmd_with_pass(
            "sign-peer",
            args!["--bundle", &bundle, "--out", tmp2.path().join("z.crt")],
        )
        .assert_failure_with("accounting authorities with agents only");
    let plain = CaFixture::init(&tmp2.path().join("P"), "Net", "gw", None, None, &other.pass);
    plain
        .cmd_with_pass(
            "sign-peer",
            &args!["--bundle", &bundle, "--out", tmp2.path().join("w.crt")],
        )
        .assert_failure_with("--profile swaptacular");
    plain
        .cmd_with_pass(
            "export-bundle",
            &args![
                "--format",
                "swaptacular",
                "--out",
                tmp2.path().join("p.zip"),
                "--stomp-endpoint",
                "h:1"
            ],
        )
        .assert_failure_with("--profile swaptacular");
}

#[test]
fn the_swaptacular_profile_refuses_what_swaptacular_cannot_use() {
    let tmp = tmp();
    let pass = write_passphrase(&tmp.path().join("pass"), &format!("{PASS}\n"));
    let init = |extra: &[&str]| {
        let mut a = args![
            "init",
            "--dir",
            tmp.path().join("n"),
            "--profile",
            "swaptacular",
            "--passphrase-file",
            &pass
        ];
        a.extend(extra.iter().map(std::ffi::OsString::from));
        ca_tool(&a)
    };
    init(&["--node-type", "accounting-authority"]).assert_failure_with("--node-id");
    init(&["--node-type", "accounting-authority", "--node-id", "12345"])
        .assert_failure_with("8 lowercase hex");
    init(&["--node-type", "creditors-agent", "--node-id", "abc"])
        .assert_failure_with("derived from its root key");
    init(&["--node-type", "debtors-agent", "--key-type", "ed25519"]).assert_failure_with("SHA-256");
    init(&[]).assert_failure();
    assert!(!tmp.path().join("n").exists());
    // The default profile keeps its 100-year cap.
    ca_tool(args![
        "init",
        "--dir",
        tmp.path().join("d"),
        "--org",
        "Net",
        "--unit",
        "gw",
        "--days",
        "365000",
        "--passphrase-file",
        &pass
    ])
    .assert_failure_with("36500");
    // A debtors agent made by the profile: 1000 years, O and OU set, id from the key.
    let ok = init(&["--node-type", "debtors-agent", "--key-type", "ecdsa-p256"]);
    ok.assert_success();
    ok.assert_stdout_contains("OU=Debtors Agents");
    let end = openssl(args![
        "x509",
        "-in",
        tmp.path().join("n/root-ca.crt"),
        "-noout",
        "-enddate"
    ]);
    let year: i32 = end
        .stdout
        .trim()
        .rsplit(' ')
        .nth(1)
        .and_then(|y| y.parse().ok())
        .expect("year");
    assert!(year > 2900, "{}", end.stdout);
}
