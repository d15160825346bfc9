//! The project's one DER reader: minimal and strict, for the few structures
//! parsed by hand (x509-parser silently ignores trailing fields inside a
//! SEQUENCE, which would drop the minimum/maximum of a GeneralSubtree on the
//! floor; PKCS#11 tokens hand over EC points wrapped in an OCTET STRING; the
//! handshake looks up a partner by the issuer of an already validated chain).
//!
//! Only single-byte tags and definite, minimally encoded lengths are accepted.

/// One tag-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The identifier octet (class, constructed bit, tag number < 31).
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// The whole encoding, header included.
    pub raw: &'a [u8],
}

/// Universal SEQUENCE (constructed).
pub const SEQUENCE: u8 = 0x30;

/// Why bytes are not the DER this reader accepts; the text ends up in the
/// validator's and the token's messages, so it names the encoding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DerError {
    /// The input ends inside a header or before the content it announces.
    #[error("unexpected end of data")]
    UnexpectedEnd,
    /// A tag number of 31 or more (never used by the structures read here).
    #[error("multi-byte tags are not supported")]
    MultiByteTag,
    /// BER's indefinite length form.
    #[error("indefinite length is not DER")]
    IndefiniteLength,
    /// A length of more than four octets.
    #[error("length too large")]
    LengthTooLarge,
    /// A length in the long form that the short form (or fewer octets) could carry.
    #[error("non-minimal length encoding")]
    NonMinimalLength,
    /// A length beyond the end of the input.
    #[error("length exceeds the data")]
    LengthExceedsData,
    /// Bytes after the one element expected.
    #[error("trailing data")]
    TrailingData,
}

/// Reads one element from the front of `input`, returning it and the rest.
pub fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError::UnexpectedEnd)?;
    if tag & 0x1f == 0x1f {
        return Err(DerError::MultiByteTag);
    }
    let (&first, rest) = rest.split_first().ok_or(DerError::UnexpectedEnd)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err(DerError::IndefiniteLength);
        }
        if count > 4 {
            return Err(DerError::LengthTooLarge);
        }
        let bytes = rest.get(..count).ok_or(DerError::UnexpectedEnd)?;
        if bytes.first() == Some(&0) {
            return Err(DerError::NonMinimalLength);
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return Err(DerError::NonMinimalLength);
        }
        (len, rest.get(count..).ok_or(DerError::UnexpectedEnd)?)
    };
    let content = rest.get(..len).ok_or(DerError::LengthExceedsData)?;
    let rest = rest.get(len..).ok_or(DerError::LengthExceedsData)?;
    let header_len = input.len() - rest.len() - len;
    let raw = input
        .get(..header_len + len)
        .ok_or(DerError::LengthExceedsData)?;
    Ok((Tlv { tag, content, raw }, rest))
}

/// Encodes one element with a single-byte `tag` and a minimal definite length:
/// the inverse of [`read`], for the few structures built by hand (a token's
/// raw ECDSA signature as `ECDSA-Sig-Value`, its RSA key as `RSAPublicKey`).
pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads exactly one element that must span all of `input`.
pub fn read_single(input: &[u8]) -> Result<Tlv<'_>, DerError> {
    let (tlv, rest) = read(input)?;
    if !rest.is_empty() {
        return Err(DerError::TrailingData);
    }
    Ok(tlv)
}

/// Iterates over the elements of a content string.
pub fn elements(mut content: &[u8]) -> impl Iterator<Item = Result<Tlv<'_>, DerError>> {
    std::iter::from_fn(move || {
        if content.is_empty() {
            return None;
        }
        match read(content) {
            Ok((tlv, rest)) => {
                content = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                content = &[];
                Some(Err(e))
            }
        }
    })
}

/// The raw encodings (header included) of a certificate's issuer and subject
/// Names, found without decoding the rest of it: for the handshake's lookups
/// of a partner in a chain that has already been validated.
pub fn cert_issuer_and_subject(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let certificate = read_single(cert).ok().filter(|t| t.tag == SEQUENCE)?;
    let (tbs, _) = read(certificate.content)
        .ok()
        .filter(|(t, _)| t.tag == SEQUENCE)?;
    let mut fields = elements(tbs.content).map_while(Result::ok);
    let mut field = fields.next()?;
    if field.tag == 0xa0 {
        field = fields.next()?; // [0] EXPLICIT version
    }
    // field = serialNumber; then signature, issuer, validity, subject.
    let _signature = fields.next()?;
    let issuer = fields.next().filter(|t| t.tag == SEQUENCE)?;
    let _validity = fields.next()?;
    let subject = fields.next().filter(|t| t.tag == SEQUENCE)?;
    (field.tag == 0x02).then_some((issuer.raw, subject.raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_forms() {
        let (t, rest) = read(&[0x30, 0x02, 0x05, 0x00, 0xff]).unwrap();
        assert_eq!(t.tag, 0x30);
        assert_eq!(t.content, &[0x05, 0x00]);
        assert_eq!(t.raw, &[0x30, 0x02, 0x05, 0x00]);
        assert_eq!(rest, &[0xff]);

        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let t = read_single(&long).unwrap();
        assert_eq!(t.content.len(), 0x80);
        assert_eq!(t.raw.len(), long.len());
    }

    #[test]
    fn rejects_bad_encodings() {
        assert!(read(&[]).is_err());
        assert!(read(&[0x30]).is_err());
        assert!(read(&[0x30, 0x80, 0x00, 0x00]).is_err()); // indefinite
        assert!(read(&[0x30, 0x81, 0x05, 1, 2, 3, 4, 5]).is_err()); // non-minimal
        assert!(read(&[0x30, 0x82, 0x00, 0x80]).is_err()); // leading zero
        assert!(read(&[0x30, 0x03, 0x01]).is_err()); // short
        assert!(read(&[0x1f, 0x01, 0x00]).is_err()); // multi-byte tag
        assert!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(read_single(&[0x05, 0x00, 0x05, 0x00]).is_err());
        let items: Vec<_> = elements(&[0x05, 0x00, 0x05]).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok() && items[1].is_err());
    }
}
