//! The CA's issuance database (`ca.db`): every certificate issued, revoked
//! with reason and time, the partners we have cross-signed, and the CRL
//! counter.
//!
//! `ca-tool` writes it; gateway hosts read their copy of it (read-only) to
//! learn the partners for their trust snapshot. It is a crate of its own so
//! that the gateway can read it without linking the CA's issuance code: it
//! depends only on `peerlink-pki` and sqlx, and must not depend on
//! `peerlink-ca`, rcgen or cryptoki.

mod db;
mod records;

pub use db::{CaDb, CertRecord, DbError, PeerRecord};
pub use records::{Issued, Reason, RevokedEntry, UnreadableCertificate};
