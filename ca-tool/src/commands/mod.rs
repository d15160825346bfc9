//! One module per command.

pub mod bundle;
pub mod info;
pub mod init;
pub mod list;
pub mod peer;
pub mod revoke;
pub mod server;
pub mod verify;
