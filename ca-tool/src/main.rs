//! `ca-tool`: the offline root CA of a peer-link node.
//!
//! Runs on an air-gapped laptop: no command touches the network, the root key
//! is only ever stored encrypted, and every command either completes or leaves
//! the CA directory exactly as it was.

mod cadir;
mod commands;
mod error;
mod passphrase;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Offline root CA for private mutual-TLS peer links.
///
/// A CA directory holds the root certificate, the passphrase-encrypted root key
/// under private/ (or, for a root key on a PKCS#11 token, the reference to it),
/// the issuance database and the partners. Everything outside private/ is public
/// and is what gateway hosts read.
#[derive(Parser, Debug)]
#[command(
    name = "ca-tool",
    version,
    about,
    long_about,
    after_long_help = "EXAMPLES:\n    ca-tool init --dir ca --org \"My Network\" --unit creditors\n    ca-tool init --dir ca --profile swaptacular --node-type creditors-agent\n    ca-tool info --dir ca\n    ca-tool export-bundle --dir ca --out me.bundle --endpoint gw.example.org:7443\n    ca-tool show-bundle --bundle partner.bundle\n    ca-tool sign-peer --dir ca --bundle partner.bundle --out partner-cross.crt --expect-fingerprint 'AB12 CD34 ...'\n    ca-tool export-bundle --dir ca --format swaptacular --out me.zip --stomp-endpoint stomp.example.org:1234\n    ca-tool import-swaptacular --from swpt-ca --dir ca\n    ca-tool register-peer --dir ca --bundle partner.bundle --cert me-by-partner.crt\n    ca-tool sign-server --dir ca --csr gateway.csr --out gateway.crt\n    ca-tool revoke --dir ca --peer <node id> --reason key-compromise\n    ca-tool verify --anchor ca/root-ca.crt --untrusted cross.crt --purpose client gateway.crt\n    ca-tool completions bash > /etc/bash_completion.d/ca-tool\n\nFILES:\n    DIR/root-ca.crt, DIR/private/root-ca.key (or DIR/private/pkcs11.json), DIR/ca.db, DIR/crl.pem, DIR/peers/<id>/. See docs/ca-tool.md and docs/operations.md.\n\nEXIT STATUS:\n    0 success; 1 refused or failed, nothing changed; 2 usage error; 3 verify found the chain invalid."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the passphrase comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct PassphraseArg {
    /// Read the root key passphrase (for a root key on a PKCS#11 token: the token's user PIN)
    /// from this file (first line); otherwise ask on the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// Where our STOMP servers are, for a Swaptacular info-bundle's `stomp.toml`.
#[derive(clap::Args, Debug, Clone)]
pub struct StompArgs {
    /// Our STOMP server HOST:PORT, as Swaptacular peers should dial it (repeatable; with
    /// --format swaptacular). Default: DIR/nodeinfo/stomp.toml, if there is one.
    #[arg(
        long = "stomp-endpoint",
        id = "stomp_endpoints",
        value_name = "HOST:PORT"
    )]
    pub endpoints: Vec<String>,
    /// The CONNECT `host` header peers send.
    #[arg(long, value_name = "HOST", default_value = "/")]
    pub stomp_host: String,
    /// The SEND `destination` header peers use [default: by node type, as init-ca writes it].
    #[arg(long, value_name = "DEST", requires = "stomp_endpoints")]
    pub stomp_destination: Option<String>,
}

/// Key types for `init`.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum KeyTypeArg {
    /// ECDSA P-256 (default)
    EcdsaP256,
    /// ECDSA P-384
    EcdsaP384,
    /// Ed25519
    Ed25519,
    /// RSA 2048
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA 3072 (Swaptacular's choice)
    #[value(name = "rsa-3072")]
    Rsa3072,
    /// RSA 4096
    #[value(name = "rsa-4096")]
    Rsa4096,
}

/// Certificate profiles for `init`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileArg {
    /// The project's own profile (design.md).
    Default,
    /// A root that Swaptacular nodes (swpt_ca_scripts) accept; see docs/swaptacular.md.
    Swaptacular,
}

/// Swaptacular node types.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum NodeTypeArg {
    /// OU=Accounting Authorities; --node-id is its 8-hex-digit debtor-id prefix.
    AccountingAuthority,
    /// OU=Creditors Agents; the node id is derived from the root key.
    CreditorsAgent,
    /// OU=Debtors Agents; the node id is derived from the root key.
    DebtorsAgent,
}

impl NodeTypeArg {
    /// The node type it names.
    pub fn node_type(self) -> peerlink_pki::swaptacular::NodeType {
        use peerlink_pki::swaptacular::NodeType;
        match self {
            NodeTypeArg::AccountingAuthority => NodeType::AccountingAuthority,
            NodeTypeArg::CreditorsAgent => NodeType::CreditorsAgent,
            NodeTypeArg::DebtorsAgent => NodeType::DebtorsAgent,
        }
    }
}

/// Bundle formats for `export-bundle`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    /// The project's text bundle (docs/bundle-format.md).
    Peerlink,
    /// A Swaptacular info-bundle zip, as swpt_ca_scripts' create-infobundle writes it.
    Swaptacular,
}

/// Purposes for `verify`.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum PurposeArg {
    /// TLS client (EKU clientAuth): a dialing peer's gateway
    Client,
    /// TLS server (EKU serverAuth): a gateway being dialed
    Server,
    /// No leaf purpose checks (e.g. to verify a cross-certificate)
    Any,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Create a new root CA (refuses to touch an existing one).
    Init {
        /// CA directory to create (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Network or registry name (O); with --profile swaptacular it is set by the profile.
        #[arg(
            long,
            required_unless_present = "node_type",
            conflicts_with = "node_type"
        )]
        org: Option<String>,
        /// Role of this node (OU); with --profile swaptacular it is set by the profile.
        #[arg(
            long,
            required_unless_present = "node_type",
            conflicts_with = "node_type"
        )]
        unit: Option<String>,
        /// Certificate profile: `default`, or `swaptacular` (a root Swaptacular nodes accept:
        /// O=Swaptacular Nodes Registry, OU from --node-type, RSA-3072, about 1000 years).
        #[arg(long, value_enum, default_value = "default")]
        profile: ProfileArg,
        /// Swaptacular node type (with --profile swaptacular).
        #[arg(long, value_enum)]
        node_type: Option<NodeTypeArg>,
        /// Explicit node id (serialNumber); default: hex of the first 16 bytes of SHA-256 of the
        /// root key. A Swaptacular accounting authority gives its 8-hex-digit debtor-id prefix.
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
        /// Root key type [default: ecdsa-p256; rsa-3072 with --profile swaptacular].
        #[arg(long, value_enum)]
        key_type: Option<KeyTypeArg>,
        /// Validity of the root certificate in days [default: 3650; 365000 with --profile swaptacular].
        #[arg(long)]
        days: Option<u32>,
        /// Generate the root key on a PKCS#11 token through this module (shared library,
        /// e.g. /usr/lib/softhsm/libsofthsm2.so) instead of an encrypted key file.
        #[arg(long, value_name = "PATH", requires = "token_label")]
        pkcs11_module: Option<PathBuf>,
        /// Label of the token to generate the root key on (with --pkcs11-module).
        #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
        token_label: Option<String>,
        /// Label (CKA_LABEL) of the key pair generated on the token [default: peerlink-root].
        #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
        key_label: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Show this node's identity: DN, node id, fingerprint, validity, counts.
    Info {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the bundle to send to partners: root certificate plus signed node info.
    ExportBundle {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Gateway endpoint HOST:PORT partners should dial (repeatable).
        #[arg(long = "endpoint", value_name = "HOST:PORT")]
        endpoints: Vec<String>,
        /// Bundle format: `peerlink` (text) or `swaptacular` (an info-bundle zip).
        #[arg(long, value_enum, default_value = "peerlink")]
        format: FormatArg,
        #[command(flatten)]
        stomp: StompArgs,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Check a partner's bundle and print its identity, without changing anything.
    ShowBundle {
        /// The partner's bundle.
        #[arg(long, value_name = "FILE")]
        bundle: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Verify a partner's bundle and issue their cross-certificate (name-constrained sub-CA).
    SignPeer {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The partner's bundle.
        #[arg(long, value_name = "FILE")]
        bundle: PathBuf,
        /// Where to write the cross-certificate for the partner.
        #[arg(long, value_name = "CERT")]
        out: PathBuf,
        /// Validity in days, capped at both roots' expiry [default: 1825; for a Swaptacular
        /// partner 365000, as its register-peer wants at least 500 years].
        #[arg(long)]
        days: Option<u32>,
        /// The subnet an accounting authority gives a Swaptacular agent (6 hex digits for a
        /// creditors agent; 8 to 16 starting with our id for a debtors agent), written into
        /// the cross-certificate as the comment `Subnet: <HEX>`.
        #[arg(long, value_name = "HEX")]
        subnet: Option<String>,
        /// Refuse unless the partner's root fingerprint is this (as read over the phone).
        #[arg(long, value_name = "SHA256")]
        expect_fingerprint: Option<String>,
        /// Allow signing a partner we revoked before (same root key).
        #[arg(long)]
        reactivate: bool,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Store the cross-certificate a partner issued to us, after checking it.
    RegisterPeer {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The partner's bundle.
        #[arg(long, value_name = "FILE")]
        bundle: PathBuf,
        /// The cross-certificate the partner issued to us.
        #[arg(long, value_name = "CERT")]
        cert: PathBuf,
    },
    /// Migrate a swpt_ca_scripts CA (a Swaptacular node) into a new ca-tool CA directory.
    ///
    /// The root key is re-encrypted as PKCS#8 with a new passphrase; issued certificates
    /// and partners go into the issuance database, so no partner has to exchange
    /// certificates again. The original directory is only read.
    ImportSwaptacular {
        /// The swpt_ca_scripts directory (holds root-ca.crt, private/root-ca.key, db/, peers/).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The new CA directory (must not exist, or be empty).
        #[arg(long, value_name = "NEW")]
        dir: PathBuf,
        /// Read the passphrase of the Swaptacular root key from this file (first line);
        /// otherwise ask on the terminal.
        #[arg(long, value_name = "FILE")]
        from_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Sign a gateway's CSR with the server profile.
    SignServer {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CSR (PEM or DER).
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Where to write the certificate.
        #[arg(long, value_name = "CERT")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// List partners and issued certificates.
    List {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate or every certificate of a partner, and publish a new CRL.
    Revoke {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Serial number (hex) of the certificate to revoke.
        #[arg(
            long,
            value_name = "HEX",
            conflicts_with = "peer",
            required_unless_present = "peer"
        )]
        serial: Option<String>,
        /// Node id of the partner to revoke.
        #[arg(long, value_name = "NODE_ID")]
        peer: Option<String>,
        /// Reason: unspecified, key-compromise, ca-compromise, affiliation-changed,
        /// superseded, cessation-of-operation, privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// Validity of the new CRL in days.
        #[arg(long, default_value_t = 30)]
        crl_days: u32,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Publish a CRL (X.509 v2, CRL number, AKI).
    Crl {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Output file (DIR/crl.pem is updated too).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Days until nextUpdate.
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Validate a chain with the gateway's validator and print the reason for any rejection.
    Verify {
        /// The only trust anchor.
        #[arg(long, value_name = "FILE")]
        anchor: PathBuf,
        /// Untrusted intermediate certificates (repeatable; files may hold several).
        #[arg(long, value_name = "FILE")]
        untrusted: Vec<PathBuf>,
        /// CRLs to apply (repeatable).
        #[arg(long, value_name = "FILE")]
        crl: Vec<PathBuf>,
        /// Validation time (RFC 3339); default now.
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// What the leaf must be good for.
        #[arg(long, value_enum, default_value = "any")]
        purpose: PurposeArg,
        /// The certificate to verify.
        leaf: PathBuf,
    },
}

/// Lets a closed stdout (`ca-tool list | head -1`) end the process quietly, as
/// other command-line tools do, instead of a panic on the failed write.
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "ca-tool", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(u8::try_from(e.code).unwrap_or(1))
        }
    }
}

async fn run(command: Command) -> error::CliResult {
    use commands::*;
    match command {
        Command::Completions { .. } => Ok(()),
        Command::Init {
            dir,
            org,
            unit,
            profile,
            node_type,
            node_id,
            key_type,
            days,
            pkcs11_module,
            token_label,
            key_label,
            passphrase,
        } => {
            let naming = init::Naming::from_args(profile, node_type, org, unit)?;
            let token = match (pkcs11_module, token_label) {
                (Some(module), Some(token_label)) => Some(init::TokenArgs {
                    module,
                    token_label,
                    key_label: key_label
                        .unwrap_or_else(|| peerlink_ca::hsm::DEFAULT_KEY_LABEL.to_string()),
                }),
                _ => None,
            };
            init::run(
                &dir,
                &naming,
                node_id.as_deref(),
                key_type,
                days,
                token.as_ref(),
                &passphrase,
            )
            .await
        }
        Command::Info { dir, json } => info::run(&dir, json).await,
        Command::ExportBundle {
            dir,
            out,
            endpoints,
            format,
            stomp,
            passphrase,
        } => match format {
            FormatArg::Peerlink => {
                if !stomp.endpoints.is_empty() {
                    return Err(error::CliError::new(
                        "--stomp-endpoint is for --format swaptacular; peerlink bundles take --endpoint",
                    ));
                }
                bundle::export(&dir, &out, &endpoints, &passphrase).await
            }
            FormatArg::Swaptacular => {
                if !endpoints.is_empty() {
                    return Err(error::CliError::new(
                        "--endpoint is for peerlink bundles; a Swaptacular info-bundle names STOMP servers: use --stomp-endpoint",
                    ));
                }
                swaptacular::export(&dir, &out, &stomp, &passphrase).await
            }
        },
        Command::ShowBundle { bundle, json } => bundle::show(&bundle, json),
        Command::SignPeer {
            dir,
            bundle,
            out,
            days,
            subnet,
            expect_fingerprint,
            reactivate,
            passphrase,
        } => {
            peer::sign(
                &dir,
                &bundle,
                &out,
                &peer::SignOptions {
                    days,
                    subnet,
                    expect_fingerprint,
                    reactivate,
                },
                &passphrase,
            )
            .await
        }
        Command::ImportSwaptacular {
            from,
            dir,
            from_passphrase_file,
            passphrase,
        } => import::run(&from, &dir, from_passphrase_file.as_deref(), &passphrase).await,
        Command::RegisterPeer { dir, bundle, cert } => peer::register(&dir, &bundle, &cert).await,
        Command::SignServer {
            dir,
            csr,
            out,
            days,
            passphrase,
        } => server::sign(&dir, &csr, &out, days, &passphrase).await,
        Command::List { dir, json } => list::run(&dir, json).await,
        Command::Revoke {
            dir,
            serial,
            peer,
            reason,
            crl_days,
            passphrase,
        } => {
            revoke::revoke(
                &dir,
                serial.as_deref(),
                peer.as_deref(),
                &reason,
                crl_days,
                &passphrase,
            )
            .await
        }
        Command::Crl {
            dir,
            out,
            days,
            passphrase,
        } => revoke::crl(&dir, &out, days, &passphrase).await,
        Command::Verify {
            anchor,
            untrusted,
            crl,
            at,
            purpose,
            leaf,
        } => verify::run(&anchor, &untrusted, &crl, at.as_deref(), purpose, &leaf),
    }
}
