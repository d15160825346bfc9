//! Why a chain was rejected, naming the certificate (or input) and the rule.

use std::fmt;

use time::OffsetDateTime;

/// Where a certificate sits in the candidate path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The end-entity certificate being validated.
    Leaf,
    /// The n-th certificate above the leaf (1 = the leaf's issuer).
    Intermediate(u16),
    /// The trust anchor.
    Anchor,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Leaf => f.write_str("leaf"),
            Position::Intermediate(n) => write!(f, "intermediate #{n}"),
            Position::Anchor => f.write_str("anchor"),
        }
    }
}

/// A certificate in a message: its position and subject DN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRef {
    /// Position in the candidate path.
    pub position: Position,
    /// The subject, as [`super::names::display_dn`] renders it.
    pub subject: String,
}

impl fmt::Display for CertRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject.is_empty() {
            write!(f, "{} certificate (empty subject)", self.position)
        } else {
            write!(f, "{} certificate ({})", self.position, self.subject)
        }
    }
}

/// How a name broke a directoryName constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameViolation {
    /// Not within any of the permitted subtrees of the constraining CA.
    OutsidePermitted(Vec<String>),
    /// Within an excluded subtree.
    WithinExcluded(String),
    /// The name is empty. A peer's identity is its subject DN, and an empty
    /// name says nothing about which subtree the certificate belongs to (the
    /// identity would have to come from other name forms, which this
    /// validator does not constrain), so it is refused under any
    /// directoryName constraint.
    EmptyName,
}

impl fmt::Display for NameViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameViolation::OutsidePermitted(subtrees) => {
                let list = subtrees
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                if subtrees.len() == 1 {
                    write!(f, "is outside the permitted directoryName subtree {list}")
                } else {
                    write!(f, "is outside all permitted directoryName subtrees {list}")
                }
            }
            NameViolation::WithinExcluded(subtree) => {
                write!(
                    f,
                    "is within the excluded directoryName subtree \"{subtree}\""
                )
            }
            NameViolation::EmptyName => f.write_str(
                "is empty, which is refused under directoryName constraints \
                 (the subject DN is the peer's identity)",
            ),
        }
    }
}

/// Times in messages keep the offset they were given in (`--at` may carry one).
pub(crate) fn fmt_time(t: &OffsetDateTime) -> String {
    crate::timefmt::rfc3339_in_offset(*t).unwrap_or_else(|_| t.to_string())
}

/// Why [`super::validate_chain`] rejected a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// An input (certificate or CRL) or a structure inside it cannot be decoded.
    #[error("{input}: malformed: {detail}")]
    Malformed {
        /// Which input or certificate.
        input: String,
        /// What is wrong.
        detail: String,
    },
    /// The validation time is after notAfter.
    #[error("{cert}: expired at {} (validation time {})", fmt_time(.not_after), fmt_time(.at))]
    Expired {
        cert: CertRef,
        not_after: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// The validation time is before notBefore.
    #[error("{cert}: not valid before {} (validation time {})", fmt_time(.not_before), fmt_time(.at))]
    NotYetValid {
        cert: CertRef,
        not_before: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// The signature does not verify with the issuer's key.
    #[error("{cert}: signature does not verify with the key of {issuer}")]
    BadSignature { cert: CertRef, issuer: CertRef },
    /// The key type or signature algorithm is not supported.
    #[error("{subject}: unsupported algorithm: {detail}")]
    UnsupportedAlgorithm { subject: String, detail: String },
    /// No certificate among the intermediates and the anchor has the issuer's name.
    #[error("{cert}: its issuer \"{issuer}\" is neither the trust anchor ({anchor}) nor any of the supplied intermediate certificates")]
    UnknownIssuer {
        cert: CertRef,
        issuer: String,
        anchor: String,
    },
    /// The certificate's authorityKeyIdentifier names another certificate than
    /// the only candidate issuer with the right name: its keyIdentifier
    /// differs from the candidate's subjectKeyIdentifier (or its
    /// authorityCertSerialNumber or authorityCertIssuer differ). OpenSSL does
    /// not take such a certificate as the issuer (its `openssl verify` then
    /// says error 20, "unable to get local issuer certificate"), and neither
    /// does this validator, so that a chain is never accepted here and refused
    /// by an openssl-based partner.
    #[error("{cert}: its authorityKeyIdentifier does not name {issuer} ({detail}); like openssl (verify error 20, unable to get local issuer certificate), the validator does not take that certificate as its issuer")]
    KeyIdMismatch {
        cert: CertRef,
        issuer: CertRef,
        detail: String,
    },
    /// A name is outside the directoryName constraints of a CA above it.
    #[error("{cert}: {name} {violation} of the name constraints of {constraining}")]
    NameConstraint {
        cert: CertRef,
        /// "subject" or "subjectAltName directoryName \"...\"".
        name: String,
        violation: NameViolation,
        constraining: CertRef,
    },
    /// A name constraint the validator does not implement (fails closed).
    #[error("{cert}: unsupported name constraint: {detail}")]
    UnsupportedNameConstraint { cert: CertRef, detail: String },
    /// More non-self-issued intermediates below a CA than its pathLenConstraint allows.
    #[error("{cert}: exceeds the path length constraint of {ca} (pathLenConstraint {path_len})")]
    PathLen {
        cert: CertRef,
        ca: CertRef,
        path_len: u32,
    },
    /// An issuer is not a CA.
    #[error("{cert}: not a CA certificate but used as an issuer: {detail}")]
    NotCa { cert: CertRef, detail: String },
    /// keyUsage does not allow what the certificate is used for.
    #[error("{cert}: {detail}")]
    KeyUsage { cert: CertRef, detail: String },
    /// The leaf is a CA certificate but a client or server certificate was required.
    #[error(
        "{cert}: is a CA certificate (basicConstraints cA=TRUE), not an end-entity certificate"
    )]
    CaAsLeaf { cert: CertRef },
    /// extendedKeyUsage is missing or lacks the required purpose.
    #[error("{cert}: {detail}")]
    Eku { cert: CertRef, detail: String },
    /// A CRL from the certificate's issuer lists its serial number.
    #[error("{cert}: revoked on {} (serial {serial}{}, per {crl})", fmt_time(.revocation_date), .reason.as_ref().map(|r| format!(", reason {r}")).unwrap_or_default())]
    Revoked {
        cert: CertRef,
        serial: String,
        revocation_date: OffsetDateTime,
        reason: Option<&'static str>,
        crl: String,
    },
    /// An applicable CRL is past its nextUpdate.
    #[error("{crl}: the CRL of \"{issuer}\" expired at {} (validation time {}); a fresh CRL from that issuer is needed", fmt_time(.next_update), fmt_time(.at))]
    CrlExpired {
        crl: String,
        issuer: String,
        next_update: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// An applicable CRL has a thisUpdate in the future.
    #[error("{crl}: the CRL of \"{issuer}\" is not valid before {} (validation time {})", fmt_time(.this_update), fmt_time(.at))]
    CrlNotYetValid {
        crl: String,
        issuer: String,
        this_update: OffsetDateTime,
        at: OffsetDateTime,
    },
    /// A CRL names a certificate's issuer but is not signed by the issuer's key.
    #[error("{crl}: names \"{}\" as its issuer but its signature does not verify with the key of {issuer}", .issuer.subject)]
    CrlBadSignature { crl: String, issuer: CertRef },
    /// A critical extension the validator does not implement.
    #[error("{subject}: unsupported critical extension {extension}")]
    UnsupportedCriticalExtension { subject: String, extension: String },
    /// Every path found would be longer than the maximum.
    #[error("{cert}: the certification path would be longer than {max} certificates")]
    TooLong { cert: CertRef, max: usize },
    /// Path building gave up after trying too many candidate issuers.
    #[error("gave up building a certification path after {attempts} attempts (too many candidate issuers)")]
    TooComplex { attempts: usize },
}

impl ValidationError {
    /// A stable, machine-readable name of the failed rule, for metrics and scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            ValidationError::Malformed { .. } => "malformed",
            ValidationError::Expired { .. } => "expired",
            ValidationError::NotYetValid { .. } => "not_yet_valid",
            ValidationError::BadSignature { .. } => "bad_signature",
            ValidationError::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            ValidationError::UnknownIssuer { .. } => "unknown_issuer",
            ValidationError::KeyIdMismatch { .. } => "key_id_mismatch",
            ValidationError::NameConstraint { .. } => "name_constraint",
            ValidationError::UnsupportedNameConstraint { .. } => "unsupported_name_constraint",
            ValidationError::PathLen { .. } => "path_len",
            ValidationError::NotCa { .. } => "not_ca",
            ValidationError::KeyUsage { .. } => "key_usage",
            ValidationError::CaAsLeaf { .. } => "ca_as_leaf",
            ValidationError::Eku { .. } => "eku",
            ValidationError::Revoked { .. } => "revoked",
            ValidationError::CrlExpired { .. } => "crl_expired",
            ValidationError::CrlNotYetValid { .. } => "crl_not_yet_valid",
            ValidationError::CrlBadSignature { .. } => "crl_bad_signature",
            ValidationError::UnsupportedCriticalExtension { .. } => {
                "unsupported_critical_extension"
            }
            ValidationError::TooLong { .. } => "too_long",
            ValidationError::TooComplex { .. } => "too_complex",
        }
    }

    /// Every value [`ValidationError::kind`] can return.
    pub const KINDS: &'static [&'static str] = &[
        "malformed",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "unsupported_algorithm",
        "unknown_issuer",
        "key_id_mismatch",
        "name_constraint",
        "unsupported_name_constraint",
        "path_len",
        "not_ca",
        "key_usage",
        "ca_as_leaf",
        "eku",
        "revoked",
        "crl_expired",
        "crl_not_yet_valid",
        "crl_bad_signature",
        "unsupported_critical_extension",
        "too_long",
        "too_complex",
    ];
}
