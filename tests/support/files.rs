//! Files: permission bits, reading and writing, copying a directory tree, and
//! snapshots that prove a refused command changed nothing on disk.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
