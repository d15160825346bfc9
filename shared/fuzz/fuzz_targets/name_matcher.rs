//! The directoryName matcher behind name constraints and issuer chaining:
//! `peerlink_pki::validate::names::{dn_equal, dn_within, display_dn}`.
//!
//! Input: a 2-byte big-endian length, then that many bytes of the first DER
//! Name, then the second DER Name (the seeds are real subjects and
//! constraints). Properties, from the module's documented rules:
//!
//! - `dn_equal` is symmetric; a name equals itself exactly when every
//!   directory-string value in it decodes (undecodable names equal nothing);
//! - `dn_within(a, a)` whenever `dn_equal(a, a)`; `dn_equal(a, b)` implies
//!   both `dn_within`s, and two `dn_within`s imply `dn_equal`;
//! - comparison ignores ASCII case, surrounding spaces and the string type:
//!   a decodable name equals its copy re-encoded as BMPString (or
//!   UTF8String) with ASCII case flipped and spaces added;
//! - `display_dn` never emits control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_pki::der::encode as tlv;
use peerlink_pki::validate::names::{display_dn, dn_equal, dn_within};
use x509_parser::der_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

fn parse(der: &[u8]) -> Option<X509Name<'_>> {
    X509Name::from_der(der).ok().map(|(_, name)| name)
}

/// The decoding rules of the module docs, restated independently.
fn value_decodes(value: &Any<'_>) -> bool {
    if value.class() != Class::Universal || value.header.is_constructed() {
        return true;
    }
    let data = value.data;
    match value.tag() {
        Tag::Utf8String => std::str::from_utf8(data).is_ok(),
        Tag::PrintableString | Tag::TeletexString => data.iter().all(|b| (0x20..0x7f).contains(b)),
        Tag::BmpString => {
            data.len().is_multiple_of(2)
                && char::decode_utf16(data.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])))
                    .all(|c| c.is_ok())
        }
        Tag::UniversalString => {
            data.len().is_multiple_of(4)
                && data
                    .chunks(4)
                    .all(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).is_some())
        }
        _ => true,
    }
}

fn decodable(name: &X509Name<'_>) -> bool {
    name.iter_attributes()
        .all(|ava| value_decodes(ava.attr_value()))
}

/// The text of a directory-string value, if it is one and decodes.
fn value_string(value: &Any<'_>) -> Option<String> {
    if value.class() != Class::Universal || value.header.is_constructed() || !value_decodes(value) {
        return None;
    }
    let data = value.data;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::TeletexString => {
            String::from_utf8(data.to_vec()).ok()
        }
        Tag::BmpString => String::from_utf16(
            &data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
        )
        .ok(),
        Tag::UniversalString => data
            .chunks(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// `name` with every directory string re-encoded (BMPString when it fits,
/// else UTF8String), ASCII case flipped and a space added on both sides;
/// other values are copied as they are.
fn variant(name: &X509Name<'_>) -> Option<Vec<u8>> {
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut set = Vec::new();
        for ava in rdn.iter() {
            let value = ava.attr_value();
            let encoded = match value_string(value) {
                Some(text) => {
                    let flipped: String = text
                        .chars()
                        .map(|c| {
                            if c.is_ascii_lowercase() {
                                c.to_ascii_uppercase()
                            } else {
                                c.to_ascii_lowercase()
                            }
                        })
                        .collect();
                    let padded = format!(" {flipped} ");
                    if padded.chars().all(|c| (c as u32) < 0x10000) {
                        let bmp: Vec<u8> =
                            padded.encode_utf16().flat_map(u16::to_be_bytes).collect();
                        tlv(0x1e, &bmp)
                    } else {
                        tlv(0x0c, padded.as_bytes())
                    }
                }
                None => {
                    use x509_parser::der_parser::asn1_rs::ToDer;
                    value.to_der_vec().ok()?
                }
            };
            let mut seq = tlv(0x06, ava.attr_type().as_bytes());
            seq.extend(encoded);
            set.extend(tlv(0x30, &seq));
        }
        rdns.extend(tlv(0x31, &set));
    }
    Some(tlv(0x30, &rdns))
}

fn check_one(a: &X509Name<'_>) {
    let shown = display_dn(a);
    assert!(
        !shown.chars().any(char::is_control),
        "display_dn emitted a control character: {shown:?}"
    );
    let reflexive = dn_equal(a, a);
    assert_eq!(
        reflexive,
        decodable(a),
        "dn_equal(a, a) disagrees with decodability for {shown}"
    );
    if reflexive {
        assert!(dn_within(a, a), "dn_within(a, a) is false for {shown}");
        if let Some(der) = variant(a) {
            if let Some(b) = parse(&der) {
                assert!(
                    dn_equal(a, &b) && dn_equal(&b, a),
                    "{shown} differs from its re-encoded variant {}",
                    display_dn(&b)
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (first, second) = rest.split_at(split);
    let a = parse(first);
    let b = parse(second);
    if let Some(a) = &a {
        check_one(a);
    }
    if let Some(b) = &b {
        check_one(b);
    }
    if let (Some(a), Some(b)) = (&a, &b) {
        let ab = dn_equal(a, b);
        assert_eq!(ab, dn_equal(b, a), "dn_equal is not symmetric");
        let (a_in_b, b_in_a) = (dn_within(a, b), dn_within(b, a));
        if ab {
            assert!(a_in_b && b_in_a, "equal names not within each other");
        }
        if a_in_b && b_in_a {
            assert!(ab, "names within each other but not equal");
        }
    }
});
