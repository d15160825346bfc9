//! `ca-tool revoke` and `ca-tool crl`.

use std::path::Path;

use peerlink_ca::profiles::RootSigner;
use peerlink_cadb::CaDb;
use peerlink_cadb::Reason;
use peerlink_pki::fsutil::PUBLIC_FILE_MODE;
use peerlink_pki::pemfile::pem_crl;
use time::OffsetDateTime;

use crate::cadir::{CaDir, CRL_FILE};
use crate::error::{CliError, CliResult};
use crate::PassphraseArg;

/// Runs `revoke`: marks certificates revoked and publishes a fresh CRL to `DIR/crl.pem`.
pub async fn revoke(
    dir: &Path,
    serial: Option<&str>,
    peer: Option<&str>,
    reason: &str,
    crl_days: u32,
    passphrase: &PassphraseArg,
) -> CliResult {
    let ca = CaDir::open(dir)?;
    let mut db = ca.db().await?;
    let reason = Reason::from_name(reason).ok_or_else(|| {
        CliError::new(format!(
            "unknown reason {reason:?}; use one of: {}",
            Reason::ALL
                .iter()
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    peerlink_ca::profiles::validity_days(crl_days)?;

    // Work out what to revoke before asking for the passphrase.
    let (serials, peer_id) = match (serial, peer) {
        (Some(serial), _) => {
            let digits = serial.trim_start_matches("0x").replace(':', "");
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(CliError::new(format!(
                    "--serial {serial:?} is not a hexadecimal serial number (e.g. 6b310c3b... as ca-tool list prints it)"
                )));
            }
            let cert = db.certificate(serial).await?.ok_or_else(|| {
                CliError::new(format!(
                    "no certificate with serial {serial} was issued by this CA (see ca-tool list)"
                ))
            })?;
            if cert.kind == "root" {
                return Err(CliError::new(
                    "refusing to revoke the root certificate itself; retire the CA instead",
                ));
            }
            if cert.status == "revoked" {
                return Err(CliError::new(format!(
                    "certificate {} is already revoked",
                    cert.serial_hex
                )));
            }
            (vec![cert.serial_hex], None)
        }
        (None, Some(node_id)) => {
            let record = db.peer(node_id).await?.ok_or_else(|| {
                CliError::new(format!("unknown peer {node_id} (see ca-tool list)"))
            })?;
            let serials: Vec<String> = db
                .certificates()
                .await?
                .into_iter()
                .filter(|c| c.peer_node_id.as_deref() == Some(node_id) && c.status == "valid")
                .map(|c| c.serial_hex)
                .collect();
            if serials.is_empty() && record.status == "revoked" {
                return Err(CliError::new(format!("peer {node_id} is already revoked")));
            }
            (serials, Some(node_id.to_string()))
        }
        (None, None) => return Err(CliError::new("give --serial HEX or --peer NODE_ID")),
    };

    let signer = ca.signer(passphrase)?;
    let now = OffsetDateTime::now_utc();
    let number = super::in_transaction(&mut db, async |db, files| {
        for s in &serials {
            db.revoke_certificate(s, now, reason).await?;
        }
        if let Some(id) = &peer_id {
            db.set_peer_status(id, "revoked", now).await?;
        }
        let (number, crl) = publish(db, &signer, crl_days).await?;
        files.write(
            &ca.dir.join(CRL_FILE),
            pem_crl(&crl).as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        Ok(number)
    })
    .await?;
    for s in &serials {
        println!("Revoked certificate {s} ({}).", reason.name());
    }
    if let Some(id) = peer_id {
        println!("Peer {id} is now revoked: gateways refuse it once they read this CA directory.");
    }
    println!(
        "Published CRL #{number} to {}; copy the CA directory's public part to the gateways.",
        ca.dir.join(CRL_FILE).display()
    );
    Ok(())
}

/// Runs `crl`: signs a CRL with the next number, writes it to `out` and `DIR/crl.pem`.
pub async fn crl(dir: &Path, out: &Path, days: u32, passphrase: &PassphraseArg) -> CliResult {
    let ca = CaDir::open(dir)?;
    ca.check_output(out)?;
    let mut db = ca.db().await?;
    peerlink_ca::profiles::validity_days(days)?;
    let signer = ca.signer(passphrase)?;
    let (number, count) = super::in_transaction(&mut db, async |db, files| {
        let (number, crl) = publish(db, &signer, days).await?;
        let pem = pem_crl(&crl);
        files.write(out, pem.as_bytes(), PUBLIC_FILE_MODE)?;
        files.write(&ca.dir.join(CRL_FILE), pem.as_bytes(), PUBLIC_FILE_MODE)?;
        Ok((number, db.revoked().await?.len()))
    })
    .await?;
    println!(
        "Wrote CRL #{number} with {count} revoked certificate(s) to {}, valid for {days} days.",
        out.display()
    );
    Ok(())
}

async fn publish(db: &mut CaDb, signer: &RootSigner, days: u32) -> CliResult<(u64, Vec<u8>)> {
    let revoked = db.revoked().await?;
    let number = db.next_crl_number().await?;
    let crl = signer.issue_crl(number, &revoked, days)?;
    Ok((number, crl))
}
