//! The `ca-tool` surface: every case runs on its own copy of a CA directory (node
//! `a`, with a partner, an issued server certificate and a CRL), which must stay
//! byte-for-byte unchanged, and no output file may appear.
//!
//! Run: `cargo test --test bad_input_matrix ca_tool::`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use peerlink_e2e::gateway::Net;
use peerlink_e2e::{
    args, assert_unchanged, ca_tool, openssl, pem_block, pem_encode, read_text, replace_pem_block,
    snapshot, write_passphrase, CaFixture, Outcome, WRONG_PASSPHRASE,
};
use serde_json::json;

use super::{ensure, one_line, Matrix};

/// The first line of stderr that says what went wrong.
fn error_line(out: &Outcome) -> String {
    out.stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .or_else(|| out.stderr.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .to_string()
}

/// A clean refusal: exit `code` (not a panic, not a signal) with `fragment` in stderr.
fn refused(out: &Outcome, code: i32, fragment: &str) -> Result<String, String> {
    let actual = format!("exit {:?}: {}", out.code(), error_line(out));
    let describe = || {
        format!(
            "{}\n  expected exit {code} mentioning {fragment:?}\n  got {actual}\n  stdout: {}\n  stderr: {}",
            out.command,
            out.stdout.trim(),
            out.stderr.trim()
        )
    };
    ensure(out.code() == Some(code), describe)?;
    ensure(!out.stderr.contains("panicked"), describe)?;
    ensure(
        out.stderr.to_lowercase().contains(&fragment.to_lowercase()),
        describe,
    )?;
    Ok(actual)
}

/// What the ca-tool cases share: a CA (node `a`, with a partner, an issued server
/// certificate and a CRL) that every case copies, and named inputs for the command
/// templates.
struct CaWorld {
    /// Where the cases' copies and scratch directories go.
    dir: PathBuf,
    a: CaFixture,
    inputs: BTreeMap<&'static str, OsString>,
    n: std::cell::Cell<usize>,
}

impl CaWorld {
    /// A fresh copy of `a`'s CA for one case, and a scratch directory for its files.
    fn fresh(&self) -> (CaFixture, PathBuf) {
        let n = self.n.get() + 1;
        self.n.set(n);
        let scratch = self.dir.join(format!("case-{n}"));
        fs::create_dir(&scratch).unwrap();
        (self.a.copy_to(&scratch.join("ca")), scratch)
    }

    /// `template` split on spaces, with `{ca}` (the case's CA directory), `{pass}`
    /// (its passphrase file), `{out}` (an output file in the scratch directory),
    /// `{scratch}` and the named inputs substituted.
    fn argv(&self, template: &str, ca: &CaFixture, scratch: &Path) -> Vec<OsString> {
        let value = |name: &str| -> String {
            match name {
                "ca" => ca.dir.display().to_string(),
                "pass" => ca.passphrase_file.display().to_string(),
                "out" => scratch.join("out").display().to_string(),
                "scratch" => scratch.display().to_string(),
                other => self
                    .inputs
                    .get(other)
                    .unwrap_or_else(|| panic!("no input {{{other}}}"))
                    .to_string_lossy()
                    .into_owned(),
            }
        };
        template
            .split_whitespace()
            .map(|word| {
                let mut out = String::new();
                let mut rest = word;
                while let Some(open) = rest.find('{') {
                    let close = rest[open..].find('}').expect("unclosed {") + open;
                    out.push_str(&rest[..open]);
                    out.push_str(&value(&rest[open + 1..close]));
                    rest = &rest[close + 1..];
                }
                out.push_str(rest);
                OsString::from(out)
            })
            .collect()
    }

    /// Runs `ca-tool <template>` on a fresh copy of the CA; expects a refusal with
    /// `code` and `fragment`, the copy unchanged and `{out}` not created.
    fn refuse(&self, code: i32, fragment: &str, template: &str) -> Result<String, String> {
        self.refuse_on(code, fragment, template, |_| {})
    }

    /// Like [`CaWorld::refuse`], after `prepare` has altered the fresh copy.
    fn refuse_on(
        &self,
        code: i32,
        fragment: &str,
        template: &str,
        prepare: impl FnOnce(&CaFixture),
    ) -> Result<String, String> {
        let (ca, scratch) = self.fresh();
        prepare(&ca);
        let before = snapshot(&ca.dir);
        let outcome = ca_tool(self.argv(template, &ca, &scratch));
        let actual = refused(&outcome, code, fragment)?;
        assert_unchanged(&ca.dir, &before, &outcome.command);
        let out = scratch.join("out");
        ensure(!out.exists(), || {
            format!(
                "{}: the output {} was written",
                outcome.command,
                out.display()
            )
        })?;
        Ok(actual)
    }
}

/// `sha256` of a file, lowercase hex (openssl).
fn sha256_hex(path: &Path) -> String {
    let out = openssl(args!["dgst", "-sha256", "-r", path]);
    out.assert_success();
    out.stdout.split_whitespace().next().unwrap().to_string()
}

/// A bundle made by hand with openssl (explicit node id `id`), whose self-signed
/// root is valid from `start` to `end` (`YYYYMMDDHHMMSSZ`).
fn handmade_bundle(dir: &Path, id: &str, start: &str, end: &str) -> PathBuf {
    let db = dir.join(format!("handmade-{id}"));
    fs::create_dir_all(&db).unwrap();
    let key = db.join("root.key");
    let csr = db.join("root.csr");
    openssl(args![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        format!("/O=Net/OU=old/serialNumber={id}")
    ])
    .assert_success();
    fs::write(db.join("index.txt"), "").unwrap();
    let cnf = db.join("ca.cnf");
    fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = the_ca\n[the_ca]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n\
             rand_serial = yes\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
             email_in_dn = no\n[any]\norganizationName = supplied\n\
             organizationalUnitName = supplied\nserialNumber = supplied\n[root]\n\
             basicConstraints = critical,CA:TRUE,pathlen:1\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
            d = db.display()
        ),
    )
    .unwrap();
    let cert = db.join("root.crt");
    openssl(args![
        "ca",
        "-batch",
        "-selfsign",
        "-config",
        &cnf,
        "-keyfile",
        &key,
        "-in",
        &csr,
        "-out",
        &cert,
        "-startdate",
        start,
        "-enddate",
        end,
        "-extensions",
        "root",
        "-preserveDN",
        "-notext"
    ])
    .assert_success();
    let der = db.join("root.der");
    openssl(args!["x509", "-in", &cert, "-outform", "DER", "-out", &der]).assert_success();
    let info = json!({
        "format": "peerlink-bundle/1",
        "node_id": id,
        "subject": format!("O=Net, OU=old, serialNumber={id}"),
        "root_sha256": sha256_hex(&der),
        "endpoints": [],
        "created_at": "2020-06-01T00:00:00Z",
    })
    .to_string();
    let info_file = db.join("info.json");
    fs::write(&info_file, &info).unwrap();
    let sig = db.join("info.sig");
    openssl(args![
        "dgst", "-sha256", "-sign", &key, "-out", &sig, &info_file
    ])
    .assert_success();
    let text = format!(
        "hand-made bundle\n\n{}{}{}",
        pem_encode("CERTIFICATE", &fs::read(&der).unwrap()),
        pem_encode("PEERLINK NODE INFO", info.as_bytes()),
        pem_encode("PEERLINK NODE INFO SIGNATURE", &fs::read(&sig).unwrap()),
    );
    let bundle = dir.join(format!("handmade-{id}.bundle"));
    fs::write(&bundle, text).unwrap();
    bundle
}

#[test]
fn ca_tool_bad_inputs() {
    let mut net = Net::mesh(&["a", "b"]);
    net.add_node("x"); // a node a knows nothing about
    let a = net.node("a").ca.clone();
    a.cmd_with_pass("crl", &args!["--out", net.path("a-crl.pem")])
        .assert_success();
    let dir = net.dir.clone();
    let p = |name: &str| dir.join(name);
    let mut inputs: BTreeMap<&'static str, OsString> = BTreeMap::new();
    let mut input = |name: &'static str, value: &dyn AsRef<std::ffi::OsStr>| {
        inputs.insert(name, value.as_ref().to_owned());
    };

    // Inputs (outside every CA directory).
    input(
        "wrong_pass",
        &write_passphrase(&p("wrong.pass"), WRONG_PASSPHRASE),
    );
    input("empty_pass", &write_passphrase(&p("empty.pass"), ""));
    let garbage = p("garbage.pem");
    fs::write(&garbage, "this is not PEM and not DER\n").unwrap();
    input("garbage", &garbage);
    let (_, gw_csr) = net.keygen("a", "gw2", "a-gw2");
    input("csr", &gw_csr);
    let csr_text = read_text(&gw_csr);
    let trunc_csr = p("truncated.csr");
    fs::write(&trunc_csr, &csr_text[..csr_text.len() / 2]).unwrap();
    input("trunc_csr", &trunc_csr);
    let csr_der = pem_block(&csr_text, "CERTIFICATE REQUEST");
    let trunc_der = p("truncated-csr.der");
    fs::write(&trunc_der, &csr_der[..csr_der.len() / 2]).unwrap();
    input("trunc_der", &trunc_der);
    let mut bad_sig = csr_der.clone();
    let last = bad_sig.len() - 3;
    bad_sig[last] ^= 0x01;
    let bad_sig_csr = p("bad-signature.csr");
    fs::write(
        &bad_sig_csr,
        replace_pem_block(&csr_text, "CERTIFICATE REQUEST", &bad_sig),
    )
    .unwrap();
    input("bad_sig_csr", &bad_sig_csr);
    input("b_csr", &net.keygen("b", "gw9", "b-gw9").1); // b's DN: not a's to sign
    let b_bundle = net.node("b").bundle.clone();
    input("b_bundle", &b_bundle);
    input("a_bundle", &net.node("a").bundle);
    let x_bundle = net.node("x").bundle.clone();
    input("x_bundle", &x_bundle);
    let b_text = read_text(&b_bundle);
    let trunc_bundle = p("truncated.bundle");
    fs::write(&trunc_bundle, &b_text[..b_text.len() * 2 / 3]).unwrap();
    input("trunc_bundle", &trunc_bundle);
    let foreign_sig = p("foreign-signature.bundle");
    fs::write(
        &foreign_sig,
        replace_pem_block(
            &b_text,
            "PEERLINK NODE INFO SIGNATURE",
            &pem_block(&read_text(&x_bundle), "PEERLINK NODE INFO SIGNATURE"),
        ),
    )
    .unwrap();
    input("foreign_sig", &foreign_sig);
    let huge_bundle = p("huge.bundle");
    fs::write(
        &huge_bundle,
        format!("{}\n{b_text}", "padding ".repeat(40 * 1024)),
    )
    .unwrap();
    input("huge_bundle", &huge_bundle);
    let expired = handmade_bundle(&dir, "old-node-1", "20200101000000Z", "20210101000000Z");
    input("expired_bundle", &expired);
    let valid_twin = handmade_bundle(&dir, "old-node-2", "20200101000000Z", "20350101000000Z");
    input("x_fp", &net.node("x").ca.fingerprint.replace(' ', ""));
    input("b_id", &net.id("b"));
    input("a_by_b", &net.cross_cert("a", "b"));
    input("b_by_a", &net.cross_cert("b", "a"));
    // A genuine cross-cert from b, but for x: not ours to register.
    let x_by_b = net.cross_cert("x", "b");
    net.node("b")
        .ca
        .sign_peer(&x_bundle, &x_by_b, None)
        .assert_success();
    input("x_by_b", &x_by_b);
    let cross_text = read_text(&net.cross_cert("a", "b"));
    let trunc_cert = p("truncated.crt");
    fs::write(&trunc_cert, &cross_text[..cross_text.len() / 2]).unwrap();
    input("trunc_cert", &trunc_cert);
    input("b_root", &net.node("b").ca.root_cert());
    input("a_root", &net.node("a").ca.root_cert());
    input("a_leaf", &net.node("a").server_cert);
    let cases = net.path("cases");
    fs::create_dir(&cases).unwrap();
    let w = CaWorld {
        dir: cases,
        a,
        inputs,
        n: std::cell::Cell::new(0),
    };

    let mut m = Matrix::new("ca-tool");
    // (case, exit code, fragment of the error, command)
    let table: &[(&str, i32, &str, &str)] = &[
        ("export-bundle with the wrong passphrase", 1, "wrong passphrase",
         "export-bundle --dir {ca} --out {out} --passphrase-file {wrong_pass}"),
        ("sign-server with an empty passphrase file", 1, "passphrase",
         "sign-server --dir {ca} --csr {csr} --out {out} --passphrase-file {empty_pass}"),
        ("crl with a missing passphrase file", 1, "cannot read",
         "crl --dir {ca} --out {out} --passphrase-file {scratch}/no-such.pass"),
        ("init over an existing CA", 1, "already holds a CA",
         "init --dir {ca} --org Net --unit z --passphrase-file {pass}"),
        ("export-bundle with a bad --endpoint", 1, "invalid endpoint",
         "export-bundle --dir {ca} --out {out} --endpoint no-port --passphrase-file {pass}"),
        ("sign-server, CSR neither PEM nor DER", 1, "no certificate signing request found",
         "sign-server --dir {ca} --csr {garbage} --out {out} --passphrase-file {pass}"),
        ("sign-server, truncated PEM CSR", 1, "truncated",
         "sign-server --dir {ca} --csr {trunc_csr} --out {out} --passphrase-file {pass}"),
        ("sign-server, truncated DER CSR", 1, "malformed certificate signing request",
         "sign-server --dir {ca} --csr {trunc_der} --out {out} --passphrase-file {pass}"),
        ("sign-server, CSR signature altered", 1, "signature does not verify",
         "sign-server --dir {ca} --csr {bad_sig_csr} --out {out} --passphrase-file {pass}"),
        ("sign-server, CSR for another node's DN", 1, "only signs its own name",
         "sign-server --dir {ca} --csr {b_csr} --out {out} --passphrase-file {pass}"),
        ("sign-server --days 0", 1, "between 1 and 36500",
         "sign-server --dir {ca} --csr {csr} --out {out} --days 0 --passphrase-file {pass}"),
        ("sign-server --days 4294967295", 1, "between 1 and 36500",
         "sign-server --dir {ca} --csr {csr} --out {out} --days 4294967295 --passphrase-file {pass}"),
        ("sign-server --days 4294967296 (not a u32)", 2, "--days",
         "sign-server --dir {ca} --csr {csr} --out {out} --days 4294967296 --passphrase-file {pass}"),
        ("sign-server --out in a missing directory", 1, "cannot write",
         "sign-server --dir {ca} --csr {csr} --out {scratch}/missing/gw.crt --passphrase-file {pass}"),
        ("sign-server --out is a directory", 1, "is a directory",
         "sign-server --dir {ca} --csr {csr} --out {scratch} --passphrase-file {pass}"),
        ("sign-peer, bundle neither PEM nor a bundle", 1, "malformed bundle",
         "sign-peer --dir {ca} --bundle {garbage} --out {out} --passphrase-file {pass}"),
        ("sign-peer, truncated bundle", 1, "truncated",
         "sign-peer --dir {ca} --bundle {trunc_bundle} --out {out} --passphrase-file {pass}"),
        ("sign-peer, node info signed by another node's key", 1, "signature",
         "sign-peer --dir {ca} --bundle {foreign_sig} --out {out} --passphrase-file {pass}"),
        ("sign-peer, bundle over 256 KiB", 1, "limit",
         "sign-peer --dir {ca} --bundle {huge_bundle} --out {out} --passphrase-file {pass}"),
        ("sign-peer, fingerprint read over the phone differs", 1, "fingerprint",
         "sign-peer --dir {ca} --bundle {b_bundle} --out {out} --expect-fingerprint {x_fp} --passphrase-file {pass}"),
        ("sign-peer, --expect-fingerprint not a fingerprint", 1, "64 hex digits",
         "sign-peer --dir {ca} --bundle {b_bundle} --out {out} --expect-fingerprint AB12 --passphrase-file {pass}"),
        ("sign-peer, our own bundle", 1, "own bundle",
         "sign-peer --dir {ca} --bundle {a_bundle} --out {out} --passphrase-file {pass}"),
        ("sign-peer --days 0", 1, "between 1 and 36500",
         "sign-peer --dir {ca} --bundle {x_bundle} --out {out} --days 0 --passphrase-file {pass}"),
        ("register-peer, a CSR given as the certificate", 1, "no certificate found",
         "register-peer --dir {ca} --bundle {b_bundle} --cert {csr}"),
        ("register-peer, truncated certificate", 1, "truncated",
         "register-peer --dir {ca} --bundle {b_bundle} --cert {trunc_cert}"),
        ("register-peer, the cross-cert we issued instead of theirs", 1, "not a valid cross-certificate",
         "register-peer --dir {ca} --bundle {b_bundle} --cert {b_by_a}"),
        ("register-peer, the partner's cross-cert for another node", 1, "not a valid cross-certificate",
         "register-peer --dir {ca} --bundle {b_bundle} --cert {x_by_b}"),
        ("register-peer, cert and bundle of different partners", 1, "not a valid cross-certificate",
         "register-peer --dir {ca} --bundle {x_bundle} --cert {a_by_b}"),
        ("revoke an unknown serial", 1, "no certificate with serial",
         "revoke --dir {ca} --serial 0123456789abcdef --passphrase-file {pass}"),
        ("revoke a serial that is not hex", 1, "serial",
         "revoke --dir {ca} --serial not-hex! --passphrase-file {pass}"),
        ("revoke an unknown peer", 1, "unknown peer",
         "revoke --dir {ca} --peer 0123456789abcdef0123456789abcdef --passphrase-file {pass}"),
        ("revoke with an unknown reason", 1, "unknown reason",
         "revoke --dir {ca} --peer {b_id} --reason bored --passphrase-file {pass}"),
        ("crl --out in a missing directory (crl.pem kept)", 1, "cannot write",
         "crl --dir {ca} --out {scratch}/missing/crl.pem --passphrase-file {pass}"),
        ("crl --days 0", 1, "between 1 and 36500",
         "crl --dir {ca} --out {out} --days 0 --passphrase-file {pass}"),
        ("verify --at not an RFC 3339 time", 1, "RFC 3339",
         "verify --anchor {a_root} --at yesterday {a_leaf}"),
        ("verify, anchor neither PEM nor DER", 1, "no certificate found",
         "verify --anchor {garbage} {a_leaf}"),
        ("verify, CRL neither PEM nor DER", 1, "no CRL found",
         "verify --anchor {a_root} --crl {garbage} {a_leaf}"),
        ("verify a chain to the wrong anchor", 3, "INVALID",
         "verify --anchor {b_root} {a_leaf}"),
        ("info --dir that does not exist", 1, "not a CA directory",
         "info --dir {scratch}/nowhere"),
        ("list with an unknown option", 2, "unexpected argument",
         "list --dir {ca} --colour"),
    ];
    for (case, code, fragment, template) in table {
        m.case(case, &format!("exit {code}, '{fragment}'"), || {
            w.refuse(*code, fragment, template)
        });
    }
    m.case(
        "sign-peer, bundle whose root has expired",
        "exit 1, 'expired'",
        || {
            // The same hand-made construction with a current root is a valid bundle,
            // so the refusal is about the expiry.
            ca_tool(args!["show-bundle", "--bundle", &valid_twin]).assert_success();
            let sign = "sign-peer --dir {ca} --bundle {expired_bundle} --out {out} \
                        --passphrase-file {pass}";
            w.refuse(1, "expired", sign)
        },
    );
    m.case(
        "export-bundle with a corrupt root key file",
        "exit 1, 'not an encrypted private key'",
        || {
            w.refuse_on(
                1,
                "not an encrypted private key",
                "export-bundle --dir {ca} --out {out} --passphrase-file {pass}",
                |ca| fs::write(ca.root_key(), "garbage\n").unwrap(),
            )
        },
    );
    for (case, node_id, fragment) in [
        ("init with an empty passphrase", None, "passphrase is empty"),
        (
            "init with a key-derived-looking explicit node id",
            Some("0123456789abcdef0123456789abcdef"),
            "key-derived",
        ),
    ] {
        m.case(case, &format!("exit 1, '{fragment}', no CA"), || {
            let (ca, s) = w.fresh();
            let new = s.join("new-ca");
            let mut argv = args!["init", "--dir", &new, "--org", "Net", "--unit", "z"];
            match node_id {
                Some(id) => argv.extend(args![
                    "--node-id",
                    id,
                    "--passphrase-file",
                    &ca.passphrase_file
                ]),
                None => argv.extend(args!["--passphrase-file", &w.inputs["empty_pass"]]),
            }
            let out = ca_tool(&argv);
            let actual = refused(&out, 1, fragment)?;
            ensure(
                !new.join("root-ca.crt").exists() && !new.join("private").exists(),
                || format!("init left a CA behind in {}", new.display()),
            )?;
            Ok(actual)
        });
    }
    // An output path inside the CA directory must not replace the CA's own files:
    // the root certificate, the (only) encrypted root key, the issuance database.
    for (case, template) in [
        (
            "sign-server --out = the CA's own root-ca.crt",
            "sign-server --dir {ca} --csr {csr} --out {ca}/root-ca.crt --passphrase-file {pass}",
        ),
        (
            "export-bundle --out = the CA's own private/root-ca.key",
            "export-bundle --dir {ca} --out {ca}/private/root-ca.key --passphrase-file {pass}",
        ),
        (
            "crl --out = the CA's own ca.db",
            "crl --dir {ca} --out {ca}/ca.db --passphrase-file {pass}",
        ),
    ] {
        m.case(case, "exit 1, refuses to overwrite the CA", || {
            let (ca, scratch) = w.fresh();
            let before = snapshot(&ca.dir);
            let out = ca_tool(w.argv(template, &ca, &scratch));
            let actual = format!(
                "exit {:?}: {}",
                out.code(),
                one_line(&out.all_output(), 150)
            );
            ensure(!out.success(), || {
                let after = ca.cmd("info", &[]);
                let list = ca.cmd("list", &[]);
                format!(
                    "{}\n  exited 0 and replaced a file of the CA; afterwards `ca-tool info` \
                     says:\n{}{}  and `ca-tool list`: {}",
                    out.command,
                    after.stdout,
                    after.stderr,
                    one_line(&list.all_output(), 200)
                )
            })?;
            ensure(out.code() != Some(101), || format!("panicked: {actual}"))?;
            assert_unchanged(&ca.dir, &before, &out.command);
            Ok(actual)
        });
    }
    m.finish(30);
}
