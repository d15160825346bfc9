//! `ca-tool sign-server`: certify a gateway's key under our own name.

use std::path::Path;

use peerlink_pki::fsutil::PUBLIC_FILE_MODE;
use peerlink_pki::pemfile::{self, ObjectKind};
use peerlink_pki::timefmt::rfc3339;
use time::OffsetDateTime;

use crate::cadir::CaDir;
use crate::error::{CliError, CliResult};
use crate::PassphraseArg;

/// Runs `sign-server`.
pub async fn sign(
    dir: &Path,
    csr_path: &Path,
    out: &Path,
    days: u32,
    passphrase: &PassphraseArg,
) -> CliResult {
    let ca = CaDir::open(dir)?;
    ca.check_output(out)?;
    let mut db = ca.db().await?;
    let csr_der = pemfile::load_one(csr_path, ObjectKind::Csr)?;
    let csr = peerlink_ca::csr::verify_csr(&csr_der, &ca.identity.subject_der)
        .map_err(|e| CliError::new(format!("{}: {e}", csr_path.display())))?;
    peerlink_ca::profiles::validity_days(days)?;
    println!(
        "CSR {} is for {} ({} key).",
        csr_path.display(),
        csr.subject,
        csr.key_type
    );
    if csr.requested_extensions {
        println!("Note: extensions requested in the CSR are ignored; the server profile decides.");
    }

    let signer = ca.signer(passphrase)?;
    let issued = signer.issue_server_cert(&csr, days)?;
    let now = OffsetDateTime::now_utc();
    super::in_transaction(&mut db, async |db, files| {
        db.insert_certificate("server", &issued, None, now).await?;
        files.write(out, issued.pem().as_bytes(), PUBLIC_FILE_MODE)?;
        Ok(())
    })
    .await?;
    println!(
        "Issued server certificate {} for {} (serial {}, valid until {}{}).",
        out.display(),
        issued.subject,
        hex::encode(&issued.serial),
        rfc3339(issued.not_after),
        if issued.capped {
            ", shortened to the root's expiry"
        } else {
            ""
        }
    );
    Ok(())
}
