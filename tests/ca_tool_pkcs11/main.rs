//! End-to-end tests of `ca-tool` with the root key on a PKCS#11 token, against
//! SoftHSM2, with `openssl` as the independent judge of what the token signed.
//!
//! Every test makes its own SoftHSM2 token directory and configuration
//! (`SOFTHSM2_CONF`, passed to each `ca-tool` run, never set in this process),
//! so the tests run in parallel without seeing each other's tokens.
//!
//! Without SoftHSM2 installed the tests are skipped with a message, except in CI
//! (`CI=true`), where that is a failure: `.ci/run` installs it.
//!
//! | module | what |
//! |---|---|
//! | `flow` | a token root through the whole flow with a file-key partner; every key type |
//! | `refusals` | a wrong PIN, a missing token or module, `init` on a token refusing cleanly |
//!
//! Run `cargo build --workspace --bins` first, then `cargo test --test
//! ca_tool_pkcs11`. The tests with the root key in a file are in `tests/ca_tool/`.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use peerlink_e2e::*;
use serde_json::Value;

mod flow;
mod refusals;

const ORG: &str = "Example Network";
const TOKEN_LABEL: &str = "CA token";
/// The token's user PIN; letters make sure it cannot appear in hex output by chance.
const PIN: &str = "pin-Secret-42";
const WRONG_PIN: &str = "pin-Secret-43";
const SO_PIN: &str = "so-Secret-1234";

/// Places where distributions put the SoftHSM2 module.
const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The SoftHSM2 module, or `None` (after saying so) when SoftHSM2 is not installed.
/// In CI a missing SoftHSM2 fails the test instead.
fn softhsm_module(test: &str) -> Option<PathBuf> {
    let module = std::env::var_os("SOFTHSM2_MODULE")
        .map(PathBuf::from)
        .into_iter()
        .chain(MODULE_CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    let util = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match module {
        Some(module) if util => Some(module),
        _ => {
            let why = "SoftHSM2 is not installed (apt-get install softhsm2: softhsm2-util and \
                       libsofthsm2.so are needed)";
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{test}: {why}; .ci/run installs it, so CI must have it");
            }
            // Written to stderr directly: the test harness swallows eprintln! of passing tests.
            let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
            None
        }
    }
}

/// A private SoftHSM2 installation: its token directory, configuration and one
/// initialised token labelled [`TOKEN_LABEL`] with user PIN [`PIN`].
struct SoftHsm {
    tmp: tempfile::TempDir,
    conf: PathBuf,
    module: PathBuf,
    pin_file: PathBuf,
    wrong_pin_file: PathBuf,
}

impl SoftHsm {
    fn new(test: &str) -> Option<SoftHsm> {
        let module = softhsm_module(test)?;
        let tmp = tempfile::Builder::new()
            .prefix("ca-tool-pkcs11-")
            .tempdir()
            .expect("temp dir");
        let conf = write_softhsm_conf(tmp.path(), "tokens");
        let hsm = SoftHsm {
            pin_file: write_passphrase(&tmp.path().join("pin"), &format!("{PIN}\n")),
            wrong_pin_file: write_passphrase(
                &tmp.path().join("wrong-pin"),
                &format!("{WRONG_PIN}\n"),
            ),
            tmp,
            conf,
            module,
        };
        hsm.init_token(TOKEN_LABEL);
        Some(hsm)
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// `softhsm2-util --init-token --free --label label`.
    fn init_token(&self, label: &str) {
        run(Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .env("SOFTHSM2_CONF", &self.conf))
        .assert_success();
    }

    /// Runs `ca-tool args...` with this SoftHSM2's configuration.
    fn tool(&self, args: &[OsString]) -> Outcome {
        self.tool_with_conf(args, &self.conf)
    }

    /// Runs `ca-tool args...` with another SoftHSM2 configuration (e.g. one without our token).
    fn tool_with_conf(&self, args: &[OsString], conf: &Path) -> Outcome {
        run(Command::new(ca_tool_path())
            .args(args)
            .env("SOFTHSM2_CONF", conf))
    }

    /// `ca-tool init` of a CA whose root key is generated on the token.
    fn init_ca(&self, dir: &Path, unit: &str, extra: &[OsString]) -> TokenCa {
        let mut args = [
            init_args(dir, ORG, unit, &self.pin_file),
            args![
                "--pkcs11-module",
                &self.module,
                "--token-label",
                TOKEN_LABEL
            ],
        ]
        .concat();
        args.extend(extra.iter().cloned());
        let init_output = self.tool(&args);
        init_output.assert_success();
        assert_no_pin(&init_output);
        let info = self.tool(&args!["info", "--dir", dir, "--json"]);
        info.assert_success();
        let info: Value = serde_json::from_str(&info.stdout).expect("info --json");
        TokenCa {
            dir: dir.to_path_buf(),
            org: ORG.into(),
            unit: unit.into(),
            node_id: json_str(&info, "node_id"),
            fingerprint: json_str(&info, "fingerprint_sha256"),
            init_output,
        }
    }
}

/// A `softhsm2.conf` in `dir` whose tokens live in `dir/<tokens>` (created).
fn write_softhsm_conf(dir: &Path, tokens: &str) -> PathBuf {
    let token_dir = dir.join(tokens);
    std::fs::create_dir_all(&token_dir).expect("token dir");
    let conf = dir.join(format!("{tokens}.conf"));
    write_file(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            token_dir.display()
        ),
        0o600,
    );
    conf
}

/// A CA whose root key is on the token.
struct TokenCa {
    dir: PathBuf,
    org: String,
    unit: String,
    node_id: String,
    fingerprint: String,
    init_output: Outcome,
}

impl TokenCa {
    fn root_cert(&self) -> PathBuf {
        self.dir.join("root-ca.crt")
    }

    /// `ca-tool <sub> --dir DIR <extra> --passphrase-file <pin file>`.
    fn signing(&self, hsm: &SoftHsm, sub: &str, extra: &[OsString], pin_file: &Path) -> Outcome {
        let out = hsm.tool(&signing_args(sub, &self.dir, extra, pin_file));
        assert_no_pin(&out);
        out
    }

    /// Like [`TokenCa::signing`] with the right PIN, asserting success.
    fn sign_ok(&self, hsm: &SoftHsm, sub: &str, extra: &[OsString]) -> Outcome {
        let out = self.signing(hsm, sub, extra, &hsm.pin_file);
        out.assert_success();
        out
    }

    fn openssl_subject(&self, cn: &str) -> String {
        format!(
            "/O={}/OU={}/serialNumber={}/CN={cn}",
            self.org, self.unit, self.node_id
        )
    }
}

/// `<sub> --dir dir <extra> --passphrase-file pin_file`: the arguments of a command
/// that signs with the CA's root key.
fn signing_args(sub: &str, dir: &Path, extra: &[OsString], pin_file: &Path) -> Vec<OsString> {
    [
        args![sub, "--dir", dir],
        extra.to_vec(),
        args!["--passphrase-file", pin_file],
    ]
    .concat()
}

/// Neither PIN ever appears in what the tool prints.
#[track_caller]
fn assert_no_pin(out: &Outcome) {
    let all = out.all_output();
    assert!(
        !all.contains(PIN) && !all.contains(WRONG_PIN),
        "the PIN was printed:\n{all}"
    );
}

/// `openssl verify -x509_strict [extra] -CAfile anchor [-untrusted u]... leaf`: what
/// the token signed must pass openssl's strict checks.
fn openssl_verify_strict(
    extra: &[&str],
    anchor: &Path,
    untrusted: &[&Path],
    leaf: &Path,
) -> Outcome {
    openssl_verify(
        &[&["-x509_strict"], extra].concat(),
        anchor,
        untrusted,
        leaf,
    )
}

/// `openssl crl -verify` of `crl` with `issuer`: the signature is good.
#[track_caller]
fn assert_crl_signed_by(crl: &Path, issuer: &Path) {
    let out = openssl(args!["crl", "-in", crl, "-CAfile", issuer, "-noout"]);
    out.assert_success();
    assert!(
        out.all_output().contains("verify OK"),
        "openssl did not verify the CRL:\n{out:?}"
    );
}

fn serial_hex(path: &Path) -> String {
    let out = openssl(args!["x509", "-in", path, "-noout", "-serial"]);
    out.assert_success();
    out.stdout
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

/// What `private/` of a token CA holds: only `pkcs11.json`, no key material.
#[track_caller]
fn assert_private_dir_holds_no_key(ca: &TokenCa, hsm: &SoftHsm, key_type: &str, key_label: &str) {
    let private = ca.dir.join("private");
    assert_eq!(mode_of(&private), 0o700);
    let names: Vec<String> = std::fs::read_dir(&private)
        .expect("private dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["pkcs11.json"],
        "private/ holds only the token reference"
    );
    let config_path = private.join("pkcs11.json");
    assert_eq!(mode_of(&config_path), 0o600);
    let config: Value =
        serde_json::from_str(&read_text(&config_path)).expect("pkcs11.json is JSON");
    let object = config.as_object().expect("pkcs11.json is an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "format",
            "key_id",
            "key_label",
            "key_type",
            "module",
            "token_label"
        ],
        "{config:#}"
    );
    assert_eq!(json_str(&config, "token_label"), TOKEN_LABEL);
    assert_eq!(json_str(&config, "key_label"), key_label);
    assert_eq!(json_str(&config, "key_type"), key_type);
    assert_eq!(PathBuf::from(json_str(&config, "module")), hsm.module);
    let id = json_str(&config, "key_id");
    assert!(
        id.len() >= 2 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "key_id {id:?}"
    );
    // No key material anywhere in the CA directory.
    for (path, (_, bytes)) in snapshot(&ca.dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key",
            path.display()
        );
    }
    assert!(!private.join("root-ca.key").exists());
    // The token says so too, as init read it back.
    ca.init_output
        .assert_stdout_contains("sensitive, not extractable")
        .assert_stdout_contains("never extractable")
        .assert_stdout_contains("generated on the token")
        .assert_stdout_contains(TOKEN_LABEL);
}
