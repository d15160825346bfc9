//! Zip archives from strangers, read defensively, and the ones we write.
//!
//! An info-bundle arrives by e-mail from a partner not yet trusted, so
//! everything about it is bounded before anything is believed: the archive's
//! size, the number of members, every member's size *as decompressed* (a zip
//! bomb declares small sizes and inflates to gigabytes: reading stops at the
//! limit, whatever the header says), and the total. Member names must be
//! plain relative paths (no `..`, no absolute path, no backslash, no control
//! character, no duplicate); symlinks and encrypted members are refused.
//! Nothing is ever extracted to disk from here: members come back as bytes.

use std::io::{Cursor, Read, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

/// Bounds on an archive and its members.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest archive (bytes).
    pub archive: usize,
    /// Most members (directories included).
    pub members: usize,
    /// Largest member, decompressed (bytes).
    pub member: u64,
    /// Largest sum of members, decompressed (bytes).
    pub total: u64,
    /// Whether members may sit in directories (`a/b`); otherwise only plain names.
    pub subdirectories: bool,
}

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// Not a readable zip archive.
    #[error("{what} is not a readable zip archive ({detail})")]
    Corrupt {
        /// Which archive.
        what: String,
        /// What the zip reader said.
        detail: String,
    },
    /// Over one of the [`Limits`].
    #[error("{what}: {detail}")]
    TooLarge {
        /// Which archive.
        what: String,
        /// Which limit.
        detail: String,
    },
    /// A member that must not be there (unsafe name, symlink, encrypted, duplicate).
    #[error("{what}: member {name:?} is refused: {why}")]
    BadMember {
        /// Which archive.
        what: String,
        /// The member's name.
        name: String,
        /// Why.
        why: String,
    },
}

/// Reads every file member of `bytes` (directory entries are skipped) within
/// `limits`; `what` names the archive in errors.
pub fn read_members(
    bytes: &[u8],
    limits: &Limits,
    what: &str,
) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let too_large = |detail: String| ArchiveError::TooLarge {
        what: what.to_string(),
        detail,
    };
    if bytes.len() > limits.archive {
        return Err(too_large(format!(
            "{} bytes is larger than the {}-byte limit",
            bytes.len(),
            limits.archive
        )));
    }
    let corrupt = |e: zip::result::ZipError| ArchiveError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    };
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(corrupt)?;
    // The zip reader keeps one member per name; a second member of the same name
    // (which another unzip may prefer) shows as a count below the directory's.
    if let Some(declared) = declared_members(bytes) {
        if declared != archive.len() {
            return Err(ArchiveError::BadMember {
                what: what.to_string(),
                name: "(several)".into(),
                why: format!(
                    "the central directory lists {declared} members but only {} distinct names:                      a name appears twice",
                    archive.len()
                ),
            });
        }
    }
    if archive.len() > limits.members {
        return Err(too_large(format!(
            "{} members, more than the {} allowed",
            archive.len(),
            limits.members
        )));
    }
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(corrupt)?;
        let bad = |name: &str, why: &str| ArchiveError::BadMember {
            what: what.to_string(),
            name: name.to_string(),
            why: why.to_string(),
        };
        let raw = String::from_utf8_lossy(file.name_raw()).into_owned();
        let name = std::str::from_utf8(file.name_raw())
            .map_err(|_| bad(&raw, "its name is not UTF-8"))?
            .to_string();
        check_name(&name, limits.subdirectories).map_err(|why| bad(&name, why))?;
        if file.is_symlink() {
            return Err(bad(&name, "it is a symbolic link"));
        }
        if file.encrypted() {
            return Err(bad(&name, "it is encrypted"));
        }
        let key = name.trim_end_matches('/').to_string();
        if names.contains(&key) {
            return Err(bad(&name, "the name appears twice"));
        }
        names.push(key);
        if file.is_dir() {
            continue;
        }
        let mut data = Vec::new();
        (&mut file)
            .take(limits.member + 1)
            .read_to_end(&mut data)
            .map_err(|e| ArchiveError::Corrupt {
                what: what.to_string(),
                detail: format!("member {name:?}: {e}"),
            })?;
        if data.len() as u64 > limits.member {
            return Err(bad(
                &name,
                &format!("it is larger than {} bytes decompressed", limits.member),
            ));
        }
        total += data.len() as u64;
        if total > limits.total {
            return Err(too_large(format!(
                "more than {} bytes decompressed in all",
                limits.total
            )));
        }
        out.push((name, data));
    }
    Ok(out)
}

/// The member count the end-of-central-directory record declares (`None` for
/// ZIP64 archives, whose count is elsewhere, or when the record is not found).
fn declared_members(bytes: &[u8]) -> Option<usize> {
    // The record is 22 bytes plus a comment of at most 65535 bytes, at the end.
    let floor = bytes.len().saturating_sub(22 + 65_535);
    let at = (floor..=bytes.len().checked_sub(22)?)
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06"))?;
    let total = u16::from_le_bytes([bytes[at + 10], bytes[at + 11]]);
    (total != 0xFFFF).then_some(usize::from(total))
}

/// A member name is a relative path of plain components (`/`-separated only if
/// `subdirectories`; a trailing `/` marks a directory entry).
fn check_name(name: &str, subdirectories: bool) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 255 {
        return Err("its name is empty or longer than 255 bytes");
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err("its name holds a control character or a backslash");
    }
    if name.starts_with('/') {
        return Err("its name is an absolute path");
    }
    let path = name.strip_suffix('/').unwrap_or(name);
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("its name is not a plain relative path (empty, '.' or '..' component)");
    }
    if parts.len() > 1 && !subdirectories {
        return Err("only plain file names are allowed here, no directories");
    }
    Ok(())
}

/// Writes `members` (name, bytes) as a deflated zip archive stamped `modified`,
/// as Info-ZIP's `zip -X` does (no extra attributes).
pub fn write_members(
    members: &[(&str, &[u8])],
    modified: time::OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let utc = modified.to_offset(time::UtcOffset::UTC);
    let stamp = DateTime::from_date_and_time(
        u16::try_from(utc.year()).map_err(|e| e.to_string())?,
        utc.month().into(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
    )
    .map_err(|e| format!("time stamp {utc}: {e}"))?;
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(stamp)
        .unix_permissions(0o644);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in members {
        writer
            .start_file(*name, options)
            .map_err(|e| e.to_string())?;
        writer.write_all(data).map_err(|e| e.to_string())?;
    }
    let cursor = writer.finish().map_err(|e| e.to_string())?;
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        archive: 64 * 1024,
        members: 4,
        member: 1024,
        total: 2048,
        subdirectories: false,
    };

    fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        write_members(members, time::OffsetDateTime::now_utc()).unwrap()
    }

    /// An archive whose member `from` is renamed `to` in its raw bytes (zip
    /// writers refuse to write hostile names themselves).
    pub(crate) fn renamed(members: &[(&str, &[u8])], from: &str, to: &str) -> Vec<u8> {
        let placeholder = "q".repeat(to.len());
        let members: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(n, d)| (if *n == from { placeholder.as_str() } else { *n }, *d))
            .collect();
        let mut bytes = zip_of(&members);
        let (p, t) = (placeholder.as_bytes(), to.as_bytes());
        // The name follows a local header (30 bytes) and a central header (46 bytes).
        for (signature, offset) in [(b"PK\x03\x04", 30), (b"PK\x01\x02", 46)] {
            for i in 0..bytes.len().saturating_sub(offset + p.len()) {
                if &bytes[i..i + 4] == signature && &bytes[i + offset..i + offset + p.len()] == p {
                    bytes[i + offset..i + offset + p.len()].copy_from_slice(t);
                }
            }
        }
        bytes
    }

    #[test]
    fn members_round_trip() {
        let z = zip_of(&[("a.txt", b"hello"), ("b", b"")]);
        let m = read_members(&z, &LIMITS, "t").unwrap();
        assert_eq!(
            m,
            vec![("a.txt".into(), b"hello".to_vec()), ("b".into(), vec![])]
        );
    }

    #[test]
    fn hostile_archives_are_refused() {
        let err = |bytes: &[u8], limits: &Limits| read_members(bytes, limits, "t").unwrap_err();
        assert!(matches!(
            err(b"PK\x03\x04junk", &LIMITS),
            ArchiveError::Corrupt { .. }
        ));
        assert!(matches!(err(b"", &LIMITS), ArchiveError::Corrupt { .. }));
        // A bomb: 1 MiB of zeros deflates to about a kilobyte.
        let bomb = zip_of(&[("a", &vec![0u8; 1 << 20])]);
        assert!(bomb.len() < 4096);
        let e = err(&bomb, &LIMITS);
        assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
        let e = err(
            &zip_of(&[("a", &[1; 1000]), ("b", &[2; 1000]), ("c", &[3; 1000])]),
            &LIMITS,
        );
        assert!(e.to_string().contains("in all"), "{e}");
        for name in ["../x", "/etc/passwd", "a/b", "a\\b", "./a", "a\u{1}"] {
            let e = err(&renamed(&[("x", b"x")], "x", name), &LIMITS);
            assert!(matches!(e, ArchiveError::BadMember { .. }), "{name}: {e}");
        }
        let dup = renamed(&[("dup1", b"x"), ("dup2", b"y")], "dup2", "dup1");
        let e = err(&dup, &LIMITS);
        assert!(e.to_string().contains("twice"), "{e}");
        let many: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("f{i}"), vec![])).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        assert!(err(&zip_of(&refs), &LIMITS).to_string().contains("members"));
        let big = vec![b'x'; 70 * 1024];
        assert!(matches!(err(&big, &LIMITS), ArchiveError::TooLarge { .. }));
    }

    #[test]
    fn subdirectories_only_where_allowed() {
        let z = zip_of(&[("dir/a", b"x")]);
        let limits = Limits {
            subdirectories: true,
            ..LIMITS
        };
        assert_eq!(read_members(&z, &limits, "t").unwrap()[0].0, "dir/a");
        let up = renamed(&[("x", b"x")], "x", "dir/../../a");
        assert!(read_members(&up, &limits, "t").is_err());
    }
}
