//! `peer-gateway status` and `ping`: small clients of the admin API.
//!
//! HTTP/1.0 over a plain TCP connection is all the loopback admin API needs,
//! so no HTTP client library is pulled in for it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request and returns (status code, body).
pub async fn request(admin: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    let work = async {
        let mut stream = TcpStream::connect(admin).await.map_err(|e| {
            format!(
                "cannot reach the gateway's admin API at {admin}: {e} (is it running? see --admin)"
            )
        })?;
        let req = format!("{method} {path} HTTP/1.0\r\nHost: {admin}\r\nContent-Length: 0\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
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
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .map_err(|_| format!("the admin API at {admin} did not answer"))?
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
