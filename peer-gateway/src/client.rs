//! `peer-gateway status`, `ping`, `send` and `recv`: small clients of the
//! admin API and of the API for local applications.
//!
//! HTTP/1.0 over a plain TCP connection is all these loopback APIs need,
//! so no HTTP client library is pulled in for it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request and returns (status code, body).
pub async fn request(admin: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    request_with(admin, method, path, &[], b"").await
}

/// Sends one request with headers and a body; returns (status code, body).
pub async fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| {
            format!("cannot reach the gateway at {addr}: {e} (is it running? see --admin / --api)")
        })?;
        let mut req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("malformed HTTP response")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("malformed HTTP status line")?;
        Ok((code, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(90), work)
        .await
        .map_err(|_| format!("the gateway at {addr} did not answer"))?
}

/// Prints the status table (or JSON).
pub async fn status(admin: &str, json: bool) -> Result<(), String> {
    let (code, body) = request(admin, "GET", "/v1/status").await?;
    if code != 200 {
        return Err(format!("status failed with HTTP {code}: {body}"));
    }
    if json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
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
pub async fn ping(admin: &str, peer: &str) -> Result<(), String> {
    let (code, body) = request(admin, "POST", &format!("/v1/peers/{peer}/ping")).await?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if code != 200 {
        return Err(v["error"]
            .as_str()
            .map_or(format!("HTTP {code}: {body}"), str::to_string));
    }
    println!(
        "pong from {peer}: {:.3} ms",
        v["rtt_ms"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(())
}

fn auth_headers(
    token_file: Option<&std::path::Path>,
) -> Result<Vec<(&'static str, String)>, String> {
    match token_file {
        None => Ok(Vec::new()),
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok(vec![("Authorization", format!("Bearer {}", token.trim()))])
        }
    }
}

fn api_error(code: u16, body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match v["error"].as_str() {
        Some(e) => format!("HTTP {code}: {e}"),
        None => format!("HTTP {code}: {}", body.trim()),
    }
}

/// `peer-gateway send`.
pub async fn send(
    api: &str,
    token_file: Option<&std::path::Path>,
    peer: &str,
    content_type: &str,
    message_id: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<(), String> {
    let body = match file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        }
        _ => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            buf
        }
    };
    let mut headers = auth_headers(token_file)?;
    headers.push(("Content-Type", content_type.to_string()));
    if let Some(id) = message_id {
        headers.push(("Message-Id", id.to_string()));
    }
    let (code, text) = request_with(
        api,
        "POST",
        &format!("/v1/peers/{peer}/messages"),
        &headers,
        &body,
    )
    .await?;
    if code != 202 {
        return Err(api_error(code, &text));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    println!("{}", v["id"].as_str().unwrap_or(""));
    Ok(())
}

/// `peer-gateway recv`.
pub async fn recv(
    api: &str,
    token_file: Option<&std::path::Path>,
    wait: u64,
    limit: u32,
    ack: bool,
    json: bool,
) -> Result<(), String> {
    use base64::Engine;
    let headers = auth_headers(token_file)?;
    let (code, text) = request_with(
        api,
        "GET",
        &format!("/v1/inbox?limit={limit}&wait={wait}"),
        &headers,
        b"",
    )
    .await?;
    if code != 200 {
        return Err(api_error(code, &text));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
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
        let body =
            serde_json::to_vec(&serde_json::json!({ "ids": ids })).map_err(|e| e.to_string())?;
        let mut headers = headers;
        headers.push(("Content-Type", "application/json".into()));
        let (code, text) = request_with(api, "POST", "/v1/inbox/ack", &headers, &body).await?;
        if code != 200 {
            return Err(api_error(code, &text));
        }
    }
    Ok(())
}
