//! Helpers for the end-to-end tests.
//!
//! The tests run the built binaries (`target/<profile>/ca-tool`, ...) the way an
//! operator would, plus `openssl` as the independent second opinion. Nothing here
//! builds anything: run `cargo build --workspace --bins` first (scripts/test does).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The passphrase the fixtures use (as an operator's file holds it: one line).
pub const PASSPHRASE: &str = "correct horse battery\n";
/// A passphrase that does not decrypt the fixtures' keys.
pub const WRONG_PASSPHRASE: &str = "incorrect horse battery\n";

/// uid/gid the unprivileged tests switch to when running as root (`nobody`).
pub const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------
// Locating the binaries
// ---------------------------------------------------------------------------

/// Directories where the workspace's binaries may be, best candidate first: the
/// profile directory of the running test executable (`target/debug/deps/..`), then
/// `$CARGO_TARGET_DIR/debug`, then `<workspace>/target/debug`.
pub fn binary_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/<test>-<hash>: the profile directory is two levels up.
        if let Some(deps) = exe.parent() {
            if deps.file_name() == Some(OsStr::new("deps")) {
                if let Some(profile) = deps.parent() {
                    dirs.push(profile.to_path_buf());
                }
            } else {
                dirs.push(deps.to_path_buf());
            }
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        let target = if target.is_absolute() {
            target
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(target)
        };
        dirs.push(target.join("debug"));
    }
    dirs.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("debug"),
    );
    dirs
}

/// Path of a workspace binary such as `ca-tool`; panics with what to do when it is not built.
pub fn binary(name: &str) -> PathBuf {
    let dirs = binary_dirs();
    for dir in &dirs {
        let path = dir.join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "binary `{name}` not found (looked in {}): run `cargo build --workspace --bins` first (scripts/test does)",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Path of the built `ca-tool`.
pub fn ca_tool_path() -> PathBuf {
    binary("ca-tool")
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Outcome {
    /// Exit code (None when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Standard output and standard error together.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "expected success\n{}", self.describe());
        self
    }

    /// Panics unless the command failed cleanly: a non-zero exit code that is not a
    /// Rust panic (101) or a signal, and an error message on stderr.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        match self.code() {
            Some(0) => panic!("expected failure, got exit 0\n{}", self.describe()),
            None => panic!("killed by a signal\n{}", self.describe()),
            Some(101) => panic!(
                "exit 101: the tool panicked instead of refusing cleanly\n{}",
                self.describe()
            ),
            Some(_) => {}
        }
        assert!(
            !self.stderr.contains("panicked at"),
            "the tool panicked\n{}",
            self.describe()
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "failed without a message on stderr\n{}",
            self.describe()
        );
        self
    }

    /// Like [`Outcome::assert_failure`], and stderr contains `fragment` (case-insensitive).
    #[track_caller]
    pub fn assert_failure_with(&self, fragment: &str) -> &Self {
        self.assert_failure();
        self.assert_stderr_contains(fragment)
    }

    /// Like [`Outcome::assert_failure`], and stderr contains at least one of `fragments`.
    #[track_caller]
    pub fn assert_failure_with_any(&self, fragments: &[&str]) -> &Self {
        self.assert_failure();
        let err = self.stderr.to_lowercase();
        assert!(
            fragments.iter().any(|f| err.contains(&f.to_lowercase())),
            "stderr mentions none of {fragments:?}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless stdout contains `fragment` (case-insensitive).
    #[track_caller]
    pub fn assert_stdout_contains(&self, fragment: &str) -> &Self {
        assert!(
            self.stdout
                .to_lowercase()
                .contains(&fragment.to_lowercase()),
            "stdout does not contain {fragment:?}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless stderr contains `fragment` (case-insensitive).
    #[track_caller]
    pub fn assert_stderr_contains(&self, fragment: &str) -> &Self {
        assert!(
            self.stderr
                .to_lowercase()
                .contains(&fragment.to_lowercase()),
            "stderr does not contain {fragment:?}\n{}",
            self.describe()
        );
        self
    }
}

/// Runs a prepared command to completion (stdin closed) and collects its output.
pub fn run(cmd: &mut Command) -> Outcome {
    let mut command = shell_words(cmd.get_program());
    for arg in cmd.get_args() {
        command.push(' ');
        command.push_str(&shell_words(arg));
    }
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    Outcome {
        command,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn shell_words(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `program args...`.
pub fn run_program<I, S>(program: impl AsRef<OsStr>, args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(program).args(args))
}

/// Runs the built `ca-tool` with `args`.
pub fn ca_tool<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_program(ca_tool_path(), args)
}

/// Runs `openssl` with `args`.
pub fn openssl<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_program("openssl", args)
}

/// Converts a mixed list of `&str`, `&Path`, `String`, `PathBuf` into arguments.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from($a)),*] as Vec<::std::ffi::OsString>
    };
}

// ---------------------------------------------------------------------------
// Running as an unprivileged user
// ---------------------------------------------------------------------------

/// Whether the tests run as root (then permission checks do not apply to them).
pub fn running_as_root() -> bool {
    let out = run_program("id", ["-u"]);
    out.assert_success();
    out.stdout.trim() == "0"
}

/// A command that runs `program` as an ordinary user: as is when we are not root,
/// otherwise under `setpriv` as uid/gid [`NOBODY`] with no supplementary groups.
pub fn unprivileged_command(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A copy of `ca-tool` that [`unprivileged_command`] can execute: the built binary when
/// the unprivileged user can run it from there, otherwise a 0755 copy inside `scratch`
/// (which must itself be reachable by that user).
pub fn unprivileged_ca_tool(scratch: &Path) -> PathBuf {
    let built = ca_tool_path();
    if run(unprivileged_command(&built).arg("--version")).success() {
        return built;
    }
    let copy = scratch.join("ca-tool");
    fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    set_mode(&copy, 0o755);
    let check = run(unprivileged_command(&copy).arg("--version"));
    assert!(
        check.success(),
        "the unprivileged user cannot run {} (is {} traversable?)\n{:?}",
        copy.display(),
        scratch.display(),
        check
    );
    copy
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Permission bits of a file or directory.
pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Creates (or replaces) a file with `contents` and exactly `mode`.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>, mode: u32) {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    std::io::Write::write_all(&mut f, contents.as_ref())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Writes a passphrase file (mode 0600) and returns its path.
pub fn write_passphrase(path: &Path, passphrase: &str) -> PathBuf {
    write_file(path, passphrase, 0o600);
    path.to_path_buf()
}

/// Reads a file as text.
pub fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Reads a file.
pub fn read_bytes(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Copies a directory tree, keeping permission bits.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for entry in fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let entry = entry.expect("directory entry");
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ty = entry.file_type().expect("file type");
        if ty.is_dir() {
            copy_dir(&from, &to);
        } else if ty.is_file() {
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        } else {
            panic!("unexpected file type at {}", from.display());
        }
        set_mode(&to, mode_of(&from));
    }
    set_mode(dst, mode_of(src));
}

/// A directory's whole content: relative path -> (st_mode including the file type,
/// bytes; the link target for symlinks, empty for directories).
pub type Snapshot = BTreeMap<PathBuf, (u32, Vec<u8>)>;

/// Takes a [`Snapshot`] of `dir` (the directory itself is the empty path).
pub fn snapshot(dir: &Path) -> Snapshot {
    fn walk(root: &Path, path: &Path, out: &mut Snapshot) {
        let meta =
            fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        let rel = path.strip_prefix(root).expect("inside root").to_path_buf();
        let ft = meta.file_type();
        if ft.is_dir() {
            out.insert(rel, (meta.mode(), Vec::new()));
            let mut entries: Vec<_> = fs::read_dir(path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
                .map(|e| e.expect("directory entry").path())
                .collect();
            entries.sort();
            for e in entries {
                walk(root, &e, out);
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).expect("readlink");
            out.insert(
                rel,
                (meta.mode(), target.into_os_string().into_encoded_bytes()),
            );
        } else {
            out.insert(rel, (meta.mode(), read_bytes(path)));
        }
    }
    let mut out = Snapshot::new();
    walk(dir, dir, &mut out);
    out
}

/// Panics, listing the differences, unless `dir` is exactly as `before`.
#[track_caller]
pub fn assert_unchanged(dir: &Path, before: &Snapshot, context: &str) {
    let after = snapshot(dir);
    if &after == before {
        return;
    }
    let mut diff = String::new();
    for (path, (mode, bytes)) in before {
        match after.get(path) {
            None => writeln!(diff, "  removed: {}", path.display()).unwrap(),
            Some((m, b)) => {
                if m != mode {
                    writeln!(diff, "  mode {:o} -> {:o}: {}", mode, m, path.display()).unwrap();
                }
                if b != bytes {
                    writeln!(diff, "  content changed: {}", path.display()).unwrap();
                }
            }
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        writeln!(diff, "  added: {}", path.display()).unwrap();
    }
    panic!("{context}: {} changed on disk:\n{diff}", dir.display());
}

// ---------------------------------------------------------------------------
// A CA made with `ca-tool init`
// ---------------------------------------------------------------------------

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
        let mut args = args![
            "init",
            "--dir",
            dir,
            "--org",
            org,
            "--unit",
            unit,
            "--passphrase-file",
            passphrase_file
        ];
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

/// A string member of a JSON object; panics when missing.
#[track_caller]
pub fn json_str(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("no string {key:?} in {v:#}"))
        .to_string()
}

// ---------------------------------------------------------------------------
// openssl helpers
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// PEM and base64, for tampering with files
// ---------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64, ignoring whitespace; panics on anything else.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = B64
            .iter()
            .position(|x| *x == c)
            .unwrap_or_else(|| panic!("not base64: {:?}", c as char)) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Encodes one PEM block with 64-character lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The byte range of the base64 body of the first `label` PEM block in `text`
/// (from after the BEGIN line to the END line; LF or CRLF line endings).
pub fn pem_body_range(text: &str, label: &str) -> std::ops::Range<usize> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let at = text
        .find(&begin)
        .unwrap_or_else(|| panic!("no {label} block in:\n{text}"));
    let start = at
        + text[at..]
            .find('\n')
            .unwrap_or_else(|| panic!("no line end after BEGIN {label}"))
        + 1;
    let stop = start
        + text[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("no END {label} line"));
    start..stop
}

/// The DER content of the first `label` PEM block in `text`.
pub fn pem_block(text: &str, label: &str) -> Vec<u8> {
    base64_decode(&text[pem_body_range(text, label)])
}

/// `text` with the body of the first `label` block replaced by `der` (re-encoded).
pub fn replace_pem_block(text: &str, label: &str, der: &[u8]) -> String {
    let range = pem_body_range(text, label);
    let encoded = pem_encode(label, der);
    let body = &encoded[pem_body_range(&encoded, label)];
    format!("{}{}{}", &text[..range.start], body, &text[range.end..])
}

/// `text` with one base64 character of the first `label` block changed (the `index`th
/// character of its body, skipping newlines) to a different base64 character.
pub fn flip_base64_char(text: &str, label: &str, index: usize) -> String {
    let range = pem_body_range(text, label);
    let mut bytes = text.as_bytes().to_vec();
    let pos = (range.start..range.end)
        .filter(|i| B64.contains(&bytes[*i]))
        .nth(index)
        .unwrap_or_else(|| panic!("{label} block has fewer than {index} characters"));
    bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)), data);
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn pem_blocks_are_replaced() {
        let text = format!(
            "header\n{}{}",
            pem_encode("A", b"one"),
            pem_encode("B", b"two")
        );
        assert_eq!(pem_block(&text, "B"), b"two");
        let replaced = replace_pem_block(&text, "A", b"three");
        assert_eq!(pem_block(&replaced, "A"), b"three");
        assert_eq!(pem_block(&replaced, "B"), b"two");
        assert!(replaced.starts_with("header\n"));
        let flipped = flip_base64_char(&text, "B", 0);
        assert_ne!(pem_block(&flipped, "B"), b"two");
    }
}

pub mod gateway;
pub mod messaging;
pub mod netns;
pub mod traffic;
