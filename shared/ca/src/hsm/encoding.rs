//! The bytes PKCS#11 and X.509 exchange: curve parameters, EC points,
//! ECDSA signatures (raw `r || s` to DER), RSA public keys and the SHA-256
//! `DigestInfo` prefix. Pure functions, unit-tested without a token; DER is
//! read with the project's one reader, [`peerlink_pki::der`].

use peerlink_pki::der;
use peerlink_pki::keys::KeyType;

use super::HsmError;

/// Universal OCTET STRING, the wrapping of `CKA_EC_POINT`.
const OCTET_STRING: u8 = 0x04;

/// DER of the namedCurve OID prime256v1 (`CKA_EC_PARAMS`).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the namedCurve OID secp384r1.
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID id-Ed25519 (RFC 8410), as PKCS#11 3.0 `CKA_EC_PARAMS` of Edwards keys.
pub(super) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER prefix of a SHA-256 `DigestInfo` (RFC 8017 9.2, note 1).
pub(super) const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// `CKA_EC_PARAMS` of an ECDSA or Ed25519 key type.
pub(super) fn ec_params(key_type: KeyType) -> &'static [u8] {
    match key_type {
        KeyType::EcdsaP384 => P384_PARAMS,
        KeyType::Ed25519 => ED25519_PARAMS,
        _ => P256_PARAMS,
    }
}

/// Whether a key's `CKA_EC_PARAMS` name the curve of `key_type`.
pub(super) fn ec_params_match(key_type: KeyType, params: &[u8]) -> bool {
    match key_type {
        // PKCS#11 3.0 also allows the curve name as a PrintableString for Edwards curves.
        KeyType::Ed25519 => params == ED25519_PARAMS || params == b"\x13\x0cedwards25519",
        _ => params == ec_params(key_type),
    }
}

/// The public point from `CKA_EC_POINT`: normally a DER OCTET STRING wrapping
/// the point (uncompressed `04 || x || y` for ECDSA, 32 bytes for Ed25519);
/// some modules return the bare point, which is accepted too.
pub fn parse_ec_point(attr: &[u8], key_type: KeyType) -> Result<Vec<u8>, HsmError> {
    let point_len = match key_type {
        KeyType::EcdsaP256 => 65,
        KeyType::EcdsaP384 => 97,
        KeyType::Ed25519 => 32,
        other => {
            return Err(HsmError::Unsupported(format!(
                "{other} keys have no EC point"
            )))
        }
    };
    let uncompressed = |p: &[u8]| key_type == KeyType::Ed25519 || p.first() == Some(&0x04);
    if attr.len() == point_len && uncompressed(attr) {
        return Ok(attr.to_vec());
    }
    let bad = |why: &str| HsmError::BadTokenData(format!("CKA_EC_POINT {why}"));
    let (octets, rest) = der::read(attr).map_err(|_| bad("is not DER"))?;
    if octets.tag != OCTET_STRING || !rest.is_empty() {
        return Err(bad("is not an OCTET STRING"));
    }
    let content = octets.content;
    if content.len() != point_len {
        return Err(bad(&format!(
            "holds {} bytes, not the {point_len} of a {key_type} point",
            content.len()
        )));
    }
    if !uncompressed(content) {
        return Err(bad("is not an uncompressed point"));
    }
    Ok(content.to_vec())
}

/// Converts a raw PKCS#11 ECDSA signature `r || s` (each `coord_len` bytes)
/// into the DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub fn ecdsa_raw_to_der(raw: &[u8], coord_len: usize) -> Result<Vec<u8>, HsmError> {
    if raw.len() != 2 * coord_len {
        return Err(HsmError::BadTokenData(format!(
            "ECDSA signature of {} bytes, expected {}",
            raw.len(),
            2 * coord_len
        )));
    }
    let (r, s) = raw.split_at(coord_len);
    if r.iter().all(|b| *b == 0) || s.iter().all(|b| *b == 0) {
        return Err(HsmError::BadTokenData(
            "ECDSA signature with r or s = 0".into(),
        ));
    }
    let mut body = der_unsigned_integer(r);
    body.extend(der_unsigned_integer(s));
    Ok(der::encode(0x30, &body))
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
pub(super) fn rsa_public_key_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut body = der_unsigned_integer(modulus);
    body.extend(der_unsigned_integer(exponent));
    der::encode(0x30, &body)
}

/// DER INTEGER of a big-endian unsigned magnitude: minimal, positive.
fn der_unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let trimmed = &magnitude[start..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der::encode(0x02, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        // High bit set in r: a zero byte is prepended; leading zeros in s are stripped.
        let mut raw = vec![0x80; 32];
        raw.extend(std::iter::repeat_n(0u8, 31));
        raw.push(0x05);
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        let mut expected = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        expected.extend(vec![0x80; 32]);
        expected.extend([0x02, 0x01, 0x05]);
        assert_eq!(der, expected);
        // P-384 sizes; wrong lengths and zero halves are refused.
        let der = ecdsa_raw_to_der(&[0x7f; 96], 48).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x64, 0x02, 0x30]);
        assert!(ecdsa_raw_to_der(&[1; 63], 32).is_err());
        assert!(ecdsa_raw_to_der(&[0; 64], 32).is_err());
    }

    #[test]
    fn der_signatures_verify_with_ring() {
        // A signature ring made in fixed form, converted, verifies in ASN.1 form.
        use ring::signature::{self as sig, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        for (fixed, asn1, coord) in [
            (
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                &sig::ECDSA_P256_SHA256_ASN1,
                32,
            ),
            (
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                &sig::ECDSA_P384_SHA384_ASN1,
                48,
            ),
        ] {
            let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(fixed, &rng).unwrap();
            let pair = sig::EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref(), &rng).unwrap();
            for _ in 0..20 {
                let raw = pair.sign(&rng, b"message").unwrap();
                let der = ecdsa_raw_to_der(raw.as_ref(), coord).unwrap();
                sig::UnparsedPublicKey::new(asn1, pair.public_key().as_ref())
                    .verify(b"message", &der)
                    .unwrap();
            }
        }
    }

    #[test]
    fn ec_points_are_unwrapped() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&point);
        assert_eq!(parse_ec_point(&wrapped, KeyType::EcdsaP256).unwrap(), point);
        assert_eq!(parse_ec_point(&point, KeyType::EcdsaP256).unwrap(), point);
        // P-384: 97 bytes, still the short length form.
        let mut p384 = vec![0x04];
        p384.extend([9u8; 96]);
        let mut wrapped = vec![0x04, 0x61];
        wrapped.extend(&p384);
        assert_eq!(parse_ec_point(&wrapped, KeyType::EcdsaP384).unwrap(), p384);
        // Wrong curve size, trailing bytes, compressed points, wrong tag.
        assert!(parse_ec_point(&wrapped, KeyType::EcdsaP256).is_err());
        let mut trailing = vec![0x04, 0x41];
        trailing.extend(&point);
        trailing.push(0);
        assert!(parse_ec_point(&trailing, KeyType::EcdsaP256).is_err());
        let mut compressed = vec![0x04, 0x41, 0x02];
        compressed.extend([7u8; 64]);
        assert!(parse_ec_point(&compressed, KeyType::EcdsaP256).is_err());
        let mut bitstring = vec![0x03, 0x41];
        bitstring.extend(&point);
        assert!(parse_ec_point(&bitstring, KeyType::EcdsaP256).is_err());
        assert!(parse_ec_point(&[], KeyType::EcdsaP256).is_err());
        // Ed25519: 32 bytes, bare or wrapped.
        let mut ed = vec![0x04, 0x20];
        ed.extend([3u8; 32]);
        assert_eq!(parse_ec_point(&ed, KeyType::Ed25519).unwrap(), [3u8; 32]);
    }

    #[test]
    fn rsa_public_keys_are_encoded_like_rcgen_reads_them() {
        let key = peerlink_pki::keys::PrivateKey::generate(KeyType::Rsa2048).unwrap();
        let spki = key.public_key_der().unwrap();
        let (_, parsed) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(
                &spki,
            )
            .unwrap();
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = parsed.parsed() else {
            panic!("not RSA");
        };
        // x509-parser gives the INTEGER contents (with a leading zero byte): feed them as the
        // token would (bare magnitudes) and get the same RSAPublicKey bytes back.
        let der = rsa_public_key_der(rsa.modulus, rsa.exponent);
        assert_eq!(der, parsed.subject_public_key.data.as_ref());
    }

    #[test]
    fn der_lengths_use_the_long_form_when_needed() {
        let long = der::encode(0x30, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x30, 0x82, 0x01, 0x2c]);
        let (tlv, rest) = der::read(&long).unwrap();
        assert_eq!((tlv.tag, tlv.content.len(), rest.len()), (0x30, 300, 0));
        assert!(der::read(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).is_err());
    }
}
