//! The PKI core shared by `ca-tool` and `peer-gateway`.
//!
//! Who a node is (identity, node ids, fingerprints, names), its keys in memory
//! and as unencrypted PKCS#8, the one DER reader, PEM files as operators hand
//! them over, the signature algorithms, the CA directory's file names, RFC 3339
//! times, crash-safe file writing, Swaptacular's identity rules and STOMP
//! manifests ([`swaptacular`]), and the X.509 chain validator. The offline
//! CA and the gateway both validate through [`validate`], so they can never
//! disagree about what a valid peer is.
//!
//! This crate issues nothing and opens no database or network connection:
//! issuance lives in `peerlink-ca`, the issuance database in `peerlink-cadb`,
//! TLS in `peerlink-tls`, all built on this one. It must not depend on any of
//! them (nor on cryptoki or sqlx), so that the gateway links only what it calls.

pub mod der;
pub mod endpoint;
pub mod fsutil;
pub mod identity;
pub mod keys;
pub mod layout;
pub mod pemfile;
pub mod signature;
pub mod swaptacular;
pub mod timefmt;
pub mod validate;
