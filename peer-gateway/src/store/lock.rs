//! One gateway process per SQLite store.
//!
//! A SQLite store serves exactly one gateway (replicas share a PostgreSQL
//! store), which is what lets the gateway skip link leases with SQLite (so a
//! restarted gateway never waits for a killed predecessor's). A second process
//! opening the same file by mistake (a manual run beside the service) would
//! break that, so opening a SQLite store takes an exclusive `flock` on
//! `<file>.lock`, held until the store is closed or the process ends (the
//! kernel releases it even after `kill -9`, so there is never a stale lock to
//! clean up).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the store's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "{} is in use by another peer-gateway process (lock {}); stop that process first \
         (a SQLite store serves one gateway; replicas share a PostgreSQL store)",
        .db.display(),
        .lock.display()
    )]
    InUse {
        /// The database file.
        db: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock {}: {source}", .lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// An exclusive lock on a SQLite store, released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Locks the store at `db` without waiting.
    pub fn acquire(db: &Path) -> Result<StoreLock, LockError> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        let io_error = |source| LockError::Io {
            lock: lock.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock)
            .map_err(io_error)?;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                LockError::InUse {
                    db: db.to_path_buf(),
                    lock,
                }
            } else {
                io_error(e)
            });
        }
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gw.db");
        let first = StoreLock::acquire(&db).unwrap();
        let err = StoreLock::acquire(&db).unwrap_err();
        assert!(matches!(err, LockError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use by another peer-gateway"));
        drop(first);
        StoreLock::acquire(&db).unwrap();
    }

    #[test]
    fn an_unwritable_place_is_an_io_error() {
        let err = StoreLock::acquire(Path::new("/nonexistent-dir/gw.db")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err}");
    }
}
