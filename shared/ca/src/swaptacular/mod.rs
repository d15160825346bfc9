//! The CA side of Swaptacular interoperability: info-bundles read and written
//! ([`infobundle`]), the zip archives they are made of, read within limits
//! ([`archive`]), and root keys as swpt_ca_scripts stores them
//! ([`openssl_key`]), for importing a whole swpt_ca_scripts CA.
//!
//! The rules themselves (node types, ids, subnets, manifests) are in
//! `peerlink_pki::swaptacular`, shared with the gateway.

pub mod archive;
pub mod infobundle;
pub mod openssl_key;

#[cfg(test)]
mod tests;
