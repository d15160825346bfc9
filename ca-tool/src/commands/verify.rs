//! `ca-tool verify`: the gateway's validator on the command line.

use std::path::{Path, PathBuf};

use peerlink_pki::pemfile::{self, ObjectKind};
use peerlink_pki::validate::{self, Purpose, ValidationOptions};
use time::OffsetDateTime;

use crate::error::{CliError, CliResult, EXIT_INVALID};
use crate::PurposeArg;

/// Runs `verify`; exit 0 when valid, [`EXIT_INVALID`] with the reason otherwise.
pub fn run(
    anchor: &Path,
    untrusted: &[PathBuf],
    crls: &[PathBuf],
    at: Option<&str>,
    purpose: PurposeArg,
    leaf: &Path,
) -> CliResult {
    let at = match at {
        Some(text) => peerlink_pki::timefmt::parse_rfc3339(text).map_err(|e| {
            CliError::new(format!(
                "--at {text:?} is not an RFC 3339 time ({e}); e.g. 2027-01-31T12:00:00Z"
            ))
        })?,
        None => OffsetDateTime::now_utc(),
    };
    let anchor_der = pemfile::load_one(anchor, ObjectKind::Certificate)?;
    let leaf_der = pemfile::load_one(leaf, ObjectKind::Certificate)?;
    let mut intermediates = Vec::new();
    for path in untrusted {
        intermediates.extend(pemfile::load_file(path, ObjectKind::Certificate)?);
    }
    let mut crl_ders = Vec::new();
    for path in crls {
        crl_ders.extend(pemfile::load_file(path, ObjectKind::Crl)?);
    }
    let purpose = match purpose {
        PurposeArg::Client => Purpose::Client,
        PurposeArg::Server => Purpose::Server,
        PurposeArg::Any => Purpose::Any,
    };
    let options = ValidationOptions {
        anchor: &anchor_der,
        intermediates: &intermediates,
        crls: &crl_ders,
        at,
        purpose,
    };
    match validate::validate_chain(&leaf_der, &options) {
        Ok(chain) => {
            println!(
                "{}: OK: {} (chain of {} to the anchor, valid until {})",
                leaf.display(),
                chain.leaf_subject,
                chain.chain.len(),
                peerlink_pki::timefmt::rfc3339(chain.leaf_not_after)
            );
            Ok(())
        }
        Err(e) => Err(CliError {
            message: format!("{}: INVALID: {e}", leaf.display()),
            code: EXIT_INVALID,
        }),
    }
}
