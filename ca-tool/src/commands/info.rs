//! `ca-tool info`: the node's identity, for the operator and for the phone call.

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use crate::cadir::CaDir;
use crate::error::CliResult;

/// Days before expiry from which `info` warns about the root certificate.
pub const ROOT_EXPIRY_WARNING_DAYS: i64 = 180;

#[derive(Serialize)]
struct Info {
    node_id: String,
    node_id_is_key_derived: bool,
    subject: String,
    fingerprint_sha256: String,
    fingerprint_phone: String,
    not_before: String,
    not_after: String,
    days_left: i64,
    key_type: String,
    key_storage: String,
    peers: usize,
    active_peers: usize,
    issued_certificates: usize,
    revoked_certificates: usize,
    warnings: Vec<String>,
}

/// Where the root key lives, from the files under private/ (no secret is read).
fn key_storage(dir: &Path) -> String {
    let private = dir.join(peerlink_pki::layout::PRIVATE_DIR);
    if let Ok(text) = std::fs::read_to_string(private.join(peerlink_pki::layout::TOKEN_CONFIG)) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let token = v["token_label"].as_str().unwrap_or("?");
        return format!("PKCS#11 token {token:?}");
    }
    if private.join(peerlink_pki::layout::ROOT_KEY).exists() {
        return "encrypted file (PKCS#8, scrypt + AES-256-CBC)".into();
    }
    "missing (restore private/ from backup)".into()
}

/// Runs `info`.
pub async fn run(dir: &Path, json: bool) -> CliResult {
    let ca = CaDir::open(dir)?;
    let mut db = ca.db().await?;
    let peers = db.peers().await?;
    let certs = db.certificates().await?;
    let id = &ca.identity;
    let days_left = (id.not_after - OffsetDateTime::now_utc()).whole_days();
    let mut warnings = Vec::new();
    if days_left < 0 {
        warnings
            .push("the root certificate has EXPIRED: every link of this node fails".to_string());
    } else if days_left < ROOT_EXPIRY_WARNING_DAYS {
        warnings.push(format!(
            "the root certificate expires in {days_left} days; plan a new root and re-exchange with partners"
        ));
    }
    let info = Info {
        node_id: id.node_id.clone(),
        node_id_is_key_derived: id.id_matches_key(),
        subject: id.subject.clone(),
        fingerprint_sha256: id.fingerprint.colon_hex(),
        fingerprint_phone: id.fingerprint.phone_form(),
        not_before: peerlink_pki::timefmt::rfc3339(id.not_before),
        not_after: peerlink_pki::timefmt::rfc3339(id.not_after),
        days_left,
        key_type: id
            .key_type
            .map_or("unsupported".into(), |k| k.name().to_string()),
        key_storage: key_storage(dir),
        peers: peers.len(),
        active_peers: peers.iter().filter(|p| p.status == "active").count(),
        issued_certificates: certs.iter().filter(|c| c.kind != "root").count(),
        revoked_certificates: certs.iter().filter(|c| c.status == "revoked").count(),
        warnings,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).unwrap_or_default()
        );
        return Ok(());
    }
    println!("Subject:       {}", info.subject);
    println!(
        "Node id:       {}{}",
        info.node_id,
        if info.node_id_is_key_derived {
            " (derived from the root key)"
        } else {
            " (explicit)"
        }
    );
    println!("Fingerprint:   SHA-256 {}", info.fingerprint_phone);
    println!("Key type:      {}", info.key_type);
    println!("Root key:      {}", info.key_storage);
    println!(
        "Valid:         {} to {} ({} days left)",
        info.not_before, info.not_after, info.days_left
    );
    println!(
        "Peers:         {} ({} active)",
        info.peers, info.active_peers
    );
    println!(
        "Certificates:  {} issued, {} revoked",
        info.issued_certificates, info.revoked_certificates
    );
    for w in &info.warnings {
        println!("WARNING:       {w}");
    }
    Ok(())
}
