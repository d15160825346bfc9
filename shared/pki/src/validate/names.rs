//! Distinguished names: comparison (RFC 5280 section 7.1), subtree membership
//! for directoryName name constraints (RFC 5280 section 4.2.1.10), and a
//! human-readable rendering for messages and logs.
//!
//! Comparison rules, chosen to fail closed:
//!
//! - two names are equal when they have the same number of RDNs and the RDNs
//!   at each position are equal; RDNs are compared as sets of
//!   attribute-type-and-values (AVAs);
//! - attribute types are compared by OID;
//! - values of the directory string types (PrintableString, UTF8String,
//!   TeletexString, BMPString, UniversalString, in any mix) are decoded and
//!   compared after a simplified LDAP StringPrep (RFC 4518): NFKC, case
//!   folding, white space mapped to spaces, leading and trailing spaces
//!   removed, inner runs of spaces collapsed to one;
//! - every other value (IA5String, numbers, anything not a string) is compared
//!   by its tag and content bytes;
//! - a value that claims a string type but cannot be decoded (invalid UTF-8,
//!   odd-length BMPString, non-ASCII PrintableString or TeletexString, ...)
//!   equals nothing, not even itself, so such a name never chains and never
//!   satisfies a constraint.

use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization;
use x509_parser::der_parser::asn1_rs::{Any, Class, Tag, ToDer};
use x509_parser::x509::{AttributeTypeAndValue, RelativeDistinguishedName, X509Name};

/// The canonical form of an attribute value, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum CanonValue {
    /// A directory string, decoded and prepared.
    Text(String),
    /// Anything else: class, constructed flag, tag number, content.
    Raw(u8, bool, u32, Vec<u8>),
}

/// Walks the characters of a directory string value into `push`: `None` if
/// the value is not one of the directory string types, `Some(false)` if it is
/// one but does not decode (what was pushed is then meaningless). One walker
/// serves both decoding and the allocation-free decodability check, so the two
/// can never disagree.
fn walk_directory_string(value: &Any<'_>, mut push: impl FnMut(char)) -> Option<bool> {
    if value.class() != Class::Universal || value.header.is_constructed() {
        return None;
    }
    let data = value.data;
    let tag = value.tag();
    let decoded = if tag == Tag::Utf8String {
        std::str::from_utf8(data)
            .map(|s| s.chars().for_each(&mut push))
            .is_ok()
    } else if tag == Tag::PrintableString || tag == Tag::TeletexString {
        // PrintableString is a subset of ASCII (some tools put '*' or '_' in it,
        // which stays unambiguous). T.61 agrees with ASCII on its printable
        // subset only, so anything else is left undecodable.
        let printable = data.iter().all(|b| (0x20..0x7f).contains(b));
        if printable {
            data.iter().for_each(|&b| push(char::from(b)));
        }
        printable
    } else if tag == Tag::BmpString {
        data.len().is_multiple_of(2)
            && char::decode_utf16(
                data.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]])),
            )
            .all(|c| c.map(&mut push).is_ok())
    } else if tag == Tag::UniversalString {
        data.len().is_multiple_of(4)
            && data.chunks_exact(4).all(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .map(&mut push)
                    .is_some()
            })
    } else {
        return None;
    };
    Some(decoded)
}

/// Decodes a directory string value, `None` if it is not one of the
/// directory string types. `Some(None)` if it is one but is undecodable.
fn decode_directory_string(value: &Any<'_>) -> Option<Option<String>> {
    let mut text = String::with_capacity(value.data.len());
    let decoded = walk_directory_string(value, |c| text.push(c))?;
    Some(decoded.then_some(text))
}

/// Whether a value that claims a directory string type decodes, or is not a
/// directory string at all. Allocates nothing: it gates the byte-identical fast
/// path of [`rdn_equal`], which must not let an undecodable value equal itself.
fn value_decodable(value: &Any<'_>) -> bool {
    walk_directory_string(value, |_| {}).unwrap_or(true)
}

/// Simplified LDAP StringPrep (RFC 4518): NFKC, case fold, space handling.
fn prepare(text: &str) -> String {
    // ASCII is already in NFKC form and stays so when lower-cased, so the
    // common case skips the two normalization passes.
    let normalized: String = if text.is_ascii() {
        text.to_ascii_lowercase()
    } else {
        let folded: String = text.nfkc().collect::<String>().to_lowercase();
        // Lower-casing can leave text that is not in NFKC form any more.
        folded.nfkc().collect()
    };
    let mut out = String::with_capacity(normalized.len());
    for word in normalized
        .split(char::is_whitespace)
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn canon_value(value: &Any<'_>) -> Option<CanonValue> {
    match decode_directory_string(value) {
        Some(Some(text)) => Some(CanonValue::Text(prepare(&text))),
        Some(None) => None,
        None => {
            let class = match value.class() {
                Class::Universal => 0,
                Class::Application => 1,
                Class::ContextSpecific => 2,
                Class::Private => 3,
            };
            Some(CanonValue::Raw(
                class,
                value.header.is_constructed(),
                value.tag().0,
                value.data.to_vec(),
            ))
        }
    }
}

fn canon_ava(ava: &AttributeTypeAndValue<'_>) -> Option<(Vec<u8>, CanonValue)> {
    Some((
        ava.attr_type().as_bytes().to_vec(),
        canon_value(ava.attr_value())?,
    ))
}

fn canon_rdn(rdn: &RelativeDistinguishedName<'_>) -> Option<Vec<(Vec<u8>, CanonValue)>> {
    let mut avas = rdn.iter().map(canon_ava).collect::<Option<Vec<_>>>()?;
    avas.sort();
    Some(avas)
}

/// Whether two AVAs have the same type and the same encoded value, and that
/// value decodes (so that their canonical forms are certainly equal).
fn ava_identical(a: &AttributeTypeAndValue<'_>, b: &AttributeTypeAndValue<'_>) -> bool {
    let (x, y) = (a.attr_value(), b.attr_value());
    a.attr_type() == b.attr_type()
        && x.class() == y.class()
        && x.header.is_constructed() == y.header.is_constructed()
        && x.tag() == y.tag()
        && x.data == y.data
        && value_decodable(x)
}

/// Compares two RDNs as sets of AVAs.
fn rdn_equal(a: &RelativeDistinguishedName<'_>, b: &RelativeDistinguishedName<'_>) -> bool {
    if a.iter().count() != b.iter().count() {
        return false;
    }
    // Names copied from one certificate into the next (issuer = subject of the
    // issuer) are byte-identical: equal without canonicalizing, which is most of
    // a handshake's name-comparison cost.
    if a.iter().zip(b.iter()).all(|(x, y)| ava_identical(x, y)) {
        return true;
    }
    match (canon_rdn(a), canon_rdn(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Whether two names are equal under the RFC 5280 section 7.1 rules (see the module docs).
pub fn dn_equal(a: &X509Name<'_>, b: &X509Name<'_>) -> bool {
    a.iter().count() == b.iter().count() && a.iter().zip(b.iter()).all(|(x, y)| rdn_equal(x, y))
}

/// Whether `name` is within the directoryName subtree rooted at `base`: the RDNs of
/// `base` are, in order, equal to the first RDNs of `name` (an empty base
/// contains every name).
pub fn dn_within(name: &X509Name<'_>, base: &X509Name<'_>) -> bool {
    base.iter().count() <= name.iter().count()
        && base.iter().zip(name.iter()).all(|(b, n)| rdn_equal(b, n))
}

/// Whether the name has no RDNs.
pub fn dn_is_empty(name: &X509Name<'_>) -> bool {
    name.iter().next().is_none()
}

/// The short name of an attribute type, or its dotted OID.
fn attribute_name(ava: &AttributeTypeAndValue<'_>) -> String {
    let dotted = ava.attr_type().to_id_string();
    let short = match dotted.as_str() {
        "2.5.4.6" => "C",
        "2.5.4.8" => "ST",
        "2.5.4.7" => "L",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return dotted,
    };
    short.to_owned()
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            ',' | '+' | '=' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

fn value_text(value: &Any<'_>) -> String {
    if let Some(Some(text)) = decode_directory_string(value) {
        let mut out = String::with_capacity(text.len());
        escape_into(&mut out, &text);
        return out;
    }
    if value.class() == Class::Universal
        && !value.header.is_constructed()
        && (value.tag() == Tag::Ia5String
            || value.tag() == Tag::NumericString
            || value.tag() == Tag::VisibleString)
    {
        if let Ok(text) = std::str::from_utf8(value.data) {
            if text.is_ascii() {
                let mut out = String::with_capacity(text.len());
                escape_into(&mut out, text);
                return out;
            }
        }
    }
    // RFC 4514: '#' followed by the hex of the BER encoding.
    match value.to_der_vec() {
        Ok(der) => format!("#{}", hex::encode(der)),
        Err(_) => format!("#{}", hex::encode(value.data)),
    }
}

/// Renders a name in forward (DER) order, e.g. `O=Acme, OU=gw, serialNumber=00ff`;
/// multi-valued RDNs are joined with ` + `. Values that are not strings are shown
/// as `#` and the hex of their encoding. `,`, `+`, `=` and `\` in values are
/// escaped with a backslash, control characters as `\XX`.
pub fn display_dn(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in name.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, ava) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            out.push_str(&attribute_name(ava));
            out.push('=');
            out.push_str(&value_text(ava.attr_value()));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    /// DER tag-length-value.
    pub(crate) use crate::der::encode as tlv;

    pub(crate) const O: &[u8] = &[0x55, 0x04, 0x0a];
    pub(crate) const OU: &[u8] = &[0x55, 0x04, 0x0b];
    pub(crate) const CN: &[u8] = &[0x55, 0x04, 0x03];
    pub(crate) const SERIAL: &[u8] = &[0x55, 0x04, 0x05];
    pub(crate) const UTF8: u8 = 0x0c;
    pub(crate) const PRINTABLE: u8 = 0x13;
    pub(crate) const IA5: u8 = 0x16;
    pub(crate) const BMP: u8 = 0x1e;
    pub(crate) const UNIVERSAL: u8 = 0x1c;
    pub(crate) const TELETEX: u8 = 0x14;

    fn ava(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut content = tlv(0x06, oid);
        content.extend(tlv(tag, value));
        tlv(0x30, &content)
    }

    /// One attribute: (type OID content, value tag, value bytes).
    pub(crate) type TestAva<'a> = (&'a [u8], u8, &'a [u8]);

    /// A DER Name; each inner slice is one RDN.
    pub(crate) fn name_der(rdns: &[&[TestAva<'_>]]) -> Vec<u8> {
        let mut seq = Vec::new();
        for rdn in rdns {
            let mut set = Vec::new();
            for (oid, tag, value) in rdn.iter() {
                set.extend(ava(oid, *tag, value));
            }
            seq.extend(tlv(0x31, &set));
        }
        tlv(0x30, &seq)
    }

    fn parse(der: &[u8]) -> X509Name<'_> {
        let (rest, name) = X509Name::from_der(der).expect("test name parses");
        assert!(rest.is_empty());
        name
    }

    fn bmp(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    fn universal(s: &str) -> Vec<u8> {
        s.chars().flat_map(|c| (c as u32).to_be_bytes()).collect()
    }

    fn net(o: (u8, &[u8]), ou: (u8, &[u8])) -> Vec<u8> {
        name_der(&[&[(O, o.0, o.1)], &[(OU, ou.0, ou.1)]])
    }

    #[test]
    fn equal_after_case_and_space_folding() {
        let a = net((PRINTABLE, b"Net"), (UTF8, b"gateways"));
        let b = net((UTF8, b"  nET "), (PRINTABLE, b"GATEWAYS"));
        assert!(dn_equal(&parse(&a), &parse(&b)));
        let c = net((UTF8, b"N  e t"), (UTF8, b"gateways"));
        let d = net((UTF8, b"n e\tt"), (UTF8, b"gateways"));
        assert!(dn_equal(&parse(&c), &parse(&d)));
        // Inner spaces matter.
        let e = net((UTF8, b"Ne t"), (UTF8, b"gateways"));
        assert!(!dn_equal(&parse(&a), &parse(&e)));
    }

    #[test]
    fn nfkc_and_unicode_case() {
        // U+FB01 LATIN SMALL LIGATURE FI is NFKC-equal to "fi"; "Ä" lowercases to "ä".
        let a = net((UTF8, "\u{FB01}rm \u{00C4}".as_bytes()), (UTF8, b"x"));
        let b = net((UTF8, "FIRM \u{00E4}".as_bytes()), (UTF8, b"X"));
        assert!(dn_equal(&parse(&a), &parse(&b)));
        // Decomposed a + combining diaeresis equals precomposed.
        let c = net((UTF8, "firm a\u{0308}".as_bytes()), (UTF8, b"x"));
        assert!(dn_equal(&parse(&a), &parse(&c)));
    }

    #[test]
    fn bmp_universal_teletex_decode() {
        let a = net((UTF8, b"Net"), (UTF8, b"gw"));
        let b = net((BMP, &bmp("NET")), (UNIVERSAL, &universal(" Gw ")));
        assert!(dn_equal(&parse(&a), &parse(&b)));
        let c = net((TELETEX, b"net"), (UTF8, b"gw"));
        assert!(dn_equal(&parse(&a), &parse(&c)));
        // Undecodable: odd BMP, bad UTF-32, non-ASCII teletex, invalid UTF-8.
        for bad in [
            net((BMP, b"\x00N\x00"), (UTF8, b"gw")),
            net((UNIVERSAL, &[0, 0x11, 0, 0]), (UTF8, b"gw")),
            net((TELETEX, b"n\xe9t"), (UTF8, b"gw")),
            net((UTF8, b"N\xffet"), (UTF8, b"gw")),
            net((PRINTABLE, "N\u{e9}t".as_bytes()), (UTF8, b"gw")),
        ] {
            let parsed = X509Name::from_der(&bad);
            if let Ok((_, name)) = parsed {
                assert!(!dn_equal(&name, &parse(&a)));
                // Fail closed: not even equal to itself.
                assert!(!dn_equal(&name, &name));
            }
        }
    }

    #[test]
    fn decodable_agrees_with_decoding() {
        let values: Vec<(u8, Vec<u8>)> = vec![
            (UTF8, b"Net".to_vec()),
            (UTF8, b"N\xffet".to_vec()),
            (PRINTABLE, b"ab 12".to_vec()),
            (PRINTABLE, "N\u{e9}t".as_bytes().to_vec()),
            (TELETEX, b"net".to_vec()),
            (TELETEX, b"n\xe9t".to_vec()),
            (BMP, bmp("NET")),
            (BMP, b"\x00N\x00".to_vec()),
            (BMP, vec![0xd8, 0x00, 0x00, 0x41]), // unpaired surrogate
            (UNIVERSAL, universal("Gw")),
            (UNIVERSAL, vec![0, 0x11, 0, 0]),
            (UNIVERSAL, vec![0, 0, 0x41]),
            (IA5, b"x\xff".to_vec()),
            (0x02, vec![0x05]),
        ];
        for (tag, data) in values {
            let der = name_der(&[&[(O, tag, &data)]]);
            let name = parse(&der);
            let Some(ava) = name.iter().next().and_then(|rdn| rdn.iter().next()) else {
                panic!("one AVA");
            };
            let value = ava.attr_value();
            assert_eq!(
                value_decodable(value),
                !matches!(decode_directory_string(value), Some(None)),
                "tag {tag:#x} data {data:x?}"
            );
            // A name equals itself exactly when its values decode.
            assert_eq!(dn_equal(&name, &name), value_decodable(value));
        }
    }

    #[test]
    fn ascii_fast_path_matches_full_preparation() {
        for text in ["  Net  Gateways ", "A\tB\x0bC", "MiXeD 123 _*", "", "   "] {
            let full: String = text.nfkc().collect::<String>().to_lowercase();
            let full: String = full.nfkc().collect();
            let full = full
                .split(char::is_whitespace)
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(prepare(text), full, "{text:?}");
        }
    }

    #[test]
    fn other_types_compare_bytes() {
        let a = net((IA5, b"Net"), (UTF8, b"gw"));
        let b = net((IA5, b"net"), (UTF8, b"gw"));
        let c = net((UTF8, b"Net"), (UTF8, b"gw"));
        assert!(dn_equal(&parse(&a), &parse(&a)));
        assert!(!dn_equal(&parse(&a), &parse(&b)));
        assert!(!dn_equal(&parse(&a), &parse(&c)));
    }

    #[test]
    fn rdn_sets_and_order() {
        let multi1 = name_der(&[&[(O, UTF8, b"Net"), (OU, UTF8, b"gw")], &[(CN, UTF8, b"x")]]);
        let multi2 = name_der(&[&[(OU, UTF8, b"GW"), (O, UTF8, b"net")], &[(CN, UTF8, b"x")]]);
        assert!(dn_equal(&parse(&multi1), &parse(&multi2)));
        let split = name_der(&[
            &[(O, UTF8, b"Net")],
            &[(OU, UTF8, b"gw")],
            &[(CN, UTF8, b"x")],
        ]);
        assert!(!dn_equal(&parse(&multi1), &parse(&split)));
        // RDN order matters.
        let a = net((UTF8, b"Net"), (UTF8, b"gw"));
        let swapped = name_der(&[&[(OU, UTF8, b"gw")], &[(O, UTF8, b"Net")]]);
        assert!(!dn_equal(&parse(&a), &parse(&swapped)));
        // Different attribute type with the same value.
        let other = name_der(&[&[(O, UTF8, b"Net")], &[(CN, UTF8, b"gw")]]);
        assert!(!dn_equal(&parse(&a), &parse(&other)));
        // Same AVA twice versus two different AVAs.
        let dup = name_der(&[&[(O, UTF8, b"Net"), (O, UTF8, b"Net")]]);
        let two = name_der(&[&[(O, UTF8, b"Net"), (O, UTF8, b"Other")]]);
        assert!(!dn_equal(&parse(&dup), &parse(&two)));
    }

    #[test]
    fn within_is_a_prefix_test() {
        let base = name_der(&[
            &[(O, UTF8, b"Net")],
            &[(OU, UTF8, b"a")],
            &[(SERIAL, PRINTABLE, b"ab12")],
        ]);
        let leaf = name_der(&[
            &[(O, PRINTABLE, b" net ")],
            &[(OU, UTF8, b"A")],
            &[(SERIAL, PRINTABLE, b"AB12")],
            &[(CN, UTF8, b"gw1")],
        ]);
        let other = name_der(&[
            &[(O, UTF8, b"Net")],
            &[(OU, UTF8, b"a")],
            &[(SERIAL, PRINTABLE, b"cd34")],
            &[(CN, UTF8, b"gw1")],
        ]);
        let short = name_der(&[&[(O, UTF8, b"Net")], &[(OU, UTF8, b"a")]]);
        let (base, leaf, other, short) = (parse(&base), parse(&leaf), parse(&other), parse(&short));
        assert!(dn_within(&leaf, &base));
        assert!(dn_within(&base, &base));
        assert!(!dn_within(&other, &base));
        assert!(!dn_within(&short, &base));
        let empty_der = name_der(&[]);
        let empty = parse(&empty_der);
        assert!(dn_within(&leaf, &empty));
        assert!(!dn_within(&empty, &base));
        assert!(dn_is_empty(&empty));
    }

    #[test]
    fn display() {
        let der = name_der(&[
            &[(O, UTF8, b"Acme, Inc.")],
            &[(OU, UTF8, b"a+b=c\\d")],
            &[(SERIAL, PRINTABLE, b"00ff")],
            &[(CN, UTF8, b"x"), (&[0x2a, 0x03], IA5, b"y")],
            &[(CN, UTF8, b"evil\nline")],
            &[(CN, 0x02, &[0x05])],
        ]);
        assert_eq!(
            display_dn(&parse(&der)),
            "O=Acme\\, Inc., OU=a\\+b\\=c\\\\d, serialNumber=00ff, CN=x + 1.2.3=y, \
             CN=evil\\0Aline, CN=#020105"
        );
        assert_eq!(display_dn(&parse(&name_der(&[]))), "");
    }
}
