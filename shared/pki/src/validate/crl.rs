//! Revocation by CRLs (RFC 5280 section 5 and 6.3, complete CRLs only).
//!
//! A CRL applies to a certificate when the CRL's issuer name equals the
//! certificate's issuer name. Such a CRL must then be signed by the key of the
//! certificate's issuer; if it is not, the chain is rejected (someone handed
//! over a forged or foreign CRL for that issuer, and we cannot tell whether a
//! genuine one would revoke the certificate). Delta CRLs, indirect CRLs and
//! partitioned CRLs (issuingDistributionPoint) are not implemented: their
//! critical extensions make the chain fail closed.

use time::OffsetDateTime;
use x509_parser::der_parser::oid::Oid;
use x509_parser::oid_registry as oids;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::cert::ParsedCert;
use super::error::{CertRef, ValidationError};
use super::extensions::{check_extension_list, ExtensionProblem};
use super::names::{display_dn, dn_equal};
use crate::signature::{self, algorithm_contents, SignatureError};

/// A parsed CRL with its input label.
pub(crate) struct ParsedCrl<'a> {
    pub label: String,
    pub crl: CertificateRevocationList<'a>,
}

/// Parses the CRL at `index` of the input list.
pub(crate) fn parse_crl(index: usize, der: &[u8]) -> Result<ParsedCrl<'_>, ValidationError> {
    let label = format!("CRL #{} of the supplied CRLs", index + 1);
    match CertificateRevocationList::from_der(der) {
        Ok(([], crl)) => Ok(ParsedCrl { label, crl }),
        Ok(_) => Err(ValidationError::Malformed {
            input: label,
            detail: "trailing data after the CRL".into(),
        }),
        Err(e) => Err(ValidationError::Malformed {
            input: label,
            detail: format!("cannot decode the CRL: {e}"),
        }),
    }
}

/// Canonical form of an INTEGER's content octets (strips redundant sign octets).
fn canonical_integer(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        match rest.first() {
            Some(second)
                if (*first == 0x00 && second & 0x80 == 0)
                    || (*first == 0xff && second & 0x80 != 0) =>
            {
                bytes = rest
            }
            _ => break,
        }
    }
    bytes
}

fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unrecognized reason code",
    }
}

fn crl_extension_understood(oid: &Oid<'_>) -> bool {
    *oid == oids::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER || *oid == oids::OID_X509_EXT_CRL_NUMBER
}

fn entry_extension_understood(oid: &Oid<'_>) -> bool {
    *oid == oids::OID_X509_EXT_REASON_CODE || *oid == oids::OID_X509_EXT_INVALIDITY_DATE
}

fn problem_to_error(label: &str, problem: ExtensionProblem) -> ValidationError {
    match problem {
        ExtensionProblem::UnsupportedCritical(extension) => {
            ValidationError::UnsupportedCriticalExtension {
                subject: label.to_owned(),
                extension,
            }
        }
        ExtensionProblem::Malformed(detail)
        | ExtensionProblem::UnsupportedNameConstraint(detail) => ValidationError::Malformed {
            input: label.to_owned(),
            detail,
        },
    }
}

/// Checks `cert` (issued by `issuer`) against every CRL of its issuer.
pub(crate) fn check_revocation(
    cert: &ParsedCert<'_>,
    cert_ref: impl Fn() -> CertRef,
    issuer: &ParsedCert<'_>,
    issuer_ref: impl Fn() -> CertRef,
    crls: &[ParsedCrl<'_>],
    at: OffsetDateTime,
) -> Result<(), ValidationError> {
    let cert_issuer = cert.x509.issuer();
    for parsed in crls {
        let crl = &parsed.crl;
        let label = parsed.label.as_str();
        if !dn_equal(crl.issuer(), cert_issuer) {
            continue;
        }
        let crl_issuer = display_dn(crl.issuer());

        // The issuer must be allowed to sign CRLs.
        if let Ok(exts) = &issuer.exts {
            if let Some(ku) = &exts.key_usage {
                if !ku.crl_sign() {
                    return Err(ValidationError::KeyUsage {
                        cert: issuer_ref(),
                        detail: format!(
                            "keyUsage lacks cRLSign, but {label} claims to be issued by it"
                        ),
                    });
                }
            }
        }

        // Signature by the issuer's key.
        let tbs = &crl.tbs_cert_list;
        let sig_alg = algorithm_contents(&crl.signature_algorithm);
        if sig_alg != algorithm_contents(&tbs.signature) {
            return Err(ValidationError::Malformed {
                input: label.to_owned(),
                detail: "signatureAlgorithm differs from the signature field of tbsCertList".into(),
            });
        }
        if crl.signature_value.unused_bits != 0 {
            return Err(ValidationError::Malformed {
                input: label.to_owned(),
                detail: "signature BIT STRING has unused bits".into(),
            });
        }
        let spki = issuer.x509.public_key();
        match signature::verify(
            &algorithm_contents(&spki.algorithm),
            &spki.subject_public_key.data,
            &sig_alg,
            tbs.as_ref(),
            &crl.signature_value.data,
        ) {
            Ok(()) => {}
            Err(SignatureError::BadSignature) => {
                return Err(ValidationError::CrlBadSignature {
                    crl: label.to_owned(),
                    issuer: issuer_ref(),
                })
            }
            Err(SignatureError::UnsupportedAlgorithm) => {
                return Err(ValidationError::UnsupportedAlgorithm {
                    subject: label.to_owned(),
                    detail: format!(
                        "CRL signature algorithm {} with the key of {}",
                        crl.signature_algorithm.algorithm.to_id_string(),
                        issuer_ref()
                    ),
                })
            }
            Err(e @ SignatureError::MalformedKey(_)) => {
                return Err(ValidationError::Malformed {
                    input: issuer_ref().to_string(),
                    detail: e.to_string(),
                })
            }
        }

        // Structure and extensions.
        let extensions = tbs.extensions();
        match tbs.version {
            None if extensions.is_empty() => {}
            Some(v) if v.0 == 1 => {}
            _ => {
                return Err(ValidationError::Malformed {
                    input: label.to_owned(),
                    detail: "CRL version must be v2 (or absent without extensions)".into(),
                })
            }
        }
        check_extension_list(extensions, crl_extension_understood)
            .map_err(|p| problem_to_error(label, p))?;
        for entry in crl.iter_revoked_certificates() {
            check_extension_list(entry.extensions(), entry_extension_understood)
                .map_err(|p| problem_to_error(label, p))?;
        }

        // Freshness.
        let this_update = tbs.this_update.to_datetime();
        if this_update > at {
            return Err(ValidationError::CrlNotYetValid {
                crl: label.to_owned(),
                issuer: crl_issuer,
                this_update,
                at,
            });
        }
        let Some(next_update) = tbs.next_update else {
            return Err(ValidationError::Malformed {
                input: label.to_owned(),
                detail: "the CRL has no nextUpdate, so its freshness cannot be judged".into(),
            });
        };
        let next_update = next_update.to_datetime();
        if next_update < at {
            return Err(ValidationError::CrlExpired {
                crl: label.to_owned(),
                issuer: crl_issuer,
                next_update,
                at,
            });
        }

        // The serial number.
        let serial = canonical_integer(cert.x509.raw_serial());
        for entry in crl.iter_revoked_certificates() {
            if canonical_integer(entry.raw_serial()) == serial {
                return Err(ValidationError::Revoked {
                    cert: cert_ref(),
                    serial: hex::encode(cert.x509.raw_serial()),
                    revocation_date: entry.revocation_date.to_datetime(),
                    reason: entry.reason_code().map(|(_, code)| reason_name(code.0)),
                    crl: format!("{label}, issued by \"{crl_issuer}\""),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::canonical_integer;

    #[test]
    fn integers_compare_by_value() {
        assert_eq!(canonical_integer(&[0x00, 0x80]), &[0x00, 0x80]);
        assert_eq!(canonical_integer(&[0x00, 0x00, 0x7f]), &[0x7f]);
        assert_eq!(canonical_integer(&[0xff, 0xff, 0x80]), &[0x80]);
        assert_eq!(canonical_integer(&[0x80]), &[0x80]);
        assert_ne!(canonical_integer(&[0x80]), canonical_integer(&[0x00, 0x80]));
        assert_eq!(canonical_integer(&[]), &[] as &[u8]);
    }
}
