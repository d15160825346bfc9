//! Path building (depth-first, from the leaf to the single trust anchor) and
//! path validation (RFC 5280 section 6.1, without certificate policies).

use std::collections::HashMap;

use time::OffsetDateTime;
use x509_parser::x509::X509Name;

use super::cert::ParsedCert;
use super::crl::{check_revocation, ParsedCrl};
use super::error::{CertRef, NameViolation, Position, ValidationError};
use super::extensions::{CertExtensions, DirectoryNameConstraints, Eku, ExtensionProblem};
use super::names::{display_dn, dn_equal, dn_is_empty, dn_within};
use super::Purpose;
use crate::signature::{self, algorithm_contents, SignatureError};

/// The longest path accepted, leaf and anchor included.
pub const MAX_PATH_LEN: usize = 8;

/// How many candidate issuers path building may try before giving up.
pub const MAX_ATTEMPTS: usize = 1000;

/// Index of the leaf in the certificate table.
pub(crate) const LEAF: usize = 0;
/// Index of the trust anchor in the certificate table.
pub(crate) const ANCHOR: usize = 1;

fn problem_error(cert: CertRef, problem: &ExtensionProblem) -> ValidationError {
    match problem {
        ExtensionProblem::Malformed(detail) => ValidationError::Malformed {
            input: cert.to_string(),
            detail: detail.clone(),
        },
        ExtensionProblem::UnsupportedCritical(extension) => {
            ValidationError::UnsupportedCriticalExtension {
                subject: cert.to_string(),
                extension: extension.clone(),
            }
        }
        ExtensionProblem::UnsupportedNameConstraint(detail) => {
            ValidationError::UnsupportedNameConstraint {
                cert,
                detail: detail.clone(),
            }
        }
    }
}

/// Why a certificate's signature was not verified by a candidate issuer.
#[derive(Debug, Clone)]
enum LinkFailure {
    Malformed(String),
    BadSignature,
    Unsupported(String),
}

fn verify_link(cert: &ParsedCert<'_>, issuer: &ParsedCert<'_>) -> Result<(), LinkFailure> {
    let x509 = &cert.x509;
    let sig_alg = algorithm_contents(&x509.signature_algorithm);
    if sig_alg != algorithm_contents(&x509.tbs_certificate.signature) {
        return Err(LinkFailure::Malformed(
            "signatureAlgorithm differs from the signature field of tbsCertificate".into(),
        ));
    }
    if x509.signature_value.unused_bits != 0 {
        return Err(LinkFailure::Malformed(
            "signature BIT STRING has unused bits".into(),
        ));
    }
    let spki = issuer.x509.public_key();
    match signature::verify(
        &algorithm_contents(&spki.algorithm),
        &spki.subject_public_key.data,
        &sig_alg,
        x509.tbs_certificate.as_ref(),
        &x509.signature_value.data,
    ) {
        Ok(()) => Ok(()),
        Err(SignatureError::BadSignature) => Err(LinkFailure::BadSignature),
        Err(SignatureError::UnsupportedAlgorithm) => Err(LinkFailure::Unsupported(format!(
            "signature algorithm {} with an issuer key of type {}",
            x509.signature_algorithm.algorithm.to_id_string(),
            spki.algorithm.algorithm.to_id_string()
        ))),
        Err(SignatureError::MalformedKey(e)) => Err(LinkFailure::Malformed(format!(
            "issuer key cannot be used: {e}"
        ))),
    }
}

/// Everything path validation needs besides the path.
pub(crate) struct Context<'c, 'a> {
    /// Index 0 is the leaf, 1 the anchor, the rest intermediates.
    pub certs: &'c [ParsedCert<'a>],
    pub crls: &'c [ParsedCrl<'a>],
    pub at: OffsetDateTime,
    pub purpose: Purpose,
}

impl<'a> Context<'_, 'a> {
    fn cert(&self, index: usize) -> &ParsedCert<'a> {
        &self.certs[index]
    }

    /// The reference of the certificate at position `i` of `path`.
    fn cert_ref(&self, path: &[usize], i: usize) -> CertRef {
        let index = path.get(i).copied().unwrap_or(ANCHOR);
        let position = if index == ANCHOR {
            Position::Anchor
        } else if i == 0 {
            Position::Leaf
        } else {
            Position::Intermediate(u16::try_from(i).unwrap_or(u16::MAX))
        };
        CertRef {
            position,
            subject: self.cert(index).subject_text(),
        }
    }
}

fn check_validity(
    cert: &ParsedCert<'_>,
    cert_ref: impl Fn() -> CertRef,
    at: OffsetDateTime,
) -> Result<(), ValidationError> {
    let validity = cert.x509.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    if at < not_before {
        return Err(ValidationError::NotYetValid {
            cert: cert_ref(),
            not_before,
            at,
        });
    }
    if at > not_after {
        return Err(ValidationError::Expired {
            cert: cert_ref(),
            not_after,
            at,
        });
    }
    Ok(())
}

/// Leaf checks for the requested purpose.
fn check_leaf_purpose(
    exts: &CertExtensions<'_>,
    cert_ref: impl Fn() -> CertRef,
    purpose: Purpose,
) -> Result<(), ValidationError> {
    let (wanted, name) = match purpose {
        Purpose::Any => return Ok(()),
        Purpose::Client => ((|e: &Eku| e.client_auth) as fn(&Eku) -> bool, "clientAuth"),
        Purpose::Server => ((|e: &Eku| e.server_auth) as fn(&Eku) -> bool, "serverAuth"),
    };
    if exts.basic_constraints.as_ref().is_some_and(|bc| bc.ca) {
        return Err(ValidationError::CaAsLeaf { cert: cert_ref() });
    }
    if let Some(ku) = &exts.key_usage {
        if !ku.digital_signature() {
            return Err(ValidationError::KeyUsage {
                cert: cert_ref(),
                detail: "keyUsage lacks digitalSignature, which TLS authentication needs".into(),
            });
        }
    }
    match &exts.eku {
        None => Err(ValidationError::Eku {
            cert: cert_ref(),
            detail: format!("no extendedKeyUsage extension; {name} is required"),
        }),
        Some(eku) if !wanted(eku) => Err(ValidationError::Eku {
            cert: cert_ref(),
            detail: format!("extendedKeyUsage does not include {name}"),
        }),
        Some(_) => Ok(()),
    }
}

/// The CA checks of an issuer (intermediate, or the anchor when `is_anchor`).
fn check_issuer(
    exts: &CertExtensions<'_>,
    cert_ref: impl Fn() -> CertRef,
    is_anchor: bool,
) -> Result<(), ValidationError> {
    match &exts.basic_constraints {
        None if is_anchor => {}
        None => {
            return Err(ValidationError::NotCa {
                cert: cert_ref(),
                detail: "it has no basicConstraints extension".into(),
            })
        }
        Some(bc) if !bc.ca => {
            return Err(ValidationError::NotCa {
                cert: cert_ref(),
                detail: "basicConstraints has cA=FALSE".into(),
            })
        }
        Some(_) => {}
    }
    if let Some(ku) = &exts.key_usage {
        if !ku.key_cert_sign() {
            return Err(ValidationError::KeyUsage {
                cert: cert_ref(),
                detail: "keyUsage lacks keyCertSign, but it issued the certificate below it".into(),
            });
        }
    }
    Ok(())
}

fn check_name(
    name: &X509Name<'_>,
    label: impl Fn() -> String,
    constraints: &DirectoryNameConstraints<'_>,
) -> Result<(), (String, NameViolation)> {
    if dn_is_empty(name) {
        return Err((label(), NameViolation::EmptyName));
    }
    if !constraints.permitted.is_empty()
        && !constraints
            .permitted
            .iter()
            .any(|base| dn_within(name, base))
    {
        return Err((
            label(),
            NameViolation::OutsidePermitted(constraints.permitted.iter().map(display_dn).collect()),
        ));
    }
    if let Some(base) = constraints
        .excluded
        .iter()
        .find(|base| dn_within(name, base))
    {
        return Err((label(), NameViolation::WithinExcluded(display_dn(base))));
    }
    Ok(())
}

/// Validates a complete candidate path (leaf first, anchor last) whose
/// signatures have already been verified link by link.
pub(crate) fn validate_path(ctx: &Context<'_, '_>, path: &[usize]) -> Result<(), ValidationError> {
    let n = path.len();
    if n < 2 {
        return Err(ValidationError::Malformed {
            input: "certification path".into(),
            detail: "a path needs a leaf and the anchor".into(),
        });
    }
    let cert_at = |i: usize| ctx.cert(path[i]);
    let ref_at = |i: usize| ctx.cert_ref(path, i);
    let exts_at = |i: usize| {
        cert_at(i)
            .exts
            .as_ref()
            .map_err(|p| problem_error(ref_at(i), p))
    };

    // The trust anchor: its signature is not checked, but its validity period
    // and constraints apply. RFC 5280 6.1 leaves the anchor's validity to the
    // implementation; openssl, Go's crypto/x509 and x509-limbo
    // (rfc5280::validity::expired-root) refuse an expired anchor, and so do we:
    // a root past its notAfter is one its owner stopped vouching for.
    let anchor_index = n - 1;
    let anchor_exts = exts_at(anchor_index)?;
    check_validity(cert_at(anchor_index), || ref_at(anchor_index), ctx.at)?;
    check_issuer(anchor_exts, || ref_at(anchor_index), true)?;
    // (remaining non-self-issued intermediates allowed, path index of the CA that set it, its pathLen)
    let mut max_path: Option<(u32, usize, u32)> = anchor_exts
        .basic_constraints
        .as_ref()
        .and_then(|bc| bc.path_len_constraint)
        .map(|len| (len, anchor_index, len));

    for i in (0..anchor_index).rev() {
        let cert = cert_at(i);
        let exts = exts_at(i)?;
        check_validity(cert, || ref_at(i), ctx.at)?;
        check_revocation(
            cert,
            || ref_at(i),
            cert_at(i + 1),
            || ref_at(i + 1),
            ctx.crls,
            ctx.at,
        )?;

        // Name constraints of every CA above (RFC 5280 6.1.3 (b), (c));
        // self-issued intermediates are exempt, the leaf never is.
        if i == 0 || !cert.self_issued {
            for k in (i + 1..n).rev() {
                let Some(constraints) = cert_at(k)
                    .exts
                    .as_ref()
                    .ok()
                    .and_then(|e| e.name_constraints.as_ref())
                else {
                    continue;
                };
                let mut result =
                    check_name(cert.x509.subject(), || "subject".to_owned(), constraints);
                for san in &exts.san_directory_names {
                    if result.is_err() {
                        break;
                    }
                    let label = || format!("subjectAltName directoryName \"{}\"", display_dn(san));
                    result = check_name(san, label, constraints);
                }
                if let Err((name, violation)) = result {
                    return Err(ValidationError::NameConstraint {
                        cert: ref_at(i),
                        name,
                        violation,
                        constraining: ref_at(k),
                    });
                }
            }
        }

        if i > 0 {
            check_issuer(exts, || ref_at(i), false)?;
            // RFC 5280 6.1.4 (l), (m).
            if !cert.self_issued {
                if let Some((remaining, ca, len)) = max_path {
                    if remaining == 0 {
                        return Err(ValidationError::PathLen {
                            cert: ref_at(i),
                            ca: ref_at(ca),
                            path_len: len,
                        });
                    }
                    max_path = Some((remaining - 1, ca, len));
                }
            }
            if let Some(len) = exts
                .basic_constraints
                .as_ref()
                .and_then(|bc| bc.path_len_constraint)
            {
                if max_path.is_none_or(|(remaining, _, _)| len <= remaining) {
                    max_path = Some((len, i, len));
                }
            }
        } else {
            check_leaf_purpose(exts, || ref_at(0), ctx.purpose)?;
        }
    }
    Ok(())
}

/// Checks a leaf that is byte-identical to the anchor: its extensions, validity
/// and the purpose (it is being used as an end-entity certificate).
pub(crate) fn validate_leaf_is_anchor(
    cert: &ParsedCert<'_>,
    at: OffsetDateTime,
    purpose: Purpose,
) -> Result<(), ValidationError> {
    let cert_ref = || CertRef {
        position: Position::Anchor,
        subject: cert.subject_text(),
    };
    let exts = cert
        .exts
        .as_ref()
        .map_err(|p| problem_error(cert_ref(), p))?;
    check_validity(cert, cert_ref, at)?;
    check_leaf_purpose(exts, cert_ref, purpose)
}

fn same_subject_and_key(a: &ParsedCert<'_>, b: &ParsedCert<'_>) -> bool {
    a.x509.public_key().raw == b.x509.public_key().raw
        && dn_equal(a.x509.subject(), b.x509.subject())
}

/// Depth-first path building with failure bookkeeping.
pub(crate) struct PathBuilder<'x, 'c, 'a> {
    ctx: &'x Context<'c, 'a>,
    attempts: usize,
    exhausted: bool,
    /// The most relevant failure so far: (complete path?, depth) and the error.
    best: Option<((bool, usize), ValidationError)>,
    links: HashMap<(usize, usize), Result<(), LinkFailure>>,
}

impl<'x, 'c, 'a> PathBuilder<'x, 'c, 'a> {
    pub(crate) fn new(ctx: &'x Context<'c, 'a>) -> Self {
        PathBuilder {
            ctx,
            attempts: 0,
            exhausted: false,
            best: None,
            links: HashMap::new(),
        }
    }

    fn record(&mut self, rank: (bool, usize), error: ValidationError) {
        if self.best.as_ref().is_none_or(|(best, _)| rank > *best) {
            self.best = Some((rank, error));
        }
    }

    fn link(&mut self, cert: usize, issuer: usize) -> Result<(), LinkFailure> {
        let ctx = self.ctx;
        self.links
            .entry((cert, issuer))
            .or_insert_with(|| verify_link(ctx.cert(cert), ctx.cert(issuer)))
            .clone()
    }

    /// Finds a valid path (indices into the certificate table, leaf first,
    /// anchor last) or returns the most relevant failure.
    pub(crate) fn build(mut self) -> Result<Vec<usize>, ValidationError> {
        let mut path = vec![LEAF];
        if let Some(found) = self.extend(&mut path) {
            return Ok(found);
        }
        if self.exhausted {
            return Err(ValidationError::TooComplex {
                attempts: self.attempts,
            });
        }
        match self.best {
            Some((_, error)) => Err(error),
            // Unreachable in practice: a failed search always records a reason.
            None => Err(ValidationError::UnknownIssuer {
                cert: self.ctx.cert_ref(&path, 0),
                issuer: display_dn(self.ctx.cert(LEAF).x509.issuer()),
                anchor: self.ctx.cert(ANCHOR).subject_text(),
            }),
        }
    }

    /// The certificates that may have issued `current`, best first, and the
    /// ones with the right name that its authorityKeyIdentifier rules out
    /// (with the reason). A candidate whose subjectKeyIdentifier equals the
    /// AKI's keyIdentifier comes first, then the ones that cannot be told
    /// apart (no AKI or no SKI), the anchor before intermediates among equals.
    fn candidates(&self, path: &[usize], current: usize) -> (Vec<usize>, Vec<(usize, String)>) {
        let ctx = self.ctx;
        let cert = ctx.cert(current);
        let exts = cert.exts.as_ref().ok();
        let aki = exts.and_then(|e| e.authority_key_id);
        let mut ruled_out = Vec::new();
        let mut found: Vec<(u8, bool, usize)> = Vec::new();
        for j in ANCHOR..ctx.certs.len() {
            if path.contains(&j) || !dn_equal(cert.x509.issuer(), ctx.cert(j).x509.subject()) {
                continue;
            }
            // RFC 4158 loop detection: a certificate for a (subject, key) pair
            // already in the path adds nothing. The anchor ends the path, so it
            // is always a candidate.
            if j != ANCHOR
                && path
                    .iter()
                    .any(|&p| same_subject_and_key(ctx.cert(p), ctx.cert(j)))
            {
                continue;
            }
            if let Some(why) = exts.and_then(|e| akid_mismatch(e, ctx.cert(j))) {
                ruled_out.push((j, why));
                continue;
            }
            let ski = ctx
                .cert(j)
                .exts
                .as_ref()
                .ok()
                .and_then(|e| e.subject_key_id);
            let key_rank = match (aki, ski) {
                (Some(a), Some(s)) if a == s => 0,
                _ => 1,
            };
            found.push((key_rank, j != ANCHOR, j));
        }
        found.sort();
        (found.into_iter().map(|(_, _, j)| j).collect(), ruled_out)
    }

    fn key_id_mismatch(
        &self,
        path: &mut Vec<usize>,
        issuer: usize,
        detail: String,
    ) -> ValidationError {
        let depth = path.len();
        let cert = self.ctx.cert_ref(path, depth - 1);
        path.push(issuer);
        let issuer = self.ctx.cert_ref(path, depth);
        path.pop();
        ValidationError::KeyIdMismatch {
            cert,
            issuer,
            detail,
        }
    }

    fn extend(&mut self, path: &mut Vec<usize>) -> Option<Vec<usize>> {
        let ctx = self.ctx;
        let depth = path.len();
        let current = *path.last()?;
        let (candidates, ruled_out) = self.candidates(path, current);
        // A candidate the AKI rules out explains the failure when nothing
        // else does: recorded first when it is the only one with the name,
        // otherwise after the others failed (an earlier record of the same
        // rank is kept).
        let ruled_out_error = ruled_out
            .into_iter()
            .next()
            .map(|(j, detail)| self.key_id_mismatch(path, j, detail));
        if candidates.is_empty() {
            let error = ruled_out_error.unwrap_or_else(|| ValidationError::UnknownIssuer {
                cert: ctx.cert_ref(path, depth - 1),
                issuer: display_dn(ctx.cert(current).x509.issuer()),
                anchor: ctx.cert(ANCHOR).subject_text(),
            });
            self.record((false, depth), error);
            return None;
        }
        for candidate in candidates {
            if self.attempts >= MAX_ATTEMPTS {
                self.exhausted = true;
                return None;
            }
            self.attempts += 1;
            if candidate != ANCHOR && depth + 2 > MAX_PATH_LEN {
                self.record(
                    (false, MAX_PATH_LEN),
                    ValidationError::TooLong {
                        cert: ctx.cert_ref(path, depth - 1),
                        max: MAX_PATH_LEN,
                    },
                );
                continue;
            }
            if let Err(failure) = self.link(current, candidate) {
                let cert = ctx.cert_ref(path, depth - 1);
                let error = match failure {
                    LinkFailure::Malformed(detail) => ValidationError::Malformed {
                        input: cert.to_string(),
                        detail,
                    },
                    LinkFailure::BadSignature => {
                        path.push(candidate);
                        let issuer = ctx.cert_ref(path, depth);
                        path.pop();
                        ValidationError::BadSignature { cert, issuer }
                    }
                    LinkFailure::Unsupported(detail) => ValidationError::UnsupportedAlgorithm {
                        subject: cert.to_string(),
                        detail,
                    },
                };
                self.record((false, depth), error);
                continue;
            }
            path.push(candidate);
            if candidate == ANCHOR {
                match validate_path(ctx, path) {
                    Ok(()) => return Some(path.clone()),
                    Err(error) => self.record((true, path.len()), error),
                }
            } else if let Some(found) = self.extend(path) {
                return Some(found);
            }
            path.pop();
            if self.exhausted {
                return None;
            }
        }
        if let Some(error) = ruled_out_error {
            self.record((false, depth), error);
        }
        None
    }
}

/// Why `issuer` is not the issuer that `cert`'s authorityKeyIdentifier names,
/// if it is not: the same three checks as OpenSSL's `X509_check_akid`, which
/// its chain building applies to every candidate issuer, trust anchors included.
/// Absent fields (no AKI, no keyIdentifier, an issuer without SKI) rule nothing out.
fn akid_mismatch(cert: &CertExtensions<'_>, issuer: &ParsedCert<'_>) -> Option<String> {
    let issuer_ski = issuer.exts.as_ref().ok().and_then(|e| e.subject_key_id);
    if let (Some(aki), Some(ski)) = (cert.authority_key_id, issuer_ski) {
        if aki != ski {
            return Some(format!(
                "keyIdentifier {} differs from its subjectKeyIdentifier {}",
                hex::encode(aki),
                hex::encode(ski)
            ));
        }
    }
    if let Some(serial) = cert.authority_cert_serial {
        if serial != issuer.x509.raw_serial() {
            return Some(format!(
                "authorityCertSerialNumber {} differs from its serial number {}",
                hex::encode(serial),
                hex::encode(issuer.x509.raw_serial())
            ));
        }
    }
    if let Some(name) = &cert.authority_cert_issuer {
        if !dn_equal(name, issuer.x509.issuer()) {
            return Some(format!(
                "authorityCertIssuer \"{}\" differs from its issuer \"{}\"",
                display_dn(name),
                display_dn(issuer.x509.issuer())
            ));
        }
    }
    None
}
