//! What swpt-server refuses, our gateway refuses the same way: the same
//! probes (a real TLS client with the creditors agent's certificates, then
//! hand-written STOMP) against swpt-server and against our gateway, both
//! playing the accounting authority on the same node directory.

use std::time::Duration;

use peerlink_e2e::gateway::free_port;
use peerlink_e2e::swpt::{SwptLab, CA_CREDITOR_AT_AA, CA_ID};

use peerlink_e2e::swpt::Gateway;

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct Seen {
    /// CONNECTED came back.
    connected: bool,
    /// The message of an ERROR frame, if one came.
    error: Option<String>,
    /// RECEIPT ids that came.
    receipts: Vec<String>,
    /// The connection failed before any frame (TLS refusal).
    refused: bool,
}

const PROBE: &str = r#"
import json, socket, ssl, sys, time
port, cert, key, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)
seen = {"connected": False, "error": None, "receipts": [], "refused": False}
def frames(buf):
    out = []
    while b"\0" in buf:
        raw, buf = buf.split(b"\0", 1)
        raw = raw.lstrip(b"\r\n")
        head = raw.split(b"\n\n", 1)[0].decode("utf8", "replace").split("\n")
        headers = {}
        for line in head[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.setdefault(k, v.replace("\\c", ":").replace("\\n", "\n").replace("\\\\", "\\"))
        out.append((head[0], headers))
    return out, buf
try:
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    t.sendall(b"STOMP\naccept-version:1.2\nhost:/\nheart-beat:0,0\n\n\0")
    buf, sent, end = b"", False, time.time() + 8
    while time.time() < end:
        try:
            data = t.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        buf += data
        got, buf = frames(buf)
        for cmd, h in got:
            if cmd == "CONNECTED":
                seen["connected"] = True
            elif cmd == "ERROR":
                seen["error"] = h.get("message")
            elif cmd == "RECEIPT":
                seen["receipts"].append(h.get("receipt-id"))
        if seen["connected"] and not sent:
            t.sendall(payload)
            sent = True
except (ssl.SSLError, ConnectionError, OSError) as e:
    if not seen["connected"] and seen["error"] is None:
        seen["refused"] = True
print(json.dumps(seen))
"#;

fn send(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut f = b"SEND\n".to_vec();
    for (k, v) in headers {
        f.extend_from_slice(format!("{k}:{v}\n").as_bytes());
    }
    f.extend_from_slice(format!("content-length:{}\n\n", body.len()).as_bytes());
    f.extend_from_slice(body);
    f.push(0);
    f
}

fn valid(destination: &str) -> Vec<(&str, &str)> {
    vec![
        ("destination", destination),
        ("type", "PrepareTransfer"),
        ("content-type", "application/json"),
        ("persistent", "true"),
        ("receipt", "1"),
    ]
}

/// Runs the probe against `port` as the creditors agent (leaf + `chain_extra`).
fn probe(lab: &SwptLab, port: u16, chain_extra: &std::path::Path, payload: &[u8]) -> Seen {
    let ca = lab.node("CA");
    let chain = lab.data.join(format!("probe-chain-{port}.pem"));
    let mut pem = std::fs::read(ca.join("server.crt")).expect("leaf");
    pem.push(b'\n');
    pem.extend(std::fs::read(chain_extra).expect("chain"));
    std::fs::write(&chain, pem).expect("write chain");
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let script = lab.data.join("probe.py");
    std::fs::write(&script, PROBE).expect("probe script");
    let out = std::process::Command::new(lab.bin.join("python"))
        .arg(&script)
        .arg(port.to_string())
        .arg(&chain)
        .arg(ca.join("server.key"))
        .arg(hex)
        .output()
        .expect("python");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe output {:?} ({e}): {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn our_gateway_refuses_what_swpt_server_refuses() {
    let test = "our_gateway_refuses_what_swpt_server_refuses";
    let Some(mut lab) = SwptLab::require(test) else {
        return;
    };
    lab.queue_bound_to("accounts_in", "aa-in");
    let swpt_port = free_port();
    let server = lab.start(
        "AA",
        "swpt-server",
        &[],
        // Its peers cache (600 s by default) would hide the deactivation below.
        &[
            ("SWPT_SERVER_PORT", &swpt_port.to_string()),
            ("APP_PEERS_CACHE_SECONDS", "1"),
        ],
    );
    let mut gw = Gateway::configure(&lab, "AA", "");
    gw.start();
    let ours = gw.stomp_port;
    lab.wait("swpt-server listening", Duration::from_secs(30), |lab| {
        if !lab.running(server) {
            return Err("exited".into());
        }
        std::net::TcpStream::connect(("127.0.0.1", swpt_port))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let sub_ca = lab.node("CA").join("peers/1234abcd/sub-ca.crt");
    let own_root = lab.node("CA").join("root-ca.crt");
    let good = "/exchange/accounts_in";
    let big = vec![b'x'; 9_000];
    let valid_body = peerlink_e2e::swpt::prepare_transfer(1, CA_CREDITOR_AT_AA);
    let cases: Vec<(&str, &std::path::Path, Vec<u8>)> = vec![
        (
            "a valid SEND (control)",
            &sub_ca,
            send(&valid(good), valid_body.as_bytes()),
        ),
        (
            "wrong destination",
            &sub_ca,
            send(&valid("/exchange/wrong"), b"{}"),
        ),
        ("body over 8 KiB", &sub_ca, send(&valid(good), &big)),
        (
            "SEND without a type",
            &sub_ca,
            send(&[("destination", good), ("receipt", "1")], b"{}"),
        ),
        ("a bad frame", &sub_ca, b"send\n\n\0".to_vec()),
        (
            "SUBSCRIBE",
            &sub_ca,
            b"SUBSCRIBE\ndestination:/q\nid:1\n\n\0".to_vec(),
        ),
        (
            "a foreign cross-cert (the agent's own root)",
            &own_root,
            send(&valid(good), b"{}"),
        ),
    ];
    for (what, extra, payload) in &cases {
        let theirs = probe(&lab, swpt_port, extra, payload);
        let mine = probe(&lab, ours, extra, payload);
        eprintln!("{what}: swpt-server {theirs:?}; ours {mine:?}");
        if *what == "a valid SEND (control)" {
            // Both accept and confirm it: the probe itself is right.
            assert_eq!(mine, theirs, "{what}");
            assert!(
                mine.connected && mine.receipts == vec!["1".to_string()],
                "{mine:?}"
            );
            continue;
        }
        assert_eq!(mine.connected, theirs.connected, "{what}: CONNECTED");
        // A TLS refusal shows to the client as an alert (ours) or as the
        // connection closing (swpt-server): either way no CONNECTED, no ERROR.
        assert_eq!(mine.error, theirs.error, "{what}: the ERROR message");
        assert!(
            mine.receipts.is_empty(),
            "{what}: nothing confirmed: {mine:?}"
        );
    }

    // A partner the node deactivated: both turn it away and accept nothing.
    let deactivated = lab.node("AA").join("peers").join(CA_ID);
    std::fs::rename(deactivated.join("ACTIVE"), deactivated.join("DEACTIVATED"))
        .expect("deactivate");
    // swpt-server re-reads its node data; our gateway reloads (polling).
    lab.wait(
        "both refuse the deactivated partner",
        Duration::from_secs(30),
        |lab| {
            let payload = send(&valid(good), valid_body.as_bytes());
            let theirs = probe(lab, swpt_port, &sub_ca, &payload);
            let mine = probe(lab, ours, &sub_ca, &payload);
            let turned_away = |s: &Seen| s.refused || s.error.is_some();
            if turned_away(&theirs) && turned_away(&mine) && mine.receipts.is_empty() {
                Ok(())
            } else {
                Err(format!("swpt-server {theirs:?}; ours {mine:?}"))
            }
        },
    );
}
