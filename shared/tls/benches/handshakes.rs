//! Full mutual-TLS handshakes per second, in process over `tokio::io::duplex`:
//! `peerlink_tls::PeerTls` (the gateway's verifiers: directoryName constraints,
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
//! `cargo bench -p peerlink-tls --bench handshakes -- [--rounds N] [--slice-ms MS]
//! [--extra-peers N] [--json FILE] [--only VARIANT [--count N]]`

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerlink_ca::profiles::{issue_root, random_serial, validity_days};
use peerlink_pki::identity::{node_id_from_spki, rcgen_name, NodeIdentity, NodeName};
use peerlink_pki::keys::{KeyType, PrivateKey};
use peerlink_tls::{NodeTrust, PeerStatus, PeerTls, PeerTrust, ServerIdentity, ALPN};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SanType,
};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{issuer, peer_trust, Fixture, Node};

/// The server name both baseline sides use (and ours sends, without checking it).
const SERVER_NAME: &str = "peerlink.invalid";

/// B's trust: partner A, with both CRLs or none.
fn b_trust(f: &Fixture, crls: bool) -> Arc<NodeTrust> {
    let mut peers = BTreeMap::new();
    peers.insert(
        f.a.id().node_id.clone(),
        peer_trust(&f.a, &f.cross_b_by_a, crls),
    );
    Arc::new(NodeTrust {
        node_dir: ".".into(),
        root_der: f.b.root_der.clone(),
        identity: f.b.id().clone(),
        crl_der: crls.then(|| f.b.crl.clone()),
        peers,
    })
}

/// A's PeerTls (accepts B).
fn a_tls(f: &Fixture, crls: bool, extra: &[PeerTrust]) -> PeerTls {
    tls(&f.a, f.a_trust(crls, extra))
}

/// B's PeerTls (dials A).
fn b_tls(f: &Fixture, crls: bool) -> PeerTls {
    tls(&f.b, b_trust(f, crls))
}

fn tls(me: &Node, trust: Arc<NodeTrust>) -> PeerTls {
    let identity = ServerIdentity {
        cert_der: me.gw.cert_der.clone(),
        key: PrivateKey::from_pkcs8_der(me.gw.key.pkcs8_der(), "gw").unwrap(),
        not_after: me.gw.not_after,
    };
    PeerTls::new(trust, Arc::new(identity)).unwrap()
}

/// `count` more registered partners (roots only), for the peer-lookup cost.
fn other_partners(count: usize) -> Vec<PeerTrust> {
    (0..count)
        .map(|i| {
            let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
            let id = node_id_from_spki(&key.public_key_der().unwrap());
            let unit = format!("extra{i}");
            let root = issue_root(&key, &NodeName::new("Bench", &unit, &id).unwrap(), 365).unwrap();
            let ident = NodeIdentity::from_root_der(&root).unwrap();
            PeerTrust {
                node_id: ident.node_id.clone(),
                subject: ident.subject.clone(),
                subject_der: ident.subject_der.clone(),
                root_der: root,
                issued_to_us_der: None,
                endpoints: vec![],
                status: PeerStatus::Active,
                crl_der: None,
                issued_to_us_not_after: None,
                stomp: None,
            }
        })
        .collect()
}

/// Baseline: A's gateway certificate (same key, subject and extensions) plus a DNS
/// subjectAltName, for webpki's name check.
fn gw_with_san(a: &Node) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(&a.gw.cert_der).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen_name(cert.subject()).unwrap();
    let (not_before, not_after) = validity_days(90).unwrap();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![SanType::DnsName(SERVER_NAME.try_into().unwrap())];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    let spki = rcgen::SubjectPublicKeyInfo::from_der(cert.public_key().raw).unwrap();
    params.signed_by(&spki, &issuer(a)).unwrap().der().to_vec()
}

/// Plain rustls on the baseline chain.
struct Plain {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn plain(f: &Fixture, a_gw_cert_san: &[u8], crls: bool) -> Plain {
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
    let key =
        |k: &PrivateKey| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.pkcs8_der().to_vec()));
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(cv.build().unwrap())
        .with_single_cert(
            vec![CertificateDer::from(a_gw_cert_san.to_vec())],
            key(&f.a.gw.key),
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
                CertificateDer::from(f.b.gw.cert_der.clone()),
                CertificateDer::from(f.cross_b_by_a_plain.clone()),
            ],
            key(&f.b.gw.key),
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
        let name = ServerName::try_from(SERVER_NAME).unwrap();
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
    let f = Fixture::new();
    let a_gw_cert_san = gw_with_san(&f.a);
    let a_id = f.a.id().node_id.clone();
    let others = other_partners(extra_peers);
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
                a: a_tls(&f, false, &[]),
                b: b_tls(&f, false),
                a_id: a_id.clone(),
            },
        ),
        (
            "plain_no_crl",
            Variant::Plain(plain(&f, &a_gw_cert_san, false)),
        ),
        (
            "ours_crl",
            Variant::Ours {
                a: a_tls(&f, true, &[]),
                b: b_tls(&f, true),
                a_id: a_id.clone(),
            },
        ),
        ("plain_crl", Variant::Plain(plain(&f, &a_gw_cert_san, true))),
        (
            "ours_crl_many_peers",
            Variant::Ours {
                a: a_tls(&f, true, &others),
                b: b_tls(&f, true),
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
