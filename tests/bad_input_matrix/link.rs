//! The link surface: gateway `a` is linked to `b`; every refusal (a TLS
//! handshake refused with a reason, a link set-up refused, a Goodbye) must leave
//! the `a`–`b` link the same link (same `since` on both sides, `b` untouched), move
//! `a`'s refusal counters only by the expected reason and leave `a`'s store as it
//! was. Bad frames are written by `peerlink_e2e::raw_peer`, speaking as partner c.
//!
//! Run: `cargo test --test bad_input_matrix link::`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use peer_gateway::frame::{Frame, GoodbyeCode, PROTOCOL_VERSION};
use peerlink_e2e::gateway::{field, refusals, Net, WAIT};
use peerlink_e2e::raw_peer::{encode, header, hello, message, raw_frame, Closed, RawPeer};
use peerlink_e2e::{args, openssl, read_text};

use super::{ensure, one_line, store_rows, Matrix};

/// How long a raw link waits for `a` to close it.
const UNTIL_CLOSED: Duration = Duration::from_secs(15);

/// What must not move when a refuses someone: the a–b link (both ends, same
/// `since`, no refusal recorded), a's counters (but for the expected reason) and
/// a's message store (every table but the link leases).
struct LinkBaseline {
    ab: String,
    ba: String,
    counters: BTreeMap<String, u64>,
    store: BTreeMap<String, Vec<String>>,
}

fn link_baseline(net: &Net, rt: &tokio::runtime::Runtime) -> Result<LinkBaseline, String> {
    let ab = net.check_state("a", "b", &["connected"])?;
    let ba = net.check_state("b", "a", &["connected"])?;
    Ok(LinkBaseline {
        ab: field(&ab, "since").into(),
        ba: field(&ba, "since").into(),
        counters: refusals(&net.try_status("a")?),
        store: store_rows(rt, &net.path("a-gateway.db"))?,
    })
}

impl LinkBaseline {
    /// Waits until a's counters are the baseline plus one `reason` (or exactly the
    /// baseline), then checks that the a–b link and a's store are untouched.
    fn check(
        &self,
        net: &mut Net,
        rt: &tokio::runtime::Runtime,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let mut want = self.counters.clone();
        if let Some(r) = reason {
            *want.entry(r.to_string()).or_insert(0) += 1;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            net.assert_alive("a");
            let got = refusals(&net.try_status("a")?);
            if got == want {
                break;
            }
            let too_many = got.iter().any(|(k, v)| v > want.get(k).unwrap_or(&0));
            if too_many || Instant::now() >= deadline {
                return Err(format!(
                    "a's refused_handshakes should be {want:?}, are {got:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (x, y, since) in [("a", "b", &self.ab), ("b", "a", &self.ba)] {
            let p = net.check_state(x, y, &["connected"])?;
            ensure(field(&p, "since") == since, || {
                format!("the {x}–{y} link was replaced: {p:#}")
            })?;
            ensure(p["last_refusal"].is_null(), || {
                format!("{x}'s entry for {y} got a refusal: {p:#}")
            })?;
        }
        let store = store_rows(rt, &net.path("a-gateway.db"))?;
        ensure(store == self.store, || {
            let changed: Vec<String> = store
                .iter()
                .filter(|(t, rows)| self.store.get(*t) != Some(rows))
                .map(|(t, rows)| format!("{t}: {:?} -> {rows:?}", self.store.get(t)))
                .collect();
            format!("a's message store changed: {}", changed.join("; "))
        })
    }
}

/// The newest "refused handshake" line of a's log with `reason`.
fn refusal_line(net: &Net, reason: &str) -> Result<String, String> {
    net.log_lines("a", &["refused handshake", &format!("reason=\"{reason}\"")])
        .pop()
        .ok_or_else(|| format!("a logged no refused handshake with reason {reason}"))
}

/// An s_client attempt that a must refuse with `reason`, its log line mentioning
/// `fragment`, leaving everything else as it was.
fn tls_refusal(
    net: &mut Net,
    rt: &tokio::runtime::Runtime,
    reason: &str,
    fragment: &str,
    extra: &[OsString],
) -> Result<String, String> {
    let base = link_baseline(net, rt)?;
    let out = net.s_client_plain("a", extra);
    base.check(net, rt, Some(reason))?;
    let line = refusal_line(net, reason)?;
    ensure(
        line.to_lowercase().contains(&fragment.to_lowercase()),
        || format!("a's log line does not mention {fragment:?}: {line}"),
    )?;
    let detail = line.split_once("detail=").map_or(line.as_str(), |(_, d)| d);
    Ok(format!(
        "s_client {}; refused {reason}: {}",
        out.status,
        one_line(detail, 90)
    ))
}

/// A raw link as c that sends `frames` after its Hello; a must close it with
/// Goodbye `code` whose reason mentions `fragment`, log why (a "link down" line for
/// c), and leave the rest alone.
fn frame_refusal(
    net: &mut Net,
    rt: &tokio::runtime::Runtime,
    frames: &[u8],
    code: GoodbyeCode,
    fragment: &str,
) -> Result<String, String> {
    let base = link_baseline(net, rt)?;
    let c_id = net.id("c");
    let peer = format!("peer={c_id}");
    let logged = || net_lines(net, &["link down", &peer, fragment]);
    let lines_before = logged();
    let Closed { types, goodbye } = rt.block_on(async {
        let mut c = RawPeer::connect(net, "c", "a").await?;
        let mut bytes = encode(hello(&c_id, PROTOCOL_VERSION));
        bytes.extend_from_slice(frames);
        c.send(&bytes).await?;
        c.until_closed(UNTIL_CLOSED).await
    })?;
    let (got_code, reason) =
        goodbye.ok_or_else(|| format!("a closed the link without a Goodbye (frames {types:?})"))?;
    let deadline = Instant::now() + WAIT;
    while logged() <= lines_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut problems = Vec::new();
    if got_code != code || !reason.contains(fragment) {
        problems.push(format!(
            "expected Goodbye {} mentioning {fragment:?}, got Goodbye {}: {reason}",
            code.as_u16(),
            got_code.as_u16()
        ));
    }
    if logged() <= lines_before {
        problems.push(format!(
            "a logged no \"link down\" line for c mentioning {fragment:?}"
        ));
    }
    if let Err(e) = base.check(net, rt, None) {
        problems.push(e);
    }
    ensure(problems.is_empty(), || problems.join("\n"))?;
    Ok(format!(
        "Goodbye {} '{}'; logged",
        got_code.as_u16(),
        one_line(&reason, 60)
    ))
}

/// How many lines of a's log contain every one of `fragments`.
fn net_lines(net: &Net, fragments: &[&str]) -> usize {
    net.log_lines("a", fragments).len()
}

#[test]
fn link_bad_inputs() {
    let mut net = Net::mesh(&["a", "b", "c"]);
    net.add_node("d"); // nobody's partner
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = net.node("c");
    let (c_cert, c_key) = (c.server_cert.clone(), c.server_key.clone());
    let c_by_a = net.cross_cert("c", "a");
    let c_id = net.id("c");
    let alpn = args!["-alpn", "peerlink/1"];
    // `-cert cert -key key [-cert_chain chain] -alpn peerlink/1`.
    let present = |cert: &Path, key: &Path, chain: Option<&Path>| -> Vec<OsString> {
        let mut v = args!["-cert", cert, "-key", key];
        if let Some(chain) = chain {
            v.extend(args!["-cert_chain", chain]);
        }
        v.extend_from_slice(&alpn);
        v
    };
    let as_c = |more: &[OsString]| -> Vec<OsString> {
        let mut v = args!["-cert", &c_cert, "-key", &c_key, "-cert_chain", &c_by_a];
        v.extend_from_slice(more);
        v
    };
    // Certificates made for the cases.
    let (k1, csr1) = net.keygen("c", "expired", "c-expired");
    let expired = net.path("c-expired.crt");
    net.openssl_sign_leaf_dated("c", &csr1, &expired, "20200101000000Z", "20200201000000Z");
    let (k2, csr2) = net.keygen("c", "future", "c-future");
    let future = net.path("c-future.crt");
    net.openssl_sign_leaf_dated("c", &csr2, &future, "20400101000000Z", "20410101000000Z");
    let (k3, csr3) = net.keygen("c", "serveronly", "c-serveronly");
    let server_only = net.path("c-serveronly.crt");
    net.openssl_sign_leaf_with(
        "c",
        &csr3,
        &server_only,
        "[leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        "0x5eed0a",
    );
    let (k4, csr4) = net.keygen("b", "impostor", "c-claims-b");
    let impostor = net.path("c-claims-b.crt");
    net.openssl_sign_leaf("c", &csr4, &impostor);
    let (self_key, self_cert) = (net.path("self.key"), net.path("self.crt"));
    openssl(args![
        "req",
        "-x509",
        "-days",
        "1",
        "-nodes",
        "-keyout",
        &self_key,
        "-out",
        &self_cert,
        "-subj",
        net.node("b").ca.openssl_subject(Some("selfsigned")),
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256"
    ])
    .assert_success();
    let d = net.node("d");
    let (d_cert, d_key) = (d.server_cert.clone(), d.server_key.clone());
    let laptop = net.node("a").ca.copy_to(&net.path("a-laptop-copy"));
    let d_by_a = net.path("d-by-a-copy.crt");
    laptop
        .sign_peer(&net.node("d").bundle, &d_by_a, None)
        .assert_success();
    let a = net.node("a");
    let (a_cert, a_key) = (a.server_cert.clone(), a.server_key.clone());
    let long_chain = net.path("c-long-chain.pem");
    let chain = [vec![c_by_a.clone()], net.chain_padding().to_vec()].concat();
    fs::write(
        &long_chain,
        chain.iter().map(|p| read_text(p)).collect::<String>(),
    )
    .unwrap();

    let mut m = Matrix::new("link");
    let n = &mut net;
    m.case(
        "no client certificate",
        "TLS refusal no_certificate",
        || tls_refusal(n, &rt, "no_certificate", "no certificate", &alpn),
    );
    m.case(
        "self-signed certificate with b's name (wrong CA)",
        "TLS refusal unknown_issuer",
        || {
            tls_refusal(
                n,
                &rt,
                "unknown_issuer",
                "issuer",
                &present(&self_cert, &self_key, None),
            )
        },
    );
    m.case(
        "unregistered partner with a cross-cert a's node_dir never saw",
        "TLS refusal unknown_peer",
        || {
            tls_refusal(
                n,
                &rt,
                "unknown_peer",
                "not a registered partner",
                &present(&d_cert, &d_key, Some(&d_by_a)),
            )
        },
    );
    m.case("expired client certificate", "TLS refusal expired", || {
        tls_refusal(
            n,
            &rt,
            "expired",
            "expired",
            &present(&expired, &k1, Some(&c_by_a)),
        )
    });
    m.case(
        "client certificate not yet valid",
        "TLS refusal not_yet_valid",
        || {
            tls_refusal(
                n,
                &rt,
                "not_yet_valid",
                "valid",
                &present(&future, &k2, Some(&c_by_a)),
            )
        },
    );
    m.case(
        "client certificate without clientAuth",
        "TLS refusal eku",
        || {
            tls_refusal(
                n,
                &rt,
                "eku",
                "clientAuth",
                &present(&server_only, &k3, Some(&c_by_a)),
            )
        },
    );
    m.case(
        "c's root issues a certificate with b's name",
        "TLS refusal name_constraint",
        || {
            tls_refusal(
                n,
                &rt,
                "name_constraint",
                "constraint",
                &present(&impostor, &k4, Some(&c_by_a)),
            )
        },
    );
    m.case(
        "a's own gateway certificate",
        "TLS refusal own_node",
        || {
            tls_refusal(
                n,
                &rt,
                "own_node",
                "own root",
                &present(&a_cert, &a_key, None),
            )
        },
    );
    m.case(
        "chain of 5 certificates besides the leaf",
        "TLS refusal chain_too_long",
        || {
            tls_refusal(
                n,
                &rt,
                "chain_too_long",
                "at most 4",
                &present(&c_cert, &c_key, Some(&long_chain)),
            )
        },
    );
    m.case("TLS 1.2 only", "TLS refusal tls_error", || {
        let mut x = as_c(&alpn);
        x.push("-tls1_2".into());
        tls_refusal(n, &rt, "tls_error", "version", &x)
    });
    m.case(
        "no ALPN offered (valid certificates)",
        "TLS refusal alpn",
        || tls_refusal(n, &rt, "alpn", "ALPN", &as_c(&[])),
    );
    m.case(
        "ALPN h2 only (valid certificates)",
        "TLS refusal tls_error",
        || {
            tls_refusal(
                n,
                &rt,
                "tls_error",
                "protocol",
                &as_c(&args!["-alpn", "h2"]),
            )
        },
    );
    m.case(
        "plain HTTP to the peer port",
        "refusal tls_error, connection closed",
        || {
            let base = link_baseline(n, &rt)?;
            let mut s = TcpStream::connect(n.node("a").endpoint()).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            ensure(!answer.starts_with(b"HTTP"), || {
                "a answered HTTP on its peer port".into()
            })?;
            base.check(n, &rt, Some("tls_error"))?;
            Ok(format!(
                "{} bytes back (a TLS alert), closed; {}",
                answer.len(),
                one_line(&refusal_line(n, "tls_error")?, 60)
            ))
        },
    );
    m.case(
        "authenticated, then no Hello (slow handshake)",
        "refusal handshake_timeout",
        || {
            let base = link_baseline(n, &rt)?;
            let started = Instant::now();
            let Closed { types, .. } = rt.block_on(async {
                let mut c = RawPeer::connect(n, "c", "a").await?;
                c.until_closed(UNTIL_CLOSED).await
            })?;
            base.check(n, &rt, Some("handshake_timeout"))?;
            Ok(format!(
                "closed after {:.1} s (frames {types:?}); counted handshake_timeout",
                started.elapsed().as_secs_f64()
            ))
        },
    );
    m.case(
        "Hello naming another node (b)",
        "link set-up refused, logged",
        || {
            let base = link_baseline(n, &rt)?;
            let b_id = n.id("b");
            let Closed { types, goodbye } = rt.block_on(async {
                let mut c = RawPeer::connect(n, "c", "a").await?;
                c.send_frame(hello(&b_id, PROTOCOL_VERSION)).await?;
                c.until_closed(UNTIL_CLOSED).await
            })?;
            let line = n.wait_log_line("a", &["set-up failed", "hello names node"], WAIT);
            base.check(n, &rt, None)?;
            let p = n.peer_status("a", "c");
            ensure(field(&p, "state") != "connected", || format!("{p:#}"))?;
            Ok(format!(
                "closed (frames {types:?}, goodbye {goodbye:?}); log: {}",
                one_line(line.split_once("error=").map_or(&line, |x| x.1), 60)
            ))
        },
    );
    m.case(
        "Hello with protocol version 2",
        "link set-up refused, logged",
        || {
            let base = link_baseline(n, &rt)?;
            rt.block_on(async {
                let mut c = RawPeer::connect(n, "c", "a").await?;
                c.send_frame(hello(&c_id, 2)).await?;
                c.until_closed(UNTIL_CLOSED).await
            })?;
            let line = n.wait_log_line("a", &["set-up failed", "protocol version 2"], WAIT);
            base.check(n, &rt, None)?;
            Ok(format!(
                "closed; log: {}",
                one_line(line.split_once("error=").map_or(&line, |x| x.1), 70)
            ))
        },
    );
    m.case(
        "frame header claiming 4 GiB",
        "Goodbye 4 frame_too_large",
        || {
            frame_refusal(
                n,
                &rt,
                &header(message(1, "m", b"").frame_type(), u32::MAX),
                GoodbyeCode::FrameTooLarge,
                "exceeds the limit",
            )
        },
    );
    m.case(
        "frame header with non-zero flags",
        "Goodbye 2 protocol_error",
        || {
            let mut ping = encode(Frame::Ping { nonce: 1 });
            ping[1] = 0x01; // the flags byte
            frame_refusal(
                n,
                &rt,
                &ping,
                GoodbyeCode::ProtocolError,
                "bad frame header",
            )
        },
    );
    m.case(
        "unknown mandatory frame type 0x42",
        "Goodbye 2 protocol_error",
        || {
            frame_refusal(
                n,
                &rt,
                &raw_frame(0x42, b"hi"),
                GoodbyeCode::ProtocolError,
                "unknown frame type",
            )
        },
    );
    m.case(
        "Ping with a 3-byte payload",
        "Goodbye 2 protocol_error",
        || {
            frame_refusal(
                n,
                &rt,
                &raw_frame(Frame::Ping { nonce: 0 }.frame_type(), &[1, 2, 3]),
                GoodbyeCode::ProtocolError,
                "malformed ping",
            )
        },
    );
    m.case(
        "Ack beyond anything ever numbered for this peer",
        "Goodbye 0, a new outbox epoch for that peer only (protocol.md 10), store otherwise unchanged",
        || {
            frame_refusal(
                n,
                &rt,
                &encode(Frame::Ack { seq: 99 }),
                GoodbyeCode::Normal,
                "restarted its outbox numbering",
            )
        },
    );
    m.case(
        "second Hello on an established link",
        "Goodbye 2 protocol_error",
        || {
            frame_refusal(
                n,
                &rt,
                &encode(hello(&c_id, PROTOCOL_VERSION)),
                GoodbyeCode::ProtocolError,
                "unexpected hello",
            )
        },
    );
    // Last: it changes c's standing for good.
    m.case(
        "partner revoked by a (ca-tool revoke --peer)",
        "TLS refusal revoked",
        || {
            n.node("a")
                .ca
                .cmd_with_pass("revoke", &args!["--peer", &c_id])
                .assert_success();
            n.wait("a to make c inactive", WAIT, |net| {
                net.check_state("a", "c", &["inactive"])
            });
            tls_refusal(n, &rt, "revoked", "revoked", &as_c(&alpn))
        },
    );
    m.finish(20);
    net.terminate_all();
}
