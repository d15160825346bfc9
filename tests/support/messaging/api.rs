//! A tiny HTTP/1.0 client of the gateway's API for local applications ([`Api`]):
//! send, batch, inbox, ack, peer status.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

use crate::gateway::Node;
use crate::{base64_decode, base64_encode};

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// Header lines as (lowercase name, value).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("HTTP {} body is not JSON ({e}): {}", self.code, self.text()))
    }

    /// The JSON body when the status is `code`, else Err describing the response.
    pub fn expect(&self, code: u16) -> Result<Value, String> {
        if self.code != code {
            return Err(format!(
                "expected HTTP {code}, got {}: {}",
                self.code,
                self.text()
            ));
        }
        self.json()
    }

    /// One-line description for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("HTTP {}", self.code);
        for (n, v) in &self.headers {
            let _ = write!(s, " [{n}: {v}]");
        }
        let text = self.text();
        let cut: String = text.chars().take(400).collect();
        let _ = write!(s, " {cut}");
        s
    }
}

/// Sends one HTTP/1.0 request to `addr` and reads the whole response (the server
/// closes the connection). `timeout` bounds connecting and every read or write.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // A server may answer (e.g. 413) and close before reading a large body: a write
    // error is only reported when no response can be read either.
    let write_error = stream.write_all(&request).err();
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(match (write_error, read) {
            (Some(w), _) => format!("write to {addr}: {w}"),
            (None, Err(r)) => format!("read from {addr}: {r}"),
            (None, Ok(_)) => format!("{addr} closed the connection without a response"),
        });
    }
    if let Err(e) = read {
        // A partial response is no response (e.g. the gateway was killed mid-way).
        if !matches!(e.kind(), std::io::ErrorKind::ConnectionReset) {
            return Err(format!("read from {addr}: {e}"));
        }
    }
    parse_response(&raw).ok_or_else(|| {
        format!(
            "malformed HTTP response from {addr}: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw[end + 4..].to_vec();
    // A response cut short (the server died while writing) is not a response.
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() != len {
            return None;
        }
    }
    Some(Response {
        code,
        headers,
        body,
    })
}

/// A message as it goes into a batch request.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `Message-Id` (None: the gateway makes one).
    pub id: Option<String>,
    /// Media type (None: the gateway's default).
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Outgoing {
    /// A message with Message-Id `id` and the gateway's default media type.
    pub fn new(id: &str, body: impl Into<Vec<u8>>) -> Outgoing {
        Outgoing {
            id: Some(id.to_string()),
            content_type: None,
            body: body.into(),
        }
    }

    /// The same message with media type `content_type`.
    pub fn typed(self, content_type: &str) -> Outgoing {
        Outgoing {
            content_type: Some(content_type.to_string()),
            ..self
        }
    }
}

/// A message as `GET /v1/inbox` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Message id.
    pub id: String,
    /// Sender node id.
    pub from: String,
    /// Media type.
    pub content_type: String,
    /// The body (decoded).
    pub body: Vec<u8>,
    /// `received_at` as given.
    pub received_at: String,
}

/// Client of one gateway's API for local applications.
#[derive(Debug, Clone)]
pub struct Api {
    /// `api_listen` of the gateway.
    pub addr: SocketAddr,
    /// Bearer token to present, if any.
    pub token: Option<String>,
    /// Bound on connecting and on each read (long polls add their wait).
    pub timeout: Duration,
}

impl Api {
    /// A client of the API at `127.0.0.1:port` without a token.
    pub fn new(port: u16) -> Api {
        Api {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            token: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// The API of `node`.
    pub fn of(node: &Node) -> Api {
        Api::new(node.api_port)
    }

    /// The same client presenting `token`.
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// A request with this client's token (if any) and `headers`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            all.push(("Authorization", a));
        }
        all.extend_from_slice(headers);
        http_request(self.addr, method, path, &all, body, self.timeout)
    }

    /// `POST /v1/peers/{peer}/messages`.
    pub fn send(
        &self,
        peer: &str,
        content_type: Option<&str>,
        message_id: Option<&str>,
        body: &[u8],
    ) -> Result<Response, String> {
        let mut headers = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        if let Some(id) = message_id {
            headers.push(("Message-Id", id));
        }
        self.request(
            "POST",
            &format!("/v1/peers/{peer}/messages"),
            &headers,
            body,
        )
    }

    /// `POST /v1/peers/{peer}/messages/batch` with `messages`.
    pub fn send_batch(&self, peer: &str, messages: &[Outgoing]) -> Result<Response, String> {
        self.send_batch_raw(peer, batch_json(messages).as_bytes())
    }

    /// `POST /v1/peers/{peer}/messages/batch` with a raw body.
    pub fn send_batch_raw(&self, peer: &str, body: &[u8]) -> Result<Response, String> {
        self.request(
            "POST",
            &format!("/v1/peers/{peer}/messages/batch"),
            &[("Content-Type", "application/json")],
            body,
        )
    }

    /// `GET /v1/inbox?limit=..&wait=..` (raw response).
    pub fn inbox_raw(&self, limit: usize, wait_s: u64) -> Result<Response, String> {
        // The long poll may hold the answer for `wait_s` on top of the usual bound.
        let long_poll = Api {
            timeout: self.timeout + Duration::from_secs(wait_s),
            ..self.clone()
        };
        long_poll.request(
            "GET",
            &format!("/v1/inbox?limit={limit}&wait={wait_s}"),
            &[],
            b"",
        )
    }

    /// `GET /v1/inbox?limit=..&wait=..`, parsed (Err on any other status).
    pub fn inbox(&self, limit: usize, wait_s: u64) -> Result<Vec<Received>, String> {
        let r = self.inbox_raw(limit, wait_s)?;
        parse_inbox(&r.expect(200)?)
    }

    /// `POST /v1/inbox/ack` (raw response).
    pub fn ack_raw(&self, body: &[u8]) -> Result<Response, String> {
        self.request(
            "POST",
            "/v1/inbox/ack",
            &[("Content-Type", "application/json")],
            body,
        )
    }

    /// `POST /v1/inbox/ack` of `ids`; returns `acknowledged`.
    pub fn ack(&self, ids: &[String]) -> Result<u64, String> {
        let r = self.ack_raw(json!({ "ids": ids }).to_string().as_bytes())?;
        r.expect(200)?["acknowledged"]
            .as_u64()
            .ok_or_else(|| format!("no acknowledged count: {}", r.text()))
    }

    /// `POST /v1/inbox/ack` of (sender, id) pairs; returns `acknowledged`.
    pub fn ack_from(&self, acks: &[(&str, &str)]) -> Result<u64, String> {
        let ids: Vec<Value> = acks
            .iter()
            .map(|(from, id)| json!({ "from": from, "id": id }))
            .collect();
        let r = self.ack_raw(json!({ "ids": ids }).to_string().as_bytes())?;
        r.expect(200)?["acknowledged"]
            .as_u64()
            .ok_or_else(|| format!("no acknowledged count: {}", r.text()))
    }

    /// `GET /v1/peers/{peer}` (raw response).
    pub fn peer_raw(&self, peer: &str) -> Result<Response, String> {
        self.request("GET", &format!("/v1/peers/{peer}"), &[], b"")
    }

    /// `GET /v1/peers/{peer}`, parsed.
    pub fn peer(&self, peer: &str) -> Result<Value, String> {
        self.peer_raw(peer)?.expect(200)
    }

    /// `outbox_depth` of `GET /v1/peers/{peer}`.
    pub fn outbox_depth(&self, peer: &str) -> Result<i64, String> {
        let v = self.peer(peer)?;
        v["outbox_depth"]
            .as_i64()
            .ok_or_else(|| format!("no outbox_depth in {v}"))
    }

    /// Every message now in the inbox (up to 1000), without acknowledging.
    pub fn peek_all(&self) -> Result<Vec<Received>, String> {
        self.inbox(1000, 0)
    }

    /// Takes every message now in the inbox: reads pages of up to 1000 and
    /// acknowledges each (bare ids) until a page comes back empty.
    pub fn take_all(&self) -> Result<Vec<Received>, String> {
        let mut all = Vec::new();
        loop {
            let page = self.inbox(1000, 0)?;
            if page.is_empty() {
                return Ok(all);
            }
            let ids: Vec<String> = page.iter().map(|m| m.id.clone()).collect();
            self.ack(&ids)?;
            all.extend(page);
        }
    }
}

/// The JSON of a batch request.
pub fn batch_json(messages: &[Outgoing]) -> String {
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut o = json!({ "body_base64": base64_encode(&m.body) });
            if let Some(id) = &m.id {
                o["id"] = json!(id);
            }
            if let Some(ct) = &m.content_type {
                o["content_type"] = json!(ct);
            }
            o
        })
        .collect();
    json!({ "messages": list }).to_string()
}

/// The messages of an inbox page.
pub fn parse_inbox(v: &Value) -> Result<Vec<Received>, String> {
    let list = v["messages"]
        .as_array()
        .ok_or_else(|| format!("no messages array in {v}"))?;
    list.iter()
        .map(|m| {
            let s = |k: &str| {
                m[k].as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("inbox message without string {k:?}: {m}"))
            };
            Ok(Received {
                id: s("id")?,
                from: s("from")?,
                content_type: s("content_type")?,
                body: base64_decode(&s("body_base64")?),
                received_at: s("received_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_and_truncation_detected() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(r.code, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}").is_none());
    }
}
