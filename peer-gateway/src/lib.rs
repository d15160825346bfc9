//! The peer gateway: keeps one authenticated, encrypted, reconnecting mutual-TLS
//! link to every active partner of a node, using the CA data that `ca-tool`
//! produces and the validator in `peerlink-pki` (through `peerlink-tls`), and moves messages between local
//! applications and partners exactly once.
//!
//! `docs/architecture.md` walks through the modules; [`server::run`] is where a
//! gateway process starts.

pub mod admin;
pub mod admission;
pub mod api;
pub mod backoff;
pub mod client;
pub mod config;
pub mod crl_store;
pub mod dialer;
pub mod expiry;
pub mod frame;
pub mod inflight;
pub mod keygen;
pub mod leases;
pub mod link;
pub mod listener;
pub mod metrics;
pub mod outbox_watch;
pub mod peers;
pub mod reload;
pub mod server;
pub mod signals;
pub mod socket;
pub mod stomp;
pub mod store;
pub mod tiebreak;
pub mod trust;
