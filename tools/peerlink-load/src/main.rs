//! Load generator for `scripts/bench` (see docs/benchmarks.md): drives running
//! gateways through their HTTP API and peer port, and measures in-process
//! baselines (a raw tokio-rustls echo, the disk's fsync rate) in the same run.
//!
//! Every subcommand prints one JSON object on stdout (progress goes to stderr);
//! `scripts/bench` parses it, so its shape is an interface. This is a measuring
//! tool, not a test: it checks only what it needs to count.
//!
//! One module per job: [`load`] (throughput and latency through two gateways),
//! [`baseline`] (TLS echo, fsync), [`fleet_gen`] and [`fleet_link`] (one gateway
//! with many partners), [`http`] (the API client) and [`stats`] (percentiles,
//! memory and CPU of a process).

mod baseline;
mod error;
mod fleet_gen;
mod fleet_link;
mod http;
mod load;
mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use error::Result;

#[derive(Parser)]
#[command(about = "Load generator and in-process baselines for scripts/bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw TLS 1.3 echo over loopback TCP: pipelined throughput and sequential RTT.
    Echo {
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 20_000)]
        count: usize,
    },
    /// Rate of 1 KiB write + fsync appended to one file in DIR.
    Fsync {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Durable end-to-end throughput A -> B through the batch API, with the
    /// fsync rate and the TLS echo measured before and after.
    Throughput(load::throughput::Args),
    /// End-to-end latency at fixed offered loads (open loop, single-message POSTs
    /// on A, long-poll + ack on B).
    Latency(load::latency::Args),
    /// Makes N partner identities in memory with peerlink_ca::profiles (what `ca-tool
    /// init`, `export-bundle` and `sign-server` do), for `ca-tool sign-peer`.
    FleetGen {
        #[arg(long)]
        n: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Links N in-process partners to one gateway; measures memory per idle link,
    /// time to link all, idle CPU and status API latency.
    FleetLink(fleet_link::Args),
}

async fn run(command: Command) -> Result<Value> {
    match command {
        Command::Echo { size, count } => {
            let (tput, rtt) = (
                baseline::echo_throughput(size, count).await?,
                baseline::echo_rtt(size, 2000).await?,
            );
            Ok(json!({"size": size, "echo_msgs_per_s": tput, "rtt": rtt}))
        }
        Command::Fsync { dir, seconds } => {
            Ok(json!({"fsync_per_s": baseline::fsync_rate(&dir, seconds).await?}))
        }
        Command::Throughput(args) => load::throughput::run(&args).await,
        Command::Latency(args) => load::latency::run(&args).await,
        Command::FleetGen { n, out } => fleet_gen::run(n, &out).await,
        Command::FleetLink(args) => fleet_link::run(args).await,
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peerlink-load: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt
        .block_on(run(cli.command))
        .and_then(|v| Ok(serde_json::to_string_pretty(&v)?));
    match result {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("peerlink-load: {e}");
            std::process::exit(1);
        }
    }
}
