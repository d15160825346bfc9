//! Driving swpt_ca_scripts as an operator does: at a terminal. The scripts
//! prompt with bash's `read`/`select` and openssl asks for the passphrase on
//! `/dev/tty`, so they run here on a pseudo-terminal of their own (a new
//! session whose controlling terminal it is), and every prompt is answered
//! when it appears. The transcript is kept for failure messages.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the script printed, and how it ended.
pub struct Finished {
    pub status: ExitStatus,
    pub transcript: String,
}

/// Runs `program args` in `cwd` on a fresh pseudo-terminal, answering each
/// prompt that contains one of `rules`' patterns (each occurrence once) with the
/// rule's line, until the program exits (at most `timeout`).
pub fn run_answering(
    program: &Path,
    args: &[&str],
    cwd: &Path,
    rules: &[(&str, &str)],
    timeout: Duration,
) -> Finished {
    let (master, slave) = openpty();
    let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty"));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(stdio(&slave))
        .stdout(stdio(&slave))
        .stderr(stdio(&slave))
        .env("TERM", "dumb");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    // The terminal must be closed on our side (the Command holds copies too), or
    // reading it never ends once the program exits.
    drop(cmd);
    drop(slave);
    let output = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut reader = File::from(master.try_clone().expect("dup pty"));
    let sink = output.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the last process holding the terminal exits.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut writer = File::from(master);
    let mut answered = 0usize;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not finish within {timeout:?}; transcript:\n{}",
                program.display(),
                String::from_utf8_lossy(&output.lock().unwrap())
            );
        }
        let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
        let pending = &text[answered.min(text.len())..];
        let next = rules
            .iter()
            .filter_map(|(pattern, answer)| pending.find(pattern).map(|at| (at, *pattern, *answer)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, pattern, answer)) => {
                answered += at + pattern.len();
                // Let the program reach its read (and switch echo off) first.
                std::thread::sleep(Duration::from_millis(100));
                writer
                    .write_all(format!("{answer}\n").as_bytes())
                    .expect("write to pty");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    drop(writer);
    let _ = thread.join();
    let transcript = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    Finished { status, transcript }
}

fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new file descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}
