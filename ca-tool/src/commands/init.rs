//! `ca-tool init`: create a root CA, all or nothing.
//!
//! The CA is assembled in a hidden sibling directory and renamed into place in
//! one step, so an interrupted init leaves either no CA or a complete one.

use std::path::{Path, PathBuf};

use peerlink_ca::hsm::{self, KeyProtection, Token, TokenKey};
use peerlink_ca::{keyfile, profiles};
use peerlink_cadb::CaDb;
use peerlink_pki::fsutil::{self, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use peerlink_pki::identity::{self, NodeIdentity, NodeName};
use peerlink_pki::keys::{KeyType, PrivateKey};

use crate::cadir::{
    token_error, token_pin, DB_FILE, PEERS_DIR, PRIVATE_DIR, ROOT_CERT, ROOT_KEY, TOKEN_CONFIG,
};
use crate::error::{CliError, CliResult};
use crate::{KeyTypeArg, NodeTypeArg, PassphraseArg, ProfileArg};
use peerlink_pki::swaptacular::{self as swpt, NodeType};

/// Where `init --pkcs11-module` generates the root key.
#[derive(Debug, Clone)]
pub struct TokenArgs {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// CKA_LABEL of the key pair to generate.
    pub key_label: String,
}

/// The subject's O and OU and the profile's rules, from the command line.
#[derive(Debug, Clone)]
pub struct Naming {
    /// O.
    pub org: String,
    /// OU.
    pub unit: String,
    /// The Swaptacular node type, with `--profile swaptacular`.
    pub swaptacular: Option<NodeType>,
}

impl Naming {
    /// Checks that the options fit the profile: `--org`/`--unit` for the default
    /// profile, `--node-type` for the Swaptacular one (which sets O and OU).
    pub fn from_args(
        profile: ProfileArg,
        node_type: Option<NodeTypeArg>,
        org: Option<String>,
        unit: Option<String>,
    ) -> CliResult<Naming> {
        match (profile, node_type, org, unit) {
            (ProfileArg::Default, None, Some(org), Some(unit)) => Ok(Naming {
                org,
                unit,
                swaptacular: None,
            }),
            (ProfileArg::Swaptacular, Some(t), None, None) => {
                let t = t.node_type();
                Ok(Naming {
                    org: swpt::ORG.to_string(),
                    unit: t.unit().to_string(),
                    swaptacular: Some(t),
                })
            }
            (ProfileArg::Default, Some(_), _, _) => Err(CliError::new(
                "--node-type belongs to --profile swaptacular; add it, or give --org and --unit",
            )),
            (ProfileArg::Swaptacular, None, _, _) => Err(CliError::new(
                "--profile swaptacular needs --node-type accounting-authority, creditors-agent or debtors-agent",
            )),
            (ProfileArg::Swaptacular, Some(_), _, _) => Err(CliError::new(
                "--profile swaptacular sets O and OU itself; drop --org and --unit",
            )),
            (ProfileArg::Default, None, _, _) => {
                Err(CliError::new("give both --org and --unit"))
            }
        }
    }

    /// Longest validity the profile allows.
    fn max_days(&self) -> u32 {
        if self.swaptacular.is_some() {
            swpt::MAX_DAYS
        } else {
            profiles::MAX_DAYS
        }
    }

    /// The node id of a root key: the explicit one, or derived from the key; with the
    /// Swaptacular profile it must follow the node type's rule.
    fn node_id(&self, explicit: Option<&str>, spki: &[u8]) -> CliResult<String> {
        let id = match explicit {
            Some(id) => id.to_string(),
            None => identity::node_id_from_spki(spki),
        };
        if let Some(t) = self.swaptacular {
            t.check_node_id(&id, spki)
                .map_err(|e| CliError::new(e.to_string()))?;
        }
        Ok(id)
    }

    /// Checks the typed options (node id, key type, days) for the profile, before
    /// any passphrase is asked; returns the key type and days to use.
    fn check(
        &self,
        node_id: Option<&str>,
        key_type: Option<KeyTypeArg>,
        days: Option<u32>,
    ) -> CliResult<(KeyType, u32)> {
        let key_type = key_type.map(key_type_of);
        let Some(t) = self.swaptacular else {
            if let Some(id) = node_id {
                identity::check_node_id(id)?;
                if identity::is_hash_id(id) {
                    return Err(identity::IdentityError::HashLikeNodeId(id.to_string()).into());
                }
            }
            return Ok((key_type.unwrap_or(KeyType::EcdsaP256), days.unwrap_or(3650)));
        };
        match (t, node_id) {
            (NodeType::AccountingAuthority, None) => {
                return Err(CliError::new(
                    "an accounting authority's node id is its debtor-id prefix: give --node-id with 8 lowercase hex digits (reserved for you in the registry of accounting authorities)",
                ))
            }
            (NodeType::AccountingAuthority, Some(id)) => t
                .check_node_id(id, &[])
                .map_err(|e| CliError::new(e.to_string()))?,
            (_, Some(_)) => {
                return Err(CliError::new(
                    "a Swaptacular agent's node id is derived from its root key; drop --node-id",
                ))
            }
            (_, None) => {}
        }
        let key_type = key_type.unwrap_or(KeyType::Rsa3072);
        if matches!(key_type, KeyType::EcdsaP384 | KeyType::Ed25519) {
            return Err(CliError::new(format!(
                "--key-type {key_type} cannot sign Swaptacular info-bundles (SHA-256 signatures, checked with openssl dgst -sha256); use rsa-3072 (Swaptacular's choice), rsa-2048, rsa-4096 or ecdsa-p256"
            )));
        }
        Ok((key_type, days.unwrap_or(swpt::DEFAULT_DAYS)))
    }
}

fn key_type_of(arg: KeyTypeArg) -> KeyType {
    match arg {
        KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        KeyTypeArg::EcdsaP384 => KeyType::EcdsaP384,
        KeyTypeArg::Ed25519 => KeyType::Ed25519,
        KeyTypeArg::Rsa2048 => KeyType::Rsa2048,
        KeyTypeArg::Rsa3072 => KeyType::Rsa3072,
        KeyTypeArg::Rsa4096 => KeyType::Rsa4096,
    }
}

/// The root key just made, and what goes into `private/`.
struct NewRoot {
    root_der: Vec<u8>,
    /// File name inside `private/` and its content.
    private_file: (&'static str, Vec<u8>),
    /// The key on the token, removed again if the CA cannot be created.
    token: Option<(TokenKey, KeyProtection)>,
}

/// Runs `init`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    dir: &Path,
    naming: &Naming,
    node_id: Option<&str>,
    key_type: Option<KeyTypeArg>,
    days: Option<u32>,
    token: Option<&TokenArgs>,
    passphrase: &PassphraseArg,
) -> CliResult {
    refuse_existing(dir)?;
    // Check everything the operator typed before asking for the passphrase.
    let (key_type, days) = naming.check(node_id, key_type, days)?;
    NodeName::new(&naming.org, &naming.unit, node_id.unwrap_or("placeholder"))?;
    profiles::validity_days_up_to(days, naming.max_days())?;
    if let Some(t) = token {
        hsm::check_token_label(&t.token_label).map_err(token_error)?;
        hsm::check_key_label(&t.key_label).map_err(token_error)?;
    }
    let staging = staging_dir(dir)?;

    let new_root = match token {
        None => file_root(naming, node_id, key_type, days, passphrase)?,
        Some(t) => token_root(naming, node_id, key_type, days, t, passphrase)?,
    };
    let root_der = new_root.root_der;
    let (private_name, private_bytes) = new_root.private_file;

    let result = match NodeIdentity::from_root_der(&root_der) {
        Ok(identity) => build(&staging, &root_der, private_name, &private_bytes)
            .await
            .and_then(|()| install(&staging, dir))
            .map(|()| identity),
        Err(e) => Err(e.into()),
    };
    let identity = match result {
        Ok(identity) => identity,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            let mut message = format!(
                "cannot create the CA in {}: {}; nothing was created",
                dir.display(),
                e.message
            );
            if let Some((key, _)) = new_root.token {
                message.push_str(&remove_from_token(key));
            }
            return Err(CliError::new(message));
        }
    };

    println!("Created root CA in {}", dir.display());
    println!("  Subject:      {}", identity.subject);
    println!("  Node id:      {}", identity.node_id);
    println!("  Key type:     {}", key_type);
    if let Some((key, protection)) = &new_root.token {
        println!(
            "  Root key:     on PKCS#11 token {:?}, label {:?}, id {}",
            key.token_label(),
            key.key_label(),
            hex::encode(key.key_id())
        );
        println!("  Key is:       {protection}");
    }
    println!(
        "  Fingerprint:  SHA-256 {}",
        identity.fingerprint.phone_form()
    );
    println!(
        "  Valid until:  {}",
        peerlink_pki::timefmt::rfc3339(identity.not_after)
    );
    if new_root.token.is_some() {
        println!(
            "The root key never leaves the token; {} only says where it is. Back up {} now, \
             and keep the token (and any backup the token's vendor provides) safe: \
             without it this CA cannot sign.",
            dir.join(PRIVATE_DIR).join(TOKEN_CONFIG).display(),
            dir.join(DB_FILE).display()
        );
    } else {
        println!(
            "Back up {} (encrypted) and {} now; the passphrase cannot be recovered.",
            dir.join(PRIVATE_DIR).join(ROOT_KEY).display(),
            dir.join(DB_FILE).display()
        );
    }
    Ok(())
}

/// A root key generated here, encrypted with the passphrase, and the root certificate.
fn file_root(
    naming: &Naming,
    node_id: Option<&str>,
    key_type: KeyType,
    days: u32,
    passphrase: &PassphraseArg,
) -> CliResult<NewRoot> {
    let pass = crate::passphrase::obtain(passphrase.passphrase_file.as_deref(), true)?;
    keyfile::check_passphrase(&pass)?;
    let key = PrivateKey::generate(key_type)?;
    let spki = key.public_key_der()?;
    let node_id = naming.node_id(node_id, &spki)?;
    let name = NodeName::new(&naming.org, &naming.unit, &node_id)?;
    let root_der = profiles::issue_root_up_to(&key, &name, days, naming.max_days())?;
    let encrypted = keyfile::encrypt_pem(&key, &pass)?;
    Ok(NewRoot {
        root_der,
        private_file: (ROOT_KEY, encrypted.as_bytes().to_vec()),
        token: None,
    })
}

/// A root key generated on the token, and the root certificate it signed.
fn token_root(
    naming: &Naming,
    node_id: Option<&str>,
    key_type: KeyType,
    days: u32,
    args: &TokenArgs,
    passphrase: &PassphraseArg,
) -> CliResult<NewRoot> {
    // Recorded as an absolute path (symlinks kept: distributions keep those stable),
    // so that later commands work from any directory.
    let module = std::path::absolute(&args.module).unwrap_or_else(|_| args.module.clone());
    // Find the token before asking for its PIN.
    let token = Token::open(&module, &args.token_label).map_err(token_error)?;
    let pin = token_pin(&token, passphrase)?;
    let key = token
        .login(pin.as_deref().map(Vec::as_slice), true)
        .and_then(|session| session.generate_key(key_type, &args.key_label))
        .map_err(|e| match e {
            // These already say that nothing was changed.
            hsm::HsmError::WrongPin { .. } | hsm::HsmError::PinLocked { .. } => token_error(e),
            e => CliError::new(format!("{e}; nothing was created")),
        })?;
    match sign_root_on_token(&key, naming, node_id, days) {
        Ok((root_der, protection)) => {
            let config = key.config();
            Ok(NewRoot {
                root_der,
                private_file: (TOKEN_CONFIG, config.to_json().into_bytes()),
                token: Some((key, protection)),
            })
        }
        Err(e) => {
            let mut message = format!("{}; nothing was created", e.message);
            message.push_str(&remove_from_token(key));
            Err(CliError::new(message))
        }
    }
}

fn sign_root_on_token(
    key: &TokenKey,
    naming: &Naming,
    node_id: Option<&str>,
    days: u32,
) -> CliResult<(Vec<u8>, KeyProtection)> {
    let protection = key.protection().map_err(token_error)?;
    if !protection.is_protected() {
        return Err(token_error(hsm::HsmError::Unprotected {
            token_label: key.token_label().into(),
            reason: protection.to_string(),
        }));
    }
    let node_id = naming.node_id(node_id, key.spki_der())?;
    let name = NodeName::new(&naming.org, &naming.unit, &node_id)?;
    let root_der = profiles::issue_root_on_token(key, &name, days, naming.max_days())?;
    Ok((root_der, protection))
}

/// Removes a key pair that `init` generated on the token but cannot use, and says
/// what happened (appended to the error message).
fn remove_from_token(key: TokenKey) -> String {
    let (label, id) = (key.key_label().to_string(), hex::encode(key.key_id()));
    match key.destroy() {
        Ok(()) => " (the key pair generated on the token was removed again)".into(),
        Err(e) => format!(
            " (the key pair generated on the token, label {label:?} id {id}, could not be \
             removed: {e}; delete it with the token's tools)"
        ),
    }
}

pub(crate) fn refuse_existing(dir: &Path) -> CliResult {
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

pub(crate) fn staging_dir(dir: &Path) -> CliResult<PathBuf> {
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

async fn build(
    staging: &Path,
    root_der: &[u8],
    private_name: &str,
    private_bytes: &[u8],
) -> CliResult {
    fsutil::create_dir(staging, 0o755)?;
    fsutil::create_dir(&staging.join(PRIVATE_DIR), PRIVATE_DIR_MODE)?;
    fsutil::create_dir(&staging.join(PEERS_DIR), 0o755)?;
    fsutil::write_new(
        &staging.join(PRIVATE_DIR).join(private_name),
        private_bytes,
        PRIVATE_FILE_MODE,
    )?;
    fsutil::write_new(
        &staging.join(ROOT_CERT),
        peerlink_pki::pemfile::pem_certificate(root_der).as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    let mut db = CaDb::open(&staging.join(DB_FILE), true).await?;
    let issued = peerlink_cadb::Issued::from_der(root_der.to_vec())?;
    db.insert_certificate("root", &issued, None, time::OffsetDateTime::now_utc())
        .await?;
    db.close().await?;
    fsutil::sync_dir(staging)?;
    Ok(())
}

pub(crate) fn install(staging: &Path, dir: &Path) -> CliResult {
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
