//! The layout of a CA directory and access to its parts.
//!
//! ```text
//! DIR/root-ca.crt                    root certificate (public)
//! DIR/private/root-ca.key            PKCS#8 encrypted root key (0600, dir 0700)
//! DIR/ca.db                          issuance database (public)
//! DIR/crl.pem                        newest CRL (public)
//! DIR/peers/<id>/bundle.pem          the partner's bundle as received
//! DIR/peers/<id>/root.crt            the partner's root (pinned trust anchor for dialing them)
//! DIR/peers/<id>/issued-by-us.crt    the cross-cert we issued them
//! DIR/peers/<id>/issued-to-us.crt    the cross-cert they issued us (presented when dialing)
//! ```
//! Everything outside `private/` is public and is what gateway hosts read.

use std::path::{Path, PathBuf};

use shared::cadb::CaDb;
use shared::identity::NodeIdentity;
use shared::keys::PrivateKey;
use shared::pemfile::{self, ObjectKind};
use shared::profiles::RootSigner;

use crate::error::{CliError, CliResult};

pub use shared::layout::{CRL_FILE, PEERS_DIR, PRIVATE_DIR, ROOT_CERT, ROOT_KEY};

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
        let path = self.dir.join(shared::cadb::DB_FILE);
        if !path.exists() {
            return Err(CliError::new(format!(
                "{} is missing; the CA directory is incomplete (restore it from backup)",
                path.display()
            )));
        }
        Ok(CaDb::open(&path, false).await?)
    }

    /// Decrypts the root key with the passphrase and pairs it with the certificate.
    pub fn signer(&self, passphrase: &[u8]) -> CliResult<RootSigner> {
        let key_path = self.key_path();
        let pem = shared::fsutil::read(&key_path)?;
        let key =
            PrivateKey::from_encrypted_pem(&pem, passphrase, &key_path.display().to_string())?;
        Ok(RootSigner::new(self.root_der.clone(), &key)?)
    }

    /// Path of the encrypted root key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(PRIVATE_DIR).join(ROOT_KEY)
    }

    /// Directory of one partner.
    pub fn peer_dir(&self, node_id: &str) -> PathBuf {
        shared::layout::peer_dir(&self.dir, node_id)
    }
}
