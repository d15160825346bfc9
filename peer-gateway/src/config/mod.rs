//! The gateway's TOML configuration.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default),
//! and every error names the file, the key and the line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod link;
mod stomp;

pub use link::*;
pub use stomp::{Protocol, StompSettings};

/// Default admin address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7480";
/// Default address of the API for local applications: loopback only.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8080";
/// Default largest message body.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Syntax or type error, with line and key from the TOML parser.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the line, column and key.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("config {path}: key `{key}`{line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The offending key.
        key: String,
        /// " (line N)" when known.
        line: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_dir: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    listen: String,
    #[serde(default)]
    admin_listen: Option<String>,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    api_listen: Option<String>,
    #[serde(default)]
    api_token_file: Option<PathBuf>,
    #[serde(default)]
    max_message_bytes: Option<usize>,
    #[serde(default)]
    max_outbox_messages: Option<i64>,
    #[serde(default)]
    expiry_warning_days: Option<Vec<u32>>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    link: LinkConfig,
    #[serde(default)]
    peers: BTreeMap<String, RawPeer>,
    #[serde(default)]
    stomp: stomp::RawStomp,
}

/// `[peers."<node id>"]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default)]
    stomp_host: Option<String>,
    #[serde(default)]
    stomp_destination: Option<String>,
    #[serde(default)]
    stomp_login: Option<String>,
    #[serde(default)]
    stomp_passcode: Option<String>,
}

/// `[peers."<node id>"]`: per-peer overrides.
#[derive(Debug, Clone, Default)]
pub struct PeerOverride {
    /// Endpoints to dial instead of those in the peer's bundle.
    pub endpoints: Vec<String>,
}

/// A checked configuration with paths resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public part of the CA directory.
    pub node_dir: PathBuf,
    /// Server certificate.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Listener for peers.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Database URL: `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// Listener of the API for local applications.
    pub api_listen: SocketAddr,
    /// Bearer token required by the API, if configured.
    pub api_token: Option<String>,
    /// Largest message body accepted.
    pub max_message_bytes: usize,
    /// Most undelivered messages per peer before the API answers 503.
    pub max_outbox_messages: i64,
    /// Warn when a certificate is this many days (or fewer) from expiry.
    pub expiry_warning_days: Vec<u32>,
    /// Where the gateway keeps state (partners' CRLs).
    pub state_dir: PathBuf,
    /// Link tuning.
    pub link: LinkConfig,
    /// Per-peer overrides.
    pub peers: BTreeMap<String, PeerOverride>,
    /// Which partners speak swpt-stomp, and how (`[stomp]`, `[peers."<id>"]`).
    pub stomp: StompSettings,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: display.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: display.clone(),
            key: key.to_string(),
            line: line_of(text, key).map_or(String::new(), |n| format!(" (line {n})")),
            message,
        };
        let addr = |key: &str, value: &str| -> Result<SocketAddr, ConfigError> {
            value.parse().map_err(|_| {
                invalid(
                    key,
                    format!("{value:?} is not an IP:PORT address (e.g. 127.0.0.1:7443)"),
                )
            })
        };
        let listen = addr("listen", &raw.listen)?;
        let admin_listen = addr(
            "admin_listen",
            raw.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
        )?;
        let api_listen = addr(
            "api_listen",
            raw.api_listen.as_deref().unwrap_or(DEFAULT_API_LISTEN),
        )?;
        let api_token = match &raw.api_token_file {
            None => None,
            Some(p) => {
                let path = resolve(p);
                let text = read_token_file(&path).map_err(|e| {
                    invalid(
                        "api_token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let token = text.trim().to_string();
                if token.len() < 16 {
                    return Err(invalid(
                        "api_token_file",
                        "the token must be at least 16 characters".into(),
                    ));
                }
                Some(token)
            }
        };
        let max_message_bytes = raw.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes == 0 || max_message_bytes + 1024 > raw.link.max_frame_bytes as usize {
            return Err(invalid(
                "max_message_bytes",
                format!(
                    "must be between 1 and link.max_frame_bytes - 1024 ({})",
                    raw.link.max_frame_bytes.saturating_sub(1024)
                ),
            ));
        }
        let max_outbox_messages = raw.max_outbox_messages.unwrap_or(100_000);
        if max_outbox_messages < 1 {
            return Err(invalid("max_outbox_messages", "must be at least 1".into()));
        }
        let l = &raw.link;
        let rate_ok = l.handshakes_per_source_per_second.is_finite()
            && l.handshakes_per_source_per_second > 0.0;
        let burst_ok =
            l.handshake_burst_per_source.is_finite() && l.handshake_burst_per_source >= 1.0;
        if !rate_ok || !burst_ok {
            return Err(invalid(
                "handshakes_per_source_per_second",
                "handshakes_per_source_per_second must be positive and handshake_burst_per_source at least 1".into(),
            ));
        }
        for (key, value) in [
            ("max_handshakes_per_source", l.max_handshakes_per_source),
            ("max_concurrent_handshakes", l.max_concurrent_handshakes),
            ("accept_backlog", l.accept_backlog as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, format!("{key} must be at least 1")));
            }
        }
        if raw.link.window_frames == 0 || raw.link.window_bytes < max_message_bytes {
            return Err(invalid(
                "window_bytes",
                "window_frames must be positive and window_bytes at least max_message_bytes".into(),
            ));
        }
        if !admin_listen.ip().is_loopback() {
            tracing::warn!(admin_listen = %admin_listen, "the admin API is reachable beyond loopback");
        }
        let l = &raw.link;
        for (key, value) in [
            ("link.heartbeat_ms", l.heartbeat_ms),
            ("link.handshake_timeout_ms", l.handshake_timeout_ms),
            ("link.connect_timeout_ms", l.connect_timeout_ms),
            ("link.backoff_base_ms", l.backoff_base_ms),
            ("link.reload_poll_ms", l.reload_poll_ms),
        ] {
            if value == 0 {
                return Err(invalid(
                    key.rsplit('.').next().unwrap_or(key),
                    format!("{key} must be greater than 0"),
                ));
            }
        }
        let heartbeat_range =
            u64::from(crate::frame::MIN_HEARTBEAT_MS)..=u64::from(crate::frame::MAX_HEARTBEAT_MS);
        if !heartbeat_range.contains(&l.heartbeat_ms) {
            return Err(invalid(
                "heartbeat_ms",
                format!(
                    "must be between {} and {}",
                    heartbeat_range.start(),
                    heartbeat_range.end()
                ),
            ));
        }
        if l.backoff_cap_ms < l.backoff_base_ms {
            return Err(invalid(
                "backoff_cap_ms",
                "must be at least backoff_base_ms".into(),
            ));
        }
        if l.dead_after_heartbeats < 2 {
            return Err(invalid(
                "dead_after_heartbeats",
                "must be at least 2".into(),
            ));
        }
        if l.max_frame_bytes < crate::frame::MIN_MAX_PAYLOAD {
            return Err(invalid(
                "max_frame_bytes",
                format!("must be at least {}", crate::frame::MIN_MAX_PAYLOAD),
            ));
        }
        let text_value = |key: &str, value: &Option<String>| -> Result<(), ConfigError> {
            match value {
                Some(v) if v.is_empty() || v.len() > 400 || v.chars().any(char::is_control) => {
                    Err(invalid(
                        key,
                        "must be 1 to 400 characters without control characters".into(),
                    ))
                }
                _ => Ok(()),
            }
        };
        let mut peers = BTreeMap::new();
        let mut stomp_peers = BTreeMap::new();
        for (id, o) in raw.peers {
            peerlink_pki::identity::check_node_id(&id).map_err(|e| invalid(&id, e.to_string()))?;
            for e in &o.endpoints {
                peerlink_pki::endpoint::check_endpoint(e)
                    .map_err(|err| invalid("endpoints", err.to_string()))?;
            }
            text_value("stomp_host", &o.stomp_host)?;
            text_value("stomp_destination", &o.stomp_destination)?;
            text_value("stomp_login", &o.stomp_login)?;
            text_value("stomp_passcode", &o.stomp_passcode)?;
            stomp_peers.insert(
                id.clone(),
                stomp::PeerStomp {
                    protocol: o.protocol,
                    host: o.stomp_host,
                    destination: o.stomp_destination,
                    login: o.stomp_login,
                    passcode: o.stomp_passcode,
                },
            );
            peers.insert(
                id,
                PeerOverride {
                    endpoints: o.endpoints,
                },
            );
        }
        let rs = raw.stomp;
        text_value("destination", &rs.destination)?;
        let heartbeat_ms = rs.heartbeat_ms.unwrap_or(stomp::DEFAULT_STOMP_HEARTBEAT_MS);
        if !(100..=600_000).contains(&heartbeat_ms) {
            return Err(invalid("heartbeat_ms", "must be 100 to 600000".into()));
        }
        let window = rs.window.unwrap_or(stomp::DEFAULT_STOMP_WINDOW);
        if !(1..=10_000).contains(&window) {
            return Err(invalid("window", "must be 1 to 10000".into()));
        }
        let stomp = StompSettings {
            listen: rs
                .listen
                .as_deref()
                .map(|l| addr("listen", l))
                .transpose()?,
            destination: rs.destination,
            default_protocol: rs.default_protocol,
            peers: stomp_peers,
            heartbeat_ms,
            window,
        };
        let database_url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", base.join("gateway.db").display()));
        Ok(Config {
            node_dir: resolve(&raw.node_dir),
            server_cert: resolve(&raw.server_cert),
            server_key: resolve(&raw.server_key),
            listen,
            admin_listen,
            database_url,
            api_listen,
            api_token,
            max_message_bytes,
            max_outbox_messages,
            expiry_warning_days: raw.expiry_warning_days.unwrap_or_else(|| vec![30, 7]),
            state_dir: resolve(raw.state_dir.as_deref().unwrap_or(Path::new("state"))),
            link: raw.link,
            peers,
            stomp,
        })
    }
}

/// Largest `api_token_file` accepted: a token is one line.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Reads the API token file: a regular file of at most
/// [`MAX_TOKEN_FILE_BYTES`], so that a mistyped path (`/dev/zero`, a FIFO, a
/// log file) fails at once instead of hanging or exhausting memory.
fn read_token_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_TOKEN_FILE_BYTES} bytes"),
        ));
    }
    Ok(text)
}

/// The 1-based line on which `key` is assigned, for error messages.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "node_dir = \"ca\"\nserver_cert = \"gw.crt\"\nserver_key = \"gw.key\"\nlisten = \"127.0.0.1:7443\"\n";

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let c = Config::parse(MINIMAL, Path::new("/etc/gw/gateway.toml")).unwrap();
        assert_eq!(c.node_dir, PathBuf::from("/etc/gw/ca"));
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.state_dir, PathBuf::from("/etc/gw/state"));
        assert_eq!(c.link.heartbeat_ms, 5000);
        assert!(c.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let text = format!("{MINIMAL}hearbeat_ms = 5\n");
        let err = Config::parse(&text, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 5") && err.contains("hearbeat_ms"),
            "{err}"
        );
    }

    #[test]
    fn bad_address_names_key_and_line() {
        let text = MINIMAL.replace("127.0.0.1:7443", "localhost");
        let err = Config::parse(&text, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listen`") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_dir"), "{err}");
    }

    /// Found by fuzzing (config_parser): `api_token_file = "/dev/zero"` made
    /// `Config::parse` read until memory ran out.
    #[test]
    fn token_file_must_be_a_small_regular_file() {
        let dev_zero = format!("{MINIMAL}api_token_file = \"/dev/zero\"\n");
        let err = Config::parse(&dev_zero, Path::new("/tmp/g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("api_token_file") && err.contains("not a regular file"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.token");
        std::fs::write(&big, "x".repeat(MAX_TOKEN_FILE_BYTES as usize + 1)).unwrap();
        let text = format!("{MINIMAL}api_token_file = \"big.token\"\n");
        let err = Config::parse(&text, &dir.path().join("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than"), "{err}");

        let ok = dir.path().join("ok.token");
        std::fs::write(&ok, "0123456789abcdef0123\n").unwrap();
        let text = format!("{MINIMAL}api_token_file = \"ok.token\"\n");
        let c = Config::parse(&text, &dir.path().join("g.toml")).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn peer_overrides_and_link_tuning() {
        let text = format!(
            "{MINIMAL}[link]\nheartbeat_ms = 1000\n[peers.\"abc\"]\nendpoints = [\"127.0.0.1:9\"]\n"
        );
        let c = Config::parse(&text, Path::new("g.toml")).unwrap();
        assert_eq!(c.link.heartbeat_ms, 1000);
        assert_eq!(c.peers["abc"].endpoints, vec!["127.0.0.1:9".to_string()]);
        let bad = format!("{MINIMAL}[link]\nheartbeat_ms = 0\n");
        let err = Config::parse(&bad, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("heartbeat_ms") && err.contains("line 6"),
            "{err}"
        );
    }

    #[test]
    fn who_speaks_swpt_stomp_own_setting_then_default_then_manifest() {
        let text = format!(
            "{MINIMAL}[stomp]\nlisten = \"127.0.0.1:1234\"\n\
             [peers.\"a\"]\nprotocol = \"swpt-stomp\"\nstomp_host = \"/${{NODE_ID}}\"\n\
             [peers.\"b\"]\nprotocol = \"peerlink\"\n"
        );
        let c = Config::parse(&text, Path::new("g.toml")).unwrap();
        assert_eq!(c.stomp.listen.map(|a| a.port()), Some(1234));
        assert_eq!(c.stomp.peers["a"].host.as_deref(), Some("/${NODE_ID}"));
        let s = &c.stomp;
        assert_eq!(s.protocol_of("a", false), Protocol::SwptStomp);
        assert_eq!(
            s.protocol_of("b", true),
            Protocol::Peerlink,
            "own setting wins"
        );
        assert_eq!(s.protocol_of("c", true), Protocol::SwptStomp, "manifest");
        assert_eq!(s.protocol_of("c", false), Protocol::Peerlink);
        let text = format!("{MINIMAL}[stomp]\ndefault_protocol = \"peerlink\"\n");
        let c = Config::parse(&text, Path::new("g.toml")).unwrap();
        assert_eq!(
            c.stomp.protocol_of("c", true),
            Protocol::Peerlink,
            "default wins over manifest"
        );
        assert_eq!(c.stomp.window, stomp::DEFAULT_STOMP_WINDOW);
    }

    #[test]
    fn bad_stomp_settings_are_named() {
        for (extra, key) in [
            ("[stomp]\nheartbeat_ms = 50\n", "heartbeat_ms"),
            ("[stomp]\nwindow = 0\n", "window"),
            ("[stomp]\nlisten = \"nowhere\"\n", "listen"),
            ("[stomp]\ndefault_protocol = \"amqp\"\n", "default_protocol"),
            ("[peers.\"a\"]\nprotocol = \"stomp\"\n", "protocol"),
        ] {
            let err = Config::parse(&format!("{MINIMAL}{extra}"), Path::new("g.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }
}
