//! `peer-gateway keygen`: the gateway's key is born on the gateway host and never leaves it.

use std::path::Path;

use peerlink_pki::fsutil::{self, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use peerlink_pki::keys::{KeyType, PrivateKey};
use peerlink_pki::pemfile::{self, ObjectKind};
use x509_parser::prelude::*;

/// Writes a new ECDSA P-256 key (0600) and a CSR for the node's DN (+ optional CN).
pub fn run(
    node_dir: &Path,
    out_key: &Path,
    out_csr: &Path,
    cn: Option<&str>,
) -> Result<(), String> {
    let root_path = node_dir.join(peerlink_pki::layout::ROOT_CERT);
    let root_der =
        pemfile::load_one(&root_path, ObjectKind::Certificate).map_err(|e| e.to_string())?;
    let (_, root) = X509Certificate::from_der(&root_der)
        .map_err(|e| format!("{}: {e}", root_path.display()))?;
    let mut dn = peerlink_pki::identity::rcgen_name(root.subject()).map_err(|e| e.to_string())?;
    if let Some(cn) = cn {
        if cn.is_empty() || cn.len() > 64 || cn.chars().any(char::is_control) {
            return Err("--cn must be 1 to 64 printable characters".into());
        }
        dn.push(rcgen::DnType::CommonName, cn);
    }
    if out_key.exists() {
        return Err(format!(
            "{} exists; refusing to overwrite a private key",
            out_key.display()
        ));
    }
    let key = PrivateKey::generate(KeyType::EcdsaP256).map_err(|e| e.to_string())?;
    let pair = key.signing_key().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&pair)
        .map_err(|e| format!("cannot build the CSR: {e}"))?;
    let csr_pem = csr.pem().map_err(|e| e.to_string())?;
    fsutil::write_new(
        out_key,
        key.to_unencrypted_pem().as_bytes(),
        PRIVATE_FILE_MODE,
    )
    .map_err(|e| e.to_string())?;
    if let Err(e) = fsutil::write_atomic(out_csr, csr_pem.as_bytes(), PUBLIC_FILE_MODE) {
        let _ = std::fs::remove_file(out_key);
        return Err(e.to_string());
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
