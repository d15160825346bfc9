//! `peer-gateway keygen`: the gateway's key is born on the gateway host and never leaves it.

use std::path::Path;

use peerlink_pki::fsutil::{self, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use peerlink_pki::keys::{KeyType, PrivateKey};
use peerlink_pki::pemfile::{self, ObjectKind};
use x509_parser::prelude::*;

/// Why `keygen` wrote nothing (or removed the key it had just written).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeygenError {
    /// The node's root certificate (for its DN).
    #[error(transparent)]
    Root(#[from] pemfile::LoadError),
    /// The root certificate does not parse.
    #[error("{path}: {reason}")]
    RootParse {
        /// Where it was read.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The root's DN cannot be carried into a CSR.
    #[error(transparent)]
    Name(#[from] peerlink_pki::identity::IdentityError),
    /// A bad `--cn`.
    #[error("--cn must be 1 to 64 printable characters")]
    CommonName,
    /// The key file exists.
    #[error("{0} exists; refusing to overwrite a private key")]
    KeyExists(std::path::PathBuf),
    /// Key generation.
    #[error(transparent)]
    Key(#[from] peerlink_pki::keys::KeyError),
    /// The CSR could not be built.
    #[error("cannot build the CSR: {0}")]
    Csr(#[from] rcgen::Error),
    /// Writing the key or the CSR.
    #[error(transparent)]
    Write(#[from] fsutil::FsError),
}

/// Writes a new ECDSA P-256 key (0600) and a CSR for the node's DN (+ optional CN).
pub fn run(
    node_dir: &Path,
    out_key: &Path,
    out_csr: &Path,
    cn: Option<&str>,
) -> Result<(), KeygenError> {
    let root_path = node_dir.join(peerlink_pki::layout::ROOT_CERT);
    let root_der = pemfile::load_one(&root_path, ObjectKind::Certificate)?;
    let (_, root) = X509Certificate::from_der(&root_der).map_err(|e| KeygenError::RootParse {
        path: root_path.clone(),
        reason: e.to_string(),
    })?;
    let mut dn = peerlink_pki::identity::rcgen_name(root.subject())?;
    if let Some(cn) = cn {
        if cn.is_empty() || cn.len() > 64 || cn.chars().any(char::is_control) {
            return Err(KeygenError::CommonName);
        }
        dn.push(rcgen::DnType::CommonName, cn);
    }
    if out_key.exists() {
        return Err(KeygenError::KeyExists(out_key.to_path_buf()));
    }
    let key = PrivateKey::generate(KeyType::EcdsaP256)?;
    let pair = key.signing_key()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn;
    let csr = params.serialize_request(&pair)?;
    let csr_pem = csr.pem()?;
    fsutil::write_new(
        out_key,
        key.to_unencrypted_pem().as_bytes(),
        PRIVATE_FILE_MODE,
    )?;
    if let Err(e) = fsutil::write_atomic(out_csr, csr_pem.as_bytes(), PUBLIC_FILE_MODE) {
        let _ = std::fs::remove_file(out_key);
        return Err(e.into());
    }
    println!(
        "Wrote key {} (mode 0600) and CSR {}.",
        out_key.display(),
        out_csr.display()
    );
    println!(
        "Take the CSR to the CA laptop: ca-tool sign-server --dir DIR --csr {} --out gateway.crt",
        out_csr.display()
    );
    Ok(())
}
