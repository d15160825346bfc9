//! `peer-gateway status`, `ping`, `send` and `recv`: small clients of the
//! admin API and of the API for local applications.
//!
//! The HTTP side is hyper's HTTP/1.1 client (hyper is already in the tree as the
//! server under axum): it frames bodies by Content-Length or chunked encoding and
//! keeps connections alive, so no code here parses HTTP by hand. [`Connection`]
//! is also what the load generator (`tools/peerlink-load`) sends its requests over.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one command waits for the gateway, from connecting to the last byte of
/// the last answer: long enough for `recv --wait` long-polls, short enough that a
/// wedged gateway does not hang a script.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a command failed; printed as the command's error message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No TCP connection to the API: the gateway is not running or the address is wrong.
    #[error("cannot reach the gateway at {addr}: {source} (is it running? see --admin / --api)")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The gateway accepted the connection but did not finish answering in time.
    #[error("the gateway at {addr} did not answer")]
    Timeout { addr: String },
    /// The HTTP exchange broke off (connection reset, malformed answer).
    #[error("the HTTP exchange with {addr} failed: {}", causes(.source))]
    Exchange {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built (a path or header value HTTP cannot carry).
    #[error("cannot send {method} {path}: {source}")]
    Request {
        method: Method,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    /// A file named on the command line (message body, token) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `send` without a file reads standard input.
    #[error("cannot read stdin: {0}")]
    Stdin(#[source] std::io::Error),
    /// The admin API's status endpoint answered with an error.
    #[error("status failed with HTTP {code}: {body}")]
    Status { code: u16, body: String },
    /// The gateway refused the request and explained why in its JSON `error`
    /// (`ping` of a peer that is not linked, for example).
    #[error("{message}")]
    Refused { message: String },
    /// A non-success answer: the gateway's `error` text, or else the body.
    #[error("HTTP {code}: {detail}")]
    Http { code: u16, detail: String },
    /// An answer that should be JSON is not.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// hyper's error text with its causes (`connection error: Connection reset by peer`):
/// hyper's own text alone rarely says what happened on the socket.
fn causes(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A whole answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status code.
    pub code: u16,
    /// The body, already read to its end.
    pub body: Bytes,
}

impl Answer {
    /// The body as text (lossy: the CLI prints it, and error bodies may be anything).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 connection to a gateway's API, kept alive between requests: the
/// CLI sends one or two requests over it, the load generator thousands.
pub struct Connection {
    addr: String,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Speaks HTTP/1.1 over `tcp`, connected to `addr` (the Host header, and the
    /// address named in errors). Leaves the socket options to the caller.
    pub async fn handshake(tcp: TcpStream, addr: &str) -> Result<Connection, ClientError> {
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| ClientError::Exchange {
                addr: addr.to_string(),
                source,
            })?;
        // The connection task ends when the server closes or `sender` is dropped;
        // its errors reach the request that was in flight.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            addr: addr.to_string(),
            sender,
        })
    }

    /// Whether the server has closed this connection (then another must be opened).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &str)],
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.addr);
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|source| ClientError::Request {
                method,
                path: path.to_string(),
                source,
            })?;
        let exchange = |source| ClientError::Exchange {
            addr: self.addr.clone(),
            source,
        };
        self.sender.ready().await.map_err(exchange)?;
        let resp = self.sender.send_request(req).await.map_err(exchange)?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(exchange)?;
        Ok(Answer {
            code,
            body: body.to_bytes(),
        })
    }
}

/// Connects to `addr` and sends one request; the whole exchange is bounded by
/// [`COMMAND_TIMEOUT`].
async fn request(
    addr: &str,
    method: Method,
    path: &str,
    headers: &[(HeaderName, &str)],
    body: Bytes,
) -> Result<Answer, ClientError> {
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Unreachable {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        Connection::handshake(tcp, addr)
            .await?
            .send(method, path, headers, body)
            .await
    };
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.to_string(),
        })?
}

/// Prints the status table (or JSON).
pub async fn status(admin: &str, json: bool) -> Result<(), ClientError> {
    let answer = request(admin, Method::GET, "/v1/status", &[], Bytes::new()).await?;
    let body = answer.text();
    if answer.code != 200 {
        return Err(ClientError::Status {
            code: answer.code,
            body,
        });
    }
    if json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    println!("Node {}  ({})", s(&v["node_id"]), s(&v["subject"]));
    println!(
        "Listening on {}; server certificate valid until {}",
        s(&v["listen"]),
        s(&v["server_cert_not_after"])
    );
    println!(
        "{:<34} {:<12} {:<22} {:>8}  {:<22} last error",
        "PEER", "STATE", "SINCE", "RTT ms", "CROSS-CERT EXPIRES"
    );
    for p in v["peers"].as_array().into_iter().flatten() {
        let rtt = p["rtt_ms"]
            .as_f64()
            .map_or("-".to_string(), |r| format!("{r:.2}"));
        println!(
            "{:<34} {:<12} {:<22} {:>8}  {:<22} {}",
            s(&p["node_id"]),
            s(&p["state"]),
            s(&p["since"]),
            rtt,
            s(&p["cross_cert_not_after"]),
            p["last_error"].as_str().unwrap_or("")
        );
    }
    if let Some(refused) = v["refused_handshakes"].as_object() {
        if !refused.is_empty() {
            let parts: Vec<String> = refused.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!("Refused handshakes: {}", parts.join(", "));
        }
    }
    Ok(())
}

/// Pings a partner over its link.
pub async fn ping(admin: &str, peer: &str) -> Result<(), ClientError> {
    let path = format!("/v1/peers/{peer}/ping");
    let answer = request(admin, Method::POST, &path, &[], Bytes::new()).await?;
    let body = answer.text();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if answer.code != 200 {
        return Err(match v["error"].as_str() {
            Some(message) => ClientError::Refused {
                message: message.to_string(),
            },
            None => ClientError::Http {
                code: answer.code,
                detail: body,
            },
        });
    }
    println!(
        "pong from {peer}: {:.3} ms",
        v["rtt_ms"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// `Authorization: Bearer <token>` from `--token-file`, if given.
fn bearer(token_file: Option<&Path>) -> Result<Option<String>, ClientError> {
    token_file
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|token| format!("Bearer {}", token.trim()))
                .map_err(|source| ClientError::ReadFile {
                    path: path.to_path_buf(),
                    source,
                })
        })
        .transpose()
}

/// A refused API request, with the gateway's `error` text when it gave one.
fn api_error(answer: &Answer) -> ClientError {
    let body = answer.text();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let detail = match v["error"].as_str() {
        Some(e) => e.to_string(),
        None => body.trim().to_string(),
    };
    ClientError::Http {
        code: answer.code,
        detail,
    }
}

/// `peer-gateway send`.
pub async fn send(
    api: &str,
    token_file: Option<&Path>,
    peer: &str,
    content_type: &str,
    message_id: Option<&str>,
    file: Option<&Path>,
) -> Result<(), ClientError> {
    let body = match file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).map_err(|source| ClientError::ReadFile {
                path: p.to_path_buf(),
                source,
            })?
        }
        _ => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(ClientError::Stdin)?;
            buf
        }
    };
    let auth = bearer(token_file)?;
    let mut headers = Vec::new();
    if let Some(auth) = &auth {
        headers.push((AUTHORIZATION, auth.as_str()));
    }
    headers.push((CONTENT_TYPE, content_type));
    if let Some(id) = message_id {
        headers.push((HeaderName::from_static("message-id"), id));
    }
    let path = format!("/v1/peers/{peer}/messages");
    let answer = request(api, Method::POST, &path, &headers, body.into()).await?;
    if answer.code != 202 {
        return Err(api_error(&answer));
    }
    let v: serde_json::Value = serde_json::from_slice(&answer.body)?;
    println!("{}", v["id"].as_str().unwrap_or(""));
    Ok(())
}

/// `peer-gateway recv`.
pub async fn recv(
    api: &str,
    token_file: Option<&Path>,
    wait: u64,
    limit: u32,
    ack: bool,
    json: bool,
) -> Result<(), ClientError> {
    use base64::Engine;
    let auth = bearer(token_file)?;
    let mut headers = Vec::new();
    if let Some(auth) = &auth {
        headers.push((AUTHORIZATION, auth.as_str()));
    }
    let path = format!("/v1/inbox?limit={limit}&wait={wait}");
    let answer = request(api, Method::GET, &path, &headers, Bytes::new()).await?;
    if answer.code != 200 {
        return Err(api_error(&answer));
    }
    let text = answer.text();
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{text}");
    } else {
        for m in &messages {
            let body = base64::engine::general_purpose::STANDARD
                .decode(m["body_base64"].as_str().unwrap_or(""))
                .unwrap_or_default();
            println!(
                "{} from {} ({}, {} bytes): {}",
                m["id"].as_str().unwrap_or(""),
                m["from"].as_str().unwrap_or(""),
                m["content_type"].as_str().unwrap_or(""),
                body.len(),
                String::from_utf8_lossy(&body)
            );
        }
    }
    if ack && !messages.is_empty() {
        let ids: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({ "from": m["from"], "id": m["id"] }))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "ids": ids }))?;
        headers.push((CONTENT_TYPE, "application/json"));
        let answer = request(api, Method::POST, "/v1/inbox/ack", &headers, body.into()).await?;
        if answer.code != 200 {
            return Err(api_error(&answer));
        }
    }
    Ok(())
}
