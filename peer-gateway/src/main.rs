//! `peer-gateway`: keeps authenticated, reconnecting mutual-TLS links to every
//! active peer of a node. The link layer arrives with issue 3; this binary only
//! states that, so that nobody mistakes it for a working gateway.

use std::process::ExitCode;

use clap::Parser;

/// Peer gateway for private mutual-TLS links (not yet implemented: see issue 3).
#[derive(Parser, Debug)]
#[command(name = "peer-gateway", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("peer-gateway: the link layer is not implemented yet (issue 3); use ca-tool to prepare CA data");
    ExitCode::from(2)
}
