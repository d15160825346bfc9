//! `peerlink-load fleet-gen`: N partners' own CAs (root, bundle, gateway
//! certificate) made in memory with `peerlink_ca::profiles`, the code behind
//! `ca-tool init`, `export-bundle` and `sign-server`: N scrypt-protected CAs made
//! with the real tool would take longer than the whole benchmark.

use std::path::Path;
use std::time::Instant;

use peerlink_ca::profiles::{issue_root, RootSigner};
use peerlink_pki::identity::NodeName;
use peerlink_pki::keys::{KeyType, PrivateKey};
use peerlink_pki::pemfile::pem_certificate;
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;

use crate::error::Result;

/// Writes partner `pNNNNN/` directories (kept if already complete) under `out`.
pub async fn run(n: usize, out: &Path) -> Result<Value> {
    std::fs::create_dir_all(out)?;
    let out = out.to_path_buf();
    let start = Instant::now();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut handles = Vec::new();
    for w in 0..workers {
        let out = out.clone();
        handles.push(tokio::task::spawn_blocking(move || -> Result<()> {
            for i in (w..n).step_by(workers) {
                let dir = out.join(format!("p{i:05}"));
                if dir.join("gw.crt").exists() {
                    continue;
                }
                std::fs::create_dir_all(&dir)?;
                let key = PrivateKey::generate(KeyType::EcdsaP256)?;
                let id = peerlink_pki::identity::node_id_from_spki(&key.public_key_der()?);
                let root = issue_root(&key, &NodeName::new("Bench", &format!("p{i}"), &id)?, 365)?;
                let signer = RootSigner::new(root.clone(), &key)?;
                let bundle =
                    peerlink_ca::bundle::export(&signer, &[], ::time::OffsetDateTime::now_utc())?;
                let gw_key = PrivateKey::generate(KeyType::EcdsaP256)?;
                let (_, subject) =
                    x509_parser::x509::X509Name::from_der(&signer.identity().subject_der)?;
                let mut params = rcgen::CertificateParams::default();
                params.distinguished_name = peerlink_pki::identity::rcgen_name(&subject)?;
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "gw1");
                let csr = params.serialize_request(&gw_key.signing_key()?)?;
                let verified =
                    peerlink_ca::csr::verify_csr(csr.der(), &signer.identity().subject_der)?;
                let gw_cert = signer.issue_server_cert(&verified, 90)?.der;
                std::fs::write(dir.join("bundle.pem"), bundle)?;
                std::fs::write(dir.join("root.crt"), pem_certificate(&root))?;
                std::fs::write(
                    dir.join("fingerprint"),
                    signer.identity().fingerprint.colon_hex(),
                )?;
                std::fs::write(dir.join("gw.key"), gw_key.to_unencrypted_pem().as_bytes())?;
                std::fs::write(dir.join("gw.crt"), pem_certificate(&gw_cert))?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(json!({ "n": n, "seconds": start.elapsed().as_secs_f64() }))
}
