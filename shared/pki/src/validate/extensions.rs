//! Certificate extensions: which ones the validator understands, and strict
//! parsing of the ones it relies on.
//!
//! Understood: basicConstraints, keyUsage, extendedKeyUsage, nameConstraints
//! (directoryName subtrees only), subjectAltName (directoryName entries are
//! checked against name constraints; other entries are ignored),
//! subjectKeyIdentifier and authorityKeyIdentifier. Any other extension
//! marked critical (certificatePolicies, policyConstraints, inhibitAnyPolicy,
//! policyMappings, ...) makes the certificate unacceptable. Non-critical
//! unknown extensions are ignored, but every extension must parse and none may
//! appear twice.

use std::collections::HashSet;

use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::{BasicConstraints, KeyUsage, ParsedExtension, X509Extension};
use x509_parser::oid_registry as oids;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{X509Name, X509Version};

use crate::der;

/// The extensions of one certificate that matter for validation.
#[derive(Debug, Clone, Default)]
pub(crate) struct CertExtensions<'a> {
    pub basic_constraints: Option<BasicConstraints>,
    pub key_usage: Option<KeyUsage>,
    pub eku: Option<Eku>,
    pub name_constraints: Option<DirectoryNameConstraints<'a>>,
    /// The directoryName entries of subjectAltName.
    pub san_directory_names: Vec<X509Name<'a>>,
    pub subject_key_id: Option<&'a [u8]>,
    /// authorityKeyIdentifier's keyIdentifier.
    pub authority_key_id: Option<&'a [u8]>,
    /// authorityKeyIdentifier's authorityCertSerialNumber (INTEGER contents).
    pub authority_cert_serial: Option<&'a [u8]>,
    /// The first directoryName of authorityKeyIdentifier's authorityCertIssuer
    /// (the one openssl compares).
    pub authority_cert_issuer: Option<X509Name<'a>>,
}

/// The purposes listed in extendedKeyUsage that the validator looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Eku {
    pub server_auth: bool,
    pub client_auth: bool,
}

/// The directoryName subtrees of a nameConstraints extension.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirectoryNameConstraints<'a> {
    pub permitted: Vec<X509Name<'a>>,
    pub excluded: Vec<X509Name<'a>>,
}

/// Why a certificate's extensions are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExtensionProblem {
    /// Undecodable, duplicated, or present in a v1/v2 certificate.
    Malformed(String),
    /// A critical extension the validator does not implement.
    UnsupportedCritical(String),
    /// A name constraint the validator does not implement.
    UnsupportedNameConstraint(String),
}

/// A readable name for an extension OID: "certificatePolicies (2.5.29.32)".
pub(crate) fn oid_label(oid: &Oid<'_>) -> String {
    let dotted = oid.to_id_string();
    match x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry()) {
        Ok(sn) => format!("{sn} ({dotted})"),
        Err(_) => dotted,
    }
}

fn is_understood(oid: &Oid<'_>) -> bool {
    [
        oids::OID_X509_EXT_BASIC_CONSTRAINTS,
        oids::OID_X509_EXT_KEY_USAGE,
        oids::OID_X509_EXT_EXTENDED_KEY_USAGE,
        oids::OID_X509_EXT_NAME_CONSTRAINTS,
        oids::OID_X509_EXT_SUBJECT_ALT_NAME,
        oids::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        oids::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
    ]
    .iter()
    .any(|known| known == oid)
}

/// Common checks for a list of extensions (certificate, CRL or CRL entry):
/// no duplicates, every one parses, critical ones are in `understood`.
pub(crate) fn check_extension_list(
    extensions: &[X509Extension<'_>],
    understood: impl Fn(&Oid<'_>) -> bool,
) -> Result<(), ExtensionProblem> {
    let mut seen = HashSet::new();
    for ext in extensions {
        if !seen.insert(ext.oid.as_bytes()) {
            return Err(ExtensionProblem::Malformed(format!(
                "extension {} appears more than once",
                oid_label(&ext.oid)
            )));
        }
        if let ParsedExtension::ParseError { error } = ext.parsed_extension() {
            return Err(ExtensionProblem::Malformed(format!(
                "extension {} cannot be decoded: {error}",
                oid_label(&ext.oid)
            )));
        }
        let known = understood(&ext.oid);
        if known && ext.parsed_extension().unsupported() {
            return Err(ExtensionProblem::Malformed(format!(
                "extension {} was not decoded",
                oid_label(&ext.oid)
            )));
        }
        if ext.critical && !known {
            return Err(ExtensionProblem::UnsupportedCritical(oid_label(&ext.oid)));
        }
    }
    Ok(())
}

/// Checks and extracts the extensions of a certificate.
pub(crate) fn cert_extensions<'a>(
    cert: &X509Certificate<'a>,
) -> Result<CertExtensions<'a>, ExtensionProblem> {
    let tbs = &cert.tbs_certificate;
    let version = tbs.version();
    if version.0 > X509Version::V3.0 {
        return Err(ExtensionProblem::Malformed(format!(
            "unknown certificate version {}",
            version.0 + 1
        )));
    }
    let extensions: &[X509Extension<'a>] = tbs.extensions();
    if !extensions.is_empty() && version != X509Version::V3 {
        return Err(ExtensionProblem::Malformed(format!(
            "a version {} certificate has extensions (only v3 may)",
            version.0 + 1
        )));
    }
    check_extension_list(extensions, is_understood)?;

    let mut out = CertExtensions::default();
    for ext in extensions {
        let value: &'a [u8] = ext.value;
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => out.basic_constraints = Some(bc.clone()),
            ParsedExtension::KeyUsage(ku) => out.key_usage = Some(*ku),
            ParsedExtension::ExtendedKeyUsage(eku) => {
                out.eku = Some(Eku {
                    server_auth: eku.server_auth,
                    client_auth: eku.client_auth,
                })
            }
            ParsedExtension::NameConstraints(_) => {
                out.name_constraints = Some(parse_name_constraints(value)?)
            }
            ParsedExtension::SubjectAlternativeName(_) => {
                out.san_directory_names = san_directory_names(value)?
            }
            ParsedExtension::SubjectKeyIdentifier(id) => out.subject_key_id = Some(id.0),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                out.authority_key_id = aki.key_identifier.as_ref().map(|id| id.0);
                out.authority_cert_serial = aki.authority_cert_serial;
                out.authority_cert_issuer = aki.authority_cert_issuer.as_ref().and_then(|names| {
                    names.iter().find_map(|name| match name {
                        x509_parser::extensions::GeneralName::DirectoryName(dn) => Some(dn.clone()),
                        _ => None,
                    })
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

fn malformed(what: &str, detail: impl std::fmt::Display) -> ExtensionProblem {
    ExtensionProblem::Malformed(format!("{what}: {detail}"))
}

/// The GeneralName alternatives by context tag number.
fn general_name_type(tag_number: u8) -> &'static str {
    match tag_number {
        0 => "otherName",
        1 => "rfc822Name",
        2 => "dNSName",
        3 => "x400Address",
        4 => "directoryName",
        5 => "ediPartyName",
        6 => "uniformResourceIdentifier",
        7 => "iPAddress",
        8 => "registeredID",
        _ => "unknown GeneralName type",
    }
}

/// Parses a directoryName's content (an explicitly tagged Name).
fn directory_name<'a>(content: &'a [u8], what: &str) -> Result<X509Name<'a>, ExtensionProblem> {
    let name = der::read_single(content).map_err(|e| malformed(what, e))?;
    if name.tag != der::SEQUENCE {
        return Err(malformed(what, "directoryName is not a Name"));
    }
    match X509Name::from_der(name.raw) {
        Ok(([], parsed)) => Ok(parsed),
        Ok(_) => Err(malformed(what, "trailing data after the Name")),
        Err(e) => Err(malformed(what, e)),
    }
}

/// Parses nameConstraints (RFC 5280 4.2.1.10), keeping only directoryName
/// subtrees and rejecting everything else.
pub(crate) fn parse_name_constraints(
    value: &[u8],
) -> Result<DirectoryNameConstraints<'_>, ExtensionProblem> {
    const WHAT: &str = "nameConstraints";
    let seq = der::read_single(value).map_err(|e| malformed(WHAT, e))?;
    if seq.tag != der::SEQUENCE {
        return Err(malformed(WHAT, "not a SEQUENCE"));
    }
    let mut out = DirectoryNameConstraints::default();
    let mut saw_permitted = false;
    let mut saw_excluded = false;
    for field in der::elements(seq.content) {
        let field = field.map_err(|e| malformed(WHAT, e))?;
        let (list, label) = match field.tag {
            0xa0 if !saw_permitted && !saw_excluded => {
                saw_permitted = true;
                (&mut out.permitted, "permitted")
            }
            0xa1 if !saw_excluded => {
                saw_excluded = true;
                (&mut out.excluded, "excluded")
            }
            _ => return Err(malformed(WHAT, "unexpected field")),
        };
        let mut count = 0usize;
        for subtree in der::elements(field.content) {
            count += 1;
            let subtree = subtree.map_err(|e| malformed(WHAT, e))?;
            if subtree.tag != der::SEQUENCE {
                return Err(malformed(WHAT, "GeneralSubtree is not a SEQUENCE"));
            }
            let mut parts = der::elements(subtree.content);
            let base = match parts.next() {
                Some(base) => base.map_err(|e| malformed(WHAT, e))?,
                None => return Err(malformed(WHAT, "GeneralSubtree without a base")),
            };
            for part in parts {
                let part = part.map_err(|e| malformed(WHAT, e))?;
                match part.tag {
                    // minimum [0] BaseDistance DEFAULT 0: only an explicit 0 is tolerated.
                    0x80 if part.content == [0] => {}
                    0x80 => {
                        return Err(ExtensionProblem::UnsupportedNameConstraint(format!(
                            "a {label} subtree has a minimum other than 0"
                        )))
                    }
                    0x81 => {
                        return Err(ExtensionProblem::UnsupportedNameConstraint(format!(
                            "a {label} subtree has a maximum"
                        )))
                    }
                    _ => return Err(malformed(WHAT, "unexpected field in GeneralSubtree")),
                }
            }
            if base.tag & 0xc0 != 0x80 {
                return Err(malformed(WHAT, "GeneralSubtree base is not a GeneralName"));
            }
            let tag_number = base.tag & 0x1f;
            if base.tag == 0xa4 {
                list.push(directory_name(base.content, WHAT)?);
            } else if tag_number == 4 {
                return Err(malformed(WHAT, "directoryName is not constructed"));
            } else {
                return Err(ExtensionProblem::UnsupportedNameConstraint(format!(
                    "{label} {} subtree (only directoryName constraints are implemented)",
                    general_name_type(tag_number)
                )));
            }
        }
        if count == 0 {
            return Err(malformed(WHAT, format!("empty {label}Subtrees")));
        }
    }
    if !saw_permitted && !saw_excluded {
        return Err(malformed(WHAT, "neither permitted nor excluded subtrees"));
    }
    Ok(out)
}

/// The directoryName entries of a subjectAltName value.
pub(crate) fn san_directory_names(value: &[u8]) -> Result<Vec<X509Name<'_>>, ExtensionProblem> {
    const WHAT: &str = "subjectAltName";
    let seq = der::read_single(value).map_err(|e| malformed(WHAT, e))?;
    if seq.tag != der::SEQUENCE {
        return Err(malformed(WHAT, "not a SEQUENCE"));
    }
    let mut out = Vec::new();
    let mut count = 0usize;
    for name in der::elements(seq.content) {
        count += 1;
        let name = name.map_err(|e| malformed(WHAT, e))?;
        if name.tag & 0xc0 != 0x80 {
            return Err(malformed(WHAT, "entry is not a GeneralName"));
        }
        if name.tag & 0x1f == 4 {
            if name.tag != 0xa4 {
                return Err(malformed(WHAT, "directoryName is not constructed"));
            }
            out.push(directory_name(name.content, WHAT)?);
        }
    }
    if count == 0 {
        return Err(malformed(WHAT, "no names"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::names::tests::{name_der, tlv, O, OU, UTF8};
    use crate::validate::names::{display_dn, dn_equal};

    fn net_name() -> Vec<u8> {
        name_der(&[&[(O, UTF8, b"Net")], &[(OU, UTF8, b"a")]])
    }

    fn subtree(base: Vec<u8>, extra: &[u8]) -> Vec<u8> {
        let mut content = base;
        content.extend_from_slice(extra);
        tlv(0x30, &content)
    }

    fn dir(name: &[u8]) -> Vec<u8> {
        tlv(0xa4, name)
    }

    fn constraints(permitted: &[Vec<u8>], excluded: &[Vec<u8>]) -> Vec<u8> {
        let mut content = Vec::new();
        if !permitted.is_empty() {
            content.extend(tlv(0xa0, &permitted.concat()));
        }
        if !excluded.is_empty() {
            content.extend(tlv(0xa1, &excluded.concat()));
        }
        tlv(0x30, &content)
    }

    #[test]
    fn directory_name_constraints_parse() {
        let name = net_name();
        let (_, expected) = X509Name::from_der(&name).unwrap();
        let der = constraints(
            &[subtree(dir(&name), &[])],
            &[subtree(dir(&name), &[0x80, 1, 0])],
        );
        let nc = parse_name_constraints(&der).unwrap();
        assert_eq!(nc.permitted.len(), 1);
        assert_eq!(nc.excluded.len(), 1);
        assert!(dn_equal(&nc.permitted[0], &expected));
        assert_eq!(display_dn(&nc.excluded[0]), "O=Net, OU=a");
    }

    #[test]
    fn minimum_and_maximum_are_unsupported() {
        let name = net_name();
        for extra in [&[0x80, 1, 1][..], &[0x81, 1, 0], &[0x80, 1, 0, 0x81, 1, 3]] {
            let der = constraints(&[subtree(dir(&name), extra)], &[]);
            assert!(
                matches!(
                    parse_name_constraints(&der),
                    Err(ExtensionProblem::UnsupportedNameConstraint(_))
                ),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn other_name_types_are_unsupported() {
        let name = net_name();
        let dns = tlv(0x82, b"example.com");
        let ip = tlv(0x87, &[10, 0, 0, 0, 255, 0, 0, 0]);
        let email = tlv(0x81, b"example.com");
        let uri = tlv(0x86, b".example.com");
        for (base, label) in [
            (dns, "dNSName"),
            (ip, "iPAddress"),
            (email, "rfc822Name"),
            (uri, "uniformResourceIdentifier"),
        ] {
            let der = constraints(&[subtree(dir(&name), &[])], &[subtree(base, &[])]);
            match parse_name_constraints(&der) {
                Err(ExtensionProblem::UnsupportedNameConstraint(msg)) => {
                    assert!(msg.contains(label), "{msg}")
                }
                other => panic!("{label}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_constraints() {
        let name = net_name();
        let good = subtree(dir(&name), &[]);
        let cases: Vec<Vec<u8>> = vec![
            tlv(0x30, &[]),                                                 // neither
            tlv(0x30, &tlv(0xa0, &[])),                                     // empty permitted
            tlv(0x31, &tlv(0xa0, &good)),                                   // not a SEQUENCE
            tlv(0x30, &[tlv(0xa1, &good), tlv(0xa0, &good)].concat()),      // wrong order
            tlv(0x30, &[tlv(0xa0, &good), tlv(0xa0, &good)].concat()),      // twice
            tlv(0x30, &tlv(0xa0, &tlv(0x30, &[]))),                         // subtree without base
            tlv(0x30, &tlv(0xa0, &subtree(tlv(0xa4, &[0x30, 0x05]), &[]))), // bad name
            tlv(0x30, &tlv(0xa0, &subtree(dir(&name), &[0x82, 0x00]))),     // unknown field
            {
                let mut v = constraints(std::slice::from_ref(&good), &[]);
                v.push(0);
                v
            }, // trailing data
        ];
        for (i, der) in cases.iter().enumerate() {
            assert!(
                matches!(
                    parse_name_constraints(der),
                    Err(ExtensionProblem::Malformed(_))
                ),
                "case {i}: {:?}",
                parse_name_constraints(der)
            );
        }
    }

    #[test]
    fn san_directory_names_are_extracted() {
        let name = net_name();
        let san = tlv(0x30, &[tlv(0x82, b"gw.example"), dir(&name)].concat());
        let names = san_directory_names(&san).unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(display_dn(&names[0]), "O=Net, OU=a");
        assert!(san_directory_names(&tlv(0x30, &[])).is_err());
        assert!(san_directory_names(&tlv(0x30, &tlv(0x84, &name))).is_err());
        assert!(san_directory_names(&tlv(0x30, &tlv(0xa4, &[0x30, 0x01]))).is_err());
        assert!(san_directory_names(&tlv(0x30, &tlv(0x04, b"x"))).is_err());
    }
}
