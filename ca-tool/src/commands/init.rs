//! `ca-tool init`: create a root CA, all or nothing.
//!
//! The CA is assembled in a hidden sibling directory and renamed into place in
//! one step, so an interrupted init leaves either no CA or a complete one.

use std::path::{Path, PathBuf};

use shared::cadb::CaDb;
use shared::fsutil::{self, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use shared::identity::{self, NodeIdentity, NodeName};
use shared::keys::{self, KeyType, PrivateKey};
use shared::profiles;

use crate::cadir::{PEERS_DIR, PRIVATE_DIR, ROOT_CERT, ROOT_KEY};
use crate::error::{CliError, CliResult};
use crate::{KeyTypeArg, PassphraseArg};

/// Runs `init`.
pub async fn run(
    dir: &Path,
    org: &str,
    unit: &str,
    node_id: Option<&str>,
    key_type: KeyTypeArg,
    days: u32,
    passphrase: &PassphraseArg,
) -> CliResult {
    refuse_existing(dir)?;
    // Check everything the operator typed before asking for the passphrase.
    if let Some(id) = node_id {
        identity::check_node_id(id)?;
        if identity::is_hash_id(id) {
            return Err(identity::IdentityError::HashLikeNodeId(id.to_string()).into());
        }
    }
    NodeName::new(org, unit, node_id.unwrap_or("placeholder"))?;
    profiles::validity_days(days)?;

    let pass = crate::passphrase::obtain(passphrase.passphrase_file.as_deref(), true)?;
    keys::check_passphrase(&pass)?;

    let key_type = match key_type {
        KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        KeyTypeArg::EcdsaP384 => KeyType::EcdsaP384,
        KeyTypeArg::Ed25519 => KeyType::Ed25519,
        KeyTypeArg::Rsa2048 => KeyType::Rsa2048,
        KeyTypeArg::Rsa3072 => KeyType::Rsa3072,
        KeyTypeArg::Rsa4096 => KeyType::Rsa4096,
    };
    let key = PrivateKey::generate(key_type)?;
    let spki = key.public_key_der()?;
    let node_id = match node_id {
        Some(id) => id.to_string(),
        None => identity::node_id_from_spki(&spki),
    };
    let name = NodeName::new(org, unit, &node_id)?;
    let root_der = profiles::issue_root(&key, &name, days)?;
    let encrypted = key.to_encrypted_pem(&pass)?;
    let identity = NodeIdentity::from_root_der(&root_der)?;

    let staging = staging_dir(dir)?;
    let result = build(&staging, &root_der, encrypted.as_bytes()).await;
    let result = match result {
        Ok(()) => install(&staging, dir),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(CliError::new(format!(
            "cannot create the CA in {}: {}; nothing was created",
            dir.display(),
            e.message
        )));
    }

    println!("Created root CA in {}", dir.display());
    println!("  Subject:      {}", identity.subject);
    println!("  Node id:      {}", identity.node_id);
    println!("  Key type:     {}", key_type);
    println!(
        "  Fingerprint:  SHA-256 {}",
        identity.fingerprint.phone_form()
    );
    println!(
        "  Valid until:  {}",
        shared::cadb::rfc3339(identity.not_after)
    );
    println!(
        "Back up {} (encrypted) and {} now; the passphrase cannot be recovered.",
        dir.join(PRIVATE_DIR).join(ROOT_KEY).display(),
        dir.join(shared::cadb::DB_FILE).display()
    );
    Ok(())
}

fn refuse_existing(dir: &Path) -> CliResult {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if dir.join(ROOT_CERT).exists() || dir.join(PRIVATE_DIR).exists() {
                return Err(CliError::new(format!(
                    "{} already holds a CA; refusing to overwrite it (choose another --dir)",
                    dir.display()
                )));
            }
            if entries.next().is_some() {
                return Err(CliError::new(format!(
                    "{} exists and is not empty; refusing to create a CA there (choose a new or empty --dir)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(CliError::new(format!(
            "{} exists and is not a directory; refusing to touch it",
            dir.display()
        ))),
        Err(e) => Err(CliError::new(format!(
            "cannot inspect {}: {e}",
            dir.display()
        ))),
    }
}

fn staging_dir(dir: &Path) -> CliResult<PathBuf> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(CliError::new(format!(
            "parent directory {} does not exist; create it first",
            parent.display()
        )));
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            CliError::new(format!("{} is not a usable directory name", dir.display()))
        })?;
    Ok(parent.join(format!(".{name}.init-{}", std::process::id())))
}

async fn build(staging: &Path, root_der: &[u8], encrypted_key: &[u8]) -> CliResult {
    fsutil::create_dir(staging, 0o755)?;
    fsutil::create_dir(&staging.join(PRIVATE_DIR), PRIVATE_DIR_MODE)?;
    fsutil::create_dir(&staging.join(PEERS_DIR), 0o755)?;
    fsutil::write_new(
        &staging.join(PRIVATE_DIR).join(ROOT_KEY),
        encrypted_key,
        PRIVATE_FILE_MODE,
    )?;
    fsutil::write_new(
        &staging.join(ROOT_CERT),
        profiles::pem_certificate(root_der).as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    let mut db = CaDb::open(&staging.join(shared::cadb::DB_FILE), true).await?;
    let issued = shared::profiles::Issued::from_der(root_der.to_vec())?;
    db.insert_certificate("root", &issued, None, time::OffsetDateTime::now_utc())
        .await?;
    db.close().await?;
    fsutil::sync_dir(staging)?;
    Ok(())
}

fn install(staging: &Path, dir: &Path) -> CliResult {
    // rename(2) atomically replaces an empty directory and fails on a non-empty one,
    // so a CA created concurrently is never overwritten.
    std::fs::rename(staging, dir).map_err(|e| {
        CliError::new(format!(
            "cannot create {}: {e}; nothing was created",
            dir.display()
        ))
    })?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fsutil::sync_dir(parent)?;
    Ok(())
}
