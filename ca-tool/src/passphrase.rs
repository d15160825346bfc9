//! Getting the root key's passphrase (or a token's PIN) without ever echoing or logging it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};

/// Reads the passphrase from `file` (first line, trailing newline removed) or, without
/// a file, asks on the terminal without echo (twice when `confirm`).
pub fn obtain(file: Option<&Path>, confirm: bool) -> CliResult<Zeroizing<Vec<u8>>> {
    match file {
        Some(path) => from_file(path),
        None => from_terminal(confirm),
    }
}

/// Reads a passphrase from `file` (first line) or, without a file, asks on the
/// terminal without echo with `prompt` (for a key other than this CA's root key,
/// such as the one `import-swaptacular` reads).
pub fn obtain_with_prompt(file: Option<&Path>, prompt: &str) -> CliResult<Zeroizing<Vec<u8>>> {
    match file {
        Some(path) => from_file(path),
        None => {
            let pass = Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| {
                CliError::new(format!(
                    "cannot ask for the passphrase ({e}); run on a terminal or pass it in a file"
                ))
            })?);
            Ok(Zeroizing::new(pass.as_bytes().to_vec()))
        }
    }
}

/// Reads a PKCS#11 token's user PIN from `file` (first line, like a passphrase file) or,
/// without a file, asks on the terminal without echo.
pub fn obtain_pin(file: Option<&Path>) -> CliResult<Zeroizing<Vec<u8>>> {
    match file {
        Some(path) => from_file(path),
        None => {
            let pin = Zeroizing::new(rpassword::prompt_password("Token PIN: ").map_err(|e| {
                CliError::new(format!(
                    "cannot ask for the token PIN ({e}); run on a terminal or pass --passphrase-file FILE"
                ))
            })?);
            Ok(Zeroizing::new(pin.as_bytes().to_vec()))
        }
    }
}

fn from_file(path: &Path) -> CliResult<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(peerlink_pki::fsutil::read(path)?);
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: passphrase file {} is readable by other users; chmod 600 it",
                path.display()
            );
        }
    }
    let mut line: &[u8] = bytes.as_slice();
    if let Some(pos) = line.iter().position(|b| *b == b'\n') {
        line = &line[..pos];
    }
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    if line.is_empty() {
        return Err(CliError::new(format!(
            "the passphrase is empty: the first line of {} is empty; nothing was changed",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_vec()))
}

fn from_terminal(confirm: bool) -> CliResult<Zeroizing<Vec<u8>>> {
    let no_tty = |e: std::io::Error| {
        CliError::new(format!(
            "cannot ask for the root key passphrase ({e}); run on a terminal or pass --passphrase-file FILE"
        ))
    };
    let first =
        Zeroizing::new(rpassword::prompt_password("Root key passphrase: ").map_err(no_tty)?);
    if confirm {
        let second =
            Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ").map_err(no_tty)?);
        if *first != *second {
            return Err(CliError::new(
                "the two passphrases differ; nothing was created",
            ));
        }
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}
