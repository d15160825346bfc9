//! The load generator's client of the gateways' HTTP APIs: one kept-alive
//! connection per [`Http`], one request at a time on it, so that N concurrent
//! connections are N tasks each with its own `Http`.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The connection failed or broke.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server closed the connection before a whole answer.
    #[error("connection closed")]
    Closed,
    /// The server closed the connection inside the answer's headers.
    #[error("connection closed in headers")]
    ClosedInHeaders,
    /// Not an HTTP status line.
    #[error("bad status line {0:?}")]
    StatusLine(String),
    /// A chunked body with a malformed chunk size.
    #[error("bad chunk size")]
    ChunkSize,
    /// A request body that is not JSON-encodable.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A non-2xx answer where JSON was expected.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
}

/// A minimal HTTP/1.1 keep-alive client (the workspace has no HTTP client).
pub struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    /// A client of `addr`; connects on the first request.
    pub fn new(addr: SocketAddr) -> Http {
        Http { addr, conn: None }
    }

    /// Sends one request; returns (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        let mut wire = Vec::with_capacity(head.len() + body.len());
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(body);
        // A kept-alive connection the server closed meanwhile fails once: reconnect.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                let s = TcpStream::connect(self.addr).await?;
                s.set_nodelay(true)?;
                self.conn = Some(BufReader::with_capacity(64 * 1024, s));
            }
            match self.exchange(&wire).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conn = None;
                    if !reused || attempt == 2 {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn exchange(&mut self, wire: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
        let conn = self.conn.as_mut().ok_or(HttpError::Closed)?;
        conn.get_mut().write_all(wire).await?;
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(HttpError::Closed);
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpError::StatusLine(line.clone()))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                return Err(HttpError::ClosedInHeaders);
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| HttpError::ChunkSize)?;
                let start = body.len();
                body.resize(start + n, 0);
                conn.read_exact(&mut body[start..]).await?;
                line.clear();
                conn.read_line(&mut line).await?;
                if n == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        } else {
            conn.read_to_end(&mut body).await?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }

    /// Sends `body` as JSON (none: no body) and reads a 2xx JSON answer.
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, HttpError> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let ct = body.map(|_| "application/json");
        let (status, resp) = self.request(method, path, ct, &bytes).await?;
        if !(200..300).contains(&status) {
            return Err(HttpError::Status {
                method: method.to_string(),
                path: path.to_string(),
                status,
                body: String::from_utf8_lossy(&resp).into_owned(),
            });
        }
        Ok(serde_json::from_slice(&resp)?)
    }
}
