//! `ca-tool export-bundle --format swaptacular`: our info-bundle, as
//! swpt_ca_scripts' `create-infobundle` writes it, for a Swaptacular node's
//! `sign-peercert`.

use std::path::Path;

use peerlink_ca::swaptacular::infobundle;
use peerlink_pki::fsutil::{self, PUBLIC_FILE_MODE};
use peerlink_pki::keys::KeyType;
use peerlink_pki::layout::NODEINFO_DIR;
use peerlink_pki::swaptacular::{layout as swpt_layout, NodeType, StompManifest};
use time::OffsetDateTime;

use crate::cadir::CaDir;
use crate::error::{CliError, CliResult};
use crate::{PassphraseArg, StompArgs};

/// Runs `export-bundle --format swaptacular`.
pub async fn export(
    dir: &Path,
    out: &Path,
    stomp: &StompArgs,
    passphrase: &PassphraseArg,
) -> CliResult {
    let ca = CaDir::open(dir)?;
    ca.check_output(out)?;
    // Everything that can be checked is checked before the passphrase is asked.
    let node_type = NodeType::of_identity(&ca.identity).map_err(|e| {
        CliError::new(format!(
            "this CA cannot write a Swaptacular info-bundle: {e}. Swaptacular nodes only sign \
             Swaptacular nodes' roots; create a CA with `ca-tool init --profile swaptacular`"
        ))
    })?;
    if let Some(kt) = ca.identity.key_type {
        if matches!(kt, KeyType::EcdsaP384 | KeyType::Ed25519) {
            return Err(CliError::new(format!(
                "this CA's {kt} root key cannot sign the SHA-256 signature Swaptacular nodes \
                 check (openssl dgst -sha256); only RSA and ECDSA P-256 roots can"
            )));
        }
    }
    let manifest = manifest(&ca, node_type, stomp)?;
    let signer = ca.signer(passphrase)?;
    let bytes = infobundle::export(&signer, manifest.as_bytes(), OffsetDateTime::now_utc())
        .map_err(|e| CliError::new(e.to_string()))?;
    fsutil::write_atomic(out, &bytes, PUBLIC_FILE_MODE)?;
    println!("Wrote Swaptacular info-bundle {}", out.display());
    println!("  Node id:      {}", ca.identity.node_id);
    println!("  Node type:    {node_type}");
    println!(
        "  Fingerprint:  SHA-256 {}",
        ca.identity.fingerprint.phone_form()
    );
    println!(
        "Send it to the partner; they run `sign-peercert {}` and send back the peer certificate.",
        out.file_name().map_or_else(
            || out.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    Ok(())
}

/// Our `stomp.toml`: from `--stomp-endpoint` (with `--stomp-host` and
/// `--stomp-destination`), or else `DIR/nodeinfo/stomp.toml` (kept by
/// `import-swaptacular`, or written by the operator).
fn manifest(ca: &CaDir, node_type: NodeType, stomp: &StompArgs) -> CliResult<String> {
    if !stomp.endpoints.is_empty() {
        let destination = stomp
            .stomp_destination
            .clone()
            .unwrap_or_else(|| node_type.default_destination().to_string());
        let m = StompManifest::ours(stomp.endpoints.clone(), &stomp.stomp_host, &destination);
        let text = m.to_toml();
        StompManifest::parse(text.as_bytes())
            .map_err(|e| CliError::new(format!("{e} (check --stomp-endpoint: HOST:PORT)")))?;
        return Ok(text);
    }
    let path = ca.dir.join(NODEINFO_DIR).join(swpt_layout::STOMP_TOML);
    if !path.exists() {
        return Err(CliError::new(format!(
            "say where our STOMP servers are: --stomp-endpoint HOST:PORT (repeatable), or write \
             {}",
            path.display()
        )));
    }
    let bytes = fsutil::read(&path)?;
    StompManifest::parse(&bytes).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| CliError::new(format!("{}: not UTF-8 text", path.display())))
}
