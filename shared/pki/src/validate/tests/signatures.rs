//! Validity periods, signatures, issuer matching, critical extensions, and the
//! key types a partner may use.

use super::*;

#[test]
fn validity_periods() {
    let net = net();
    let dn = || with_cn(node_dn(ID_B), "gw1");
    let expired = leaf_with(&net.b, dn(), |p| {
        p.not_before = AT - Duration::days(100);
        p.not_after = AT - Duration::seconds(1);
    });
    let e = assert_kind(via_a(&net, &expired), "expired");
    assert!(e.to_string().starts_with("leaf certificate"), "{e}");
    assert!(e.to_string().contains("2026-06-01T11:59:59Z"), "{e}");
    let future = leaf_with(&net.b, dn(), |p| {
        p.not_before = AT + Duration::seconds(1);
        p.not_after = AT + Duration::days(100);
    });
    assert_kind(via_a(&net, &future), "not_yet_valid");
    // Boundaries are inclusive.
    let edge = leaf_with(&net.b, dn(), |p| {
        p.not_before = AT;
        p.not_after = AT;
    });
    assert_ok(via_a(&net, &edge));

    let cross_expired = cross_with(&net.a, &net.b, |p| {
        p.not_before = AT - Duration::days(100);
        p.not_after = AT - Duration::days(1);
    });
    let e = assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[cross_expired],
            &[],
            Purpose::Client,
        ),
        "expired",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    let cross_future = cross_with(&net.a, &net.b, |p| {
        p.not_before = AT + Duration::days(1);
    });
    assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[cross_future],
            &[],
            Purpose::Client,
        ),
        "not_yet_valid",
    );
    // The anchor's validity is not checked.
    let old_a = root_with(node_dn(ID_A), p256(), |p| {
        p.not_before = AT - Duration::days(100);
        p.not_after = AT - Duration::days(1);
    });
    let xc = cross(&old_a, &net.b);
    assert_ok(validate(
        &net.b_leaf,
        &old_a.der,
        &[xc],
        &[],
        Purpose::Client,
    ));
}

fn flip_last_byte(der: &[u8]) -> Vec<u8> {
    let mut out = der.to_vec();
    if let Some(last) = out.last_mut() {
        *last ^= 0x01;
    }
    out
}

#[test]
fn bad_signatures() {
    let net = net();
    let e = assert_kind(via_a(&net, &flip_last_byte(&net.b_leaf)), "bad_signature");
    assert!(e.to_string().starts_with("leaf certificate"), "{e}");
    let e = assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[flip_last_byte(&net.cross_b)],
            &[],
            Purpose::Client,
        ),
        "bad_signature",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    assert!(e.to_string().contains("key of anchor certificate"), "{e}");
    // A leaf with B's name signed by another key (C's).
    let forged = issue(
        &Ca {
            params: net.b.params.clone(),
            key: key(KeyType::EcdsaP256),
            der: vec![],
        },
        &leaf_params(with_cn(node_dn(ID_B), "gw1")),
    );
    assert_kind(via_a(&net, &forged), "bad_signature");
}

#[test]
fn alternative_paths_are_tried() {
    let net = net();
    // An impostor "B" (same name, other key) listed first; the genuine cross-cert second.
    let impostor = root(ID_B);
    let impostor_cross = cross(&net.a, &impostor);
    let inter = vec![impostor.der.clone(), impostor_cross, net.cross_b.clone()];
    let chain = assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &inter,
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain[1], net.cross_b);
    // Two valid cross-certs for B: the one whose SKI matches the leaf's AKI is preferred.
    let other_ski = cross_with(&net.a, &net.b, |p| {
        p.key_identifier_method = KeyIdMethod::PreSpecified(vec![0x42; 20])
    });
    let inter = vec![other_ski.clone(), net.cross_b.clone()];
    let chain = assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &inter,
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain[1], net.cross_b);
    // ... but a key identifier mismatch alone does not disqualify a valid issuer.
    let chain = assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        std::slice::from_ref(&other_ski),
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain[1], other_ski);
    // Without the genuine one, the deepest failure is the leaf's signature.
    let inter = vec![impostor.der.clone(), cross(&net.a, &impostor)];
    assert_kind(
        validate(&net.b_leaf, &net.a.der, &inter, &[], Purpose::Client),
        "bad_signature",
    );
}

#[test]
fn unknown_issuer() {
    let net = net();
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[], &[], Purpose::Client),
        "unknown_issuer",
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("its issuer \"O=Net, OU=a, serialNumber={ID_B}\"")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("trust anchor (O=Net, OU=a, serialNumber={ID_A})")),
        "{msg}"
    );
    // Unrelated intermediates change nothing.
    assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[net.c.der.clone(), cross(&net.a, &net.c)],
            &[],
            Purpose::Client,
        ),
        "unknown_issuer",
    );
    // A loop of cross-signatures that never reaches the anchor terminates.
    let x = root(ID_C);
    let y = root("0d0d");
    let loop_certs = vec![cross(&x, &y), cross(&y, &x)];
    let leaf = leaf_with(&y, with_cn(y.dn(), "z"), |_| {});
    assert_kind(
        validate(&leaf, &net.a.der, &loop_certs, &[], Purpose::Client),
        "unknown_issuer",
    );
}

#[test]
fn critical_extensions() {
    let net = net();
    let dn = || with_cn(node_dn(ID_B), "gw1");
    let unknown = |critical: bool| {
        let mut ext =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
        ext.set_criticality(critical);
        ext
    };
    let critical = leaf_with(&net.b, dn(), |p| p.custom_extensions.push(unknown(true)));
    let e = assert_kind(via_a(&net, &critical), "unsupported_critical_extension");
    assert!(e.to_string().contains("1.3.6.1.4.1.55555.1"), "{e}");
    let lax = leaf_with(&net.b, dn(), |p| p.custom_extensions.push(unknown(false)));
    assert_ok(via_a(&net, &lax));
    // Critical certificatePolicies (anyPolicy) on the cross-cert.
    let mut policies = CustomExtension::from_oid_content(
        &[2, 5, 29, 32],
        tlv(0x30, &tlv(0x30, &tlv(0x06, &[0x55, 0x1d, 0x20, 0x00]))),
    );
    policies.set_criticality(true);
    let xc = cross_with(&net.a, &net.b, |p| p.custom_extensions.push(policies));
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
        "unsupported_critical_extension",
    );
    assert!(e.to_string().contains("certificatePolicies"), "{e}");
    // The same extension twice.
    let twice = leaf_with(&net.b, dn(), |p| {
        p.custom_extensions.push(unknown(false));
        p.custom_extensions.push(unknown(false));
    });
    let e = assert_kind(via_a(&net, &twice), "malformed");
    assert!(e.to_string().contains("more than once"), "{e}");
    // A known extension that does not decode.
    let broken = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages.clear();
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            vec![0x04, 0x00],
        ));
    });
    assert_kind(via_a(&net, &broken), "malformed");
}

#[test]
fn mixed_key_types() {
    // A: P-384, B: Ed25519, leaf: RSA-2048.
    let a = root_with(node_dn(ID_A), key(KeyType::EcdsaP384), |_| {});
    let b = root_with(node_dn(ID_B), key(KeyType::Ed25519), |_| {});
    let cross_b = cross(&a, &b);
    let leaf = issue_key(
        &b,
        &leaf_params(with_cn(node_dn(ID_B), "gw1")),
        &key(KeyType::Rsa2048),
    );
    assert_ok(validate(
        &leaf,
        &a.der,
        std::slice::from_ref(&cross_b),
        &[],
        Purpose::Client,
    ));
    // CRLs signed with Ed25519.
    assert_kind(
        validate(
            &leaf,
            &a.der,
            &[cross_b],
            &[sign_crl(&crl_params(&[&leaf]), &b)],
            Purpose::Client,
        ),
        "revoked",
    );

    // A: RSA-2048, B: P-256, leaf: Ed25519; RSA-signed cross-cert and CRL.
    let a = root_with(node_dn(ID_A), key(KeyType::Rsa2048), |_| {});
    let b = root(ID_B);
    let cross_b = cross(&a, &b);
    let leaf = issue_key(
        &b,
        &leaf_params(with_cn(node_dn(ID_B), "gw1")),
        &key(KeyType::Ed25519),
    );
    let crl = sign_crl(&crl_params(&[]), &a);
    assert_ok(validate(
        &leaf,
        &a.der,
        std::slice::from_ref(&cross_b),
        &[crl],
        Purpose::Server,
    ));
    let crl = sign_crl(&crl_params(&[&cross_b]), &a);
    assert_kind(
        validate(&leaf, &a.der, &[cross_b], &[crl], Purpose::Server),
        "revoked",
    );
}
