//! Certificates made and checked outside `ca-tool`: keys and CSRs made with
//! `openssl req`, fingerprints as openssl prints them, and a chain checked both by
//! `openssl verify` and by `ca-tool verify`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{ca_tool, openssl, Outcome};

/// `-newkey` arguments for `openssl req`: "p256", "p384", "rsa2048", "ed25519".
pub fn openssl_newkey(kind: &str) -> Vec<&'static str> {
    match kind {
        "p256" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "rsa2048" => vec!["-newkey", "rsa:2048"],
        "ed25519" => vec!["-newkey", "ed25519"],
        other => panic!("unknown key kind {other}"),
    }
}

/// Makes an unencrypted key and a PEM CSR with `openssl req -new`, asserting success.
pub fn openssl_csr(key: &Path, csr: &Path, kind: &str, subject: &str) {
    let mut a = args!["req", "-new"];
    a.extend(openssl_newkey(kind).into_iter().map(OsString::from));
    a.extend(args![
        "-nodes", "-keyout", key, "-out", csr, "-subj", subject
    ]);
    openssl(&a).assert_success();
}

/// A key `<name>.key` and a PEM CSR `<name>.csr` of `kind` (as for
/// [`openssl_newkey`]) for `subject`, made with [`openssl_csr`] in `dir`; returns
/// the CSR.
pub fn openssl_csr_in(dir: &Path, name: &str, kind: &str, subject: &str) -> PathBuf {
    let csr = dir.join(format!("{name}.csr"));
    openssl_csr(&dir.join(format!("{name}.key")), &csr, kind, subject);
    csr
}

/// SHA-256 fingerprint of a certificate file as `openssl x509 -fingerprint` prints it.
pub fn openssl_fingerprint(cert: &Path) -> String {
    let out = openssl(args![
        "x509",
        "-in",
        cert,
        "-noout",
        "-fingerprint",
        "-sha256"
    ]);
    out.assert_success();
    out.stdout
        .trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_string())
        .unwrap_or_else(|| panic!("unexpected fingerprint output {:?}", out.stdout))
}

/// `openssl x509 -req -in csr -CA ca_cert -CAkey ca_key -set_serial serial -days 30
/// -extfile extfile [extra] -out out`, asserting success: a certificate signed
/// without `ca-tool`'s checks (as a careless or malicious CA could sign it).
pub fn openssl_sign_csr(
    csr: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    serial: &str,
    extfile: &Path,
    extra: &[OsString],
    out: &Path,
) {
    let mut a = args![
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca_cert,
        "-CAkey",
        ca_key,
        "-set_serial",
        serial,
        "-days",
        "30",
        "-extfile",
        extfile
    ];
    a.extend(extra.iter().cloned());
    a.extend(args!["-out", out]);
    openssl(&a).assert_success();
}

/// `openssl verify [extra] -CAfile anchor [-untrusted u]... leaf`.
pub fn openssl_verify(extra: &[&str], anchor: &Path, untrusted: &[&Path], leaf: &Path) -> Outcome {
    let mut a = args!["verify"];
    a.extend(extra.iter().map(OsString::from));
    a.extend(args!["-CAfile", anchor]);
    for u in untrusted {
        a.extend(args!["-untrusted", *u]);
    }
    a.push(leaf.into());
    openssl(&a)
}

/// Asserts that `openssl verify` succeeded and printed OK.
#[track_caller]
pub fn assert_openssl_ok(out: &Outcome) {
    out.assert_success();
    assert!(
        out.stdout.trim_end().ends_with(": OK"),
        "openssl verify did not print OK:\n{out:?}"
    );
}

/// `ca-tool verify --anchor anchor [--untrusted u]... [--crl c]... [extra] leaf`.
pub fn ca_verify(
    anchor: &Path,
    untrusted: &[&Path],
    crls: &[&Path],
    extra: &[&str],
    leaf: &Path,
) -> Outcome {
    let mut a = args!["verify", "--anchor", anchor];
    for u in untrusted {
        a.extend(args!["--untrusted", *u]);
    }
    for c in crls {
        a.extend(args!["--crl", *c]);
    }
    a.extend(extra.iter().map(OsString::from));
    a.push(leaf.into());
    ca_tool(&a)
}
