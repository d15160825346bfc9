//! PEM and base64, for tampering with files: encode and decode, find, replace
//! and damage one block.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64, ignoring whitespace; panics on anything else.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = B64
            .iter()
            .position(|x| *x == c)
            .unwrap_or_else(|| panic!("not base64: {:?}", c as char)) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Encodes one PEM block with 64-character lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The byte range of the base64 body of the first `label` PEM block in `text`
/// (from after the BEGIN line to the END line; LF or CRLF line endings).
pub fn pem_body_range(text: &str, label: &str) -> std::ops::Range<usize> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let at = text
        .find(&begin)
        .unwrap_or_else(|| panic!("no {label} block in:\n{text}"));
    let start = at
        + text[at..]
            .find('\n')
            .unwrap_or_else(|| panic!("no line end after BEGIN {label}"))
        + 1;
    let stop = start
        + text[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("no END {label} line"));
    start..stop
}

/// The DER content of the first `label` PEM block in `text`.
pub fn pem_block(text: &str, label: &str) -> Vec<u8> {
    base64_decode(&text[pem_body_range(text, label)])
}

/// `text` with the body of the first `label` block replaced by `der` (re-encoded).
pub fn replace_pem_block(text: &str, label: &str, der: &[u8]) -> String {
    let range = pem_body_range(text, label);
    let encoded = pem_encode(label, der);
    let body = &encoded[pem_body_range(&encoded, label)];
    format!("{}{}{}", &text[..range.start], body, &text[range.end..])
}

/// `text` with one base64 character of the first `label` block changed (the `index`th
/// character of its body, skipping newlines) to a different base64 character.
pub fn flip_base64_char(text: &str, label: &str, index: usize) -> String {
    let range = pem_body_range(text, label);
    let mut bytes = text.as_bytes().to_vec();
    let pos = (range.start..range.end)
        .filter(|i| B64.contains(&bytes[*i]))
        .nth(index)
        .unwrap_or_else(|| panic!("{label} block has fewer than {index} characters"));
    bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)), data);
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn pem_blocks_are_replaced() {
        let text = format!(
            "header\n{}{}",
            pem_encode("A", b"one"),
            pem_encode("B", b"two")
        );
        assert_eq!(pem_block(&text, "B"), b"two");
        let replaced = replace_pem_block(&text, "A", b"three");
        assert_eq!(pem_block(&replaced, "A"), b"three");
        assert_eq!(pem_block(&replaced, "B"), b"two");
        assert!(replaced.starts_with("header\n"));
        let flipped = flip_base64_char(&text, "B", 0);
        assert_ne!(pem_block(&flipped, "B"), b"two");
    }
}
