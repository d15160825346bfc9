//! Helpers for the end-to-end tests.
//!
//! The tests run the built binaries (`target/<profile>/ca-tool`, ...) the way an
//! operator would, plus `openssl` as the independent second opinion. Nothing here
//! builds anything: run `cargo build --workspace --bins` first (scripts/test does).
//!
//! What is where:
//!
//! | module | what |
//! |---|---|
//! | `command` | locating the binaries, running a command ([`Outcome`] and its assertions), running as an unprivileged user |
//! | `files` | permission bits, reading and writing files, directory [`Snapshot`]s |
//! | `ca` | a CA made with `ca-tool init` ([`CaFixture`]) |
//! | `x509` | openssl keys and CSRs, `openssl verify` and `ca-tool verify` of a chain |
//! | `pem` | PEM and base64, for tampering with files |
//! | [`gateway`] | a network of nodes and their `peer-gateway` processes ([`gateway::Net`]) |
//! | [`messaging`] | the gateway's API for local applications, message stores, test messages |
//! | [`traffic`] | the producers, consumers and verdict of the crash tests |
//! | [`raw_peer`] | a peer link driven by hand, writing `peerlink/1` frames itself |
//! | [`netns`] | network namespaces with a NAT router, for dead-link tests |
//! | [`swpt`] | Swaptacular's swpt_stomp in a RabbitMQ vhost, and our gateway standing in for it |
//!
//! The items of the first five are re-exported here (`use peerlink_e2e::*`).

/// The passphrase the fixtures use (as an operator's file holds it: one line).
pub const PASSPHRASE: &str = "correct horse battery\n";
/// A passphrase that does not decrypt the fixtures' keys.
pub const WRONG_PASSPHRASE: &str = "incorrect horse battery\n";

/// uid/gid the unprivileged tests switch to when running as root (`nobody`).
pub const NOBODY: u32 = 65534;

/// Converts a mixed list of `&str`, `&Path`, `String`, `PathBuf` into arguments.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from($a)),*] as Vec<::std::ffi::OsString>
    };
}

mod ca;
mod command;
mod files;
mod pem;
mod x509;

pub use ca::*;
pub use command::*;
pub use files::*;
pub use pem::*;
pub use x509::*;

pub mod gateway;
pub mod messaging;
pub mod netns;
pub mod raw_peer;
pub mod swpt;
pub mod traffic;
