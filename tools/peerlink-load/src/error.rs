//! Why a measurement could not be made. Every subcommand stops at its first
//! error and prints it (`peerlink-load: ...`, exit status 1): a benchmark with a
//! hole in it would be worse than none.

use std::num::{ParseFloatError, ParseIntError};
use std::path::PathBuf;

/// Everything that can stop a subcommand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket, file or /proc read failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A gateway's HTTP API failed or refused a request.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// A gateway answered with JSON we could not read.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A worker task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The echo baseline's TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// The echo baseline's server name.
    #[error(transparent)]
    ServerName(#[from] rustls::pki_types::InvalidDnsNameError),
    /// A certificate made with rcgen (echo baseline, partners' CSRs).
    #[error(transparent)]
    Certificate(#[from] rcgen::Error),
    /// A link frame could not be sent or read.
    #[error(transparent)]
    Frame(#[from] peer_gateway::frame::FrameError),
    /// A DER name that x509-parser could not read.
    #[error(transparent)]
    X509(#[from] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// A certificate or key file of a partner or of the gateway.
    #[error(transparent)]
    PemFile(#[from] peerlink_pki::pemfile::LoadError),
    /// A node identity (DN, node id) could not be made or read.
    #[error(transparent)]
    Identity(#[from] peerlink_pki::identity::IdentityError),
    /// A partner's key could not be generated or encoded.
    #[error(transparent)]
    Key(#[from] peerlink_pki::keys::KeyError),
    /// A partner's root or gateway certificate could not be issued.
    #[error(transparent)]
    Issue(#[from] peerlink_ca::profiles::IssueError),
    /// A partner's gateway CSR did not verify.
    #[error(transparent)]
    Csr(#[from] peerlink_ca::csr::CsrError),
    /// A partner's bundle could not be exported.
    #[error(transparent)]
    Bundle(#[from] peerlink_ca::bundle::BundleError),
    /// The gateway's or a partner's trust could not be loaded.
    #[error(transparent)]
    Trust(#[from] peerlink_tls::TrustError),
    /// A `PeerTls` could not be built.
    #[error(transparent)]
    TlsSetup(#[from] peerlink_tls::TlsSetupError),
    /// A partner's TLS handshake with the gateway failed.
    #[error(transparent)]
    Handshake(#[from] peerlink_tls::HandshakeError),
    /// A number in a list argument (`--runs`, `--rates`).
    #[error(transparent)]
    ParseInt(#[from] ParseIntError),
    /// A number in a list argument (`--rates`).
    #[error(transparent)]
    ParseFloat(#[from] ParseFloatError),
    /// `--runs` entries are `SIZE:COUNT`.
    #[error("--runs wants SIZE:COUNT")]
    RunSpec,
    /// The echo server sent back something other than what was sent.
    #[error("echo framing broke")]
    EchoFraming,
    /// The latency phase's schedule outlived its senders.
    #[error("senders gone")]
    SendersGone,
    /// A throughput run's messages did not all reach B in time.
    #[error("only {arrived} of {count} messages arrived")]
    NotArrived { arrived: u64, count: usize },
    /// A gateway's /metrics did not answer 200.
    #[error("/metrics: HTTP {0}")]
    MetricsStatus(u16),
    /// A gateway's /metrics lacks a metric the measurement reads.
    #[error("no {0} in /metrics")]
    NoMetric(&'static str),
    /// /proc/PID/status without a resident set size.
    #[error("no VmRSS")]
    NoRss,
    /// fleet-link was asked for more partners than fleet-gen + sign-peer made.
    #[error("only {found} signed partners in {}", dir.display())]
    FleetTooSmall { found: usize, dir: PathBuf },
    /// A partner's link did not get to Hello.
    #[error("expected hello, got {0}")]
    NoHello(String),
    /// A partner's connection closed before the gateway's Hello.
    #[error("closed before hello")]
    ClosedBeforeHello,
    /// Some partners could not link.
    #[error("{failed} of {total} partners failed to link, e.g. {example}")]
    LinkFailures {
        failed: usize,
        total: usize,
        example: String,
    },
    /// The gateway's status never showed every partner connected.
    #[error("gateway shows {seen} of {n} connected")]
    NotAllConnected { seen: usize, n: usize },
}

/// The result of every fallible step of a measurement.
pub type Result<T> = std::result::Result<T, Error>;
