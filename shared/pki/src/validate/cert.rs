//! Certificates as validation sees them: decoded once, with their extensions
//! already interpreted. Path building ([`super::path`]) and revocation
//! checking ([`super::crl`]) both work on these, so this module sits below
//! both and neither has to import the other's types.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::error::ValidationError;
use super::extensions::{cert_extensions, CertExtensions, ExtensionProblem};
use super::names::{display_dn, dn_equal};

/// A decoded certificate with what validation needs from it.
pub(crate) struct ParsedCert<'a> {
    pub der: &'a [u8],
    pub x509: X509Certificate<'a>,
    pub exts: Result<CertExtensions<'a>, ExtensionProblem>,
    pub self_issued: bool,
}

impl ParsedCert<'_> {
    /// The subject as [`display_dn`] renders it: only for messages, so it is
    /// rendered when one is needed rather than for every certificate parsed.
    pub fn subject_text(&self) -> String {
        display_dn(self.x509.subject())
    }
}

/// Decodes one input certificate; `label` names the input in errors.
pub(crate) fn parse_cert<'a>(
    der: &'a [u8],
    label: impl Fn() -> String,
) -> Result<ParsedCert<'a>, ValidationError> {
    let x509 = match X509Certificate::from_der(der) {
        Ok(([], cert)) => cert,
        Ok(_) => {
            return Err(ValidationError::Malformed {
                input: label(),
                detail: "trailing data after the certificate".into(),
            })
        }
        Err(e) => {
            return Err(ValidationError::Malformed {
                input: label(),
                detail: format!("cannot decode the certificate: {e}"),
            })
        }
    };
    let exts = cert_extensions(&x509);
    let self_issued = dn_equal(x509.subject(), x509.issuer());
    Ok(ParsedCert {
        der,
        x509,
        exts,
        self_issued,
    })
}
