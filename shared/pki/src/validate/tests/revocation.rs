//! Revocation by CRLs.

use super::*;

#[test]
fn revocation_by_crl() {
    let net = net();
    let b = &net.b;
    let inter = std::slice::from_ref(&net.cross_b);
    let check = |crls: &[Vec<u8>]| validate(&net.b_leaf, &net.a.der, inter, crls, Purpose::Client);

    let revoking = crl_params(&[&net.b_leaf]);
    let e = assert_kind(check(&[sign_crl(&revoking, b)]), "revoked");
    let msg = e.to_string();
    assert!(msg.starts_with("leaf certificate"), "{msg}");
    assert!(msg.contains("keyCompromise"), "{msg}");
    assert!(msg.contains("2026-06-01T07:00:00Z"), "{msg}");

    // The same CRL signed by a key that is not B's.
    let forged_issuer = Ca {
        params: b.params.clone(),
        key: p256(),
        der: vec![],
    };
    let e = assert_kind(
        check(&[sign_crl(&revoking, &forged_issuer)]),
        "crl_bad_signature",
    );
    assert!(e.to_string().contains("CRL #1"), "{e}");
    // Even a forged CRL that revokes nothing is refused.
    assert_kind(
        check(&[sign_crl(&crl_params(&[]), &forged_issuer)]),
        "crl_bad_signature",
    );

    // A clean CRL, an unrelated CRL: accepted.
    assert_ok(check(&[
        sign_crl(&crl_params(&[]), b),
        sign_crl(&revoking, &net.c),
    ]));
    // Several CRLs of B: all apply.
    assert_kind(
        check(&[sign_crl(&crl_params(&[]), b), sign_crl(&revoking, b)]),
        "revoked",
    );

    // Expired and not yet valid CRLs.
    let mut stale = crl_params(&[]);
    stale.this_update = AT - Duration::days(10);
    stale.next_update = AT - Duration::days(3);
    let e = assert_kind(check(&[sign_crl(&stale, b)]), "crl_expired");
    assert!(
        e.to_string()
            .contains("a fresh CRL from that issuer is needed"),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("serialNumber={ID_B}")),
        "{e}"
    );
    let mut early = crl_params(&[]);
    early.this_update = AT + Duration::days(1);
    early.next_update = AT + Duration::days(8);
    assert_kind(check(&[sign_crl(&early, b)]), "crl_not_yet_valid");

    // A revokes the cross-cert it issued to B.
    let e = assert_kind(
        check(&[sign_crl(&crl_params(&[&net.cross_b]), &net.a)]),
        "revoked",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");

    // Partitioned CRLs (critical issuingDistributionPoint) are not implemented.
    let mut partitioned = crl_params(&[]);
    partitioned.issuing_distribution_point = Some(CrlIssuingDistributionPoint {
        distribution_point: CrlDistributionPoint {
            uris: vec!["http://crl.example/b.crl".into()],
        },
        scope: None,
    });
    assert_kind(
        check(&[sign_crl(&partitioned, b)]),
        "unsupported_critical_extension",
    );
}

#[test]
fn crl_issuer_needs_crl_sign() {
    // B's root has keyUsage keyCertSign only, yet a CRL signed by its key names it.
    let a = root(ID_A);
    let b_dn = node_dn(ID_B);
    let b = root_with(b_dn, p256(), |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign]
    });
    let leaf = leaf_with(&b, with_cn(node_dn(ID_B), "gw1"), |_| {});
    let xc = cross(&a, &b);
    assert_ok(validate(
        &leaf,
        &a.der,
        std::slice::from_ref(&xc),
        &[],
        Purpose::Client,
    ));
    let mut signer_params = b.params.clone();
    signer_params.key_usages.push(KeyUsagePurpose::CrlSign);
    let crl = crl_params(&[])
        .signed_by(&Issuer::from_params(&signer_params, &b.key))
        .expect("CRL")
        .der()
        .to_vec();
    // The CRL's issuer is B; the cross-cert stands for B in this path and lacks cRLSign.
    let cross_no_crl_sign = cross_with(&a, &b, |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign]
    });
    let e = assert_kind(
        validate(&leaf, &a.der, &[cross_no_crl_sign], &[crl], Purpose::Client),
        "key_usage",
    );
    assert!(e.to_string().contains("cRLSign"), "{e}");
}
