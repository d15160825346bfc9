//! The gateway's admin API as the tests read it: one HTTP/1.0 request, the status
//! document and what it says about a peer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// One HTTP/1.0 request to an admin address; returns (status code, body).
pub fn http(admin: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .map_err(|e| format!("connect {admin}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {admin}\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| format!("write to {admin}: {e}"))?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .map_err(|e| format!("read from {admin}: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP response from {admin}: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP status line from {admin}: {head:?}"))?;
    Ok((code, body.to_string()))
}

/// `GET /v1/status`, parsed.
pub fn admin_status(admin: SocketAddr) -> Result<Value, String> {
    let (code, body) = http(admin, "GET", "/v1/status")?;
    if code != 200 {
        return Err(format!("GET /v1/status: HTTP {code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("status is not JSON ({e}): {body}"))
}

/// The entry of `peer_id` in a status document.
pub fn peer_entry<'a>(status: &'a Value, peer_id: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == peer_id)
}

/// A string member of a peer entry ("" when null or missing).
pub fn field<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key].as_str().unwrap_or("")
}

/// The refused-handshake counters of a status document.
pub fn refusals(status: &Value) -> BTreeMap<String, u64> {
    status["refused_handshakes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}
