//! A minimal, strict DER reader for the few structures the validator parses
//! itself (x509-parser silently ignores trailing fields inside a SEQUENCE,
//! which would drop the minimum/maximum of a GeneralSubtree on the floor).
//!
//! Only single-byte tags and definite, minimally encoded lengths are accepted.

/// One tag-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The identifier octet (class, constructed bit, tag number < 31).
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// The whole encoding, header included.
    pub raw: &'a [u8],
}

/// Universal SEQUENCE (constructed).
pub(crate) const SEQUENCE: u8 = 0x30;

/// Reads one element from the front of `input`, returning it and the rest.
pub(crate) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), &'static str> {
    let (&tag, rest) = input.split_first().ok_or("unexpected end of data")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte tags are not supported");
    }
    let (&first, rest) = rest.split_first().ok_or("unexpected end of data")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err("indefinite length is not DER");
        }
        if count > 4 {
            return Err("length too large");
        }
        let bytes = rest.get(..count).ok_or("unexpected end of data")?;
        if bytes.first() == Some(&0) {
            return Err("non-minimal length encoding");
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return Err("non-minimal length encoding");
        }
        (len, rest.get(count..).ok_or("unexpected end of data")?)
    };
    let content = rest.get(..len).ok_or("length exceeds the data")?;
    let rest = rest.get(len..).ok_or("length exceeds the data")?;
    let header_len = input.len() - rest.len() - len;
    let raw = input
        .get(..header_len + len)
        .ok_or("length exceeds the data")?;
    Ok((Tlv { tag, content, raw }, rest))
}

/// Reads exactly one element that must span all of `input`.
pub(crate) fn read_single(input: &[u8]) -> Result<Tlv<'_>, &'static str> {
    let (tlv, rest) = read(input)?;
    if !rest.is_empty() {
        return Err("trailing data");
    }
    Ok(tlv)
}

/// Iterates over the elements of a content string.
pub(crate) fn elements(mut content: &[u8]) -> impl Iterator<Item = Result<Tlv<'_>, &'static str>> {
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
pub(crate) fn cert_issuer_and_subject(cert: &[u8]) -> Option<(&[u8], &[u8])> {
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
