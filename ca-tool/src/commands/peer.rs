//! `ca-tool sign-peer` and `register-peer`: the two halves of a partnership.

use std::path::Path;

use ::time::OffsetDateTime;
use peerlink_ca::profiles::CrossCertOptions;
use peerlink_cadb::{CaDb, PeerRecord};
use peerlink_pki::fsutil::PUBLIC_FILE_MODE;
use peerlink_pki::identity::Fingerprint;
use peerlink_pki::pemfile::pem_certificate;
use peerlink_pki::pemfile::{self, ObjectKind};
use peerlink_pki::timefmt::rfc3339;
use peerlink_pki::validate::{self, names, Purpose, ValidationOptions};
use x509_parser::prelude::*;

use crate::cadir::CaDir;
use crate::error::{CliError, CliResult};
use crate::PassphraseArg;

use peerlink_pki::layout::{ISSUED_BY_US, ISSUED_TO_US, PEER_SUBNET};
use peerlink_pki::swaptacular as swpt;

use super::partner::Partner;

/// Loads and verifies a partner bundle (either kind), refusing our own and key
/// changes for known ids.
async fn partner_bundle(ca: &CaDir, db: &mut CaDb, path: &Path) -> CliResult<Partner> {
    let b = Partner::load(path)?;
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
    Ok(b)
}

fn peer_record(b: &Partner, existing: Option<&PeerRecord>, now: OffsetDateTime) -> PeerRecord {
    PeerRecord {
        node_id: b.identity.node_id.clone(),
        subject: b.identity.subject.clone(),
        subject_der: b.identity.subject_der.clone(),
        spki_der: b.identity.spki_der.clone(),
        root_fingerprint: hex::encode(b.identity.fingerprint.0),
        endpoints: b.endpoints.clone(),
        status: "active".into(),
        added_at: existing.map_or_else(|| rfc3339(now), |p| p.added_at.clone()),
        updated_at: rfc3339(now),
        registered_cert_serial: existing.and_then(|p| p.registered_cert_serial.clone()),
    }
}

/// The options of `sign-peer` besides the files.
pub struct SignOptions {
    /// `--days`; the default depends on the partner's kind.
    pub days: Option<u32>,
    /// `--subnet`, for an accounting authority signing a Swaptacular agent.
    pub subnet: Option<String>,
    /// `--expect-fingerprint`.
    pub expect_fingerprint: Option<String>,
    /// `--reactivate`.
    pub reactivate: bool,
}

/// Runs `sign-peer`.
pub async fn sign(
    dir: &Path,
    bundle_path: &Path,
    out: &Path,
    options: &SignOptions,
    passphrase: &PassphraseArg,
) -> CliResult {
    let ca = CaDir::open(dir)?;
    ca.check_output(out)?;
    let mut db = ca.db().await?;
    let b = partner_bundle(&ca, &mut db, bundle_path).await?;
    if let Some(known) = db.peer(&b.identity.node_id).await? {
        if known.status == "revoked" && !options.reactivate {
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
    b.print();
    if let Some(expected) = &options.expect_fingerprint {
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
    let (days, cross_options, subnet) = match &b.swaptacular {
        Some(info) => {
            let terms = super::partner::swaptacular_terms(
                &ca,
                &mut db,
                info.node_type,
                &b.identity.node_id,
                options.subnet.as_deref(),
            )
            .await?;
            let cross = CrossCertOptions {
                max_days: swpt::MAX_DAYS,
                ns_comment: terms.subnet.as_deref().map(swpt::subnet_comment),
            };
            (
                options.days.unwrap_or(swpt::DEFAULT_DAYS),
                cross,
                terms.subnet,
            )
        }
        None => {
            if options.subnet.is_some() {
                return Err(CliError::new(
                    "--subnet is for Swaptacular info-bundles; this is a peerlink bundle",
                ));
            }
            (
                options.days.unwrap_or(1825),
                CrossCertOptions::default(),
                None,
            )
        }
    };
    peerlink_ca::profiles::validity_days_up_to(days, cross_options.max_days)?;

    let signer = ca.signer(passphrase)?;
    let issued = signer.issue_cross_cert_with(&b.identity, days, &cross_options)?;
    let now = OffsetDateTime::now_utc();
    if b.swaptacular.is_some() && issued.not_after.year() < now.year() + swpt::MIN_PEER_CERT_YEARS {
        return Err(CliError::new(format!(
            "the cross-certificate would end on {} (capped at {}), but Swaptacular's register-peer \
             refuses one that ends less than {} years from now; nothing was written",
            rfc3339(issued.not_after),
            if ca.identity.not_after < b.identity.not_after {
                "our root's expiry: this CA's root is too short-lived for Swaptacular"
            } else {
                "the partner's root's expiry"
            },
            swpt::MIN_PEER_CERT_YEARS
        )));
    }
    let existing = db.peer(&b.identity.node_id).await?;

    super::in_transaction(&mut db, async |db, files| {
        db.upsert_peer(&peer_record(&b, existing.as_ref(), now))
            .await?;
        db.insert_certificate("peer", &issued, Some(&b.identity.node_id), now)
            .await?;
        files.write(out, issued.pem().as_bytes(), PUBLIC_FILE_MODE)?;
        let peer_dir = ca.peer_dir(&b.identity.node_id);
        files.create_dir(&peer_dir, 0o755)?;
        b.write_files(files, &peer_dir)?;
        files.write(
            &peer_dir.join(ISSUED_BY_US),
            issued.pem().as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        if let Some(subnet) = &subnet {
            files.write(
                &peer_dir.join(PEER_SUBNET),
                format!("{subnet}\n").as_bytes(),
                PUBLIC_FILE_MODE,
            )?;
        }
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
    let b = partner_bundle(&ca, &mut db, bundle_path).await?;
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
        if !b.files_present(&peer_dir) {
            b.write_files(files, &peer_dir)?;
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
    if let Some(subnet) = subnet_comment(&cert) {
        println!("The certificate gives us the Swaptacular subnet {subnet}.");
    }
    if existing.is_none() {
        println!(
            "Note: we have not cross-signed {} yet; run ca-tool sign-peer with their bundle so they can dial us too.",
            b.identity.node_id
        );
    }
    Ok(())
}

/// The subnet in a certificate's `nsComment` (`Subnet: HEX`), if any.
fn subnet_comment(cert: &X509Certificate<'_>) -> Option<String> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::NsCertComment(c) => swpt::subnet_of_comment(c).map(str::to_string),
            _ => None,
        })
}

/// A cross-cert issued to us must be: issued and signed by the partner's root, name our
/// subject (byte-identical) and our key, be a CA with pathlen 0, and carry a critical
/// nameConstraints permitting exactly our DN.
pub(crate) fn check_cross_cert_for_us(
    ca: &CaDir,
    b: &Partner,
    der: &[u8],
    path: &Path,
) -> CliResult {
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
