//! The bad-input matrix (issue 6): enumerated bad inputs to `ca-tool`, to the peer
//! link and to the gateway's API. Each case states the action, the expected
//! refusal (exit code, TLS refusal reason or Goodbye, HTTP status) and a fragment of
//! the message that must explain it, and checks that nothing changed:
//!
//! - `ca-tool`: every case runs on its own copy of a CA directory (a node with a
//!   partner, a server certificate and a CRL); the copy must be byte-for-byte
//!   unchanged (`snapshot`/`assert_unchanged`) and no output file may appear.
//! - the link: gateway `a` is linked to `b`; the `a`–`b` link must stay the same
//!   link (same `since` on both sides, `b` untouched) and `a`'s refusal counters may
//!   move only by the expected reason.
//! - the API: `a`'s inbox (2 messages from `b`) and outbox (3 messages for `c`, whose
//!   gateway is down) must be unchanged, through the API and in the SQLite store
//!   (every table but the link leases, which the gateway renews on its own).
//!
//! Every case can fail on its own; all of them run, then a table (case, expected,
//! actual) is printed and the test fails if any case did. Run `cargo build
//! --workspace --bins` first.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{field, refusals, Net, WAIT};
use peerlink_e2e::messaging::{Api, Outgoing, Response};
use peerlink_e2e::{
    args, assert_unchanged, ca_tool, openssl, pem_block, pem_encode, read_text, replace_pem_block,
    run, snapshot, write_file, write_passphrase, CaFixture, Outcome, WRONG_PASSPHRASE,
};
use peerlink_tls::{NodeTrust, PeerTls, ServerIdentity};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

// ---------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------

struct Row {
    case: String,
    expected: String,
    actual: String,
    failure: Option<String>,
}

/// The cases of one surface, run one by one; a failing case does not stop the others.
struct Matrix {
    surface: &'static str,
    rows: Vec<Row>,
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

fn one_line(s: &str, max: usize) -> String {
    let s: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

impl Matrix {
    fn new(surface: &'static str) -> Matrix {
        Matrix {
            surface,
            rows: Vec::new(),
        }
    }

    /// Runs one case. `check` returns what actually happened (Ok when it is what
    /// was expected and nothing changed) or why the case fails.
    fn case(&mut self, case: &str, expected: &str, check: impl FnOnce() -> Result<String, String>) {
        let n = self.rows.len() + 1;
        eprintln!("--- {} case {n}: {case}", self.surface);
        let started = Instant::now();
        let (actual, failure) = match std::panic::catch_unwind(AssertUnwindSafe(check)) {
            Ok(Ok(actual)) => (actual, None),
            Ok(Err(why)) => (one_line(&why, 200), Some(why)),
            Err(e) => {
                let why = panic_text(&*e);
                (one_line(&why, 200), Some(why))
            }
        };
        eprintln!(
            "    {} in {:.1} s: {actual}",
            if failure.is_some() { "FAILED" } else { "ok" },
            started.elapsed().as_secs_f64()
        );
        self.rows.push(Row {
            case: format!("{n:2}. {case}"),
            expected: expected.to_string(),
            actual,
            failure,
        });
    }

    /// Prints the table; fails when a case failed or there are fewer than `min`.
    fn finish(self, min: usize) {
        let mut table = format!(
            "\n==== bad-input matrix: {} ({} cases) ====\n",
            self.surface,
            self.rows.len()
        );
        let w = self.rows.iter().map(|r| r.case.len()).max().unwrap_or(0);
        let we = self
            .rows
            .iter()
            .map(|r| r.expected.chars().count())
            .max()
            .unwrap_or(0);
        let _ = writeln!(table, "     {:w$} | {:we$} | actual", "case", "expected");
        for r in &self.rows {
            let _ = writeln!(
                table,
                "{} {:w$} | {:we$} | {}",
                if r.failure.is_some() { "FAIL" } else { "  ok" },
                r.case,
                r.expected,
                one_line(&r.actual, 110)
            );
        }
        println!("{table}");
        let failed: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.failure.as_ref().map(|f| format!("{}:\n{f}", r.case)))
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} {} cases failed:\n\n{}\n{table}",
            failed.len(),
            self.rows.len(),
            self.surface,
            failed.join("\n\n")
        );
        assert!(
            self.rows.len() >= min,
            "only {} {} cases",
            self.rows.len(),
            self.surface
        );
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

// ---------------------------------------------------------------------------
// ca-tool
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// The link
// ---------------------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A link opened with a partner's real certificates (through `peerlink-tls`), on
/// which the test writes `peerlink/1` frames by hand.
struct RawPeer {
    io: Box<dyn Io>,
}

fn frame(frame_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![frame_type, 0, 0, 0];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn hello_frame(node_id: &str, version: u16) -> Vec<u8> {
    let json = json!({
        "version": version,
        "node_id": node_id,
        "max_payload": 1_114_112,
        "heartbeat_ms": 500,
        "epoch": "matrixraw1",
    });
    frame(0x01, json.to_string().as_bytes())
}

impl RawPeer {
    async fn connect(net: &Net, node: &str, to: &str) -> Result<RawPeer, String> {
        let n = net.node(node);
        let trust = Arc::new(
            NodeTrust::load(&n.ca.dir, &BTreeMap::new())
                .await
                .map_err(|e| format!("load {node}'s trust: {e}"))?,
        );
        let identity = Arc::new(
            ServerIdentity::load(&n.server_cert, &n.server_key, &trust)
                .map_err(|e| format!("load {node}'s identity: {e}"))?,
        );
        let tls = PeerTls::new(trust, identity).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", net.node(to).port))
            .await
            .map_err(|e| format!("connect to {to}: {e}"))?;
        let stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(tcp, &net.id(to)))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake with {to}: {e}"))?;
        Ok(RawPeer {
            io: Box::new(stream),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.io.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// Every frame the gateway sends until it closes the stream (bounded): the types
    /// seen, and its Goodbye (code, reason) if it sent one.
    async fn until_closed(&mut self) -> Result<(Vec<u8>, Option<(u16, String)>), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut types = Vec::new();
        let mut goodbye = None;
        loop {
            let mut head = [0u8; 8];
            let read = tokio::time::timeout_at(deadline, self.io.read_exact(&mut head)).await;
            match read {
                Err(_) => {
                    return Err(format!(
                        "the gateway did not close the link (frames {types:?})"
                    ))
                }
                Ok(Err(_)) => return Ok((types, goodbye)),
                Ok(Ok(_)) => {}
            }
            let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
            if len > 4 * 1024 * 1024 {
                return Err(format!("the gateway sent a frame of {len} bytes"));
            }
            let mut payload = vec![0u8; len];
            match tokio::time::timeout_at(deadline, self.io.read_exact(&mut payload)).await {
                Err(_) => return Err("the gateway stalled inside a frame".into()),
                Ok(Err(_)) => return Ok((types, goodbye)),
                Ok(Ok(_)) => {}
            }
            types.push(head[0]);
            if head[0] == 0x05 && payload.len() >= 2 {
                goodbye = Some((
                    u16::from_be_bytes([payload[0], payload[1]]),
                    String::from_utf8_lossy(&payload[2..]).into_owned(),
                ));
            }
        }
    }
}

/// What must not move when a refuses someone: the a–b link (both ends, same
/// `since`, no refusal recorded), a's counters (but for the expected reason) and
/// a's message store (every table but the link leases).
struct LinkBaseline {
    ab: String,
    ba: String,
    counters: BTreeMap<String, u64>,
    store: BTreeMap<String, Vec<String>>,
}

fn link_baseline(net: &Net, rt: &tokio::runtime::Runtime) -> Result<LinkBaseline, String> {
    let ab = net.check_state("a", "b", &["connected"])?;
    let ba = net.check_state("b", "a", &["connected"])?;
    Ok(LinkBaseline {
        ab: field(&ab, "since").into(),
        ba: field(&ba, "since").into(),
        counters: refusals(&net.try_status("a")?),
        store: store_rows(rt, &net.path("a-gateway.db"))?,
    })
}

impl LinkBaseline {
    /// Waits until a's counters are the baseline plus one `reason` (or exactly the
    /// baseline), then checks that the a–b link and a's store are untouched.
    fn check(
        &self,
        net: &mut Net,
        rt: &tokio::runtime::Runtime,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let mut want = self.counters.clone();
        if let Some(r) = reason {
            *want.entry(r.to_string()).or_insert(0) += 1;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            net.assert_alive("a");
            let got = refusals(&net.try_status("a")?);
            if got == want {
                break;
            }
            let too_many = got.iter().any(|(k, v)| v > want.get(k).unwrap_or(&0));
            if too_many || Instant::now() >= deadline {
                return Err(format!(
                    "a's refused_handshakes should be {want:?}, are {got:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (x, y, since) in [("a", "b", &self.ab), ("b", "a", &self.ba)] {
            let p = net.check_state(x, y, &["connected"])?;
            ensure(field(&p, "since") == since, || {
                format!("the {x}–{y} link was replaced: {p:#}")
            })?;
            ensure(p["last_refusal"].is_null(), || {
                format!("{x}'s entry for {y} got a refusal: {p:#}")
            })?;
        }
        let store = store_rows(rt, &net.path("a-gateway.db"))?;
        ensure(store == self.store, || {
            let changed: Vec<String> = store
                .iter()
                .filter(|(t, rows)| self.store.get(*t) != Some(rows))
                .map(|(t, rows)| format!("{t}: {:?} -> {rows:?}", self.store.get(t)))
                .collect();
            format!("a's message store changed: {}", changed.join("; "))
        })
    }
}

/// `timeout 10 openssl s_client -connect <a> -CAfile <a's root> <extra>` (no ALPN
/// unless `extra` has one).
fn s_client(net: &Net, extra: &[OsString]) -> Outcome {
    let a = net.node("a");
    let mut cmd = Command::new("timeout");
    cmd.args(args![
        "10",
        "openssl",
        "s_client",
        "-connect",
        a.endpoint(),
        "-CAfile",
        a.ca.root_cert()
    ]);
    cmd.args(extra);
    run(&mut cmd)
}

/// The newest "refused handshake" line of a's log with `reason`.
fn refusal_line(net: &Net, reason: &str) -> Result<String, String> {
    net.log_lines("a", &["refused handshake", &format!("reason=\"{reason}\"")])
        .pop()
        .ok_or_else(|| format!("a logged no refused handshake with reason {reason}"))
}

/// An s_client attempt that a must refuse with `reason`, its log line mentioning
/// `fragment`, leaving everything else as it was.
fn tls_refusal(
    net: &mut Net,
    rt: &tokio::runtime::Runtime,
    reason: &str,
    fragment: &str,
    extra: &[OsString],
) -> Result<String, String> {
    let base = link_baseline(net, rt)?;
    let out = s_client(net, extra);
    base.check(net, rt, Some(reason))?;
    let line = refusal_line(net, reason)?;
    ensure(
        line.to_lowercase().contains(&fragment.to_lowercase()),
        || format!("a's log line does not mention {fragment:?}: {line}"),
    )?;
    let detail = line.split_once("detail=").map_or(line.as_str(), |(_, d)| d);
    Ok(format!(
        "s_client {}; refused {reason}: {}",
        out.status,
        one_line(detail, 90)
    ))
}

/// A raw link as c that sends `frames` after its Hello; a must close it with
/// Goodbye `code` whose reason mentions `fragment`, log why (a "link down" line for
/// c), and leave the rest alone.
fn frame_refusal(
    net: &mut Net,
    rt: &tokio::runtime::Runtime,
    frames: &[u8],
    code: u16,
    fragment: &str,
) -> Result<String, String> {
    let base = link_baseline(net, rt)?;
    let c_id = net.id("c");
    let peer = format!("peer={c_id}");
    let logged = || net_lines(net, &["link down", &peer, fragment]);
    let lines_before = logged();
    let (types, goodbye) = rt.block_on(async {
        let mut c = RawPeer::connect(net, "c", "a").await?;
        let mut bytes = hello_frame(&c_id, 1);
        bytes.extend_from_slice(frames);
        c.send(&bytes).await?;
        c.until_closed().await
    })?;
    let (got_code, reason) =
        goodbye.ok_or_else(|| format!("a closed the link without a Goodbye (frames {types:?})"))?;
    let deadline = Instant::now() + WAIT;
    while logged() <= lines_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut problems = Vec::new();
    if got_code != code || !reason.contains(fragment) {
        problems.push(format!(
            "expected Goodbye {code} mentioning {fragment:?}, got Goodbye {got_code}: {reason}"
        ));
    }
    if logged() <= lines_before {
        problems.push(format!(
            "a logged no \"link down\" line for c mentioning {fragment:?}"
        ));
    }
    if let Err(e) = base.check(net, rt, None) {
        problems.push(e);
    }
    ensure(problems.is_empty(), || problems.join("\n"))?;
    Ok(format!(
        "Goodbye {got_code} '{}'; logged",
        one_line(&reason, 60)
    ))
}

/// How many lines of a's log contain every one of `fragments`.
fn net_lines(net: &Net, fragments: &[&str]) -> usize {
    net.log_lines("a", fragments).len()
}

#[test]
fn link_bad_inputs() {
    let mut net = Net::mesh(&["a", "b", "c"]);
    net.add_node("d"); // nobody's partner
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = net.node("c");
    let (c_cert, c_key) = (c.server_cert.clone(), c.server_key.clone());
    let c_by_a = net.cross_cert("c", "a");
    let c_id = net.id("c");
    let alpn = args!["-alpn", "peerlink/1"];
    let as_c = |more: &[OsString]| -> Vec<OsString> {
        let mut v = args!["-cert", &c_cert, "-key", &c_key, "-cert_chain", &c_by_a];
        v.extend_from_slice(more);
        v
    };
    // Certificates made for the cases.
    let (k1, csr1) = net.keygen("c", "expired", "c-expired");
    let expired = net.path("c-expired.crt");
    net.openssl_sign_leaf_dated("c", &csr1, &expired, "20200101000000Z", "20200201000000Z");
    let (k2, csr2) = net.keygen("c", "future", "c-future");
    let future = net.path("c-future.crt");
    net.openssl_sign_leaf_dated("c", &csr2, &future, "20400101000000Z", "20410101000000Z");
    let (k3, csr3) = net.keygen("c", "serveronly", "c-serveronly");
    let server_only = net.path("c-serveronly.crt");
    {
        let key = net.decrypted_root_key("c");
        let ext = net.path("serveronly.ext");
        fs::write(
            &ext,
            "[leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        )
        .unwrap();
        openssl(args![
            "x509",
            "-req",
            "-in",
            &csr3,
            "-CA",
            net.node("c").ca.root_cert(),
            "-CAkey",
            &key,
            "-set_serial",
            "0x5eed0a",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-extensions",
            "leaf",
            "-out",
            &server_only
        ])
        .assert_success();
    }
    let (k4, csr4) = net.keygen("b", "impostor", "c-claims-b");
    let impostor = net.path("c-claims-b.crt");
    net.openssl_sign_leaf("c", &csr4, &impostor);
    let (self_key, self_cert) = (net.path("self.key"), net.path("self.crt"));
    openssl(args![
        "req",
        "-x509",
        "-days",
        "1",
        "-nodes",
        "-keyout",
        &self_key,
        "-out",
        &self_cert,
        "-subj",
        net.node("b").ca.openssl_subject(Some("selfsigned")),
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256"
    ])
    .assert_success();
    let d = net.node("d");
    let (d_cert, d_key) = (d.server_cert.clone(), d.server_key.clone());
    let laptop = net.node("a").ca.copy_to(&net.path("a-laptop-copy"));
    let d_by_a = net.path("d-by-a-copy.crt");
    laptop
        .sign_peer(&net.node("d").bundle, &d_by_a, None)
        .assert_success();
    let a = net.node("a");
    let (a_cert, a_key) = (a.server_cert.clone(), a.server_key.clone());
    let long_chain = net.path("c-long-chain.pem");
    fs::write(
        &long_chain,
        [
            c_by_a.clone(),
            net.node("b").ca.root_cert(),
            net.cross_cert("b", "a"),
            net.node("d").ca.root_cert(),
            net.node("a").ca.root_cert(),
        ]
        .iter()
        .map(|p| read_text(p))
        .collect::<String>(),
    )
    .unwrap();

    let mut m = Matrix::new("link");
    let n = &mut net;
    m.case(
        "no client certificate",
        "TLS refusal no_certificate",
        || tls_refusal(n, &rt, "no_certificate", "no certificate", &alpn),
    );
    m.case(
        "self-signed certificate with b's name (wrong CA)",
        "TLS refusal unknown_issuer",
        || {
            let mut x = args!["-cert", &self_cert, "-key", &self_key];
            x.extend_from_slice(&alpn);
            tls_refusal(n, &rt, "unknown_issuer", "issuer", &x)
        },
    );
    m.case(
        "unregistered partner with a cross-cert a's node_dir never saw",
        "TLS refusal unknown_peer",
        || {
            let mut x = args!["-cert", &d_cert, "-key", &d_key, "-cert_chain", &d_by_a];
            x.extend_from_slice(&alpn);
            tls_refusal(n, &rt, "unknown_peer", "not a registered partner", &x)
        },
    );
    m.case("expired client certificate", "TLS refusal expired", || {
        let mut x = args!["-cert", &expired, "-key", &k1, "-cert_chain", &c_by_a];
        x.extend_from_slice(&alpn);
        tls_refusal(n, &rt, "expired", "expired", &x)
    });
    m.case(
        "client certificate not yet valid",
        "TLS refusal not_yet_valid",
        || {
            let mut x = args!["-cert", &future, "-key", &k2, "-cert_chain", &c_by_a];
            x.extend_from_slice(&alpn);
            tls_refusal(n, &rt, "not_yet_valid", "valid", &x)
        },
    );
    m.case(
        "client certificate without clientAuth",
        "TLS refusal eku",
        || {
            let mut x = args!["-cert", &server_only, "-key", &k3, "-cert_chain", &c_by_a];
            x.extend_from_slice(&alpn);
            tls_refusal(n, &rt, "eku", "clientAuth", &x)
        },
    );
    m.case(
        "c's root issues a certificate with b's name",
        "TLS refusal name_constraint",
        || {
            let mut x = args!["-cert", &impostor, "-key", &k4, "-cert_chain", &c_by_a];
            x.extend_from_slice(&alpn);
            tls_refusal(n, &rt, "name_constraint", "constraint", &x)
        },
    );
    m.case(
        "a's own gateway certificate",
        "TLS refusal own_node",
        || {
            let mut x = args!["-cert", &a_cert, "-key", &a_key];
            x.extend_from_slice(&alpn);
            tls_refusal(n, &rt, "own_node", "own root", &x)
        },
    );
    m.case(
        "chain of 5 certificates besides the leaf",
        "TLS refusal chain_too_long",
        || {
            let mut x = args!["-cert", &c_cert, "-key", &c_key, "-cert_chain", &long_chain];
            x.extend_from_slice(&alpn);
            tls_refusal(n, &rt, "chain_too_long", "at most 4", &x)
        },
    );
    m.case("TLS 1.2 only", "TLS refusal tls_error", || {
        let mut x = as_c(&alpn);
        x.push("-tls1_2".into());
        tls_refusal(n, &rt, "tls_error", "version", &x)
    });
    m.case(
        "no ALPN offered (valid certificates)",
        "TLS refusal alpn",
        || tls_refusal(n, &rt, "alpn", "ALPN", &as_c(&[])),
    );
    m.case(
        "ALPN h2 only (valid certificates)",
        "TLS refusal tls_error",
        || {
            tls_refusal(
                n,
                &rt,
                "tls_error",
                "protocol",
                &as_c(&args!["-alpn", "h2"]),
            )
        },
    );
    m.case(
        "plain HTTP to the peer port",
        "refusal tls_error, connection closed",
        || {
            let base = link_baseline(n, &rt)?;
            let mut s = TcpStream::connect(n.node("a").endpoint()).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            ensure(!answer.starts_with(b"HTTP"), || {
                "a answered HTTP on its peer port".into()
            })?;
            base.check(n, &rt, Some("tls_error"))?;
            Ok(format!(
                "{} bytes back (a TLS alert), closed; {}",
                answer.len(),
                one_line(&refusal_line(n, "tls_error")?, 60)
            ))
        },
    );
    m.case(
        "authenticated, then no Hello (slow handshake)",
        "refusal handshake_timeout",
        || {
            let base = link_baseline(n, &rt)?;
            let started = Instant::now();
            let (types, _) = rt.block_on(async {
                let mut c = RawPeer::connect(n, "c", "a").await?;
                c.until_closed().await
            })?;
            base.check(n, &rt, Some("handshake_timeout"))?;
            Ok(format!(
                "closed after {:.1} s (frames {types:?}); counted handshake_timeout",
                started.elapsed().as_secs_f64()
            ))
        },
    );
    m.case(
        "Hello naming another node (b)",
        "link set-up refused, logged",
        || {
            let base = link_baseline(n, &rt)?;
            let b_id = n.id("b");
            let (types, goodbye) = rt.block_on(async {
                let mut c = RawPeer::connect(n, "c", "a").await?;
                c.send(&hello_frame(&b_id, 1)).await?;
                c.until_closed().await
            })?;
            let line = n.wait_log_line("a", &["set-up failed", "hello names node"], WAIT);
            base.check(n, &rt, None)?;
            let p = n.peer_status("a", "c");
            ensure(field(&p, "state") != "connected", || format!("{p:#}"))?;
            Ok(format!(
                "closed (frames {types:?}, goodbye {goodbye:?}); log: {}",
                one_line(line.split_once("error=").map_or(&line, |x| x.1), 60)
            ))
        },
    );
    m.case(
        "Hello with protocol version 2",
        "link set-up refused, logged",
        || {
            let base = link_baseline(n, &rt)?;
            rt.block_on(async {
                let mut c = RawPeer::connect(n, "c", "a").await?;
                c.send(&hello_frame(&c_id, 2)).await?;
                c.until_closed().await
            })?;
            let line = n.wait_log_line("a", &["set-up failed", "protocol version 2"], WAIT);
            base.check(n, &rt, None)?;
            Ok(format!(
                "closed; log: {}",
                one_line(line.split_once("error=").map_or(&line, |x| x.1), 70)
            ))
        },
    );
    m.case(
        "frame header claiming 4 GiB",
        "Goodbye 4 frame_too_large",
        || {
            frame_refusal(
                n,
                &rt,
                &[0x10, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
                4,
                "exceeds the limit",
            )
        },
    );
    m.case(
        "frame header with non-zero flags",
        "Goodbye 2 protocol_error",
        || {
            frame_refusal(
                n,
                &rt,
                &[0x02, 0x01, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1],
                2,
                "bad frame header",
            )
        },
    );
    m.case(
        "unknown mandatory frame type 0x42",
        "Goodbye 2 protocol_error",
        || frame_refusal(n, &rt, &frame(0x42, b"hi"), 2, "unknown frame type"),
    );
    m.case(
        "Ping with a 3-byte payload",
        "Goodbye 2 protocol_error",
        || frame_refusal(n, &rt, &frame(0x02, &[1, 2, 3]), 2, "malformed ping"),
    );
    m.case(
        "Ack beyond anything ever numbered for this peer",
        "Goodbye 0, a new outbox epoch for that peer only (protocol.md 10), store otherwise unchanged",
        || {
            frame_refusal(
                n,
                &rt,
                &frame(0x11, &99u64.to_be_bytes()),
                0,
                "restarted its outbox numbering",
            )
        },
    );
    m.case(
        "second Hello on an established link",
        "Goodbye 2 protocol_error",
        || frame_refusal(n, &rt, &hello_frame(&c_id, 1), 2, "unexpected hello"),
    );
    // Last: it changes c's standing for good.
    m.case(
        "partner revoked by a (ca-tool revoke --peer)",
        "TLS refusal revoked",
        || {
            n.node("a")
                .ca
                .cmd_with_pass("revoke", &args!["--peer", &c_id])
                .assert_success();
            n.wait("a to make c inactive", WAIT, |net| {
                net.check_state("a", "c", &["inactive"])
            });
            tls_refusal(n, &rt, "revoked", "revoked", &as_c(&alpn))
        },
    );
    m.finish(20);
    net.terminate_all();
}

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

const TOKEN: &str = "matrix-token-0123456789abcdef";
const MAX_MESSAGE: usize = 65_536;

/// Every table of a gateway's SQLite store but the link leases, as text rows.
fn store_rows(
    rt: &tokio::runtime::Runtime,
    db: &Path,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    use sqlx::{Connection, Row};
    rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| format!("open {}: {e}", db.display()))?;
        let mut out = BTreeMap::new();
        let tables: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '_sqlx%' AND name <> 'link_leases' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
        for table in tables {
            let cols: Vec<String> =
                sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .fetch_all(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect();
            let expr = cols
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let rows: Vec<String> =
                sqlx::query(&format!("SELECT {expr} FROM \"{table}\" ORDER BY 1"))
                    .fetch_all(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect();
            // A per-peer outbox epoch is the one change an impossible Ack may make
            // (it concerns that peer only); everything else must stay as it was.
            let rows = rows
                .into_iter()
                .filter(|r| !(table == "meta" && r.starts_with("'outbox_epoch:")))
                .collect();
            out.insert(table, rows);
        }
        let _ = conn.close().await;
        Ok(out)
    })
}

/// The message state a bad request must not change.
#[derive(Debug, PartialEq)]
struct ApiState {
    outbox_c: i64,
    outbox_b: i64,
    inbox: Vec<String>,
    store: BTreeMap<String, Vec<String>>,
}

fn api_state(api: &Api, net: &Net, rt: &tokio::runtime::Runtime) -> Result<ApiState, String> {
    Ok(ApiState {
        outbox_c: api.outbox_depth(&net.id("c"))?,
        outbox_b: api.outbox_depth(&net.id("b"))?,
        inbox: api.peek_all()?.into_iter().map(|m| m.id).collect(),
        store: store_rows(rt, &net.path("a-gateway.db"))?,
    })
}

fn diff_state(before: &ApiState, after: &ApiState) -> String {
    let mut s = String::new();
    if before.outbox_c != after.outbox_c || before.outbox_b != after.outbox_b {
        let _ = write!(
            s,
            "outbox depth c {} -> {}, b {} -> {}; ",
            before.outbox_c, after.outbox_c, before.outbox_b, after.outbox_b
        );
    }
    if before.inbox != after.inbox {
        let _ = write!(s, "inbox {:?} -> {:?}; ", before.inbox, after.inbox);
    }
    for (t, rows) in &after.store {
        if before.store.get(t) != Some(rows) {
            let _ = write!(
                s,
                "table {t}: {} -> {} rows; ",
                before.store.get(t).map_or(0, Vec::len),
                rows.len()
            );
        }
    }
    s
}

/// One bad request: expects HTTP `code` with `fragment` in the body (JSON
/// `{"error": ...}` when `json_error`), and the message state unchanged.
struct ApiCase<'a> {
    api: &'a Api,
    net: &'a Net,
    rt: &'a tokio::runtime::Runtime,
}

impl ApiCase<'_> {
    fn expect(
        &self,
        code: u16,
        fragment: &str,
        json_error: bool,
        request: impl FnOnce() -> Result<Response, String>,
    ) -> Result<String, String> {
        let before = api_state(self.api, self.net, self.rt)?;
        let r = request()?;
        let body = r.text();
        let actual = format!("HTTP {}: {}", r.code, one_line(&body, 90));
        ensure(r.code == code, || {
            format!("expected HTTP {code}, got {}", r.describe())
        })?;
        ensure(
            body.to_lowercase().contains(&fragment.to_lowercase()),
            || format!("the answer does not mention {fragment:?}: {}", r.describe()),
        )?;
        if json_error {
            let v: Value = r.json()?;
            ensure(v["error"].is_string(), || {
                format!("no JSON error: {}", r.describe())
            })?;
        }
        let after = api_state(self.api, self.net, self.rt)?;
        ensure(before == after, || {
            format!(
                "the request changed the message state: {}",
                diff_state(&before, &after)
            )
        })?;
        Ok(actual)
    }
}

/// A raw HTTP exchange on the API port: `request` bytes as is, the answer's status
/// line and body.
fn raw_http(port: u16, request: &[u8]) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(request);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    Ok(Response {
        code,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    })
}

#[test]
fn api_bad_inputs() {
    let mut net = Net::mesh(&["a", "b", "c"]);
    let token_file = net.path("a-api.token");
    write_file(&token_file, format!("{TOKEN}\n"), 0o600);
    net.set_config_extra(
        "a",
        &format!(
            "api_token_file = {:?}\nmax_message_bytes = {MAX_MESSAGE}\n",
            token_file.display().to_string()
        ),
    );
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = Api::of(net.node("a")).with_token(TOKEN);
    let b_api = Api::of(net.node("b"));
    let (a_id, b_id, c_id) = (net.id("a"), net.id("b"), net.id("c"));
    // State: 2 messages from b in a's inbox, 3 for c (down) in a's outbox.
    for i in 0..2 {
        b_api
            .send(
                &a_id,
                Some("text/plain"),
                Some(&format!("from-b-{i}")),
                b"hello a",
            )
            .unwrap()
            .expect(202)
            .unwrap();
    }
    net.wait("a's inbox to hold b's 2 messages", WAIT, |_| {
        let n = api.peek_all()?.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} messages"))
        }
    });
    for i in 0..3 {
        api.send(&c_id, None, Some(&format!("for-c-{i}")), b"hello c")
            .unwrap()
            .expect(202)
            .unwrap();
    }
    assert_eq!(api.outbox_depth(&c_id).unwrap(), 3);

    // b's inbox is empty: a long poll there shows that `wait` is clamped to 60 s.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let b_api = b_api.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = b_api.inbox_raw(1, 3600);
            let _ = tx.send((r, started.elapsed()));
        });
    }

    let x = ApiCase {
        api: &api,
        net: &net,
        rt: &rt,
    };
    let no_token = Api::of(net.node("a"));
    let big = vec![b'x'; MAX_MESSAGE + 1];
    let mut m = Matrix::new("API");
    m.case("send without a bearer token", "401 'bearer token'", || {
        x.expect(401, "bearer token", true, || {
            no_token.send(&b_id, None, None, b"hi")
        })
    });
    m.case(
        "send with a wrong bearer token",
        "401 'bearer token'",
        || {
            x.expect(401, "bearer token", true, || {
                no_token
                    .with_token("wrong-token-0123456789abcdef")
                    .send(&b_id, None, None, b"hi")
            })
        },
    );
    m.case(
        "token sent as Basic credentials",
        "401 'bearer token'",
        || {
            let auth = format!("Basic {TOKEN}");
            x.expect(401, "bearer token", true, || {
                no_token.request(
                    "POST",
                    &format!("/v1/peers/{b_id}/messages"),
                    &[("Authorization", &auth)],
                    b"hi",
                )
            })
        },
    );
    m.case("send to an unknown peer", "404 'unknown peer'", || {
        x.expect(404, "unknown peer", true, || {
            api.send("0123456789abcdef0123456789abcdef", None, None, b"hi")
        })
    });
    m.case("batch to an unknown peer", "404 'unknown peer'", || {
        x.expect(404, "unknown peer", true, || {
            api.send_batch(
                "no-such-peer",
                &[Outgoing {
                    id: None,
                    content_type: None,
                    body: b"hi".to_vec(),
                }],
            )
        })
    });
    m.case("status of an unknown peer", "404 'unknown peer'", || {
        x.expect(404, "unknown peer", true, || api.peer_raw("no-such-peer"))
    });
    m.case("peer id with an encoded path traversal", "404", || {
        x.expect(404, "", false, || {
            api.send("..%2F..%2Fetc%2Fpasswd", None, None, b"hi")
        })
    });
    m.case(
        "body of max_message_bytes + 1",
        "413 'max_message_bytes'",
        || {
            x.expect(413, "max_message_bytes", true, || {
                api.send(&b_id, None, None, &big)
            })
        },
    );
    m.case("body of 4 x max_message_bytes", "413", || {
        let huge = vec![b'x'; 4 * MAX_MESSAGE];
        x.expect(413, "", false, || api.send(&b_id, None, None, &huge))
    });
    m.case("Message-Id of 129 characters", "400 'Message-Id'", || {
        let id = "m".repeat(129);
        x.expect(400, "Message-Id", true, || {
            api.send(&b_id, None, Some(&id), b"hi")
        })
    });
    m.case("Message-Id with a space", "400 'Message-Id'", || {
        x.expect(400, "Message-Id", true, || {
            api.send(&b_id, None, Some("two words"), b"hi")
        })
    });
    m.case("Message-Id with a control character", "400", || {
        x.expect(400, "", false, || {
            api.send(&b_id, None, Some("bell\u{7}id"), b"hi")
        })
    });
    m.case("Message-Id not ASCII", "400 'ASCII'", || {
        x.expect(400, "ASCII", true, || {
            api.send(&b_id, None, Some("idé"), b"hi")
        })
    });
    m.case("Content-Type of 300 bytes", "400 'Content-Type'", || {
        let ct = format!("text/{}", "x".repeat(295));
        x.expect(400, "Content-Type", true, || {
            api.send(&b_id, Some(&ct), None, b"hi")
        })
    });
    m.case("batch that is not JSON", "400 'bad JSON'", || {
        x.expect(400, "bad JSON", true, || {
            api.send_batch_raw(&b_id, b"{\"messages\": [}")
        })
    });
    m.case("batch with an unknown field", "400 'unknown field'", || {
        x.expect(400, "unknown field", true, || {
            api.send_batch_raw(
                &b_id,
                br#"{"messages": [{"body_base64": "aGk=", "priority": 9}]}"#,
            )
        })
    });
    m.case("batch body that is not base64", "400 'not base64'", || {
        x.expect(400, "not base64", true, || {
            api.send_batch_raw(&b_id, br#"{"messages": [{"body_base64": "not base64!"}]}"#)
        })
    });
    m.case("empty batch", "400 '1 to 1000'", || {
        x.expect(400, "1 to 1000", true, || {
            api.send_batch_raw(&b_id, br#"{"messages": []}"#)
        })
    });
    m.case("batch of 1001 messages", "400 '1 to 1000'", || {
        let msgs: Vec<Outgoing> = (0..1001)
            .map(|i| Outgoing {
                id: Some(format!("bulk-{i}")),
                content_type: None,
                body: b"x".to_vec(),
            })
            .collect();
        x.expect(400, "1 to 1000", true, || api.send_batch(&b_id, &msgs))
    });
    m.case(
        "batch with one message over max_message_bytes",
        "413 'messages[1]'",
        || {
            let msgs = vec![
                Outgoing {
                    id: Some("ok-1".into()),
                    content_type: None,
                    body: b"fine".to_vec(),
                },
                Outgoing {
                    id: Some("too-big".into()),
                    content_type: None,
                    body: big.clone(),
                },
            ];
            x.expect(413, "messages[1]", true, || api.send_batch(&b_id, &msgs))
        },
    );
    m.case(
        "batch with one bad id after good messages (all or nothing)",
        "400 'Message-Id'",
        || {
            let msgs = vec![
                Outgoing {
                    id: Some("good-1".into()),
                    content_type: None,
                    body: b"1".to_vec(),
                },
                Outgoing {
                    id: Some("good-2".into()),
                    content_type: None,
                    body: b"2".to_vec(),
                },
                Outgoing {
                    id: Some("bad id".into()),
                    content_type: None,
                    body: b"3".to_vec(),
                },
            ];
            x.expect(400, "Message-Id", true, || api.send_batch(&b_id, &msgs))
        },
    );
    m.case("ack that is not JSON", "400 'bad JSON'", || {
        x.expect(400, "bad JSON", true, || api.ack_raw(b"ids=1,2"))
    });
    m.case(
        "ack with ids that are not strings",
        "400 'bad JSON'",
        || x.expect(400, "bad JSON", true, || api.ack_raw(br#"{"ids": [1, 2]}"#)),
    );
    m.case("ack of 1001 ids", "400 'at most 1000'", || {
        let ids: Vec<String> = (0..1001).map(|i| format!("id-{i}")).collect();
        x.expect(400, "at most 1000", true, || {
            api.ack_raw(json!({ "ids": ids }).to_string().as_bytes())
        })
    });
    m.case("ack of ids nobody sent", "200, acknowledged 0", || {
        x.expect(200, "\"acknowledged\":0", false, || {
            api.ack_raw(br#"{"ids": ["never-seen-1", "never-seen-2"]}"#)
        })
    });
    m.case("inbox limit=0", "400 'limit must be 1 to 1000'", || {
        x.expect(400, "limit must be 1 to 1000", true, || {
            api.request("GET", "/v1/inbox?limit=0", &[], b"")
        })
    });
    m.case("inbox limit=5000", "400 'limit must be 1 to 1000'", || {
        x.expect(400, "limit must be 1 to 1000", true, || {
            api.request("GET", "/v1/inbox?limit=5000", &[], b"")
        })
    });
    m.case("inbox limit=abc", "400", || {
        x.expect(400, "limit", false, || {
            api.request("GET", "/v1/inbox?limit=abc", &[], b"")
        })
    });
    m.case("inbox wait=-1", "400", || {
        x.expect(400, "wait", false, || {
            api.request("GET", "/v1/inbox?wait=-1", &[], b"")
        })
    });
    m.case(
        "inbox wait=3600 with messages waiting",
        "200 at once",
        || {
            let started = Instant::now();
            let r = x.expect(200, "from-b-0", false, || {
                api.request("GET", "/v1/inbox?wait=3600", &[], b"")
            })?;
            ensure(started.elapsed() < Duration::from_secs(10), || {
                format!("took {:?} with messages waiting", started.elapsed())
            })?;
            Ok(r)
        },
    );
    m.case("unknown route", "404", || {
        x.expect(404, "", false, || {
            api.request("GET", "/v1/nothing-here", &[], b"")
        })
    });
    m.case("GET on the send route", "405", || {
        x.expect(405, "", false, || {
            api.request("GET", &format!("/v1/peers/{b_id}/messages"), &[], b"")
        })
    });
    m.case("DELETE on the inbox", "405", || {
        x.expect(405, "", false, || {
            api.request("DELETE", "/v1/inbox", &[], b"")
        })
    });
    m.case("malformed request line", "400", || {
        x.expect(400, "", false, || {
            raw_http(net.node("a").api_port, b"HELLO THERE\r\n\r\n")
        })
    });
    m.case("200 request headers", "431", || {
        let mut req =
            format!("GET /v1/inbox HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n");
        for i in 0..200 {
            req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        x.expect(431, "", false, || {
            raw_http(net.node("a").api_port, req.as_bytes())
        })
    });
    m.case("a 1 MiB request header", "431", || {
        let req = format!(
            "GET /v1/inbox HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "y".repeat(1024 * 1024)
        );
        x.expect(431, "", false, || raw_http(net.node("a").api_port, req.as_bytes()))
    });
    m.case(
        "long poll wait=3600 on an empty inbox (b)",
        "200 after 60 s (clamped)",
        || {
            let (r, took) = rx.recv_timeout(Duration::from_secs(100)).map_err(|_| {
                "no answer within 100 s: wait=3600 is not clamped to 60".to_string()
            })?;
            let r = r?;
            ensure(r.code == 200, || r.describe())?;
            ensure(
                took >= Duration::from_secs(59) && took <= Duration::from_secs(90),
                || format!("answered after {took:?}"),
            )?;
            Ok(format!(
                "HTTP {} after {:.1} s: {}",
                r.code,
                took.as_secs_f64(),
                one_line(&r.text(), 40)
            ))
        },
    );
    m.finish(30);
    net.terminate_all();
}
