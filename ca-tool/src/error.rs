//! The single error type of the command line: a message for the operator and an exit code.

use std::fmt;

/// A failed command. The message says what went wrong and what to do; nothing
/// on disk has been changed when one is returned.
#[derive(Debug)]
pub struct CliError {
    /// Text printed after "error: ".
    pub message: String,
    /// Process exit code.
    pub code: i32,
}

/// Exit code of a refused or failed operation.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code when `verify` finds the chain invalid.
pub const EXIT_INVALID: i32 = 3;

impl CliError {
    /// An error with the generic failure code.
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

macro_rules! from_error {
    ($($t:ty),*) => {
        $(impl From<$t> for CliError {
            fn from(e: $t) -> CliError {
                CliError::new(e.to_string())
            }
        })*
    };
}

from_error!(
    peerlink_pki::fsutil::FsError,
    peerlink_pki::keys::KeyError,
    peerlink_ca::keyfile::KeyFileError,
    peerlink_pki::pemfile::LoadError,
    peerlink_pki::endpoint::EndpointError,
    peerlink_pki::identity::IdentityError,
    peerlink_ca::profiles::IssueError,
    peerlink_ca::bundle::BundleError,
    peerlink_cadb::DbError,
    peerlink_cadb::UnreadableCertificate,
    peerlink_ca::csr::CsrError,
    peerlink_ca::swaptacular::infobundle::InfoBundleError
);

/// Result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;
