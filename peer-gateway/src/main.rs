//! `peer-gateway`: the command line. Everything it runs lives in the
//! `peer_gateway` library; this file only parses arguments, sets up logging
//! and the runtime, and calls in.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use peer_gateway::{client, config, keygen, server};

/// Peer gateway for private mutual-TLS links between organizations.
///
/// Keeps one authenticated, encrypted, reconnecting link to every active partner
/// of a node, using the public part of the node's CA directory (made by
/// ca-tool), and moves messages between local applications and partners with
/// nothing lost or duplicated.
#[derive(Parser, Debug)]
#[command(
    name = "peer-gateway",
    version,
    about,
    long_about,
    after_long_help = "EXAMPLES:\n    peer-gateway keygen --node-dir /etc/peerlink/ca --out-key gw.key --out-csr gw.csr --cn gw1\n    peer-gateway run --config /etc/peerlink/gateway.toml\n    peer-gateway status\n    peer-gateway ping 3f0c5e0a9d3b4c1e8a7f6b5c4d3e2f10\n    echo hello | peer-gateway send --peer 3f0c5e0a9d3b4c1e8a7f6b5c4d3e2f10 --content-type text/plain\n    peer-gateway recv --wait 30 --ack\n    peer-gateway completions bash > /etc/bash_completion.d/peer-gateway\n\nFILES:\n    The configuration reference is docs/gateway.md; operations are in docs/operations.md.\n\nEXIT STATUS:\n    0 on success (run: after a clean shutdown on SIGTERM/SIGINT), 1 on error, 2 on usage errors."
)]
struct Cli {
    /// Log format on standard error: `human` (default) or `json` (one object per
    /// line, for log collectors). The level is set with PEERLINK_LOG (e.g. debug).
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log formats.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate the gateway's private key (0600) and a CSR for the node's DN.
    Keygen {
        /// The node's CA directory (public part); its root-ca.crt gives the DN.
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
        /// Where to write the private key.
        #[arg(long, value_name = "KEY")]
        out_key: PathBuf,
        /// Where to write the CSR for `ca-tool sign-server`.
        #[arg(long, value_name = "CSR")]
        out_csr: PathBuf,
        /// Optional common name added to the node's DN (e.g. the host name).
        #[arg(long, value_name = "NAME")]
        cn: Option<String>,
    },
    /// Run the gateway.
    Run {
        /// TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show every partner's link state.
    Status {
        /// Admin address of the gateway.
        #[arg(long, value_name = "HOST:PORT", default_value = config::DEFAULT_ADMIN_LISTEN)]
        admin: String,
        /// Print the JSON of GET /v1/status.
        #[arg(long)]
        json: bool,
    },
    /// Send one message to a partner through the local API (stdin with `-` or no FILE).
    Send {
        /// The partner's node id.
        #[arg(long)]
        peer: String,
        /// Media type kept end to end.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// Idempotency key: a retried send with the same id stores nothing new.
        #[arg(long)]
        message_id: Option<String>,
        /// API address of the gateway.
        #[arg(long, value_name = "HOST:PORT", default_value = config::DEFAULT_API_LISTEN)]
        api: String,
        /// File holding the API bearer token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The message body; `-` or absent: standard input.
        file: Option<PathBuf>,
    },
    /// Receive messages from the inbox (oldest first).
    Recv {
        /// Wait up to this many seconds for a message.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Most messages to fetch.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Acknowledge (remove) what was printed.
        #[arg(long)]
        ack: bool,
        /// Print the JSON of GET /v1/inbox.
        #[arg(long)]
        json: bool,
        /// API address of the gateway.
        #[arg(long, value_name = "HOST:PORT", default_value = config::DEFAULT_API_LISTEN)]
        api: String,
        /// File holding the API bearer token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Measure a round trip to a partner over its link.
    Ping {
        /// The partner's node id.
        peer_id: String,
        /// Admin address of the gateway.
        #[arg(long, value_name = "HOST:PORT", default_value = config::DEFAULT_ADMIN_LISTEN)]
        admin: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // Client commands (status, recv, ...) end quietly when stdout closes early.
        // Not for `run`: a daemon must survive writes to closed sockets.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "peer-gateway", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Each command's own error type; the binary only prints it.
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Keygen {
                node_dir,
                out_key,
                out_csr,
                cn,
            } => Ok(keygen::run(&node_dir, &out_key, &out_csr, cn.as_deref())?),
            Command::Run { config } => Ok(server::run(&config).await?),
            Command::Status { admin, json } => Ok(client::status(&admin, json).await?),
            Command::Ping { peer_id, admin } => Ok(client::ping(&admin, &peer_id).await?),
            Command::Send {
                peer,
                content_type,
                message_id,
                api,
                token_file,
                file,
            } => Ok(client::send(
                &api,
                token_file.as_deref(),
                &peer,
                &content_type,
                message_id.as_deref(),
                file.as_deref(),
            )
            .await?),
            Command::Completions { .. } => Ok(()),
            Command::Recv {
                wait,
                limit,
                ack,
                json,
                api,
                token_file,
            } => Ok(client::recv(&api, token_file.as_deref(), wait, limit, ack, json).await?),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
