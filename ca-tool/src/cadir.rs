//! Access to the parts of a CA directory (its file names and layout are in
//! [`peerlink_pki::layout`]).

use std::path::{Path, PathBuf};

use peerlink_ca::hsm::{HsmError, Token, TokenConfig};
use peerlink_ca::keyfile;
use peerlink_ca::profiles::RootSigner;
use peerlink_cadb::CaDb;
use peerlink_pki::identity::NodeIdentity;
use peerlink_pki::pemfile::{self, ObjectKind};
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult};
use crate::PassphraseArg;

pub use peerlink_pki::layout::{
    CRL_FILE, DB_FILE, PEERS_DIR, PRIVATE_DIR, ROOT_CERT, ROOT_KEY, TOKEN_CONFIG,
};

/// Where a CA's root key is kept.
pub enum KeyStore {
    /// `private/root-ca.key`, encrypted with a passphrase.
    File(PathBuf),
    /// On a PKCS#11 token, as `private/pkcs11.json` says.
    Token(PathBuf, TokenConfig),
}

/// An existing CA directory.
pub struct CaDir {
    /// The directory.
    pub dir: PathBuf,
    /// Root certificate DER.
    pub root_der: Vec<u8>,
    /// Our identity.
    pub identity: NodeIdentity,
}

impl CaDir {
    /// Opens a CA directory, checking that it holds a root certificate.
    pub fn open(dir: &Path) -> CliResult<CaDir> {
        let cert_path = dir.join(ROOT_CERT);
        if !cert_path.exists() {
            return Err(CliError::new(format!(
                "{} is not a CA directory (no {ROOT_CERT}); create one with `ca-tool init --dir {}`",
                dir.display(),
                dir.display()
            )));
        }
        let root_der = pemfile::load_one(&cert_path, ObjectKind::Certificate)?;
        let identity = NodeIdentity::from_root_der(&root_der)?;
        Ok(CaDir {
            dir: dir.to_path_buf(),
            root_der,
            identity,
        })
    }

    /// Opens the issuance database.
    pub async fn db(&self) -> CliResult<CaDb> {
        let path = self.dir.join(DB_FILE);
        if !path.exists() {
            return Err(CliError::new(format!(
                "{} is missing; the CA directory is incomplete (restore it from backup)",
                path.display()
            )));
        }
        Ok(CaDb::open(&path, false).await?)
    }

    /// Where the root key is: `private/pkcs11.json` means a token, otherwise the key file.
    pub fn key_store(&self) -> CliResult<KeyStore> {
        let key_path = self.key_path();
        let token_path = self.token_config_path();
        if !token_path.exists() {
            return Ok(KeyStore::File(key_path));
        }
        if key_path.exists() {
            return Err(CliError::new(format!(
                "{} and {} both exist; a CA has one root key: move the one that is not this CA's away",
                key_path.display(),
                token_path.display()
            )));
        }
        let config = TokenConfig::load(&token_path).map_err(token_error)?;
        Ok(KeyStore::Token(token_path, config))
    }

    /// Obtains the root key and pairs it with the certificate: decrypts the key file
    /// with the passphrase, or logs in to the token with its PIN. Both come from
    /// `--passphrase-file` or the terminal, asked only after every other check.
    pub fn signer(&self, passphrase: &PassphraseArg) -> CliResult<RootSigner> {
        match self.key_store()? {
            KeyStore::File(key_path) => {
                let pass = crate::passphrase::obtain(passphrase.passphrase_file.as_deref(), false)?;
                let pem = peerlink_pki::fsutil::read(&key_path)?;
                let key = keyfile::decrypt_pem(&pem, &pass, &key_path.display().to_string())?;
                Ok(RootSigner::new(self.root_der.clone(), &key)?)
            }
            KeyStore::Token(config_path, config) => {
                let in_config = |e: HsmError| match e {
                    HsmError::ModuleMissing(_) | HsmError::Module { .. } => CliError::new(format!(
                        "{e} (the module path is recorded in {})",
                        config_path.display()
                    )),
                    e => token_error(e),
                };
                let key_type = config.key_type().map_err(token_error)?;
                let key_id = config.key_id_bytes().map_err(token_error)?;
                let token = Token::open(&config.module, &config.token_label).map_err(in_config)?;
                let pin = token_pin(&token, passphrase)?;
                let key = token
                    .login(pin.as_deref().map(Vec::as_slice), false)
                    .and_then(|session| {
                        session.open_key(key_type, &config.key_label, Some(&key_id))
                    })
                    .map_err(token_error)?;
                RootSigner::with_token_key(self.root_der.clone(), key).map_err(|e| {
                    CliError::new(format!(
                        "{e} (the key labelled {:?} on token {:?} is not this CA's root key)",
                        config.key_label, config.token_label
                    ))
                })
            }
        }
    }

    /// Refuses an output path inside the CA directory (resolving symlinks): `--out
    /// ca/root-ca.crt` would otherwise replace the CA's own files. Also refuses a
    /// directory as output.
    pub fn check_output(&self, out: &Path) -> CliResult {
        if out.is_dir() {
            return Err(CliError::new(format!(
                "--out {} is a directory; give a file name",
                out.display()
            )));
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let (Ok(parent), Ok(ca)) = (parent.canonicalize(), self.dir.canonicalize()) else {
            return Ok(()); // a missing parent fails later with its own clear error
        };
        if parent.starts_with(&ca) {
            return Err(CliError::new(format!(
                "refusing to write {} inside the CA directory {}: it would replace the CA's own files; write it elsewhere",
                out.display(),
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// Path of the encrypted root key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR).join(ROOT_KEY)
    }

    /// Path of the token reference (present when the root key is on a PKCS#11 token).
    pub fn token_config_path(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR).join(TOKEN_CONFIG)
    }

    /// Directory of one partner.
    pub fn peer_dir(&self, node_id: &str) -> PathBuf {
        peerlink_pki::layout::peer_dir(&self.dir, node_id)
    }
}

/// A token error as the operator sees it.
pub fn token_error(e: HsmError) -> CliError {
    CliError::new(e.to_string())
}

/// The token's user PIN: from `--passphrase-file` or the terminal, or `None`
/// when the token has its own PIN pad and no file was given.
pub fn token_pin(
    token: &Token,
    passphrase: &PassphraseArg,
) -> CliResult<Option<Zeroizing<Vec<u8>>>> {
    if token.protected_authentication_path() && passphrase.passphrase_file.is_none() {
        eprintln!("Enter the PIN of token {:?} on its PIN pad.", token.label());
        return Ok(None);
    }
    let pin = crate::passphrase::obtain_pin(passphrase.passphrase_file.as_deref())?;
    if pin.is_empty() {
        return Err(CliError::new("the token PIN is empty; nothing was changed"));
    }
    Ok(Some(pin))
}
