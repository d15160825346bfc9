//! The chain validator alone: `peerlink_pki::validate::validate_chain` on the real
//! inbound chain (B's gateway certificate via the directoryName-constrained
//! cross-cert to A's root, EKU clientAuth) against
//! `webpki::EndEntityCert::verify_for_usage` on the same chain without the
//! constraint. Both start from DER each call (parse leaf, intermediate, anchor
//! and CRLs), as `validate_chain` does.
//!
//! It lives with the TLS crate because it also measures what the accepting
//! verifier runs per handshake (`peerlink_tls::identify_client`), and its
//! certificates come from the CA crate, which the PKI core cannot depend on.
//!
//! `scripts/bench micro` runs it; `cargo bench -p peerlink-tls --bench validator`.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use peerlink_pki::validate::{validate_chain, Purpose, ValidationOptions};
use rustls_pki_types::{CertificateDer, UnixTime};

fn validator(c: &mut Criterion) {
    let f = common::Fixture::new();
    let now = ::time::OffsetDateTime::now_utc();
    let unix_now = UnixTime::now();
    let algs = webpki::ALL_VERIFICATION_ALGS;
    let a_trust = f.a_trust(true, &[]);

    for crls in [false, true] {
        let suffix = if crls { "crl" } else { "no_crl" };
        let mut group = c.benchmark_group(format!("validator_{suffix}"));
        let our_intermediates = vec![f.cross_b_by_a.clone()];
        let our_crls: Vec<Vec<u8>> = if crls {
            vec![f.a.crl.clone(), f.b.crl.clone()]
        } else {
            vec![]
        };
        group.bench_function("ours_validate_chain", |bench| {
            bench.iter(|| {
                let chain = validate_chain(
                    black_box(&f.b.gw.cert_der),
                    &ValidationOptions {
                        anchor: &f.a.root_der,
                        intermediates: &our_intermediates,
                        crls: &our_crls,
                        at: now,
                        purpose: Purpose::Client,
                    },
                )
                .unwrap();
                black_box(chain);
            })
        });
        let plain = [CertificateDer::from(f.cross_b_by_a_plain.as_slice())];
        group.bench_function("webpki_verify_for_usage", |bench| {
            bench.iter(|| {
                let anchor_der = CertificateDer::from(f.a.root_der.as_slice());
                let anchors = [webpki::anchor_from_trusted_cert(&anchor_der).unwrap()];
                let leaf_der = CertificateDer::from(black_box(f.b.gw.cert_der.as_slice()));
                let leaf = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
                let parsed: Vec<webpki::CertRevocationList<'_>> = if crls {
                    vec![
                        webpki::BorrowedCertRevocationList::from_der(&f.a.crl)
                            .unwrap()
                            .into(),
                        webpki::BorrowedCertRevocationList::from_der(&f.b.crl)
                            .unwrap()
                            .into(),
                    ]
                } else {
                    vec![]
                };
                let refs: Vec<&webpki::CertRevocationList<'_>> = parsed.iter().collect();
                let revocation = if crls {
                    Some(
                        webpki::RevocationOptionsBuilder::new(&refs)
                            .unwrap()
                            .build(),
                    )
                } else {
                    None
                };
                let path = leaf
                    .verify_for_usage(
                        algs,
                        &anchors,
                        &plain,
                        unix_now,
                        webpki::KeyUsage::client_auth(),
                        revocation,
                        None,
                    )
                    .unwrap();
                black_box(path.end_entity());
            })
        });
        if crls {
            // What the accepting verifier really runs per handshake: validation plus
            // the cross-cert's partner lookup and the partner's own CRL.
            let intermediates = vec![f.cross_b_by_a.clone()];
            group.bench_function("ours_identify_client", |bench| {
                bench.iter(|| {
                    let who = peerlink_tls::identify_client(
                        &a_trust,
                        black_box(&f.b.gw.cert_der),
                        &intermediates,
                        now,
                    )
                    .unwrap();
                    black_box(who);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, validator);
criterion_main!(benches);
