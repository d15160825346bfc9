//! `ca-tool list`: partners and issued certificates.

use std::path::Path;

use crate::cadir::CaDir;
use crate::error::CliResult;

/// Runs `list`.
pub async fn run(dir: &Path, json: bool) -> CliResult {
    let ca = CaDir::open(dir)?;
    let mut db = ca.db().await?;
    let peers = db.peers().await?;
    let certs = db.certificates().await?;
    if json {
        let doc = serde_json::json!({ "peers": peers, "certificates": certs });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    println!("Peers ({}):", peers.len());
    if peers.is_empty() {
        println!("  (none)");
    }
    for p in &peers {
        println!(
            "  {:<34} {:<8} {}  registered: {}",
            p.node_id,
            p.status,
            p.subject,
            if p.registered_cert_serial.is_some() {
                "yes"
            } else {
                "no"
            }
        );
    }
    println!("Certificates ({}):", certs.len());
    for c in &certs {
        let status = match (&c.status[..], &c.revocation_reason) {
            ("revoked", Some(r)) => format!("revoked ({r})"),
            (s, _) => s.to_string(),
        };
        println!(
            "  {:<32} {:<6} {:<20} {} .. {}  {}",
            c.serial_hex, c.kind, status, c.not_before, c.not_after, c.subject
        );
    }
    Ok(())
}
