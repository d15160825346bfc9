//! End-to-end tests of `ca-tool`, run as an operator would run it, with `openssl`
//! as the independent judge of what it produces. One module per command or
//! command group:
//!
//! | module | commands |
//! |---|---|
//! | `init` | `init`, `info`, the root key at rest |
//! | `bundles` | `export-bundle`, `show-bundle`: what a bundle proves |
//! | `peers` | `sign-peer`, `register-peer`, `list`: the cross-certificates |
//! | `server` | `sign-server`: the gateway certificate profile |
//! | `revocation` | `revoke`, `crl` |
//! | `verify` | `verify` (and `openssl verify`): chains, name constraints, pathlen |
//! | `key_ids` | key identifiers: chains mixing ca-tool CAs and CAs made by openssl as Swaptacular's scripts make them |
//! | `shared_options` | what every signing command shares: the passphrase file, input files, `--days`, `--out` |
//! | `certs` | (helpers) reading certificates, the peer-certificate profile, signing by hand |
//!
//! Most tests start from one shared "world" built once per run (it costs an
//! RSA-3072 key generation): two organizations A (ecdsa-p256, the default) and
//! B (rsa-3072) that exchanged bundles, cross-signed, registered each other's
//! cross-certificates and signed one gateway certificate each. The world is
//! never modified: tests that run commands against a CA work on a copy.
//!
//! Run `cargo build --workspace --bins` first, then `cargo test --test ca_tool`
//! (one module: `cargo test --test ca_tool revocation::`). The tests with the root
//! key on a PKCS#11 token are in `tests/ca_tool_pkcs11/`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use peerlink_e2e::*;
use serde_json::Value;
use x509_parser::prelude::*;

mod bundles;
mod certs;
mod init;
mod key_ids;
mod peers;
mod revocation;
mod server;
mod shared_options;
mod verify;

use certs::*;

const ORG: &str = "Example Network";
const UNIT_A: &str = "Alpha Clearing";
const UNIT_B: &str = "Beta Registry";

// ---------------------------------------------------------------------------
// The shared world
// ---------------------------------------------------------------------------

struct World {
    _tmp: tempfile::TempDir,
    pass: PathBuf,
    a: CaFixture,
    b: CaFixture,
    a_info: Value,
    b_info: Value,
    a_bundle: PathBuf,
    b_bundle: PathBuf,
    show_b_json: Outcome,
    show_b_text: Outcome,
    /// A signs B's bundle.
    sign_b: Outcome,
    /// B signs A's bundle.
    sign_a: Outcome,
    register_at_a: Outcome,
    register_at_b: Outcome,
    /// The cross-cert A issued for B.
    xb: PathBuf,
    /// The cross-cert B issued for A.
    xa: PathBuf,
    gwb_key: PathBuf,
    gwb_csr: PathBuf,
    gwb_crt: PathBuf,
    sign_server_b: Outcome,
    gwa_crt: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build_world)
}

fn build_world() -> World {
    // Statics are never dropped, so the world outlives the test process: keep it under
    // target/tmp, and remove worlds that earlier runs left behind (an hour old or more).
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if old
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with("ca-tool-world-")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("ca-tool-world-")
        .tempdir_in(base)
        .expect("temp dir");
    let root = tmp.path().to_path_buf();
    let pass = write_passphrase(&root.join("pass"), PASSPHRASE);

    let a = CaFixture::init(&root.join("A"), ORG, UNIT_A, None, None, &pass);
    let b = CaFixture::init(&root.join("B"), ORG, UNIT_B, Some("rsa-3072"), None, &pass);
    let a_info = a.info_json();
    let b_info = b.info_json();

    let a_bundle = root.join("A.bundle");
    let b_bundle = root.join("B.bundle");
    a.export_bundle(&a_bundle, &["127.0.0.1:7001"]);
    b.export_bundle(&b_bundle, &["127.0.0.1:7002"]);
    let show_b_json = ca_tool(args!["show-bundle", "--bundle", &b_bundle, "--json"]);
    show_b_json.assert_success();
    let show_b_text = ca_tool(args!["show-bundle", "--bundle", &b_bundle]);
    show_b_text.assert_success();

    let xb = root.join("xB.crt");
    let xa = root.join("xA.crt");
    let sign_b = a.sign_peer(&b_bundle, &xb, Some(&b.fingerprint));
    sign_b.assert_success();
    let sign_a = b.sign_peer(&a_bundle, &xa, Some(&a.fingerprint));
    sign_a.assert_success();
    let register_at_a = a.register_peer(&b_bundle, &xa);
    register_at_a.assert_success();
    let register_at_b = b.register_peer(&a_bundle, &xb);
    register_at_b.assert_success();

    let gwb_key = root.join("gwB.key");
    let gwb_csr = root.join("gwB.csr");
    let gwb_crt = root.join("gwB.crt");
    openssl_csr(&gwb_key, &gwb_csr, "p256", &b.openssl_subject(Some("gw1")));
    let sign_server_b = b.sign_server(&gwb_csr, &gwb_crt);
    sign_server_b.assert_success();

    let gwa_crt = root.join("gwA.crt");
    let gwa_csr = openssl_csr_in(&root, "gwA", "p256", &a.openssl_subject(Some("gw1")));
    a.sign_server(&gwa_csr, &gwa_crt).assert_success();

    World {
        _tmp: tmp,
        pass,
        a,
        b,
        a_info,
        b_info,
        a_bundle,
        b_bundle,
        show_b_json,
        show_b_text,
        sign_b,
        sign_a,
        register_at_a,
        register_at_b,
        xb,
        xa,
        gwb_key,
        gwb_csr,
        gwb_crt,
        sign_server_b,
        gwa_crt,
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ca-tool-e2e-")
        .tempdir()
        .expect("temp dir")
}

/// A fast (ecdsa-p256) CA in `dir` with the world's passphrase.
fn small_ca(dir: &Path, unit: &str, node_id: Option<&str>) -> CaFixture {
    CaFixture::init(dir, ORG, unit, None, node_id, &world().pass)
}

/// C (unit Gamma): a fast CA in `dir/C` that knows nobody, and its bundle
/// `dir/C.bundle` with `endpoints`.
fn partner_c(dir: &Path, endpoints: &[&str]) -> (CaFixture, PathBuf) {
    let c = small_ca(&dir.join("C"), "Gamma", None);
    let bundle = dir.join("C.bundle");
    c.export_bundle(&bundle, endpoints);
    (c, bundle)
}

// ---------------------------------------------------------------------------
// Checks every module uses
// ---------------------------------------------------------------------------

/// A chain rejected by `ca-tool verify`: exit 3 (invalid) and the reason on stderr.
#[track_caller]
fn assert_invalid(out: &Outcome, fragments: &[&str]) {
    out.assert_failure_with_any(fragments);
    assert_eq!(
        out.code(),
        Some(3),
        "verify rejects a chain with exit 3\n{out:?}"
    );
}

/// Asserts that a failed command did not create `path`.
fn assert_absent(path: &Path) {
    assert!(
        !path.exists(),
        "{} was created by a failed command",
        path.display()
    );
}

/// Writes the files `parts` one after the other into `out` (a CRL or certificate
/// bundle of several PEM blocks).
fn cat(out: &Path, parts: &[&Path]) {
    let mut all = Vec::new();
    for p in parts {
        all.extend(read_bytes(p));
    }
    write_file(out, all, 0o644);
}

/// Runs `f` (which must fail with one of `fragments`) and checks `ca` is unchanged and
/// `out` (if any) was not created.
#[track_caller]
fn refused(
    ca: &CaFixture,
    out: Option<&Path>,
    fragments: &[&str],
    f: impl FnOnce() -> Outcome,
) -> Outcome {
    let before = snapshot(&ca.dir);
    let o = f();
    o.assert_failure_with_any(fragments);
    assert_unchanged(&ca.dir, &before, &o.command);
    if let Some(out) = out {
        assert_absent(out);
    }
    o
}
