//! CRLs that partners send over their links.
//!
//! A partner revokes its own gateway certificates with its own CRL; it offers
//! the newest one on every link-up. We keep it only if its partner's pinned
//! root signed it and its CRL number is greater than the one we hold, so a
//! replayed older CRL can never un-revoke a certificate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peerlink_pki::fsutil;
use peerlink_tls::PeerTrust;
use x509_parser::prelude::*;

/// Where partners' CRLs are kept: `<state_dir>/peer-crls/<node id>.crl` (DER).
#[derive(Debug, Clone)]
pub struct CrlStore {
    dir: PathBuf,
}

/// Why a partner's CRL was refused (it is ignored, logged with this reason;
/// the link stays up).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// Not a DER CertificateList.
    #[error("malformed CRL: {0}")]
    Malformed(String),
    /// Bytes after the CertificateList.
    #[error("trailing bytes after the CRL")]
    TrailingBytes,
    /// The partner's pinned root does not parse.
    #[error("partner root: {0}")]
    PartnerRoot(String),
    /// The CRL names another issuer.
    #[error("the CRL is not issued by the partner's root")]
    WrongIssuer,
    /// The partner root's key is unusable.
    #[error(transparent)]
    Key(peerlink_pki::signature::SignatureError),
    /// The signature does not verify.
    #[error("the CRL signature does not verify with the partner's pinned root ({0})")]
    Signature(peerlink_pki::signature::SignatureError),
    /// Stale.
    #[error("the CRL is past its nextUpdate")]
    Expired,
    /// No CRL number: a newer one could not be told from an older one.
    #[error("the CRL has no CRL number")]
    NoNumber,
    /// A CRL number beyond 64 bits.
    #[error("CRL number too large")]
    NumberTooLarge,
    /// It could not be kept.
    #[error(transparent)]
    Write(#[from] fsutil::FsError),
}

/// What happened to an offered CRL.
#[derive(Debug, PartialEq, Eq)]
pub enum CrlOutcome {
    /// Newer than ours: stored, apply it.
    Stored(u64),
    /// Not newer than what we have: ignored.
    NotNewer,
}

impl CrlStore {
    /// Opens (creating) the store under the state directory.
    pub fn open(state_dir: &Path) -> Result<CrlStore, fsutil::FsError> {
        let dir = state_dir.join("peer-crls");
        fsutil::create_dir(&dir, 0o700)?;
        Ok(CrlStore { dir })
    }

    /// Every stored CRL by node id.
    pub fn load_all(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("crl") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if let Ok(der) = std::fs::read(&path) {
                out.insert(id.to_string(), der);
            }
        }
        out
    }

    /// Checks a CRL offered by `peer` and stores it when it is newer.
    pub fn offer(&self, peer: &PeerTrust, der: &[u8]) -> Result<CrlOutcome, CrlError> {
        let number = check_crl(peer, der)?;
        if let Some(current) = &peer.crl_der {
            if let Ok(current_number) = check_crl(peer, current) {
                if number <= current_number {
                    return Ok(CrlOutcome::NotNewer);
                }
            }
        }
        let path = self.dir.join(format!("{}.crl", peer.node_id));
        fsutil::write_atomic(&path, der, fsutil::PUBLIC_FILE_MODE)?;
        Ok(CrlOutcome::Stored(number))
    }
}

/// Verifies that `der` is a current CRL issued and signed by the partner's root; returns its number.
pub fn check_crl(peer: &PeerTrust, der: &[u8]) -> Result<u64, CrlError> {
    let (rest, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| CrlError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CrlError::TrailingBytes);
    }
    let (_, root) = X509Certificate::from_der(&peer.root_der)
        .map_err(|e| CrlError::PartnerRoot(e.to_string()))?;
    if !peerlink_pki::validate::names::dn_equal(crl.issuer(), root.subject()) {
        return Err(CrlError::WrongIssuer);
    }
    use peerlink_pki::signature::{verify_signed, SignatureError};
    verify_signed(
        root.public_key().raw,
        &crl.signature_algorithm,
        crl.tbs_cert_list.as_ref(),
        &crl.signature_value.data,
    )
    .map_err(|e| match e {
        SignatureError::MalformedKey(_) => CrlError::Key(e),
        e => CrlError::Signature(e),
    })?;
    let now = ::time::OffsetDateTime::now_utc();
    if let Some(next) = crl.next_update() {
        if next.to_datetime() < now {
            return Err(CrlError::Expired);
        }
    }
    let number = crl.crl_number().ok_or(CrlError::NoNumber)?.to_u64_digits();
    match number.as_slice() {
        [] => Ok(0),
        [n] => Ok(*n),
        _ => Err(CrlError::NumberTooLarge),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_ca::profiles::{issue_root, RootSigner};
    use peerlink_cadb::RevokedEntry;
    use peerlink_pki::identity::NodeName;
    use peerlink_pki::keys::{KeyType, PrivateKey};
    use peerlink_tls::PeerStatus;

    fn signer(unit: &str) -> RootSigner {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let id = peerlink_pki::identity::node_id_from_spki(&key.public_key_der().unwrap());
        let root = issue_root(&key, &NodeName::new("Net", unit, &id).unwrap(), 30).unwrap();
        RootSigner::new(root, &key).unwrap()
    }

    fn peer_of(s: &RootSigner, crl: Option<Vec<u8>>) -> PeerTrust {
        let id = s.identity();
        PeerTrust {
            node_id: id.node_id.clone(),
            subject: id.subject.clone(),
            subject_der: id.subject_der.clone(),
            root_der: s.cert_der().to_vec(),
            issued_to_us_der: None,
            endpoints: vec![],
            status: PeerStatus::Active,
            crl_der: crl,
            issued_to_us_not_after: None,
            stomp: None,
        }
    }

    fn revoked() -> Vec<RevokedEntry> {
        vec![RevokedEntry {
            serial: vec![0x42; 16],
            revoked_at: ::time::OffsetDateTime::now_utc(),
            reason: None,
        }]
    }

    #[test]
    fn newer_crl_from_the_partner_root_is_stored_and_older_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrlStore::open(dir.path()).unwrap();
        let b = signer("b");
        let crl1 = b.issue_crl(1, &[], 7).unwrap();
        let crl2 = b.issue_crl(2, &revoked(), 7).unwrap();
        assert_eq!(
            store.offer(&peer_of(&b, None), &crl1).ok(),
            Some(CrlOutcome::Stored(1))
        );
        let stored = store.load_all();
        assert_eq!(stored.get(&b.identity().node_id), Some(&crl1));
        assert_eq!(
            store.offer(&peer_of(&b, Some(crl1.clone())), &crl2).ok(),
            Some(CrlOutcome::Stored(2))
        );
        // Replaying the older one cannot un-revoke anything.
        assert_eq!(
            store.offer(&peer_of(&b, Some(crl2.clone())), &crl1).ok(),
            Some(CrlOutcome::NotNewer)
        );
        assert_eq!(store.load_all().get(&b.identity().node_id), Some(&crl2));
    }

    #[test]
    fn crl_signed_by_another_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrlStore::open(dir.path()).unwrap();
        let (b, c) = (signer("b"), signer("c"));
        let forged = c.issue_crl(99, &[], 7).unwrap();
        let err = store.offer(&peer_of(&b, None), &forged).unwrap_err();
        assert!(matches!(err, CrlError::WrongIssuer), "{err}");
        assert!(store.load_all().is_empty());
    }

    #[test]
    fn crl_under_the_same_name_with_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrlStore::open(dir.path()).unwrap();
        let b = signer("b");
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let name = NodeName::new("Net", "b", &b.identity().node_id).unwrap();
        let impostor = RootSigner::new(issue_root(&key, &name, 30).unwrap(), &key).unwrap();
        let forged = impostor.issue_crl(99, &[], 7).unwrap();
        let err = store.offer(&peer_of(&b, None), &forged).unwrap_err();
        assert!(matches!(err, CrlError::Signature(_)), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CrlStore::open(dir.path()).unwrap();
        let b = signer("b");
        for bad in [&b""[..], b"\x30\x03\x02\x01\x01", b"not a crl"] {
            assert!(store.offer(&peer_of(&b, None), bad).is_err());
        }
    }
}
