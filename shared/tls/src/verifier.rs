//! rustls verifiers that apply the project's validator and peer rules.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use x509_parser::prelude::*;

use super::trust::{NodeTrust, PeerStatus, PeerTrust};
use super::Refusal;
use peerlink_pki::validate::{self, names, Purpose, ValidationOptions};
use peerlink_pki::{der, signature, timefmt};

fn refuse(refusal: Refusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refusal))))
}

/// The registered partner a (possibly invalid) leaf claims to belong to: the one whose
/// DN contains the leaf's subject. Used only to attribute refusals in status and logs.
pub fn claimed_peer(trust: &NodeTrust, leaf: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    trust
        .peers
        .values()
        .find(|p| {
            x509_parser::x509::X509Name::from_der(&p.subject_der)
                .is_ok_and(|(_, dn)| names::dn_within(cert.subject(), &dn))
        })
        .map(|p| p.node_id.clone())
}

fn to_time(now: UnixTime) -> ::time::OffsetDateTime {
    i64::try_from(now.as_secs())
        .ok()
        .and_then(|s| ::time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or_else(::time::OffsetDateTime::now_utc)
}

fn ders(certs: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
    certs.iter().map(|c| c.as_ref().to_vec()).collect()
}

/// Identifies the partner behind an inbound chain, or says why it is refused.
///
/// The chain must validate with our root as the only anchor (name constraints, pathLen,
/// EKU clientAuth, our CRL), pass through a cross-cert we issued to a registered partner,
/// that partner must be active, and the CRL the partner sent us must not revoke its leaf.
pub fn identify_client(
    trust: &NodeTrust,
    end_entity: &[u8],
    intermediates: &[Vec<u8>],
    at: ::time::OffsetDateTime,
) -> Result<String, Refusal> {
    too_long(intermediates)?;
    let chain = validate::validate_chain(
        end_entity,
        &ValidationOptions {
            anchor: &trust.root_der,
            intermediates,
            crls: trust.crl_der.as_slice(),
            at,
            purpose: Purpose::Client,
        },
    )
    .map_err(|e| Refusal {
        reason: e.kind(),
        detail: e.to_string(),
        peer: None,
        claims: claimed_peer(trust, end_entity),
    })?;
    // chain = [leaf, cross-cert, our root]; pathlen 0 on cross-certs forbids anything longer.
    let cross = match chain.chain.as_slice() {
        [_, cross, _] => cross,
        [_, _] => {
            return Err(Refusal {
                reason: "own_node",
                detail: format!(
                    "{} is issued directly by our own root: a gateway of this node, not a partner",
                    chain.leaf_subject
                ),
                peer: None,
                claims: None,
            })
        }
        _ => {
            return Err(Refusal {
                reason: "unexpected_chain",
                detail: "the chain is not [leaf, cross-cert, our root]".into(),
                peer: None,
                claims: None,
            })
        }
    };
    let (_, subject) = der::cert_issuer_and_subject(cross).ok_or_else(|| Refusal {
        reason: "malformed",
        detail: "the cross-certificate in the chain does not decode".into(),
        peer: None,
        claims: None,
    })?;
    let peer = trust.peer_by_subject(subject).ok_or_else(|| Refusal {
        reason: "unknown_peer",
        detail: format!(
            "{} is not a registered partner of this node",
            x509_parser::x509::X509Name::from_der(subject)
                .map(|(_, name)| names::display_dn(&name))
                .unwrap_or_else(|_| "the cross-certificate's subject".into())
        ),
        peer: None,
        claims: None,
    })?;
    if peer.status != PeerStatus::Active {
        return Err(Refusal {
            reason: "peer_inactive",
            detail: format!("partner {} is revoked or deactivated", peer.node_id),
            peer: Some(peer.node_id.clone()),
            claims: None,
        });
    }
    partner_crl_check(peer, end_entity)?;
    Ok(peer.node_id.clone())
}

/// Remembers which (CRL, root) pairs verified, so the partner CRL's signature
/// costs one check per CRL rather than one per handshake. Bounded: cleared when full.
fn signature_cached(crl_der: &[u8], root_der: &[u8], verify: impl FnOnce() -> bool) -> bool {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], bool>>> = OnceLock::new();
    let key: [u8; 32] = Sha256::new()
        .chain_update((crl_der.len() as u64).to_be_bytes())
        .chain_update(crl_der)
        .chain_update(root_der)
        .finalize()
        .into();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(ok) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return *ok;
    }
    let ok = verify();
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= 4096 {
        map.clear();
    }
    map.insert(key, ok);
    ok
}

/// Applies the CRL a partner sent us to a certificate its root issued.
///
/// Unlike our own CRL, a partner's CRL that has passed its nextUpdate is still
/// applied (a revoked certificate stays revoked) but does not fail the chain:
/// the fresh one can only arrive over a link, so refusing links for staleness
/// would lock the partner out for good after any outage spanning the date.
pub fn partner_crl_check(peer: &PeerTrust, leaf_der: &[u8]) -> Result<(), Refusal> {
    let Some(crl_der) = &peer.crl_der else {
        return Ok(());
    };
    let refuse = |reason: &'static str, detail: String| Refusal {
        reason,
        detail,
        peer: Some(peer.node_id.clone()),
        claims: None,
    };
    let (Ok((_, crl)), Ok((_, leaf)), Ok((_, root))) = (
        CertificateRevocationList::from_der(crl_der),
        X509Certificate::from_der(leaf_der),
        X509Certificate::from_der(&peer.root_der),
    ) else {
        return Err(refuse(
            "malformed",
            format!("the CRL partner {} sent us does not parse", peer.node_id),
        ));
    };
    if !names::dn_equal(crl.issuer(), root.subject())
        || !names::dn_equal(leaf.issuer(), root.subject())
    {
        return Ok(()); // not about this leaf
    }
    let verified = signature_cached(crl_der, &peer.root_der, || {
        signature::verify_signed(
            root.public_key().raw,
            &crl.signature_algorithm,
            crl.tbs_cert_list.as_ref(),
            &crl.signature_value.data,
        )
        .is_ok()
    });
    if !verified {
        return Err(refuse(
            "crl_bad_signature",
            format!(
                "the stored CRL of partner {} does not verify with its root",
                peer.node_id
            ),
        ));
    }
    let revoked = crl
        .iter_revoked_certificates()
        .find(|r| r.raw_serial() == leaf.raw_serial())
        .map(|r| r.revocation_date.to_datetime());
    match revoked {
        Some(when) => Err(refuse(
            "revoked",
            format!(
                "partner {}'s own CRL revokes its certificate {} (serial {}) since {}",
                peer.node_id,
                names::display_dn(leaf.subject()),
                hex::encode(leaf.raw_serial()),
                timefmt::rfc3339(when)
            ),
        )),
        None => Ok(()),
    }
}

/// Verifies the certificate a partner's gateway presents when we dial it.
///
/// The partner's pinned root is the only anchor, the CRL it sent us applies, the leaf must
/// be a TLS server certificate whose subject is the partner's DN (optionally plus more RDNs
/// such as a CN).
pub fn verify_server(
    trust: &NodeTrust,
    peer_id: &str,
    end_entity: &[u8],
    intermediates: &[Vec<u8>],
    at: ::time::OffsetDateTime,
) -> Result<(), Refusal> {
    too_long(intermediates)?;
    let peer = trust.peers.get(peer_id).ok_or_else(|| Refusal {
        reason: "unknown_peer",
        detail: format!("{peer_id} is not a registered partner"),
        peer: Some(peer_id.to_string()),
        claims: None,
    })?;
    partner_crl_check(peer, end_entity)?;
    let chain = validate::validate_chain(
        end_entity,
        &ValidationOptions {
            anchor: &peer.root_der,
            intermediates,
            crls: &[],
            at,
            purpose: Purpose::Server,
        },
    )
    .map_err(|e| Refusal {
        reason: e.kind(),
        detail: e.to_string(),
        peer: Some(peer_id.to_string()),
        claims: None,
    })?;
    let malformed = |e: x509_parser::nom::Err<x509_parser::error::X509Error>| Refusal {
        reason: "malformed",
        detail: e.to_string(),
        peer: Some(peer_id.to_string()),
        claims: None,
    };
    let (_, leaf_subject) =
        x509_parser::x509::X509Name::from_der(&chain.leaf_subject_der).map_err(malformed)?;
    let (_, peer_subject) =
        x509_parser::x509::X509Name::from_der(&peer.subject_der).map_err(malformed)?;
    if !names::dn_within(&leaf_subject, &peer_subject) {
        return Err(Refusal {
            reason: "wrong_peer",
            detail: format!(
                "the server certificate is for {}, not for partner {}",
                chain.leaf_subject, peer.subject
            ),
            peer: Some(peer_id.to_string()),
            claims: None,
        });
    }
    Ok(())
}

/// Most certificates a peer may present besides its leaf. Our chains have one
/// (the cross-cert) or none; more is refused before any signature is checked.
pub const MAX_PRESENTED_INTERMEDIATES: usize = 4;

fn too_long(intermediates: &[Vec<u8>]) -> Result<(), Refusal> {
    if intermediates.len() > MAX_PRESENTED_INTERMEDIATES {
        return Err(Refusal {
            reason: "chain_too_long",
            detail: format!(
                "{} certificates presented besides the leaf (at most {MAX_PRESENTED_INTERMEDIATES})",
                intermediates.len()
            ),
            peer: None,
            claims: None,
        });
    }
    Ok(())
}

/// The handshake-signature half of both verifiers: TLS 1.3 only, with the
/// provider's algorithms (the certificate checks are what differs).
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2 is not supported".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// Accepting side: every client must present a chain to our root via a partner's cross-cert.
#[derive(Debug)]
pub(super) struct PeerClientVerifier {
    pub trust: Arc<NodeTrust>,
    pub algorithms: WebPkiSupportedAlgorithms,
    pub hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        identify_client(&self.trust, end_entity, &ders(intermediates), to_time(now))
            .map_err(refuse)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Dialing side: the partner's pinned root only, and its DN.
#[derive(Debug)]
pub(super) struct PeerServerVerifier {
    pub trust: Arc<NodeTrust>,
    pub peer_id: String,
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_server(
            &self.trust,
            &self.peer_id,
            end_entity,
            &ders(intermediates),
            to_time(now),
        )
        .map_err(refuse)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}
