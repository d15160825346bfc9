//! `ca-tool export-bundle` and `show-bundle`.

use std::path::Path;

use peerlink_ca::bundle::{self, VerifiedBundle};
use peerlink_pki::fsutil::{self, PUBLIC_FILE_MODE};
use serde::Serialize;
use time::OffsetDateTime;

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
    created_at: &'a str,
}

/// Prints what a verified bundle says (used by `show-bundle` and `sign-peer`).
pub fn print_identity(b: &VerifiedBundle) {
    let id = &b.identity;
    println!("Partner:       {}", id.subject);
    println!(
        "Node id:       {}{}",
        id.node_id,
        if id.id_matches_key() {
            " (derived from its root key: reading it verifies the key)"
        } else {
            " (explicit: verify the fingerprint)"
        }
    );
    println!("Fingerprint:   SHA-256 {}", id.fingerprint.phone_form());
    println!(
        "Key type:      {}",
        id.key_type.map_or("unsupported", |k| k.name())
    );
    println!(
        "Root expires:  {}",
        peerlink_pki::timefmt::rfc3339(id.not_after)
    );
    println!("Endpoints:     {}", b.info.endpoints.join(", "));
}

/// Runs `show-bundle`.
pub fn show(path: &Path, json: bool) -> CliResult {
    let bytes = fsutil::read(path)?;
    let b = bundle::verify(&bytes, OffsetDateTime::now_utc())
        .map_err(|e| crate::error::CliError::new(format!("{}: {e}", path.display())))?;
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
            endpoints: &b.info.endpoints,
            created_at: &b.info.created_at,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        );
    } else {
        println!("Bundle {} is valid and signed by its root.", path.display());
        print_identity(&b);
    }
    Ok(())
}
