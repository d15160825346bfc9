//! Running the built binaries and `openssl`: where the binaries are, what a
//! finished command did ([`Outcome`] and its assertions), and running a command as
//! an unprivileged user.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::set_mode;

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
/// otherwise under `setpriv` as uid/gid [`crate::NOBODY`] with no supplementary groups.
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
