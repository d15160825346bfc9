//! Full mutual-TLS handshakes per second, in process over `tokio::io::duplex`:
//! `shared::tls::PeerTls` (the gateway's verifiers: directoryName constraints,
//! CRLs, partner lookup) against stock rustls with `WebPkiClientVerifier` /
//! `WebPkiServerVerifier` on the same keys (ECDSA P-256) and chain length
//! (leaf + cross-cert + root), both TLS 1.3 only, ALPN `peerlink/1`, no
//! session resumption or tickets, ring provider.
//!
//! One handshake = client and server run to completion on one thread and
//! exchange one byte each way (a TLS 1.3 client learns of a refusal only on its
//! first read). The variants run interleaved, in short slices, for several
//! rounds (order rotated every round), so a neighbour's load hits all of them
//! alike; the ratio is taken per round and the median reported.
//!
//! Not a criterion bench: criterion measures one function after another.
//! `scripts/bench handshakes` runs it:
//! `cargo bench -p shared --bench handshakes -- [--rounds N] [--slice-ms MS]
//! [--extra-peers N] [--json FILE] [--only VARIANT [--count N]]`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use shared::tls::{PeerTls, ALPN};

/// Plain rustls on the baseline chain.
struct Plain {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn plain(f: &common::Fixture, crls: bool) -> Plain {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(f.a.root_der.clone()))
        .unwrap();
    let roots = Arc::new(roots);
    let der = |d: &[u8]| rustls::pki_types::CertificateRevocationListDer::from(d.to_vec());
    let mut cv = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if crls {
        cv = cv.with_crls([der(&f.a.crl), der(&f.b.crl)]);
    }
    let key = |k: &shared::keys::PrivateKey| {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.pkcs8_der().to_vec()))
    };
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(cv.build().unwrap())
        .with_single_cert(
            vec![CertificateDer::from(f.a_gw_cert_san.clone())],
            key(&f.a.gw_key),
        )
        .unwrap();
    server.alpn_protocols = vec![ALPN.to_vec()];
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;

    let mut sv =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
    if crls {
        sv = sv.with_crls([der(&f.a.crl)]);
    }
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_webpki_verifier(sv.build().unwrap())
        .with_client_auth_cert(
            vec![
                CertificateDer::from(f.b.gw_cert.clone()),
                CertificateDer::from(f.cross_b_by_a_plain.clone()),
            ],
            key(&f.b.gw_key),
        )
        .unwrap();
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = Resumption::disabled();
    client.enable_sni = false;
    Plain {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

async fn ours_once(a: &PeerTls, b: &PeerTls, a_id: &str) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let accept = async {
        let (mut s, _peer) = a.accept(x).await.expect("accept");
        s.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await.unwrap();
    };
    let connect = async {
        let mut c = b.connect(y, a_id).await.expect("connect");
        c.write_all(b"y").await.unwrap();
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf).await.unwrap();
    };
    tokio::join!(accept, connect);
}

async fn plain_once(p: &Plain) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let accept = async {
        let mut s = tokio_rustls::TlsAcceptor::from(p.server.clone())
            .accept(x)
            .await
            .expect("accept");
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(ALPN));
        s.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await.unwrap();
    };
    let connect = async {
        let name = ServerName::try_from(common::SERVER_NAME).unwrap();
        let mut c = tokio_rustls::TlsConnector::from(p.client.clone())
            .connect(name, y)
            .await
            .expect("connect");
        assert_eq!(c.get_ref().1.alpn_protocol(), Some(ALPN));
        c.write_all(b"y").await.unwrap();
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf).await.unwrap();
    };
    tokio::join!(accept, connect);
}

enum Variant {
    Ours {
        a: PeerTls,
        b: PeerTls,
        a_id: String,
    },
    Plain(Plain),
}

impl Variant {
    async fn once(&self) {
        match self {
            Variant::Ours { a, b, a_id } => ours_once(a, b, a_id).await,
            Variant::Plain(p) => plain_once(p).await,
        }
    }

    /// Handshakes per second over one slice.
    async fn slice(&self, len: Duration) -> f64 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < len {
            self.once().await;
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut rounds = 10usize;
    let mut slice_ms = 1000u64;
    let mut json_out: Option<String> = None;
    let mut extra_peers = 1000usize;
    let mut only: Option<String> = None;
    let mut count: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            "--slice-ms" => slice_ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(slice_ms),
            "--extra-peers" => {
                extra_peers = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(extra_peers)
            }
            "--json" => json_out = args.next(),
            // Runs one variant alone (for profiling); prints its rate only.
            "--only" => only = args.next(),
            // With --only: a fixed number of handshakes instead of a time slice, so
            // that `valgrind --tool=callgrind` counts are comparable between variants.
            "--count" => count = args.next().and_then(|v| v.parse().ok()),
            _ => {} // `cargo bench` passes --bench
        }
    }
    let f = common::Fixture::new();
    let a_id = f.a.id().node_id.clone();
    let others = common::other_partners(extra_peers);
    // The accepting side finds the partner of a leaf by walking its registry in node
    // id order, so B's place in that order matters: record it.
    let b_rank = others
        .iter()
        .filter(|p| p.node_id < f.b.id().node_id)
        .count()
        + 1;
    let variants: Vec<(&str, Variant)> = vec![
        (
            "ours_no_crl",
            Variant::Ours {
                a: f.a_tls(false, &[]),
                b: f.b_tls(false),
                a_id: a_id.clone(),
            },
        ),
        ("plain_no_crl", Variant::Plain(plain(&f, false))),
        (
            "ours_crl",
            Variant::Ours {
                a: f.a_tls(true, &[]),
                b: f.b_tls(true),
                a_id: a_id.clone(),
            },
        ),
        ("plain_crl", Variant::Plain(plain(&f, true))),
        (
            "ours_crl_many_peers",
            Variant::Ours {
                a: f.a_tls(true, &others),
                b: f.b_tls(true),
                a_id: a_id.clone(),
            },
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let slice = Duration::from_millis(slice_ms);
    if let Some(name) = only {
        let (_, v) = variants
            .iter()
            .find(|(n, _)| *n == name)
            .expect("--only: unknown variant");
        if let Some(n) = count {
            rt.block_on(async {
                for _ in 0..n {
                    v.once().await;
                }
            });
            println!("{name}: {n} handshakes");
            return;
        }
        let rate = rt.block_on(v.slice(slice * rounds as u32));
        println!("{name}: {rate:.0} handshakes/s");
        return;
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    rt.block_on(async {
        // Warm-up (and a check that every variant completes).
        for (_, v) in &variants {
            v.slice(Duration::from_millis(200)).await;
        }
        for round in 0..rounds {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                rates[i].push(variants[i].1.slice(slice).await);
            }
            eprintln!(
                "round {}/{rounds}: {}",
                round + 1,
                variants
                    .iter()
                    .zip(&rates)
                    .map(|((name, _), r)| format!("{name} {:.0}/s", r[round]))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    });
    let idx = |name: &str| variants.iter().position(|(n, _)| *n == name).unwrap();
    let ratio = |ours: &str, base: &str| {
        let mut r: Vec<f64> = rates[idx(ours)]
            .iter()
            .zip(&rates[idx(base)])
            .map(|(o, b)| o / b)
            .collect();
        median(&mut r)
    };
    let mut out = serde_json::Map::new();
    for ((name, _), r) in variants.iter().zip(&rates) {
        let mut r = r.clone();
        out.insert(format!("{name}_per_s"), median(&mut r).into());
    }
    out.insert(
        "ratio_no_crl".into(),
        ratio("ours_no_crl", "plain_no_crl").into(),
    );
    out.insert("ratio_crl".into(), ratio("ours_crl", "plain_crl").into());
    out.insert(
        "ratio_crl_many_peers".into(),
        ratio("ours_crl_many_peers", "plain_crl").into(),
    );
    out.insert("rounds".into(), rounds.into());
    out.insert("slice_ms".into(), slice_ms.into());
    out.insert("extra_peers".into(), extra_peers.into());
    out.insert("b_rank_among_partners".into(), b_rank.into());
    let text = serde_json::to_string_pretty(&out).unwrap();
    println!("{text}");
    if let Some(path) = json_out {
        std::fs::write(path, text + "\n").unwrap();
    }
}
