//! End-to-end tests of `ca-tool` with the root key on a PKCS#11 token, against
//! SoftHSM2, with `openssl` as the independent judge of what the token signed.
//!
//! Every test makes its own SoftHSM2 token directory and configuration
//! (`SOFTHSM2_CONF`, passed to each `ca-tool` run, never set in this process),
//! so the tests run in parallel without seeing each other's tokens.
//!
//! Without SoftHSM2 installed the tests are skipped with a message, except in CI
//! (`CI=true`), where that is a failure: `.ci/run` installs it.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use peerlink_e2e::*;
use serde_json::Value;

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
        let mut args = args![
            "init",
            "--dir",
            dir,
            "--org",
            ORG,
            "--unit",
            unit,
            "--pkcs11-module",
            &self.module,
            "--token-label",
            TOKEN_LABEL,
            "--passphrase-file",
            &self.pin_file
        ];
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
        let mut args = args![sub, "--dir", &self.dir];
        args.extend(extra.iter().cloned());
        args.extend(args!["--passphrase-file", pin_file]);
        let out = hsm.tool(&args);
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

/// Neither PIN ever appears in what the tool prints.
#[track_caller]
fn assert_no_pin(out: &Outcome) {
    let all = out.all_output();
    assert!(
        !all.contains(PIN) && !all.contains(WRONG_PIN),
        "the PIN was printed:\n{all}"
    );
}

#[track_caller]
fn assert_openssl_ok(out: &Outcome) {
    out.assert_success();
    assert!(
        out.stdout.trim_end().ends_with(": OK"),
        "openssl verify did not print OK:\n{out:?}"
    );
}

fn openssl_verify(extra: &[&str], anchor: &Path, untrusted: &[&Path], leaf: &Path) -> Outcome {
    let mut a = args!["verify", "-x509_strict"];
    a.extend(extra.iter().map(OsString::from));
    a.extend(args!["-CAfile", anchor]);
    for u in untrusted {
        a.extend(args!["-untrusted", *u]);
    }
    a.push(leaf.into());
    openssl(&a)
}

fn ca_verify(
    anchor: &Path,
    untrusted: &[&Path],
    crls: &[&Path],
    purpose: &str,
    leaf: &Path,
) -> Outcome {
    let mut a = args!["verify", "--anchor", anchor, "--purpose", purpose];
    for u in untrusted {
        a.extend(args!["--untrusted", *u]);
    }
    for c in crls {
        a.extend(args!["--crl", *c]);
    }
    a.push(leaf.into());
    ca_tool(&a)
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

#[test]
fn token_root_full_flow_with_a_file_key_partner() {
    let Some(hsm) = SoftHsm::new("token_root_full_flow_with_a_file_key_partner") else {
        return;
    };
    let t = hsm.path();
    let a = hsm.init_ca(&t.join("A"), "Alpha Clearing", &[]);
    assert_private_dir_holds_no_key(&a, &hsm, "ecdsa-p256", "peerlink-root");
    a.init_output.assert_stdout_contains("ecdsa-p256");

    // The root the token signed is a valid self-signed CA certificate for openssl, and its
    // node id is derived from the token's public key.
    assert_openssl_ok(&openssl_verify(&[], &a.root_cert(), &[], &a.root_cert()));
    let info = ca_tool(args!["info", "--dir", &a.dir, "--json"]);
    info.assert_success();
    let info: Value = serde_json::from_str(&info.stdout).expect("info --json");
    assert_eq!(json_str(&info, "key_type"), "ecdsa-p256", "{info:#}");
    assert_eq!(info["node_id_is_key_derived"], true, "{info:#}");

    // B keeps its root key in an encrypted file.
    let pass = write_passphrase(&t.join("pass"), PASSPHRASE);
    let b = CaFixture::init(&t.join("B"), ORG, "Beta Registry", None, None, &pass);

    // Bundles: A's is signed by the token and verifies as any other.
    let a_bundle = t.join("A.bundle");
    let b_bundle = t.join("B.bundle");
    a.sign_ok(
        &hsm,
        "export-bundle",
        &args!["--out", &a_bundle, "--endpoint", "127.0.0.1:7001"],
    );
    b.export_bundle(&b_bundle, &["127.0.0.1:7002"]);
    let shown = ca_tool(args!["show-bundle", "--bundle", &a_bundle, "--json"]);
    shown.assert_success();
    let shown: Value = serde_json::from_str(&shown.stdout).expect("show-bundle --json");
    assert_eq!(json_str(&shown, "node_id"), a.node_id);
    assert_eq!(json_str(&shown, "fingerprint_sha256"), a.fingerprint);

    // Cross-signing both ways: the token CA signs the file CA's root and vice versa.
    let xb = t.join("xB.crt");
    let xa = t.join("xA.crt");
    a.sign_ok(
        &hsm,
        "sign-peer",
        &args![
            "--bundle",
            &b_bundle,
            "--out",
            &xb,
            "--expect-fingerprint",
            &b.fingerprint
        ],
    )
    .assert_stdout_contains("matches");
    b.sign_peer(&a_bundle, &xa, Some(&a.fingerprint))
        .assert_success();
    hsm.tool(&args![
        "register-peer",
        "--dir",
        &a.dir,
        "--bundle",
        &b_bundle,
        "--cert",
        &xa
    ])
    .assert_success();
    b.register_peer(&a_bundle, &xb).assert_success();
    // The cross-certificates verify under their issuers' roots.
    assert_openssl_ok(&openssl_verify(&[], &a.root_cert(), &[], &xb));
    assert_openssl_ok(&openssl_verify(&[], &b.root_cert(), &[], &xa));
    ca_verify(&a.root_cert(), &[], &[], "any", &xb).assert_success();

    // Gateway certificates from openssl CSRs, one signed by the token.
    let gwa_csr = t.join("gwA.csr");
    let gwa_crt = t.join("gwA.crt");
    openssl_csr(
        &t.join("gwA.key"),
        &gwa_csr,
        "p256",
        &a.openssl_subject("gw1"),
    );
    a.sign_ok(
        &hsm,
        "sign-server",
        &args!["--csr", &gwa_csr, "--out", &gwa_crt],
    );
    let gwb_csr = t.join("gwB.csr");
    let gwb_crt = t.join("gwB.crt");
    openssl_csr(
        &t.join("gwB.key"),
        &gwb_csr,
        "rsa2048",
        &b.openssl_subject(Some("gw1")),
    );
    b.sign_server(&gwb_csr, &gwb_crt).assert_success();

    // Chains through the token-made root and the cross-certificates, as openssl sees them.
    for purpose in ["sslserver", "sslclient"] {
        assert_openssl_ok(&openssl_verify(
            &["-purpose", purpose],
            &a.root_cert(),
            &[],
            &gwa_crt,
        ));
    }
    // B accepts A's dialing gateway through the cross-cert B issued A (token-signed leaf).
    assert_openssl_ok(&openssl_verify(
        &["-purpose", "sslclient"],
        &b.root_cert(),
        &[&xa],
        &gwa_crt,
    ));
    // A accepts B's dialing gateway through the cross-cert the token signed for B.
    assert_openssl_ok(&openssl_verify(
        &["-purpose", "sslclient"],
        &a.root_cert(),
        &[&xb],
        &gwb_crt,
    ));
    // And so does the project's own validator.
    ca_verify(&a.root_cert(), &[&xb], &[], "client", &gwb_crt)
        .assert_success()
        .assert_stdout_contains(&b.node_id);
    ca_verify(&b.root_cert(), &[&xa], &[], "client", &gwa_crt)
        .assert_success()
        .assert_stdout_contains(&a.node_id);
    ca_verify(&a.root_cert(), &[], &[], "server", &gwa_crt).assert_success();

    // list: the peer, the cross-cert and the server certificate are recorded.
    let list = ca_tool(args!["list", "--dir", &a.dir, "--json"]);
    list.assert_success();
    let list: Value = serde_json::from_str(&list.stdout).expect("list --json");
    assert_eq!(list["peers"][0]["node_id"], b.node_id.as_str(), "{list:#}");
    assert_eq!(
        list["certificates"].as_array().map(Vec::len),
        Some(3),
        "{list:#}"
    );

    // Revocation: the token signs the CRL; the partner's chain is then refused.
    let xb_serial = serial_hex(&xb);
    a.sign_ok(
        &hsm,
        "revoke",
        &args!["--peer", &b.node_id, "--reason", "key-compromise"],
    )
    .assert_stdout_contains(&xb_serial);
    let crl = a.dir.join("crl.pem");
    assert_crl_signed_by(&crl, &a.root_cert());
    let crl_text = crl.to_str().expect("UTF-8 temp path");
    let revoked = openssl_verify(
        &["-crl_check", "-CRLfile", crl_text],
        &a.root_cert(),
        &[],
        &xb,
    );
    revoked.assert_failure();
    assert!(
        revoked.all_output().contains("revoked"),
        "openssl should refuse the revoked cross-cert:\n{revoked:?}"
    );
    // Control: the same CRL does not refuse what was not revoked.
    assert_openssl_ok(&openssl_verify(
        &["-crl_check", "-CRLfile", crl_text],
        &a.root_cert(),
        &[],
        &gwa_crt,
    ));
    let refused = ca_verify(&a.root_cert(), &[&xb], &[&crl], "client", &gwb_crt);
    refused.assert_failure_with("revoked");
    assert_eq!(refused.code(), Some(3), "{refused:?}");

    // crl: a fresh CRL with the next number, signed by the token.
    let out = t.join("published.crl");
    a.sign_ok(&hsm, "crl", &args!["--out", &out, "--days", "7"])
        .assert_stdout_contains("#2");
    assert_crl_signed_by(&out, &a.root_cert());
    assert_eq!(read_bytes(&out), read_bytes(&crl));
    let text = openssl(args!["crl", "-in", &out, "-noout", "-text"]);
    text.assert_success();
    assert!(
        text.stdout.to_lowercase().contains(&xb_serial),
        "the CRL lists the revoked cross-cert:\n{}",
        text.stdout
    );
    // The server certificate is still good.
    ca_verify(&a.root_cert(), &[], &[&out], "server", &gwa_crt).assert_success();
}

#[test]
fn token_root_of_every_other_key_type() {
    let Some(hsm) = SoftHsm::new("token_root_of_every_other_key_type") else {
        return;
    };
    let t = hsm.path();
    for key_type in ["ecdsa-p384", "ed25519", "rsa-2048"] {
        let ca = hsm.init_ca(
            &t.join(key_type),
            key_type,
            &args![
                "--key-type",
                key_type,
                "--key-label",
                format!("root {key_type}")
            ],
        );
        assert_private_dir_holds_no_key(&ca, &hsm, key_type, &format!("root {key_type}"));
        assert_openssl_ok(&openssl_verify(&[], &ca.root_cert(), &[], &ca.root_cert()));
        // The bundle signature (bare signing, outside X.509) verifies.
        let bundle = t.join(format!("{key_type}.bundle"));
        ca.sign_ok(&hsm, "export-bundle", &args!["--out", &bundle]);
        let shown = ca_tool(args!["show-bundle", "--bundle", &bundle, "--json"]);
        shown.assert_success();
        let shown: Value = serde_json::from_str(&shown.stdout).expect("show-bundle --json");
        assert_eq!(json_str(&shown, "key_type"), key_type);
        // A server certificate and a CRL signed by the token.
        let csr = t.join(format!("{key_type}.csr"));
        let crt = t.join(format!("{key_type}.crt"));
        openssl_csr(
            &t.join(format!("{key_type}.key")),
            &csr,
            "p256",
            &ca.openssl_subject("gw"),
        );
        ca.sign_ok(&hsm, "sign-server", &args!["--csr", &csr, "--out", &crt]);
        assert_openssl_ok(&openssl_verify(
            &["-purpose", "sslserver"],
            &ca.root_cert(),
            &[],
            &crt,
        ));
        let crl = t.join(format!("{key_type}.crl"));
        ca.sign_ok(&hsm, "crl", &args!["--out", &crl]);
        assert_crl_signed_by(&crl, &ca.root_cert());
    }
}

#[test]
fn wrong_pin_missing_token_or_module_change_nothing() {
    let Some(hsm) = SoftHsm::new("wrong_pin_missing_token_or_module_change_nothing") else {
        return;
    };
    let t = hsm.path();
    let a = hsm.init_ca(&t.join("A"), "Alpha Clearing", &[]);
    let pass = write_passphrase(&t.join("pass"), PASSPHRASE);
    let b = CaFixture::init(&t.join("B"), ORG, "Beta Registry", None, None, &pass);
    let b_bundle = t.join("B.bundle");
    b.export_bundle(&b_bundle, &[]);
    let csr = t.join("gw.csr");
    openssl_csr(&t.join("gw.key"), &csr, "p256", &a.openssl_subject("gw"));
    // Something to revoke.
    let gw = t.join("gw.crt");
    a.sign_ok(&hsm, "sign-server", &args!["--csr", &csr, "--out", &gw]);
    let gw_serial = serial_hex(&gw);

    let out = t.join("out");
    let commands: Vec<(&str, Vec<OsString>)> = vec![
        ("export-bundle", args!["--out", &out]),
        ("sign-peer", args!["--bundle", &b_bundle, "--out", &out]),
        ("sign-server", args!["--csr", &csr, "--out", &out]),
        ("revoke", args!["--serial", &gw_serial]),
        ("crl", args!["--out", &out]),
    ];

    // A wrong PIN: a clear refusal, nothing written.
    let before = snapshot(&a.dir);
    for (sub, extra) in &commands {
        let o = a.signing(&hsm, sub, extra, &hsm.wrong_pin_file);
        o.assert_failure_with("the token refused the PIN");
        assert_unchanged(&a.dir, &before, &format!("{sub} with a wrong PIN"));
        assert!(
            !out.exists(),
            "{sub} with a wrong PIN wrote {}",
            out.display()
        );
    }

    // The token is not plugged in (a SoftHSM2 without it).
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let other_conf = write_softhsm_conf(elsewhere.path(), "tokens");
    for (sub, extra) in &commands {
        let mut args = args![*sub, "--dir", &a.dir];
        args.extend(extra.iter().cloned());
        args.extend(args!["--passphrase-file", &hsm.pin_file]);
        hsm.tool_with_conf(&args, &other_conf)
            .assert_failure_with("no token labelled");
        assert_unchanged(&a.dir, &before, &format!("{sub} without the token"));
        assert!(!out.exists());
    }

    // The module is gone (the path recorded in pkcs11.json no longer exists).
    let moved = a.dir.parent().expect("parent").join("A-moved");
    copy_dir(&a.dir, &moved);
    let config_path = moved.join("private").join("pkcs11.json");
    let mut config: Value = serde_json::from_str(&read_text(&config_path)).expect("json");
    config["module"] = t.join("no-such-module.so").display().to_string().into();
    write_file(&config_path, config.to_string(), 0o600);
    let moved_before = snapshot(&moved);
    for (sub, extra) in &commands {
        let mut args = args![*sub, "--dir", &moved];
        args.extend(extra.iter().cloned());
        args.extend(args!["--passphrase-file", &hsm.pin_file]);
        hsm.tool(&args).assert_failure_with("does not exist");
        assert_unchanged(&moved, &moved_before, &format!("{sub} without the module"));
        assert!(!out.exists());
    }

    // Both a key file and a token reference: refused rather than guessed.
    let both = t.join("A-both");
    copy_dir(&a.dir, &both);
    std::fs::copy(b.root_key(), both.join("private").join("root-ca.key")).expect("copy key");
    hsm.tool(&args![
        "crl",
        "--dir",
        &both,
        "--out",
        &out,
        "--passphrase-file",
        &hsm.pin_file
    ])
    .assert_failure_with("both exist");
    assert!(!out.exists());

    // A token key that is not the CA's (another CA's reference) is refused.
    let c = hsm.init_ca(&t.join("C"), "Gamma", &args!["--key-label", "gamma"]);
    let swapped = t.join("A-swapped");
    copy_dir(&a.dir, &swapped);
    std::fs::copy(
        c.dir.join("private").join("pkcs11.json"),
        swapped.join("private").join("pkcs11.json"),
    )
    .expect("copy reference");
    let swapped_before = snapshot(&swapped);
    hsm.tool(&args![
        "crl",
        "--dir",
        &swapped,
        "--out",
        &out,
        "--passphrase-file",
        &hsm.pin_file
    ])
    .assert_failure_with("does not match");
    assert_unchanged(&swapped, &swapped_before, "crl with another CA's key");

    // The right PIN still works afterwards (the wrong ones did not lock the token).
    a.sign_ok(&hsm, "crl", &args!["--out", &out]);
    assert_crl_signed_by(&out, &a.root_cert());
}

#[test]
fn init_on_a_token_refuses_cleanly() {
    let Some(hsm) = SoftHsm::new("init_on_a_token_refuses_cleanly") else {
        return;
    };
    let t = hsm.path();
    let dir = t.join("A");
    let init = |extra: &[OsString], pin_file: &Path| {
        let mut args = args![
            "init",
            "--dir",
            &dir,
            "--org",
            ORG,
            "--unit",
            "Alpha",
            "--passphrase-file",
            pin_file
        ];
        args.extend(extra.iter().cloned());
        let out = hsm.tool(&args);
        assert_no_pin(&out);
        out
    };
    let token_args = |label: &str| {
        args![
            "--pkcs11-module",
            &hsm.module,
            "--token-label",
            TOKEN_LABEL,
            "--key-label",
            label
        ]
    };

    // Wrong PIN: nothing created, and no key left on the token (the label is still free).
    init(&token_args("root"), &hsm.wrong_pin_file).assert_failure_with("the token refused the PIN");
    assert!(!dir.exists());
    // Unknown token, missing module: refused before asking for the PIN.
    init(
        &args![
            "--pkcs11-module",
            &hsm.module,
            "--token-label",
            "no such token"
        ],
        &hsm.pin_file,
    )
    .assert_failure_with("no token labelled");
    init(
        &args![
            "--pkcs11-module",
            t.join("missing.so"),
            "--token-label",
            TOKEN_LABEL
        ],
        &hsm.pin_file,
    )
    .assert_failure_with("does not exist");
    // Half the token options: a usage error.
    let usage = init(&args!["--token-label", TOKEN_LABEL], &hsm.pin_file);
    usage.assert_failure();
    assert_eq!(usage.code(), Some(2), "{usage:?}");
    assert!(!dir.exists());

    // The label is free: init succeeds with it.
    let first = init(&token_args("root"), &hsm.pin_file);
    first.assert_success();
    assert!(dir.join("private").join("pkcs11.json").is_file());

    // A second CA may not reuse a key label: the existing key is never taken over.
    let second_dir = t.join("B");
    let mut args = args![
        "init",
        "--dir",
        &second_dir,
        "--org",
        ORG,
        "--unit",
        "Beta",
        "--passphrase-file",
        &hsm.pin_file
    ];
    args.extend(token_args("root"));
    hsm.tool(&args)
        .assert_failure_with("already holds an object labelled");
    assert!(!second_dir.exists());

    // A CA directory that cannot be created after the key was generated (the name leaves
    // no room for the hidden staging directory's): the key is removed from the token
    // again, so its label is free for the next attempt.
    let try_init = |dir: &Path| {
        let mut args = args![
            "init",
            "--dir",
            dir,
            "--org",
            ORG,
            "--unit",
            "Gamma",
            "--passphrase-file",
            &hsm.pin_file
        ];
        args.extend(token_args("gamma"));
        hsm.tool(&args)
    };
    let too_long = t.join("c".repeat(250));
    try_init(&too_long)
        .assert_failure_with("nothing was created")
        .assert_stderr_contains("removed again");
    assert!(!too_long.exists());
    try_init(&t.join("C")).assert_success();
}
