//! `ca-tool export-bundle` and `show-bundle`.

use std::path::Path;

use peerlink_ca::bundle;
use peerlink_pki::fsutil::{self, PUBLIC_FILE_MODE};
use serde::Serialize;
use time::OffsetDateTime;

use super::partner::Partner;
use crate::cadir::CaDir;
use crate::error::CliResult;
use crate::PassphraseArg;

/// Runs `export-bundle`.
pub async fn export(
    dir: &Path,
    out: &Path,
    endpoints: &[String],
    passphrase: &PassphraseArg,
) -> CliResult {
    let ca = CaDir::open(dir)?;
    ca.check_output(out)?;
    for e in endpoints {
        peerlink_pki::endpoint::check_endpoint(e)?;
    }
    let signer = ca.signer(passphrase)?;
    let text = bundle::export(&signer, endpoints, OffsetDateTime::now_utc())?;
    fsutil::write_atomic(out, text.as_bytes(), PUBLIC_FILE_MODE)?;
    println!("Wrote bundle {}", out.display());
    println!("  Node id:      {}", ca.identity.node_id);
    println!(
        "  Fingerprint:  SHA-256 {}",
        ca.identity.fingerprint.phone_form()
    );
    println!("Send it to the partner and read them the fingerprint over the phone.");
    Ok(())
}

#[derive(Serialize)]
struct Shown<'a> {
    node_id: &'a str,
    node_id_is_key_derived: bool,
    subject: &'a str,
    fingerprint_sha256: String,
    fingerprint_phone: String,
    key_type: String,
    not_after: String,
    endpoints: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<&'a str>,
    /// For a Swaptacular info-bundle: the node type (its OU).
    #[serde(skip_serializing_if = "Option::is_none")]
    swaptacular_node_type: Option<&'static str>,
    /// For a Swaptacular info-bundle: its STOMP servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    stomp_servers: Option<&'a [String]>,
}

/// Runs `show-bundle` (a peerlink bundle or a Swaptacular info-bundle).
pub fn show(path: &Path, json: bool) -> CliResult {
    let b = Partner::load(path)?;
    if json {
        let shown = Shown {
            node_id: &b.identity.node_id,
            node_id_is_key_derived: b.identity.id_matches_key(),
            subject: &b.identity.subject,
            fingerprint_sha256: b.identity.fingerprint.colon_hex(),
            fingerprint_phone: b.identity.fingerprint.phone_form(),
            key_type: b
                .identity
                .key_type
                .map_or("unsupported".into(), |k| k.name().to_string()),
            not_after: peerlink_pki::timefmt::rfc3339(b.identity.not_after),
            endpoints: &b.endpoints,
            created_at: b.created_at.as_deref(),
            swaptacular_node_type: b.swaptacular.as_ref().map(|s| s.node_type.unit()),
            stomp_servers: b
                .swaptacular
                .as_ref()
                .map(|s| s.manifest.servers.as_slice()),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        );
    } else {
        println!("Bundle {} is valid and signed by its root.", path.display());
        b.print();
    }
    Ok(())
}
