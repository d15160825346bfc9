//! Reading certificates, CRLs and CSRs as operators hand them over, and
//! writing them as PEM.
//!
//! Files arrive by e-mail in every shape: DER, PEM, PEM preceded by the text
//! `openssl x509 -text` prints, several blocks in one file. This module turns
//! them into DER with errors that say what was wrong and what to do. What the
//! tools write is plain PEM with LF line endings, so files diff cleanly and
//! `openssl` reads them.

use std::path::Path;

/// What kind of object a loader expects, used for PEM labels and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// An X.509 certificate (`CERTIFICATE`).
    Certificate,
    /// A certificate revocation list (`X509 CRL`).
    Crl,
    /// A PKCS#10 certificate signing request (`CERTIFICATE REQUEST`).
    Csr,
}

impl ObjectKind {
    fn labels(self) -> &'static [&'static str] {
        match self {
            ObjectKind::Certificate => &["CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"],
            ObjectKind::Crl => &["X509 CRL"],
            ObjectKind::Csr => &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            ObjectKind::Certificate => "certificate",
            ObjectKind::Crl => "CRL",
            ObjectKind::Csr => "certificate signing request",
        }
    }
}

/// Why a file could not be read as the expected object.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read at all.
    #[error(transparent)]
    Io(#[from] crate::fsutil::FsError),
    /// Neither PEM with the expected label nor DER.
    #[error(
        "{source_name}: no {kind} found: expected PEM (-----BEGIN {label}-----) or DER{detail}"
    )]
    NotFound {
        /// File name or description of the input.
        source_name: String,
        /// The expected object.
        kind: &'static str,
        /// The expected PEM label.
        label: &'static str,
        /// Extra detail on what was seen.
        detail: String,
    },
    /// A PEM block with the right label whose content is damaged.
    #[error("{source_name}: the {kind} PEM block is corrupt or truncated ({reason}); ask for the file again")]
    CorruptPem {
        /// File name or description of the input.
        source_name: String,
        /// The expected object.
        kind: &'static str,
        /// What the PEM parser said.
        reason: String,
    },
}

/// Loads every object of `kind` from a file (PEM blocks, or one DER object).
pub fn load_file(path: &Path, kind: ObjectKind) -> Result<Vec<Vec<u8>>, LoadError> {
    let bytes = crate::fsutil::read(path)?;
    parse_all(&bytes, kind, &path.display().to_string())
}

/// Loads exactly one object of `kind` from a file; extra blocks are an error.
pub fn load_one(path: &Path, kind: ObjectKind) -> Result<Vec<u8>, LoadError> {
    let name = path.display().to_string();
    let mut all = load_file(path, kind)?;
    if all.len() > 1 {
        return Err(LoadError::NotFound {
            source_name: name,
            kind: kind.name(),
            label: kind.labels()[0],
            detail: format!(
                " (found {} blocks where exactly one {} was expected)",
                all.len(),
                kind.name()
            ),
        });
    }
    Ok(all.remove(0))
}

/// Parses every object of `kind` in `bytes`: PEM blocks anywhere in text, or raw DER.
pub fn parse_all(
    bytes: &[u8],
    kind: ObjectKind,
    source_name: &str,
) -> Result<Vec<Vec<u8>>, LoadError> {
    // DER objects are a SEQUENCE; PEM is text. A leading 0x30 decides.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes.to_vec()]);
    }
    let text = String::from_utf8_lossy(bytes);
    let mut found = Vec::new();
    let mut other_labels = Vec::new();
    let mut rest: &str = &text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(label_end) = block["-----BEGIN ".len()..].find("-----") else {
            break;
        };
        let label = &block["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker) else {
            if kind.labels().contains(&label) {
                return Err(LoadError::CorruptPem {
                    source_name: source_name.into(),
                    kind: kind.name(),
                    reason: format!("missing \"{end_marker}\" line"),
                });
            }
            break;
        };
        let pem_text = &block[..end + end_marker.len()];
        if kind.labels().contains(&label) {
            let parsed = pem::parse(pem_text).map_err(|e| LoadError::CorruptPem {
                source_name: source_name.into(),
                kind: kind.name(),
                reason: e.to_string(),
            })?;
            if parsed.contents().is_empty() {
                return Err(LoadError::CorruptPem {
                    source_name: source_name.into(),
                    kind: kind.name(),
                    reason: "empty block".into(),
                });
            }
            found.push(parsed.into_contents());
        } else {
            other_labels.push(label.to_string());
        }
        rest = &block[end + end_marker.len()..];
    }
    if found.is_empty() {
        let detail = if other_labels.is_empty() {
            if bytes.is_empty() {
                " (the file is empty)".to_string()
            } else {
                String::new()
            }
        } else {
            format!(" (found only: {})", other_labels.join(", "))
        };
        return Err(LoadError::NotFound {
            source_name: source_name.into(),
            kind: kind.name(),
            label: kind.labels()[0],
            detail,
        });
    }
    Ok(found)
}

/// PEM with LF line endings (the `pem` crate defaults to CRLF).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// PEM-encodes a DER certificate.
pub fn pem_certificate(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

/// PEM-encodes a DER CRL.
pub fn pem_crl(der: &[u8]) -> String {
    pem_encode("X509 CRL", der)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "MAMCAQE=";

    #[test]
    fn reads_pem_after_text() {
        let input = format!(
            "Certificate:\n    Data: ...\n-----BEGIN CERTIFICATE-----\n{BODY}\n-----END CERTIFICATE-----\n"
        );
        let der = parse_all(input.as_bytes(), ObjectKind::Certificate, "t").unwrap();
        assert_eq!(der, vec![vec![0x30, 0x03, 0x02, 0x01, 0x01]]);
    }

    #[test]
    fn reads_der() {
        let der = parse_all(&[0x30, 0x00], ObjectKind::Crl, "t").unwrap();
        assert_eq!(der.len(), 1);
    }

    #[test]
    fn truncated_pem_is_reported() {
        let input = format!("-----BEGIN CERTIFICATE-----\n{BODY}\n");
        let err = parse_all(input.as_bytes(), ObjectKind::Certificate, "t").unwrap_err();
        assert!(err.to_string().contains("corrupt or truncated"), "{err}");
    }

    #[test]
    fn corrupt_base64_is_reported() {
        let input = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = parse_all(input.as_bytes(), ObjectKind::Certificate, "t").unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn wrong_label_names_what_was_found() {
        let input = format!("-----BEGIN PRIVATE KEY-----\n{BODY}\n-----END PRIVATE KEY-----\n");
        let err = parse_all(input.as_bytes(), ObjectKind::Certificate, "t").unwrap_err();
        assert!(err.to_string().contains("found only: PRIVATE KEY"), "{err}");
    }

    #[test]
    fn empty_input_is_reported() {
        let err = parse_all(b"", ObjectKind::Csr, "t").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
