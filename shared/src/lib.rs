//! The trust core shared by `ca-tool` and `peer-gateway`.
//!
//! Identity (node ids, distinguished names, fingerprints), certificate
//! profiles, passphrase-protected key storage, bundles, the issuance database
//! and the chain validator live here so that the offline CA and the gateway
//! can never disagree about what a valid peer is.

pub mod bundle;
pub mod cadb;
pub mod csr;
pub mod fsutil;
pub mod hsm;
pub mod identity;
pub mod keys;
pub mod layout;
pub mod pemfile;
pub mod profiles;
pub mod signature;
pub mod tls;
pub mod validate;
