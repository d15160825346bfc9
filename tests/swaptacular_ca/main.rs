//! ca-tool and Swaptacular's own CA scripts (swpt_ca_scripts, bash + openssl,
//! in `../shared/third_party/`), run for real:
//!
//! | module | what |
//! |---|---|
//! | `round_trip` | a node made by the scripts and one made by `ca-tool init --profile swaptacular` exchange info-bundles, sign each other's roots, register, and `openssl verify` judges the four chains; both ways round (ca-tool as accounting authority with RSA-3072, as creditors agent with P-256) |
//! | `gateway` | `peer-gateway` runs on swpt_stomp's accounting authority node directory, in place and read-only |
//! | `link` | then a STOMP link both ways between our gateway and swpt_stomp on exactly the certificates the round trip produced |
//! | `import` | `import-swaptacular` on a copy of swpt_stomp's test node CA |
//! | `hostile` | info-bundles that must be refused, leaving the CA as it was |
//! | `pty` | (helper) a pseudo-terminal that answers the scripts' prompts |
//!
//! The scripts need `openssl`, `zip`, `unzip`, `envsubst` and `hexdump`
//! (`.ci/run` installs them). Without them the tests that run the scripts are
//! skipped with a message, except under `CI=true`, where that fails.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use peerlink_e2e::*;

mod gateway;
mod hostile;
mod import;
mod link;
mod pty;
mod round_trip;

/// The passphrase of every key made here.
const PASS: &str = "correct horse battery";

/// `../shared/third_party` beside the repository.
fn third_party() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/third_party")
}

/// Whether the scripts can run here; in CI a missing tool is a failure.
fn scripts_can_run(test: &str) -> bool {
    let missing: Vec<&str> = ["openssl", "zip", "unzip", "envsubst", "hexdump", "bash"]
        .into_iter()
        .filter(|tool| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    let scripts = third_party().join("swpt_ca_scripts/init-ca");
    let why = if !missing.is_empty() {
        format!("missing {}", missing.join(", "))
    } else if !scripts.exists() {
        format!("{} is missing", scripts.display())
    } else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "{test}: {why}; .ci/run installs what the Swaptacular tests need, so CI must have it"
        );
    }
    eprintln!("SKIPPED {test}: {why} (install openssl zip unzip gettext-base bsdextrautils)");
    false
}

/// A node made by swpt_ca_scripts: a copy of the scripts in its own directory.
struct ScriptNode {
    dir: PathBuf,
}

impl ScriptNode {
    /// Copies the scripts to `dir` and runs generate-masterkey and init-ca with
    /// `menu` (1 creditors agent, 2 debtors agent, 3 accounting authority).
    fn create(dir: &Path, menu: &str, aa_prefix: &str, address: &str) -> ScriptNode {
        let out = run_program(
            "cp",
            args!["-r", third_party().join("swpt_ca_scripts"), dir],
        );
        out.assert_success();
        run_program("chmod", args!["-R", "u+w", dir]).assert_success();
        let node = ScriptNode {
            dir: dir.to_path_buf(),
        };
        node.run("generate-masterkey", &[], &[]);
        node.run(
            "init-ca",
            &[],
            &[
                ("Specify the type of your Swaptacular node:", menu),
                ("Enter your accounting authority prefix", aa_prefix),
                ("Network address:", address),
            ],
        );
        node
    }

    /// Runs one script, answering passphrase and confirmation prompts (and `extra`),
    /// and asserts it succeeded; returns its transcript.
    fn run(&self, script: &str, args: &[&str], extra: &[(&str, &str)]) -> String {
        self.run_expecting(true, script, args, extra)
    }

    /// Runs a script that must fail; returns its transcript.
    fn run_failing(&self, script: &str, args: &[&str]) -> String {
        self.run_expecting(false, script, args, &[])
    }

    fn run_expecting(
        &self,
        success: bool,
        script: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> String {
        let mut rules = vec![("pass phrase", PASS), ("[y/n]", "y")];
        rules.extend_from_slice(extra);
        let done = pty::run_answering(
            &self.dir.join(script),
            args,
            &self.dir,
            &rules,
            Duration::from_secs(120),
        );
        assert_eq!(
            done.status.success(),
            success,
            "{script} {args:?} exited with {}\n{}",
            done.status,
            done.transcript
        );
        done.transcript
    }

    fn node_id(&self) -> String {
        read_text(&self.dir.join("db/nodeid")).trim().to_string()
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root-ca.crt")
    }
}

/// A CA made with `ca-tool init --profile swaptacular`.
struct ToolNode {
    dir: PathBuf,
    pass: PathBuf,
}

impl ToolNode {
    fn create(dir: &Path, pass: &Path, node_type: &str, extra: &[&str]) -> ToolNode {
        let mut a = args![
            "init",
            "--dir",
            dir,
            "--profile",
            "swaptacular",
            "--node-type",
            node_type,
            "--passphrase-file",
            pass
        ];
        a.extend(extra.iter().map(|s| std::ffi::OsString::from(*s)));
        ca_tool(&a).assert_success();
        ToolNode {
            dir: dir.to_path_buf(),
            pass: pass.to_path_buf(),
        }
    }

    /// A node in `dir/<name>`, with the passphrase file `dir/pass`.
    fn create_in(dir: &Path, name: &str, node_type: &str, extra: &[&str]) -> ToolNode {
        let pass = write_passphrase(&dir.join("pass"), &format!("{PASS}\n"));
        ToolNode::create(&dir.join(name), &pass, node_type, extra)
    }

    /// `export-bundle --format swaptacular --out out --stomp-endpoint endpoint`, asserted.
    fn export_infobundle(&self, out: &Path, endpoint: &str) {
        self.cmd_with_pass(
            "export-bundle",
            args![
                "--format",
                "swaptacular",
                "--out",
                out,
                "--stomp-endpoint",
                endpoint
            ],
        )
        .assert_success();
    }

    fn cmd(&self, sub: &str, extra: Vec<std::ffi::OsString>) -> Outcome {
        let mut a = args![sub, "--dir", &self.dir];
        a.extend(extra);
        ca_tool(&a)
    }

    fn cmd_with_pass(&self, sub: &str, mut extra: Vec<std::ffi::OsString>) -> Outcome {
        extra.extend(args!["--passphrase-file", &self.pass]);
        self.cmd(sub, extra)
    }

    fn node_id(&self) -> String {
        let out = self.cmd("info", args!["--json"]);
        out.assert_success();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("info --json");
        json_str(&v, "node_id")
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root-ca.crt")
    }
}

/// A temporary directory for a pair kept in a `static` for the whole run
/// (statics are never dropped, so [`tmp`]'s would stay in /tmp): it lives
/// under the target directory, named by our pid, and each run first removes
/// those of runs that have ended.
fn run_tmp() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("swaptacular_ca");
    std::fs::create_dir_all(&base).expect("target tmp dir");
    for entry in std::fs::read_dir(&base)
        .expect("list target tmp dir")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').nth(1).unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("run-{}-", std::process::id()))
        .tempdir_in(&base)
        .expect("temp dir")
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("swpt-ca-e2e-")
        .tempdir()
        .expect("temp dir")
}
