//! The load generator's client of the gateways' HTTP APIs: one kept-alive
//! HTTP/1.1 connection per [`Http`], one request at a time on it (no
//! pipelining), so that N concurrent connections are N tasks each with its own
//! `Http`. The protocol is hyper's, through the gateway CLI's
//! [`peer_gateway::client::Connection`].

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::Method;
use peer_gateway::client::{ClientError, Connection};
use serde_json::Value;
use tokio::net::TcpStream;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The TCP connection could not be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The HTTP exchange failed (twice on a reused connection).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A request body that is not JSON-encodable.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A non-success answer where success was expected.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        body: String,
    },
}

impl HttpError {
    /// A non-success answer to `method path`.
    pub fn status(method: Method, path: &str, status: u16, body: &[u8]) -> HttpError {
        HttpError::Status {
            method,
            path: path.to_string(),
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// A client of one gateway API over one kept-alive connection.
pub struct Http {
    addr: SocketAddr,
    host: String,
    conn: Option<Connection>,
}

impl Http {
    /// A client of `addr`; connects on the first request.
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            host: addr.to_string(),
            conn: None,
        }
    }

    /// A new connection, with Nagle off: requests and answers are small and
    /// each waits for the other.
    async fn connect(&self) -> Result<Connection, HttpError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Connection::handshake(tcp, &self.host).await?)
    }

    /// Sends one request; returns (status, body).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, Bytes), HttpError> {
        let headers: Vec<_> = content_type
            .map(|ct| (CONTENT_TYPE, ct))
            .into_iter()
            .collect();
        // A kept-alive connection the server closed meanwhile fails once: reconnect.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let kept = self.conn.take().filter(|conn| !conn.is_closed());
            let reused = kept.is_some();
            let mut conn = match kept {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match conn
                .send(method.clone(), path, &headers, body.clone())
                .await
            {
                Ok(answer) => {
                    self.conn = Some(conn);
                    return Ok((answer.code, answer.body));
                }
                Err(e) => {
                    if !reused || attempt == 2 {
                        return Err(e.into());
                    }
                }
            }
        }
    }

    /// Sends `body` as JSON (none: no body) and reads a 2xx JSON answer.
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, HttpError> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let ct = body.map(|_| "application/json");
        let (status, resp) = self.request(method.clone(), path, ct, bytes.into()).await?;
        if !(200..300).contains(&status) {
            return Err(HttpError::status(method, path, status, &resp));
        }
        Ok(serde_json::from_slice(&resp)?)
    }
}
