//! Root keys on a PKCS#11 token (a hardware security module, a smart card, or
//! SoftHSM for testing) as an alternative to the passphrase-encrypted file.
//!
//! The key pair is generated *on* the token as sensitive and non-extractable,
//! so the private key never exists outside it. The CA directory only records
//! where the key is ([`TokenConfig`], `private/pkcs11.json`: module path,
//! token label, key label and id; no secret). Every signature is made by the
//! token and checked against the public key before it is used.
//!
//! Mechanisms are the most widely supported ones: the message is hashed here
//! and signed with plain `CKM_ECDSA` (whose raw `r || s` output is converted to
//! the DER `ECDSA-Sig-Value` X.509 wants), `CKM_RSA_PKCS` over a SHA-256
//! `DigestInfo`, or `CKM_EDDSA`.
//!
//! The module is split by job: `config` is the `pkcs11.json` reference and
//! the label rules, `token` loads the module, finds the token, logs in and
//! creates or finds keys, `key` is a key on the token as an rcgen signer, and
//! `encoding` converts the bytes PKCS#11 and X.509 exchange. It is built only
//! with the crate's `pkcs11` feature (ca-tool's), so nothing else links cryptoki.

mod config;
mod encoding;
mod key;
mod token;

use std::path::PathBuf;

use cryptoki::error::Error as P11Error;

pub use config::{
    check_key_label, check_token_label, TokenConfig, CONFIG_FORMAT, DEFAULT_KEY_LABEL,
    MAX_KEY_LABEL, MAX_TOKEN_LABEL,
};
pub use encoding::{ecdsa_raw_to_der, parse_ec_point};
pub use key::{KeyProtection, TokenKey};
pub use token::{Token, TokenSession};

/// Why the token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module file does not exist.
    #[error(
        "PKCS#11 module {0} does not exist; install the token's PKCS#11 library \
         (for SoftHSM2: apt-get install softhsm2) or give its path"
    )]
    ModuleMissing(PathBuf),
    /// The module could not be loaded or initialised.
    #[error("cannot use PKCS#11 module {module}: {reason}")]
    Module {
        /// The module path.
        module: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No token with that label is present.
    #[error(
        "no token labelled {label:?} is present (module {module}; tokens present: {present}); \
         plug it in or check the token label"
    )]
    TokenNotFound {
        /// The label looked for.
        label: String,
        /// The module path.
        module: PathBuf,
        /// Labels of the tokens that are present.
        present: String,
    },
    /// Several tokens carry the label.
    #[error("{count} tokens are labelled {label:?}; remove all but the CA's token")]
    AmbiguousToken {
        /// The label.
        label: String,
        /// How many tokens carry it.
        count: usize,
    },
    /// The token is not ready for use (not initialised, no user PIN).
    #[error("token {label:?} is not ready: {reason}")]
    TokenNotReady {
        /// The token label.
        label: String,
        /// Why.
        reason: String,
    },
    /// The PIN was refused.
    #[error("the token refused the PIN for token {label:?} (wrong PIN); nothing was changed")]
    WrongPin {
        /// The token label.
        label: String,
    },
    /// The user PIN is locked.
    #[error(
        "the user PIN of token {label:?} is locked after too many wrong PINs; \
         unlock it with the security officer PIN; nothing was changed"
    )]
    PinLocked {
        /// The token label.
        label: String,
    },
    /// An empty PIN was given.
    #[error("the token PIN is empty")]
    EmptyPin,
    /// The key is not on the token.
    #[error(
        "token {token_label:?} holds no private key labelled {key_label:?}{id}; \
         is this the CA's token?"
    )]
    KeyNotFound {
        /// The token label.
        token_label: String,
        /// The key label.
        key_label: String,
        /// " with id ..." or empty.
        id: String,
    },
    /// More than one key matches.
    #[error(
        "token {token_label:?} holds {count} private keys labelled {key_label:?} with the same id; \
         refusing to guess which one is the root key"
    )]
    AmbiguousKey {
        /// The token label.
        token_label: String,
        /// The key label.
        key_label: String,
        /// How many match.
        count: usize,
    },
    /// `init` would reuse a label.
    #[error(
        "token {token_label:?} already holds an object labelled {key_label:?}; \
         choose another --key-label (an existing key is never reused or overwritten)"
    )]
    KeyLabelTaken {
        /// The token label.
        token_label: String,
        /// The key label.
        key_label: String,
    },
    /// Something the token cannot do, or a key type this tool does not use on tokens.
    #[error("{0}")]
    Unsupported(String),
    /// The token returned data that does not make sense.
    #[error("the token returned malformed data: {0}")]
    BadTokenData(String),
    /// The token's key does not protect itself as required.
    #[error("the key generated on token {token_label:?} is not protected: {reason}")]
    Unprotected {
        /// The token label.
        token_label: String,
        /// What is wrong.
        reason: String,
    },
    /// A signature from the token does not verify with the token's public key.
    #[error(
        "the token's signature does not verify with its public key \
         (the key pair on the token is inconsistent or the token is faulty)"
    )]
    BadSignature,
    /// The `pkcs11.json` file is unusable.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Invalid operator input (labels).
    #[error("{0}")]
    Input(String),
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {operation} failed on token {token_label:?}: {source}")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The token label.
        token_label: String,
        /// The module's answer.
        source: P11Error,
    },
}
