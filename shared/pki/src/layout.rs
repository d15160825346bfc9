//! File names of a CA directory, shared by `ca-tool` (which writes them) and
//! the gateway (which reads the public part). Every name of a file or
//! directory inside a CA directory is defined here and nowhere else.
//!
//! ```text
//! DIR/root-ca.crt                    root certificate (public)
//! DIR/private/root-ca.key            PKCS#8 encrypted root key (0600, dir 0700)
//! DIR/private/pkcs11.json            instead of root-ca.key when the key is on a PKCS#11 token:
//!                                    module, token label, key label and id (no secret)
//! DIR/ca.db                          issuance database (public)
//! DIR/crl.pem                        newest CRL (public)
//! DIR/peers/<id>/bundle.pem          the partner's bundle as received
//! DIR/peers/<id>/root.crt            the partner's root (pinned trust anchor for dialing them)
//! DIR/peers/<id>/issued-by-us.crt    the cross-cert we issued them
//! DIR/peers/<id>/issued-to-us.crt    the cross-cert they issued us (presented when dialing)
//! DIR/peers/<id>/infobundle.zip      a Swaptacular partner's info-bundle as received
//! DIR/peers/<id>/stomp.toml          a Swaptacular partner's STOMP servers manifest
//! DIR/peers/<id>/subnet.txt          the subnet we (an accounting authority) gave the partner
//! DIR/nodeinfo/stomp.toml            our own STOMP servers manifest (Swaptacular profile)
//! ```
//! Everything outside `private/` is public and is what gateway hosts read.

use std::path::{Path, PathBuf};

/// File name of the root certificate.
pub const ROOT_CERT: &str = "root-ca.crt";
/// Directory of secrets.
pub const PRIVATE_DIR: &str = "private";
/// File name of the encrypted root key inside [`PRIVATE_DIR`].
pub const ROOT_KEY: &str = "root-ca.key";
/// File name of the reference to a root key on a PKCS#11 token, inside
/// [`PRIVATE_DIR`] (instead of [`ROOT_KEY`]).
pub const TOKEN_CONFIG: &str = "pkcs11.json";
/// File name of the issuance database.
pub const DB_FILE: &str = "ca.db";
/// File name of the newest CRL.
pub const CRL_FILE: &str = "crl.pem";
/// Directory of partners.
pub const PEERS_DIR: &str = "peers";
/// The partner's bundle as received.
pub const PEER_BUNDLE: &str = "bundle.pem";
/// The partner's root certificate.
pub const PEER_ROOT: &str = "root.crt";
/// The cross-cert we issued the partner.
pub const ISSUED_BY_US: &str = "issued-by-us.crt";
/// The cross-cert the partner issued us.
pub const ISSUED_TO_US: &str = "issued-to-us.crt";

/// A Swaptacular partner's info-bundle as received (instead of [`PEER_BUNDLE`]).
pub const PEER_INFOBUNDLE: &str = "infobundle.zip";
/// A Swaptacular partner's STOMP servers manifest, from its info-bundle.
pub const PEER_STOMP: &str = "stomp.toml";
/// The subnet an accounting authority gave the partner (the `Subnet:` comment
/// of the cross-cert), kept so that no subnet is given twice.
pub const PEER_SUBNET: &str = "subnet.txt";
/// Our own node info (Swaptacular profile): what `export-bundle --format
/// swaptacular` puts into the info-bundle when no STOMP endpoint is given.
pub const NODEINFO_DIR: &str = "nodeinfo";

/// Directory of one partner inside a CA directory.
pub fn peer_dir(ca_dir: &Path, node_id: &str) -> PathBuf {
    ca_dir.join(PEERS_DIR).join(node_id)
}
