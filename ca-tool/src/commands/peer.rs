//! `ca-tool sign-peer` and `register-peer`: the two halves of a partnership.

use std::path::Path;

use ::time::OffsetDateTime;
use peerlink_ca::bundle::{self, VerifiedBundle};
use peerlink_cadb::{CaDb, PeerRecord};
use peerlink_pki::fsutil::{self, FileTransaction, PUBLIC_FILE_MODE};
use peerlink_pki::identity::Fingerprint;
use peerlink_pki::pemfile::pem_certificate;
use peerlink_pki::pemfile::{self, ObjectKind};
use peerlink_pki::timefmt::rfc3339;
use peerlink_pki::validate::{self, names, Purpose, ValidationOptions};
use x509_parser::prelude::*;

use crate::cadir::CaDir;
use crate::error::{CliError, CliResult};
use crate::PassphraseArg;

use peerlink_pki::layout::{
    ISSUED_BY_US, ISSUED_TO_US, PEER_BUNDLE as BUNDLE_FILE, PEER_ROOT as ROOT_FILE,
};

/// Loads and verifies a partner bundle, refusing our own and key changes for known ids.
async fn partner_bundle(
    ca: &CaDir,
    db: &mut CaDb,
    path: &Path,
) -> CliResult<(Vec<u8>, VerifiedBundle)> {
    let bytes = fsutil::read(path)?;
    let b = bundle::verify(&bytes, OffsetDateTime::now_utc())
        .map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    if b.identity.node_id == ca.identity.node_id || b.identity.spki_der == ca.identity.spki_der {
        return Err(CliError::new(format!(
            "{} is this node's own bundle (node id {}); sign the partner's bundle instead",
            path.display(),
            b.identity.node_id
        )));
    }
    for known in db.peers().await? {
        if known.node_id == b.identity.node_id && known.spki_der != b.identity.spki_der {
            return Err(CliError::new(format!(
                "node id {} is already known with a different root key (fingerprint {}); \
                 the bundle's key has fingerprint {}. Refusing: confirm with the partner by phone \
                 whether they really replaced their root",
                known.node_id,
                known.root_fingerprint,
                hex::encode(b.identity.fingerprint.0)
            )));
        }
        if known.node_id != b.identity.node_id && known.spki_der == b.identity.spki_der {
            return Err(CliError::new(format!(
                "the bundle's root key is already registered as node {}; refusing a second id {} for it",
                known.node_id, b.identity.node_id
            )));
        }
    }
    Ok((bytes, b))
}

fn peer_record(
    b: &VerifiedBundle,
    existing: Option<&PeerRecord>,
    now: OffsetDateTime,
) -> PeerRecord {
    PeerRecord {
        node_id: b.identity.node_id.clone(),
        subject: b.identity.subject.clone(),
        subject_der: b.identity.subject_der.clone(),
        spki_der: b.identity.spki_der.clone(),
        root_fingerprint: hex::encode(b.identity.fingerprint.0),
        endpoints: b.info.endpoints.clone(),
        status: "active".into(),
        added_at: existing.map_or_else(|| rfc3339(now), |p| p.added_at.clone()),
        updated_at: rfc3339(now),
        registered_cert_serial: existing.and_then(|p| p.registered_cert_serial.clone()),
    }
}

/// Runs `sign-peer`.
pub async fn sign(
    dir: &Path,
    bundle_path: &Path,
    out: &Path,
    days: u32,
    expect_fingerprint: Option<&str>,
    reactivate: bool,
    passphrase: &PassphraseArg,
) -> CliResult {
    let ca = CaDir::open(dir)?;
    ca.check_output(out)?;
    let mut db = ca.db().await?;
    let (bundle_bytes, b) = partner_bundle(&ca, &mut db, bundle_path).await?;
    if let Some(known) = db.peer(&b.identity.node_id).await? {
        if known.status == "revoked" && !reactivate {
            return Err(CliError::new(format!(
                "peer {} was revoked on {}; its root key may be compromised. If the partnership \
                 really resumes with the same root key, confirm with --reactivate",
                known.node_id, known.updated_at
            )));
        }
    }
    println!(
        "Bundle {} is valid and signed by its root.",
        bundle_path.display()
    );
    super::bundle::print_identity(&b);
    if let Some(expected) = expect_fingerprint {
        let expected = Fingerprint::parse(expected).ok_or_else(|| {
            CliError::new("--expect-fingerprint is not a SHA-256 fingerprint (64 hex digits)")
        })?;
        if expected != b.identity.fingerprint {
            return Err(CliError::new(format!(
                "the bundle's fingerprint {} is not the expected {}; do NOT sign it, and call the partner",
                b.identity.fingerprint.phone_form(),
                expected.phone_form()
            )));
        }
        println!("Fingerprint matches the expected one.");
    }
    peerlink_ca::profiles::validity_days(days)?;

    let signer = ca.signer(passphrase)?;
    let issued = signer.issue_cross_cert(&b.identity, days)?;
    let now = OffsetDateTime::now_utc();
    let existing = db.peer(&b.identity.node_id).await?;

    super::in_transaction(&mut db, async |db, files| {
        db.upsert_peer(&peer_record(&b, existing.as_ref(), now))
            .await?;
        db.insert_certificate("peer", &issued, Some(&b.identity.node_id), now)
            .await?;
        files.write(out, issued.pem().as_bytes(), PUBLIC_FILE_MODE)?;
        let peer_dir = ca.peer_dir(&b.identity.node_id);
        files.create_dir(&peer_dir, 0o755)?;
        write_partner_files(files, &peer_dir, &bundle_bytes, &b)?;
        files.write(
            &peer_dir.join(ISSUED_BY_US),
            issued.pem().as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        Ok(())
    })
    .await?;
    println!(
        "Issued cross-certificate {} for {} (serial {}, valid until {}{})",
        out.display(),
        b.identity.node_id,
        hex::encode(&issued.serial),
        rfc3339(issued.not_after),
        if issued.capped {
            ", shortened to the roots' expiry"
        } else {
            ""
        }
    );
    println!(
        "Send it to the partner; they run: ca-tool register-peer --dir DIR --bundle <your bundle> --cert {}",
        out.file_name().map_or_else(|| out.display().to_string(), |n| n.to_string_lossy().into_owned())
    );
    Ok(())
}

/// Runs `register-peer`.
pub async fn register(dir: &Path, bundle_path: &Path, cert_path: &Path) -> CliResult {
    let ca = CaDir::open(dir)?;
    let mut db = ca.db().await?;
    let (bundle_bytes, b) = partner_bundle(&ca, &mut db, bundle_path).await?;
    let cert_der = pemfile::load_one(cert_path, ObjectKind::Certificate)?;
    check_cross_cert_for_us(&ca, &b, &cert_der, cert_path)?;
    let (_, cert) = X509Certificate::from_der(&cert_der)
        .map_err(|e| CliError::new(format!("{}: {e}", cert_path.display())))?;
    let serial_hex = hex::encode(cert.raw_serial());
    let not_after = cert.validity().not_after.to_datetime();
    let now = OffsetDateTime::now_utc();
    let existing = db.peer(&b.identity.node_id).await?;

    super::in_transaction(&mut db, async |db, files| {
        if existing.is_none() {
            db.upsert_peer(&peer_record(&b, None, now)).await?;
        }
        db.set_registered_cert(&b.identity.node_id, &serial_hex, now)
            .await?;
        let peer_dir = ca.peer_dir(&b.identity.node_id);
        files.create_dir(&peer_dir, 0o755)?;
        if !peer_dir.join(BUNDLE_FILE).exists() {
            write_partner_files(files, &peer_dir, &bundle_bytes, &b)?;
        }
        files.write(
            &peer_dir.join(ISSUED_TO_US),
            pem_certificate(&cert_der).as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        Ok(())
    })
    .await?;
    println!(
        "Registered the cross-certificate that {} issued to us (serial {serial_hex}, valid until {}).",
        b.identity.node_id,
        rfc3339(not_after)
    );
    if existing.is_none() {
        println!(
            "Note: we have not cross-signed {} yet; run ca-tool sign-peer with their bundle so they can dial us too.",
            b.identity.node_id
        );
    }
    Ok(())
}

/// Both halves of a partnership must store the partner's bundle and root under the
/// same names and modes: gateways and later commands read them from there.
fn write_partner_files(
    files: &mut FileTransaction,
    peer_dir: &Path,
    bundle_bytes: &[u8],
    b: &VerifiedBundle,
) -> CliResult {
    files.write(&peer_dir.join(BUNDLE_FILE), bundle_bytes, PUBLIC_FILE_MODE)?;
    files.write(
        &peer_dir.join(ROOT_FILE),
        pem_certificate(&b.root_der).as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    Ok(())
}

/// A cross-cert issued to us must be: issued and signed by the partner's root, name our
/// subject (byte-identical) and our key, be a CA with pathlen 0, and carry a critical
/// nameConstraints permitting exactly our DN.
fn check_cross_cert_for_us(ca: &CaDir, b: &VerifiedBundle, der: &[u8], path: &Path) -> CliResult {
    let refuse = |why: String| {
        CliError::new(format!(
            "{} is not a valid cross-certificate for us from {}: {why}",
            path.display(),
            b.identity.node_id
        ))
    };
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| refuse(format!("unparsable ({e})")))?;
    if !rest.is_empty() {
        return Err(refuse("trailing bytes after the certificate".into()));
    }
    if cert.issuer().as_raw() != b.identity.subject_der.as_slice() {
        return Err(refuse(format!(
            "it is issued by {}, not by the partner's root {}",
            names::display_dn(cert.issuer()),
            b.identity.subject
        )));
    }
    // Signature, validity and critical extensions, with the partner's root as the only anchor.
    validate::validate_chain(
        der,
        &ValidationOptions {
            anchor: &b.root_der,
            intermediates: &[],
            crls: &[],
            at: OffsetDateTime::now_utc(),
            purpose: Purpose::Any,
        },
    )
    .map_err(|e| refuse(e.to_string()))?;
    if cert.subject().as_raw() != ca.identity.subject_der.as_slice() {
        return Err(refuse(format!(
            "its subject {} is not our subject {}",
            names::display_dn(cert.subject()),
            ca.identity.subject
        )));
    }
    if cert.public_key().raw != ca.identity.spki_der.as_slice() {
        return Err(refuse(
            "it certifies a different key than our root key".into(),
        ));
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.critical && bc.value.ca && bc.value.path_len_constraint == Some(0) => {}
        _ => {
            return Err(refuse(
                "it must be a CA certificate with a critical basicConstraints pathLenConstraint 0"
                    .into(),
            ))
        }
    }
    let (_, our_name) = x509_parser::x509::X509Name::from_der(&ca.identity.subject_der)
        .map_err(|e| refuse(format!("our subject: {e}")))?;
    match cert.name_constraints() {
        Ok(Some(nc)) if nc.critical => {
            let permitted = nc.value.permitted_subtrees.as_deref().unwrap_or(&[]);
            let excluded = nc.value.excluded_subtrees.as_deref().unwrap_or(&[]);
            let ok = match permitted {
                [only] => {
                    matches!(&only.base, GeneralName::DirectoryName(n) if names::dn_equal(n, &our_name))
                }
                _ => false,
            };
            if !ok || !excluded.is_empty() {
                return Err(refuse(format!(
                    "its nameConstraints must permit exactly our name {} as a directoryName and nothing else",
                    ca.identity.subject
                )));
            }
        }
        _ => {
            return Err(refuse(
                "it lacks the critical nameConstraints extension".into(),
            ))
        }
    }
    Ok(())
}
