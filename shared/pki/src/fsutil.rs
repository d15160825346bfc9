//! Crash-safe file writing.
//!
//! An operator's laptop may lose power in the middle of a command; every file
//! the tools write therefore goes to a temporary file in the same directory,
//! is fsynced, renamed over the target and the directory fsynced, so a reader
//! sees either the old content or the new one, never half of it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode for private key files.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode for directories that hold private keys.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode for public files (certificates, bundles, CRLs).
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// An I/O failure together with the path it concerns, so messages name the file.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FsError {
    /// What was being done ("cannot write", "cannot read", ...).
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// Wraps an [`io::Error`] with the action and path it concerns.
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        FsError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Largest file the tools read (certificates, bundles, CSRs, keys, passphrases):
/// a mistyped path such as `/dev/zero` must fail, not exhaust memory.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a whole file (at most [`MAX_INPUT_BYTES`]), naming it in the error.
/// Pipes are fine (`--passphrase-file <(...)`).
pub fn read(path: &Path) -> Result<Vec<u8>, FsError> {
    use std::io::Read;
    let file = File::open(path).map_err(|e| FsError::new("cannot read", path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FsError::new("cannot read", path, e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(FsError::new(
            "refusing to read",
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_INPUT_BYTES} bytes"),
            ),
        ));
    }
    Ok(bytes)
}

/// Atomically replaces `path` with `contents`, created with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            // Name the file the operator asked for, not our temporary.
            .map_err(|e| FsError::new("cannot write", path, e))?;
        // The umask may have narrowed the mode; public files must stay readable.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::new("cannot set permissions on", &tmp, e))?;
        file.write_all(contents)
            .map_err(|e| FsError::new("cannot write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| FsError::new("cannot sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| FsError::new("cannot write", path, e))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `contents` to a new file, failing if `path` already exists.
///
/// Used where overwriting would destroy something irreplaceable (a root key).
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    if path.exists() {
        return Err(FsError::new(
            "refusing to overwrite",
            path,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    write_atomic(path, contents, mode)
}

/// A group of file writes that can be undone together.
///
/// Commands that write several files and then commit a database transaction
/// record every write here; if anything fails before the commit, `rollback`
/// puts back the previous contents (or removes files and directories that did
/// not exist), so the CA directory is left exactly as it was.
#[derive(Default)]
pub struct FileTransaction {
    undo: Vec<Undo>,
}

enum Undo {
    Restore(PathBuf, Vec<u8>, u32),
    Remove(PathBuf),
    RemoveDir(PathBuf),
}

impl FileTransaction {
    /// Starts an empty transaction.
    pub fn new() -> FileTransaction {
        FileTransaction::default()
    }

    /// [`write_atomic`], remembering what was there before.
    pub fn write(&mut self, path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
        let previous = match fs::read(path) {
            Ok(old) => {
                let old_mode = fs::metadata(path).map_or(mode, |m| m.permissions().mode() & 0o7777);
                Undo::Restore(path.to_path_buf(), old, old_mode)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Undo::Remove(path.to_path_buf()),
            Err(e) => return Err(FsError::new("cannot read", path, e)),
        };
        write_atomic(path, contents, mode)?;
        self.undo.push(previous);
        Ok(())
    }

    /// [`create_dir`], remembering to remove it if it is new.
    pub fn create_dir(&mut self, path: &Path, mode: u32) -> Result<(), FsError> {
        if path.is_dir() {
            return Ok(());
        }
        create_dir(path, mode)?;
        self.undo.push(Undo::RemoveDir(path.to_path_buf()));
        Ok(())
    }

    /// Undoes every recorded change, newest first (best effort).
    pub fn rollback(self) {
        for undo in self.undo.into_iter().rev() {
            match undo {
                Undo::Restore(path, old, mode) => {
                    let _ = write_atomic(&path, &old, mode);
                }
                Undo::Remove(path) => {
                    let _ = fs::remove_file(&path);
                }
                Undo::RemoveDir(path) => {
                    let _ = fs::remove_dir(&path);
                }
            }
        }
    }
}

/// Creates a directory (and its parents) with the given mode, and fsyncs its parent.
pub fn create_dir(path: &Path, mode: u32) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| FsError::new("cannot create directory", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| FsError::new("cannot set permissions on", path, e))?;
    sync_dir(&parent_dir(path))
}

/// Fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("cannot sync directory", dir, e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", PRIVATE_FILE_MODE).unwrap();
        write_atomic(&path, b"two", PRIVATE_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn file_transaction_rollback_restores_everything() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.pem");
        write_atomic(&old, b"before", PUBLIC_FILE_MODE).unwrap();
        let mut tx = FileTransaction::new();
        tx.write(&old, b"after", PUBLIC_FILE_MODE).unwrap();
        let sub = dir.path().join("sub");
        tx.create_dir(&sub, 0o755).unwrap();
        tx.write(&sub.join("new.pem"), b"new", PUBLIC_FILE_MODE)
            .unwrap();
        assert_eq!(fs::read(&old).unwrap(), b"after");
        tx.rollback();
        assert_eq!(fs::read(&old).unwrap(), b"before");
        assert!(!sub.exists());
    }

    #[test]
    fn reading_an_endless_file_fails_instead_of_exhausting_memory() {
        let err = read(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn write_new_refuses_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_new(&path, b"one", PRIVATE_FILE_MODE).unwrap();
        let err = write_new(&path, b"two", PRIVATE_FILE_MODE).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
    }

    #[test]
    fn write_into_missing_directory_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("x.pem");
        let err = write_atomic(&path, b"x", PUBLIC_FILE_MODE).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
