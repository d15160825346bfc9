//! What the issuance database records besides its own rows: an issued
//! certificate as it is inserted, and revocations as CRL issuance reads them
//! back. These are plain data read from DER with x509-parser; building
//! certificates and CRLs from them is `peerlink-ca`'s job.

use peerlink_pki::pemfile::pem_certificate;
use peerlink_pki::validate::names::display_dn;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate that does not decode, so it cannot be described or recorded.
#[derive(Debug, thiserror::Error)]
#[error("issued certificate does not match the intended profile: {0}")]
pub struct UnreadableCertificate(pub String);

/// A freshly issued certificate: what the database records and `ca-tool` prints.
#[derive(Debug, Clone)]
pub struct Issued {
    /// DER.
    pub der: Vec<u8>,
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// Subject as text.
    pub subject: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// Whether the requested validity was shortened to the issuer's (or partner's) expiry.
    pub capped: bool,
}

impl Issued {
    /// Describes a certificate (e.g. the root) for the issuance database; `capped` is false.
    pub fn from_der(der: Vec<u8>) -> Result<Issued, UnreadableCertificate> {
        let (_, parsed) =
            X509Certificate::from_der(&der).map_err(|e| UnreadableCertificate(e.to_string()))?;
        Ok(Issued {
            serial: parsed.raw_serial().to_vec(),
            subject: display_dn(parsed.subject()),
            not_before: parsed.validity().not_before.to_datetime(),
            not_after: parsed.validity().not_after.to_datetime(),
            capped: false,
            der,
        })
    }

    /// PEM text of the certificate.
    pub fn pem(&self) -> String {
        pem_certificate(&self.der)
    }
}

/// One revoked certificate in a CRL.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why, if stated.
    pub reason: Option<Reason>,
}

/// Revocation reasons an operator may give (RFC 5280 5.3.1, without certificateHold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// unspecified
    Unspecified,
    /// keyCompromise
    KeyCompromise,
    /// cACompromise
    CaCompromise,
    /// affiliationChanged
    AffiliationChanged,
    /// superseded
    Superseded,
    /// cessationOfOperation
    CessationOfOperation,
    /// privilegeWithdrawn
    PrivilegeWithdrawn,
}

impl Reason {
    /// Every reason with its command-line name.
    pub const ALL: [(Reason, &'static str); 7] = [
        (Reason::Unspecified, "unspecified"),
        (Reason::KeyCompromise, "key-compromise"),
        (Reason::CaCompromise, "ca-compromise"),
        (Reason::AffiliationChanged, "affiliation-changed"),
        (Reason::Superseded, "superseded"),
        (Reason::CessationOfOperation, "cessation-of-operation"),
        (Reason::PrivilegeWithdrawn, "privilege-withdrawn"),
    ];

    /// The command-line / database name.
    pub fn name(self) -> &'static str {
        Reason::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("unspecified", |(_, n)| n)
    }

    /// Parses a command-line / database name.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(r, _)| *r)
    }
}
