//! `ca-tool import-swaptacular`: a swpt_ca_scripts CA becomes a ca-tool CA,
//! so that a Swaptacular node can move to ca-tool without exchanging
//! certificates again with any partner.
//!
//! The original directory is only read. Everything is read and checked first
//! (the root, every partner's root and both cross-certificates, every issued
//! certificate found), then the passphrases are asked, then the new CA is
//! assembled in a hidden sibling directory and renamed into place, as `init`
//! does: a failure leaves nothing behind.

use std::path::{Path, PathBuf};

use ::time::OffsetDateTime;
use peerlink_ca::keyfile;
use peerlink_ca::swaptacular::openssl_key;
use peerlink_cadb::{CaDb, Issued, PeerRecord, Reason};
use peerlink_pki::fsutil::{self, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use peerlink_pki::identity::NodeIdentity;
use peerlink_pki::layout::{self, ISSUED_BY_US, ISSUED_TO_US, PEER_ROOT, PEER_STOMP, PEER_SUBNET};
use peerlink_pki::pemfile::{self, pem_certificate, ObjectKind};
use peerlink_pki::swaptacular::{layout as swpt, NodeType, StompManifest};
use peerlink_pki::timefmt::rfc3339;
use x509_parser::prelude::*;

use super::init::{install, refuse_existing, staging_dir};
use super::partner::Partner;
use crate::cadir::CaDir;
use crate::error::{CliError, CliResult};
use crate::PassphraseArg;

/// One partner of the Swaptacular node, checked.
struct ImportedPeer {
    partner: Partner,
    issued_by_us: Option<Vec<u8>>,
    issued_to_us: Option<Vec<u8>>,
    deactivated: bool,
    manifest: Option<Vec<u8>>,
    subnet: Option<String>,
}

/// A certificate the Swaptacular CA issued, and what openssl's index says of it.
struct ImportedCert {
    issued: Issued,
    kind: &'static str,
    peer_node_id: Option<String>,
    revoked: Option<(OffsetDateTime, Reason)>,
}

/// Runs `import-swaptacular`.
pub async fn run(
    from: &Path,
    dir: &Path,
    from_passphrase: Option<&Path>,
    passphrase: &PassphraseArg,
) -> CliResult {
    refuse_existing(dir)?;
    if from.join(layout::DB_FILE).exists() {
        return Err(CliError::new(format!(
            "{} is already a ca-tool CA (it has {}); nothing to import",
            from.display(),
            layout::DB_FILE
        )));
    }
    let ca = CaDir::open(from)?;
    let node_type = NodeType::of_identity(&ca.identity).map_err(|e| {
        CliError::new(format!(
            "{} is not a Swaptacular node's CA: {e}",
            from.display()
        ))
    })?;
    check_node_id_file(from, &ca.identity)?;
    let key_path = from.join(swpt::ROOT_KEY);
    let key_pem = fsutil::read(&key_path)?;
    let peers = read_peers(&ca)?;
    let (certs, missing) = read_certificates(&ca)?;
    let own_manifest = read_manifest(&from.join(swpt::NODEINFO_DIR).join(swpt::STOMP_TOML))?;
    let staging = staging_dir(dir)?;

    let old = crate::passphrase::obtain_with_prompt(
        from_passphrase,
        "Passphrase of the Swaptacular root key: ",
    )?;
    let key = openssl_key::decrypt(&key_pem, &old, &key_path.display().to_string())?;
    if key.public_key_der()? != ca.identity.spki_der {
        return Err(CliError::new(format!(
            "{} is not the key of {}; nothing was created",
            key_path.display(),
            from.join(swpt::ROOT_CERT).display()
        )));
    }
    eprintln!(
        "Now the passphrase that will protect the key in {}.",
        dir.display()
    );
    let new = crate::passphrase::obtain(passphrase.passphrase_file.as_deref(), true)?;
    let encrypted = keyfile::encrypt_pem(&key, &new)?;

    let result = build(
        &staging,
        &ca,
        encrypted.as_bytes(),
        &peers,
        &certs,
        own_manifest.as_deref(),
    )
    .await
    .and_then(|()| install(&staging, dir));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(CliError::new(format!(
            "cannot import into {}: {}; nothing was created",
            dir.display(),
            e.message
        )));
    }
    println!(
        "Imported Swaptacular {node_type} {} from {} into {}",
        ca.identity.node_id,
        from.display(),
        dir.display()
    );
    println!("  Certificates: {}", certs.len());
    for p in &peers {
        println!(
            "  Partner {}: {}{}",
            p.partner.identity.node_id,
            if p.deactivated {
                "deactivated (imported as revoked)"
            } else {
                "active"
            },
            if p.issued_to_us.is_none() {
                ", not registered yet (no sub-ca.crt)"
            } else {
                ""
            }
        );
    }
    for serial in &missing {
        println!("  Not imported: db/index lists serial {serial}, but no copy of it was found");
    }
    println!(
        "{} was not changed. Back up {} and {} now.",
        from.display(),
        dir.join(layout::PRIVATE_DIR)
            .join(layout::ROOT_KEY)
            .display(),
        dir.join(layout::DB_FILE).display()
    );
    Ok(())
}

/// `db/nodeid`, if present, must agree with the root.
fn check_node_id_file(from: &Path, identity: &NodeIdentity) -> CliResult {
    let path = from.join(swpt::NODE_ID);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if text.trim() != identity.node_id {
            return Err(CliError::new(format!(
                "{} says {:?} but the root's serialNumber is {:?}: the CA is inconsistent; \
                 nothing was created",
                path.display(),
                text.trim(),
                identity.node_id
            )));
        }
    }
    Ok(())
}

/// A manifest file, checked, if it exists.
fn read_manifest(path: &Path) -> CliResult<Option<Vec<u8>>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = fsutil::read(path)?;
    StompManifest::parse(&bytes).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    Ok(Some(bytes))
}

/// Every partner directory, with its certificates checked both ways.
fn read_peers(ca: &CaDir) -> CliResult<Vec<ImportedPeer>> {
    let peers_dir = ca.dir.join(swpt::PEERS_DIR);
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&peers_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(fsutil::FsError::new("cannot read", &peers_dir, e).into()),
    };
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let root_der = pemfile::load_one(&dir.join(swpt::PEER_ROOT), ObjectKind::Certificate)?;
        let identity = NodeIdentity::from_root_der(&root_der)
            .map_err(|e| CliError::new(format!("{}: {e}", dir.join(swpt::PEER_ROOT).display())))?;
        if identity.node_id != name {
            return Err(CliError::new(format!(
                "{} holds the root of {:?}, not of {name:?}; nothing was created",
                dir.display(),
                identity.node_id
            )));
        }
        let partner = Partner {
            bytes: Vec::new(),
            root_der,
            identity,
            endpoints: Vec::new(),
            swaptacular: None,
            created_at: None,
        };
        let issued_by_us = optional_cert(&dir.join(swpt::PEERCERT))?;
        if let Some(der) = &issued_by_us {
            check_issued_by(ca, der, &partner.identity, &dir.join(swpt::PEERCERT))?;
        }
        let issued_to_us = optional_cert(&dir.join(swpt::SUB_CA))?;
        if let Some(der) = &issued_to_us {
            super::peer::check_cross_cert_for_us(ca, &partner, der, &dir.join(swpt::SUB_CA))?;
        }
        let subnet = std::fs::read_to_string(dir.join(swpt::PEER_SUBNET))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        out.push(ImportedPeer {
            manifest: read_manifest(&dir.join(swpt::PEER_STOMP))?,
            deactivated: dir.join(swpt::DEACTIVATED).exists(),
            partner,
            issued_by_us,
            issued_to_us,
            subnet,
        });
    }
    Ok(out)
}

fn optional_cert(path: &Path) -> CliResult<Option<Vec<u8>>> {
    if path.exists() {
        Ok(Some(pemfile::load_one(path, ObjectKind::Certificate)?))
    } else {
        Ok(None)
    }
}

/// A peer certificate we issued must carry the partner's subject and key and be
/// signed by our root.
fn check_issued_by(ca: &CaDir, der: &[u8], partner: &NodeIdentity, path: &Path) -> CliResult {
    let bad = |why: &str| {
        CliError::new(format!(
            "{} is not the peer certificate this CA issued {}: {why}; nothing was created",
            path.display(),
            partner.node_id
        ))
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(&e.to_string()))?;
    if !signed_by_root(ca, &cert) {
        return Err(bad("it is not signed by this CA's root"));
    }
    if cert.subject().as_raw() != partner.subject_der.as_slice()
        || cert.public_key().raw != partner.spki_der.as_slice()
    {
        return Err(bad("its subject or key is not the partner's root's"));
    }
    Ok(())
}

fn signed_by_root(ca: &CaDir, cert: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == ca.identity.subject_der.as_slice()
        && peerlink_pki::signature::verify_signed(
            &ca.identity.spki_der,
            &cert.signature_algorithm,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )
        .is_ok()
}

/// Every certificate the CA issued that has a copy (the root, `certs/*.pem` as
/// `openssl ca` keeps them, the partners' `peercert.crt`), with `db/index`'s
/// revocations; also the serials the index lists without a copy.
fn read_certificates(ca: &CaDir) -> CliResult<(Vec<ImportedCert>, Vec<String>)> {
    let mut files = vec![ca.dir.join(swpt::ROOT_CERT)];
    // Server certificates sign-servercert wrote next to the CA (wherever the operator
    // said; the top level is a common place), when signed by this root.
    if let Ok(entries) = std::fs::read_dir(&ca.dir) {
        let mut top: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "crt" || x == "pem"))
            .collect();
        top.sort();
        files.extend(top);
    }
    if let Ok(entries) = std::fs::read_dir(ca.dir.join(swpt::CERTS_DIR)) {
        let mut pems: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        pems.sort();
        files.extend(pems);
    }
    if let Ok(entries) = std::fs::read_dir(ca.dir.join(swpt::PEERS_DIR)) {
        let mut certs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join(swpt::PEERCERT))
            .filter(|p| p.exists())
            .collect();
        certs.sort();
        files.extend(certs);
    }
    let index = read_index(&ca.dir.join(swpt::INDEX))?;
    let mut out: Vec<ImportedCert> = Vec::new();
    for path in files {
        let Ok(der) = pemfile::load_one(&path, ObjectKind::Certificate) else {
            continue;
        };
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
        if !signed_by_root(ca, &cert) {
            continue;
        }
        let serial = hex::encode(cert.raw_serial());
        if out.iter().any(|c| hex::encode(&c.issued.serial) == serial) {
            continue;
        }
        let (kind, peer_node_id) = if der == ca.root_der {
            ("root", None)
        } else if cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca)
        {
            let id = peerlink_pki::identity::attribute_text(
                cert.subject(),
                &x509_parser::oid_registry::OID_X509_SERIALNUMBER,
            );
            ("peer", id)
        } else {
            ("server", None)
        };
        let revoked = index
            .iter()
            .find(|e| normalize(&e.serial) == normalize(&serial))
            .and_then(|e| e.revoked);
        let issued = Issued::from_der(der)?;
        out.push(ImportedCert {
            issued,
            kind,
            peer_node_id,
            revoked,
        });
    }
    let missing = index
        .iter()
        .filter(|e| {
            !out.iter()
                .any(|c| normalize(&hex::encode(&c.issued.serial)) == normalize(&e.serial))
        })
        .map(|e| e.serial.clone())
        .collect();
    Ok((out, missing))
}

/// One line of openssl's `db/index`.
struct IndexEntry {
    serial: String,
    revoked: Option<(OffsetDateTime, Reason)>,
}

/// Reads `db/index` (tab-separated: status, expiry, revocation `YYMMDDHHMMSSZ[,reason]`,
/// serial, file, subject); a missing index is empty.
fn read_index(path: &Path) -> CliResult<Vec<IndexEntry>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = || {
            CliError::new(format!(
                "{} line {}: not an openssl ca index line",
                path.display(),
                n + 1
            ))
        };
        if fields.len() < 4 {
            return Err(bad());
        }
        let revoked = if fields[0] == "R" {
            let (when, reason) = fields[2]
                .split_once(',')
                .unwrap_or((fields[2], "unspecified"));
            Some((parse_index_time(when).ok_or_else(bad)?, reason_of(reason)))
        } else {
            None
        };
        out.push(IndexEntry {
            serial: fields[3].to_string(),
            revoked,
        });
    }
    Ok(out)
}

/// `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn parse_index_time(text: &str) -> Option<OffsetDateTime> {
    let digits = text.strip_suffix('Z')?;
    let full = match digits.len() {
        12 => {
            let yy: u32 = digits[..2].parse().ok()?;
            format!("{}{digits}", if yy < 50 { "20" } else { "19" })
        }
        14 => digits.to_string(),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| full.get(r).and_then(|s| s.parse::<u32>().ok());
    let date = ::time::Date::from_calendar_date(
        i32::try_from(n(0..4)?).ok()?,
        ::time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?,
        u8::try_from(n(6..8)?).ok()?,
    )
    .ok()?;
    let t = ::time::Time::from_hms(
        u8::try_from(n(8..10)?).ok()?,
        u8::try_from(n(10..12)?).ok()?,
        u8::try_from(n(12..14)?).ok()?,
    )
    .ok()?;
    Some(::time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// openssl's reason names as ca-tool's (certificateHold and removeFromCRL have none).
fn reason_of(name: &str) -> Reason {
    match name {
        "keyCompromise" => Reason::KeyCompromise,
        "CACompromise" => Reason::CaCompromise,
        "affiliationChanged" => Reason::AffiliationChanged,
        "superseded" => Reason::Superseded,
        "cessationOfOperation" => Reason::CessationOfOperation,
        "privilegeWithdrawn" => Reason::PrivilegeWithdrawn,
        _ => Reason::Unspecified,
    }
}

fn normalize(serial: &str) -> String {
    serial
        .to_ascii_lowercase()
        .trim_start_matches('0')
        .to_string()
}

/// Writes the new CA into `staging`.
async fn build(
    staging: &Path,
    ca: &CaDir,
    key_pem: &[u8],
    peers: &[ImportedPeer],
    certs: &[ImportedCert],
    own_manifest: Option<&[u8]>,
) -> CliResult {
    fsutil::create_dir(staging, 0o755)?;
    fsutil::create_dir(&staging.join(layout::PRIVATE_DIR), PRIVATE_DIR_MODE)?;
    fsutil::create_dir(&staging.join(layout::PEERS_DIR), 0o755)?;
    fsutil::write_new(
        &staging.join(layout::PRIVATE_DIR).join(layout::ROOT_KEY),
        key_pem,
        PRIVATE_FILE_MODE,
    )?;
    fsutil::write_new(
        &staging.join(layout::ROOT_CERT),
        pem_certificate(&ca.root_der).as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    if let Some(m) = own_manifest {
        fsutil::create_dir(&staging.join(layout::NODEINFO_DIR), 0o755)?;
        fsutil::write_new(
            &staging.join(layout::NODEINFO_DIR).join(swpt::STOMP_TOML),
            m,
            PUBLIC_FILE_MODE,
        )?;
    }
    let now = OffsetDateTime::now_utc();
    let mut db = CaDb::open(&staging.join(layout::DB_FILE), true).await?;
    for c in certs {
        db.insert_certificate(
            c.kind,
            &c.issued,
            c.peer_node_id.as_deref(),
            c.issued.not_before,
        )
        .await?;
        if let Some((at, reason)) = c.revoked {
            db.revoke_certificate(&hex::encode(&c.issued.serial), at, reason)
                .await?;
        }
    }
    for p in peers {
        let id = &p.partner.identity;
        let record = PeerRecord {
            node_id: id.node_id.clone(),
            subject: id.subject.clone(),
            subject_der: id.subject_der.clone(),
            spki_der: id.spki_der.clone(),
            root_fingerprint: hex::encode(id.fingerprint.0),
            endpoints: Vec::new(),
            status: "active".into(),
            added_at: rfc3339(now),
            updated_at: rfc3339(now),
            registered_cert_serial: None,
        };
        db.upsert_peer(&record).await?;
        let peer_dir = layout::peer_dir(staging, &id.node_id);
        fsutil::create_dir(&peer_dir, 0o755)?;
        let write = |name: &str, bytes: &[u8]| {
            fsutil::write_new(&peer_dir.join(name), bytes, PUBLIC_FILE_MODE)
        };
        write(PEER_ROOT, pem_certificate(&p.partner.root_der).as_bytes())?;
        if let Some(der) = &p.issued_by_us {
            write(ISSUED_BY_US, pem_certificate(der).as_bytes())?;
        }
        if let Some(der) = &p.issued_to_us {
            write(ISSUED_TO_US, pem_certificate(der).as_bytes())?;
            let (_, cert) =
                X509Certificate::from_der(der).map_err(|e| CliError::new(e.to_string()))?;
            db.set_registered_cert(&id.node_id, &hex::encode(cert.raw_serial()), now)
                .await?;
        }
        if let Some(m) = &p.manifest {
            write(PEER_STOMP, m)?;
        }
        if let Some(s) = &p.subnet {
            write(PEER_SUBNET, format!("{s}\n").as_bytes())?;
        }
        if p.deactivated {
            db.set_peer_status(&id.node_id, "revoked", now).await?;
        }
    }
    db.close().await?;
    fsutil::sync_dir(staging)?;
    Ok(())
}
