//! A CA made with `ca-tool init` ([`CaFixture`]) and the commands an operator runs
//! on it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{ca_tool, copy_dir, Outcome};

/// A CA directory created with `ca-tool init`, and the passphrase file that opens it.
#[derive(Debug, Clone)]
pub struct CaFixture {
    /// The CA directory.
    pub dir: PathBuf,
    /// The passphrase file.
    pub passphrase_file: PathBuf,
    /// `--org`.
    pub org: String,
    /// `--unit`.
    pub unit: String,
    /// `--key-type`, when one was given (otherwise the default, ecdsa-p256).
    pub key_type: Option<String>,
    /// The node id (`info --json`).
    pub node_id: String,
    /// SHA-256 fingerprint of the root, as `info --json` prints it.
    pub fingerprint: String,
    /// What `init` printed.
    pub init_output: Outcome,
}

impl CaFixture {
    /// Runs `ca-tool init --dir dir --org org --unit unit [--key-type key_type]
    /// [--node-id id] --passphrase-file passphrase_file`, asserting success.
    pub fn init(
        dir: &Path,
        org: &str,
        unit: &str,
        key_type: Option<&str>,
        node_id: Option<&str>,
        passphrase_file: &Path,
    ) -> CaFixture {
        let mut args = init_args(dir, org, unit, passphrase_file);
        if let Some(k) = key_type {
            args.extend(args!["--key-type", k]);
        }
        if let Some(id) = node_id {
            args.extend(args!["--node-id", id]);
        }
        let init_output = ca_tool(&args);
        init_output.assert_success();
        let mut fixture = CaFixture {
            dir: dir.to_path_buf(),
            passphrase_file: passphrase_file.to_path_buf(),
            org: org.into(),
            unit: unit.into(),
            key_type: key_type.map(str::to_string),
            node_id: String::new(),
            fingerprint: String::new(),
            init_output,
        };
        let info = fixture.info_json();
        fixture.node_id = json_str(&info, "node_id");
        fixture.fingerprint = json_str(&info, "fingerprint_sha256");
        fixture
    }

    /// A copy of this CA in `dir` (same passphrase file).
    pub fn copy_to(&self, dir: &Path) -> CaFixture {
        copy_dir(&self.dir, dir);
        CaFixture {
            dir: dir.to_path_buf(),
            ..self.clone()
        }
    }

    /// `ca-tool <sub> --dir DIR <extra>`.
    pub fn cmd(&self, sub: &str, extra: &[OsString]) -> Outcome {
        let mut args = args![sub, "--dir", &self.dir];
        args.extend(extra.iter().cloned());
        ca_tool(&args)
    }

    /// `ca-tool <sub> --dir DIR <extra> --passphrase-file F`.
    pub fn cmd_with_pass(&self, sub: &str, extra: &[OsString]) -> Outcome {
        self.cmd_with_pass_file(sub, extra, &self.passphrase_file)
    }

    /// `ca-tool <sub> --dir DIR <extra> --passphrase-file <file>`.
    pub fn cmd_with_pass_file(&self, sub: &str, extra: &[OsString], file: &Path) -> Outcome {
        let mut extra = extra.to_vec();
        extra.extend(args!["--passphrase-file", file]);
        self.cmd(sub, &extra)
    }

    /// `info --json`, parsed.
    pub fn info_json(&self) -> serde_json::Value {
        let out = self.cmd("info", &args!["--json"]);
        out.assert_success();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("info --json is not JSON ({e}):\n{}", out.stdout))
    }

    /// `list --json`, parsed.
    pub fn list_json(&self) -> serde_json::Value {
        let out = self.cmd("list", &args!["--json"]);
        out.assert_success();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("list --json is not JSON ({e}):\n{}", out.stdout))
    }

    /// The root certificate file.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("root-ca.crt")
    }

    /// The encrypted root key file.
    pub fn root_key(&self) -> PathBuf {
        self.dir.join("private").join("root-ca.key")
    }

    /// The node's DN in `openssl req -subj` form (O, OU, serialNumber, as `info` shows),
    /// optionally followed by a CN.
    pub fn openssl_subject(&self, cn: Option<&str>) -> String {
        let mut s = format!(
            "/O={}/OU={}/serialNumber={}",
            self.org, self.unit, self.node_id
        );
        if let Some(cn) = cn {
            s.push_str("/CN=");
            s.push_str(cn);
        }
        s
    }

    /// `export-bundle --out out [--endpoint e]...`, asserting success.
    pub fn export_bundle(&self, out: &Path, endpoints: &[&str]) -> Outcome {
        let mut extra = args!["--out", out];
        for e in endpoints {
            extra.extend(args!["--endpoint", *e]);
        }
        let o = self.cmd_with_pass("export-bundle", &extra);
        o.assert_success();
        o
    }

    /// `sign-peer --bundle bundle --out out [--expect-fingerprint fp]` (not asserted).
    pub fn sign_peer(
        &self,
        bundle: &Path,
        out: &Path,
        expect_fingerprint: Option<&str>,
    ) -> Outcome {
        let mut extra = args!["--bundle", bundle, "--out", out];
        if let Some(fp) = expect_fingerprint {
            extra.extend(args!["--expect-fingerprint", fp]);
        }
        self.cmd_with_pass("sign-peer", &extra)
    }

    /// `register-peer --bundle bundle --cert cert` (not asserted).
    pub fn register_peer(&self, bundle: &Path, cert: &Path) -> Outcome {
        self.cmd("register-peer", &args!["--bundle", bundle, "--cert", cert])
    }

    /// `sign-server --csr csr --out out` (not asserted).
    pub fn sign_server(&self, csr: &Path, out: &Path) -> Outcome {
        self.cmd_with_pass("sign-server", &args!["--csr", csr, "--out", out])
    }
}

/// The arguments of `ca-tool init --dir dir --org org --unit unit --passphrase-file
/// passphrase_file`, for tests that add options or run it another way.
pub fn init_args(dir: &Path, org: &str, unit: &str, passphrase_file: &Path) -> Vec<OsString> {
    args![
        "init",
        "--dir",
        dir,
        "--org",
        org,
        "--unit",
        unit,
        "--passphrase-file",
        passphrase_file
    ]
}

/// A string member of a JSON object; panics when missing.
#[track_caller]
pub fn json_str(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("no string {key:?} in {v:#}"))
        .to_string()
}
