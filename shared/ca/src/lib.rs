//! The offline CA's side of peerlink: everything that *makes* trust.
//!
//! The certificate profiles of the design (root, peer cross-certificate,
//! server certificate, CRL) with rcgen, the CSRs gateways send in, the bundles
//! partners exchange, the root key encrypted at rest, and (feature `pkcs11`)
//! root keys on PKCS#11 tokens. Records of what was issued go to the issuance
//! database, `peerlink-cadb`; identity, keys and validation come from
//! `peerlink-pki`.
//!
//! Only `ca-tool` depends on this crate for its work (tests and benchmarks of
//! the other crates use it to make certificates as `ca-tool` does). Swaptacular
//! info-bundles and imported swpt_ca_scripts keys are in [`swaptacular`]. The gateway
//! must never depend on it: it would link issuance code it never calls.
//! PKCS#11 is a feature rather than always on so that cryptoki, which loads
//! vendor modules at run time, is built only for `ca-tool`, which enables it;
//! everything else that issues certificates (tests, benchmarks, the load
//! generator) gets the same profiles without it.

pub mod bundle;
pub mod csr;
#[cfg(feature = "pkcs11")]
pub mod hsm;
pub mod keyfile;
pub mod profiles;
pub mod swaptacular;
