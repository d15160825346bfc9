//! Who a node is: its distinguished name, its node id and its fingerprint.
//!
//! A node id derived from the root key (the default) is self-certifying: two
//! operators reading it to each other over the phone have verified the key.

use std::fmt;

use sha2::{Digest, Sha256};
use x509_parser::prelude::*;
use x509_parser::x509::X509Name;

/// Length in bytes of a key-derived node id (hex doubles it).
pub const HASH_ID_BYTES: usize = 16;

/// Why a name or node id is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The node id has characters or a length we cannot use safely.
    #[error("invalid node id {0:?}: use 1 to 64 characters from A-Z a-z 0-9 '.' '-', starting with a letter or digit")]
    InvalidNodeId(String),
    /// An explicit node id that looks like a key hash but is not this key's.
    #[error("node id {0:?} has the form of a key-derived id (32 hex digits) but is not derived from this key; choose another id or omit --node-id")]
    HashLikeNodeId(String),
    /// An organisation or unit attribute that is empty or too long.
    #[error("invalid {0}: {1}")]
    InvalidAttribute(&'static str, String),
    /// A name with a shape the profiles forbid.
    #[error("unsupported distinguished name {name}: {reason}")]
    BadShape {
        /// The name as text.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that [`rcgen_name`] cannot reproduce byte for byte (attribute OID or
    /// value type rcgen cannot express); the certificate would not carry it exactly.
    #[error("issued certificate does not match the intended profile: {0}")]
    NotReproducible(String),
    /// rcgen refused an attribute value (e.g. a character outside PrintableString).
    #[error("cannot build certificate: {0}")]
    NotEncodable(String),
}

/// The attributes that make up a node's subject DN (profile `O, OU, serialNumber`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName {
    /// Network or registry name (O).
    pub org: String,
    /// Role of the node (OU).
    pub unit: String,
    /// The node id (serialNumber).
    pub node_id: String,
}

impl NodeName {
    /// Checks the attributes and builds the name.
    pub fn new(org: &str, unit: &str, node_id: &str) -> Result<NodeName, IdentityError> {
        check_attribute("organization (--org)", org)?;
        check_attribute("unit (--unit)", unit)?;
        check_node_id(node_id)?;
        Ok(NodeName {
            org: org.to_string(),
            unit: unit.to_string(),
            node_id: node_id.to_string(),
        })
    }

    /// The rcgen form: O and OU as UTF8String, serialNumber as PrintableString (X.520).
    pub fn to_rcgen(&self) -> Result<rcgen::DistinguishedName, IdentityError> {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, self.org.as_str());
        dn.push(rcgen::DnType::OrganizationalUnitName, self.unit.as_str());
        let serial = rcgen::string::PrintableString::try_from(self.node_id.as_str())
            .map_err(|_| IdentityError::InvalidNodeId(self.node_id.clone()))?;
        dn.push(
            rcgen::DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()),
            rcgen::DnValue::PrintableString(serial),
        );
        Ok(dn)
    }
}

/// OID arcs of the X.520 serialNumber attribute (2.5.4.5).
pub const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];

fn check_attribute(what: &'static str, value: &str) -> Result<(), IdentityError> {
    if value.trim().is_empty() {
        return Err(IdentityError::InvalidAttribute(
            what,
            "must not be empty".into(),
        ));
    }
    if value.chars().count() > 64 {
        return Err(IdentityError::InvalidAttribute(
            what,
            "at most 64 characters".into(),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(IdentityError::InvalidAttribute(
            what,
            "no control characters".into(),
        ));
    }
    Ok(())
}

/// Checks that a node id is safe as a file name and a PrintableString.
pub fn check_node_id(id: &str) -> Result<(), IdentityError> {
    let ok_len = (1..=64).contains(&id.len());
    let ok_first = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(IdentityError::InvalidNodeId(id.to_string()))
    }
}

/// The default node id: lowercase hex of the first 16 bytes of SHA-256 over the SPKI.
pub fn node_id_from_spki(spki_der: &[u8]) -> String {
    hex::encode(&Sha256::digest(spki_der)[..HASH_ID_BYTES])
}

/// Whether an id has the form of a key-derived id (then it must match the key).
pub fn is_hash_id(id: &str) -> bool {
    id.len() == HASH_ID_BYTES * 2 && id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// SHA-256 fingerprint of a DER certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of DER bytes.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Uppercase hex with colons, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn colon_hex(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Groups of four hex digits, easy to read aloud over the phone.
    pub fn phone_form(&self) -> String {
        let hex = hex::encode_upper(self.0);
        hex.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses the colon, grouped or plain hex forms (case-insensitive).
    pub fn parse(text: &str) -> Option<Fingerprint> {
        let hex: String = text
            .chars()
            .filter(|c| !matches!(c, ':' | ' ' | '-'))
            .collect();
        let bytes = hex::decode(hex).ok()?;
        Some(Fingerprint(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.colon_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.colon_hex())
    }
}

/// The identity read from a node's root certificate.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// Node id (the serialNumber attribute).
    pub node_id: String,
    /// The subject as text.
    pub subject: String,
    /// The subject's raw DER, reproduced byte for byte in cross-certificates.
    pub subject_der: Vec<u8>,
    /// The root's SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
    /// Subject key identifier, if the root has one.
    pub ski: Option<Vec<u8>>,
    /// SHA-256 fingerprint of the root certificate.
    pub fingerprint: Fingerprint,
    /// Key type, if supported.
    pub key_type: Option<crate::keys::KeyType>,
    /// Validity start.
    pub not_before: ::time::OffsetDateTime,
    /// Validity end.
    pub not_after: ::time::OffsetDateTime,
}

impl NodeIdentity {
    /// Reads the identity of a node from its root certificate, checking the name's shape.
    pub fn from_root_der(der: &[u8]) -> Result<NodeIdentity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::BadShape {
            name: "(unparsable certificate)".into(),
            reason: e.to_string(),
        })?;
        let subject = cert.subject();
        check_name_shape(subject)?;
        let node_id = attribute_text(subject, &x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .ok_or_else(|| IdentityError::BadShape {
                name: crate::validate::names::display_dn(subject),
                reason: "no serialNumber attribute carrying the node id".into(),
            })?;
        check_node_id(&node_id)?;
        let ski = cert
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            });
        Ok(NodeIdentity {
            node_id,
            subject: crate::validate::names::display_dn(subject),
            subject_der: subject.as_raw().to_vec(),
            spki_der: cert.public_key().raw.to_vec(),
            ski,
            fingerprint: Fingerprint::of(der),
            key_type: crate::keys::key_type_of(cert.public_key()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// Whether the node id is the key-derived one for this root's key.
    pub fn id_matches_key(&self) -> bool {
        node_id_from_spki(&self.spki_der) == self.node_id
    }
}

/// The text of the single attribute of type `oid`, if present and a string.
pub fn attribute_text(
    name: &X509Name<'_>,
    oid: &x509_parser::der_parser::Oid<'_>,
) -> Option<String> {
    name.iter_attributes()
        .find(|a| a.attr_type() == oid)
        .and_then(|a| a.as_str().ok().map(str::to_string))
}

/// Enforces the profile's rules on names: no empty or multi-valued RDNs, no repeated types.
pub fn check_name_shape(name: &X509Name<'_>) -> Result<(), IdentityError> {
    let bad = |reason: &str| IdentityError::BadShape {
        name: crate::validate::names::display_dn(name),
        reason: reason.to_string(),
    };
    let mut seen = Vec::new();
    let mut count = 0;
    for rdn in name.iter_rdn() {
        let avas: Vec<_> = rdn.iter().collect();
        match avas.as_slice() {
            [] => return Err(bad("empty relative distinguished name")),
            [ava] => {
                let oid = ava.attr_type().to_id_string();
                if seen.contains(&oid) {
                    return Err(bad(&format!("attribute {oid} repeated")));
                }
                if ava.as_str().is_err() {
                    return Err(bad(&format!(
                        "attribute {oid} is not a supported string type"
                    )));
                }
                seen.push(oid);
            }
            _ => return Err(bad("multi-valued relative distinguished name")),
        }
        count += 1;
    }
    if count == 0 {
        return Err(bad("empty name"));
    }
    Ok(())
}

/// Rebuilds a parsed name as an rcgen name, refusing shapes rcgen would alter.
///
/// Certificates must reproduce names byte for byte: a cross-cert carries the
/// partner's subject exactly, and a server certificate or the gateway's CSR
/// carries our root's subject exactly. Both the CA and `peer-gateway keygen`
/// use this, which is why it lives here and not with issuance.
pub fn rcgen_name(name: &X509Name<'_>) -> Result<rcgen::DistinguishedName, IdentityError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    // rcgen panics on empty RDNs and cannot express multi-valued ones: check first.
    check_name_shape(name)?;
    let not_encodable = |e: rcgen::Error| IdentityError::NotEncodable(e.to_string());
    let mut dn = rcgen::DistinguishedName::new();
    for ava in name.iter_attributes() {
        let arcs: Vec<u64> = ava
            .attr_type()
            .iter()
            .ok_or_else(|| IdentityError::NotReproducible("attribute OID too large".into()))?
            .collect();
        let ty = rcgen::DnType::from_oid(&arcs);
        let value = ava.attr_value();
        let text = || {
            std::str::from_utf8(value.data)
                .map(str::to_string)
                .map_err(|_| {
                    IdentityError::NotReproducible("attribute value is not valid text".into())
                })
        };
        let v = match value.header.tag() {
            Tag::PrintableString => {
                rcgen::DnValue::PrintableString(text()?.try_into().map_err(not_encodable)?)
            }
            Tag::Utf8String => rcgen::DnValue::Utf8String(text()?),
            Tag::Ia5String => rcgen::DnValue::Ia5String(text()?.try_into().map_err(not_encodable)?),
            Tag::BmpString => rcgen::DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(value.data.to_vec())
                    .map_err(not_encodable)?,
            ),
            other => {
                return Err(IdentityError::NotReproducible(format!(
                    "attribute value type {other} is not supported"
                )))
            }
        };
        dn.push(ty, v);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert!(check_node_id("abc-1.2").is_ok());
        for bad in ["", ".", "..", "-a", "a/b", "a b", "a_b", &"x".repeat(65)] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
        assert!(is_hash_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_hash_id("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_hash_id("1234"));
    }

    #[test]
    fn fingerprint_forms_round_trip() {
        let fp = Fingerprint::of(b"hello");
        assert_eq!(fp.colon_hex().len(), 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&fp.colon_hex()), Some(fp));
        assert_eq!(
            Fingerprint::parse(&fp.phone_form().to_lowercase()),
            Some(fp)
        );
        assert_eq!(fp.phone_form().split(' ').count(), 16);
        assert_eq!(Fingerprint::parse("abcd"), None);
    }

    #[test]
    fn node_name_checks_attributes() {
        assert!(NodeName::new("Net", "gw", "node-1").is_ok());
        assert!(NodeName::new("", "gw", "node-1").is_err());
        assert!(NodeName::new("Net", "gw", "bad id").is_err());
    }
}
