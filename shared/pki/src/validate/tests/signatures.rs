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
    // The anchor's validity is checked too (openssl, Go and x509-limbo's
    // rfc5280::validity::expired-root refuse an expired anchor), inclusively.
    let anchor_until = |not_before: OffsetDateTime, not_after: OffsetDateTime| {
        let a = root_with(node_dn(ID_A), p256(), |p| {
            p.not_before = not_before;
            p.not_after = not_after;
        });
        let xc = cross(&a, &net.b);
        validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client)
    };
    let e = assert_kind(
        anchor_until(AT - Duration::days(100), AT - Duration::seconds(1)),
        "expired",
    );
    let msg = e.to_string();
    assert!(msg.starts_with("anchor certificate (O=Net"), "{msg}");
    assert!(msg.contains("expired at 2026-06-01T11:59:59Z"), "{msg}");
    assert_kind(
        anchor_until(AT + Duration::seconds(1), AT + Duration::days(100)),
        "not_yet_valid",
    );
    assert_ok(anchor_until(AT - Duration::days(100), AT));
    assert_ok(anchor_until(AT, AT + Duration::days(100)));
    // A leaf that is the anchor itself is checked the same way.
    let expired_self = root_with(node_dn(ID_A), p256(), |p| {
        p.not_before = AT - Duration::days(100);
        p.not_after = AT - Duration::days(1);
    });
    assert_kind(
        validate(&expired_self.der, &expired_self.der, &[], &[], Purpose::Any),
        "expired",
    );
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
    // A leaf with B's name and B's key identifier, signed by another key.
    let mut forger = net.b.params.clone();
    forger.key_identifier_method = KeyIdMethod::PreSpecified(net.b.ski());
    let forged = issue(
        &Ca {
            params: forger,
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
    // An impostor "B" (same name and key identifier, other key) listed first;
    // the genuine cross-cert second.
    let impostor = root_with(node_dn(ID_B), p256(), |p| {
        p.key_identifier_method = KeyIdMethod::PreSpecified(net.b.ski())
    });
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
    // Two cross-certs for B with valid signatures: the one whose SKI matches
    // the leaf's AKI is taken, in either order.
    let other_ski = cross_with(&net.a, &net.b, |p| {
        p.key_identifier_method = KeyIdMethod::PreSpecified(vec![0x42; 20])
    });
    for inter in [
        vec![other_ski.clone(), net.cross_b.clone()],
        vec![net.cross_b.clone(), other_ski.clone()],
    ] {
        let chain = assert_ok(validate(
            &net.b_leaf,
            &net.a.der,
            &inter,
            &[],
            Purpose::Client,
        ));
        assert_eq!(chain.chain[1], net.cross_b);
    }
    // ... and the other one alone is not the leaf's issuer, as openssl decides
    // (its `verify` says error 20): its key identifier is not the one the
    // leaf's AKI names, although its key made the signature.
    let e = assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            std::slice::from_ref(&other_ski),
            &[],
            Purpose::Client,
        ),
        "key_id_mismatch",
    );
    let msg = e.to_string();
    assert!(msg.starts_with("leaf certificate"), "{msg}");
    assert!(msg.contains("intermediate #1 certificate"), "{msg}");
    assert!(
        msg.contains(&format!(
            "keyIdentifier {} differs from its subjectKeyIdentifier {}",
            hex::encode(net.b.ski()),
            "42".repeat(20)
        )),
        "{msg}"
    );
    // Without the genuine one, the deepest failure is the leaf's signature.
    let inter = vec![impostor.der.clone(), cross(&net.a, &impostor)];
    assert_kind(
        validate(&net.b_leaf, &net.a.der, &inter, &[], Purpose::Client),
        "bad_signature",
    );
}

/// An authorityKeyIdentifier extension written by hand: keyIdentifier,
/// authorityCertIssuer (one directoryName) and authorityCertSerialNumber.
fn aki_extension(
    key_id: Option<&[u8]>,
    issuer: Option<&DistinguishedName>,
    serial: Option<&[u8]>,
) -> CustomExtension {
    let mut content = Vec::new();
    if let Some(id) = key_id {
        content.extend(tlv(0x80, id));
    }
    if let Some(dn) = issuer {
        content.extend(tlv(0xa1, &tlv(0xa4, &name_der(dn))));
    }
    if let Some(serial) = serial {
        content.extend(tlv(0x82, serial));
    }
    CustomExtension::from_oid_content(&[2, 5, 29, 35], tlv(0x30, &content))
}

fn raw_serial(cert: &[u8]) -> Vec<u8> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).expect("parse");
    parsed.raw_serial().to_vec()
}

#[test]
fn authority_key_identifier_rules_out_issuers_as_openssl_does() {
    let net = net();
    let dn = || with_cn(node_dn(ID_B), "gw1");
    // A leaf whose AKI fields are written by hand, signed by B's key.
    let leaf =
        |key_id: Option<&[u8]>, issuer: Option<&DistinguishedName>, serial: Option<&[u8]>| {
            leaf_with(&net.b, dn(), |p| {
                p.use_authority_key_identifier_extension = false;
                p.custom_extensions = vec![aki_extension(key_id, issuer, serial)];
            })
        };
    let b_ski = net.b.ski();
    let cross_serial = raw_serial(&net.cross_b);
    let a_dn = node_dn(ID_A);
    // Fields that name the cross-cert, or are absent, pass.
    for ok in [
        leaf(Some(&b_ski), None, None),
        leaf(None, None, None),
        leaf(Some(&b_ski), Some(&a_dn), Some(&cross_serial)),
        leaf(None, Some(&a_dn), None),
        leaf_with(&net.b, dn(), |p| {
            p.use_authority_key_identifier_extension = false
        }),
    ] {
        assert_ok(via_a(&net, &ok));
    }
    // Each field that names another certificate rules the cross-cert out.
    let cases: [(Vec<u8>, &str); 3] = [
        (
            leaf(Some(&[0x42; 20]), None, None),
            "keyIdentifier 4242424242424242424242424242424242424242 differs from its subjectKeyIdentifier",
        ),
        (
            leaf(Some(&b_ski), None, Some(&[0x01, 0x02])),
            "authorityCertSerialNumber 0102 differs from its serial number",
        ),
        (
            leaf(Some(&b_ski), Some(&node_dn(ID_C)), None),
            "authorityCertIssuer \"O=Net, OU=a, serialNumber=0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c\" differs from its issuer \"O=Net, OU=a, serialNumber=0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a\"",
        ),
    ];
    for (bad, detail) in cases {
        let e = assert_kind(via_a(&net, &bad), "key_id_mismatch");
        let msg = e.to_string();
        assert!(msg.contains(detail), "{msg}");
        assert!(msg.contains("openssl"), "{msg}");
    }
    // The rule applies to the anchor too: B's leaf directly under B's root.
    let anchored = |leaf: &[u8]| validate(leaf, &net.b.der, &[], &[], Purpose::Client);
    assert_ok(anchored(&net.b_leaf));
    let e = assert_kind(
        anchored(&leaf(Some(&[7; 20]), None, None)),
        "key_id_mismatch",
    );
    assert!(
        e.to_string().contains("does not name anchor certificate"),
        "{e}"
    );
    // And to intermediates above the leaf: a cross-cert whose AKI is not A's SKI.
    let cross_other_aki = cross_with(&net.a, &net.b, |p| {
        p.use_authority_key_identifier_extension = false;
        p.custom_extensions = vec![aki_extension(Some(&[9; 20]), None, None)];
    });
    let e = assert_kind(
        validate(
            &net.b_leaf,
            &net.a.der,
            &[cross_other_aki],
            &[],
            Purpose::Client,
        ),
        "key_id_mismatch",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    // An issuer without a subjectKeyIdentifier cannot be ruled out by keyIdentifier.
    let bare = root_with(node_dn(ID_A), p256(), |p| p.is_ca = IsCa::NoCa);
    let (_, bare_cert) = x509_parser::certificate::X509Certificate::from_der(&bare.der).unwrap();
    assert!(bare_cert
        .extensions()
        .iter()
        .all(|e| e.oid != x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER));
    let b_under_bare = cross_with(&bare, &net.b, |p| {
        p.use_authority_key_identifier_extension = false;
        p.custom_extensions = vec![aki_extension(Some(&[9; 20]), None, None)];
    });
    assert_ok(validate(
        &net.b_leaf,
        &bare.der,
        &[b_under_bare],
        &[],
        Purpose::Client,
    ));
}

#[test]
fn key_identifiers_choose_between_reissued_roots() {
    // B re-keyed its root under the same name; A holds cross-certs for both.
    // The leaf's AKI picks the one it was issued under, in either order, and
    // the old one alone is refused for the key identifier, not the signature.
    let net = net();
    let b2 = root(ID_B);
    let cross_b2 = cross(&net.a, &b2);
    let leaf2 = leaf_with(&b2, with_cn(node_dn(ID_B), "gw2"), |_| {});
    for inter in [
        vec![net.cross_b.clone(), cross_b2.clone()],
        vec![cross_b2.clone(), net.cross_b.clone()],
    ] {
        let chain = assert_ok(validate(&leaf2, &net.a.der, &inter, &[], Purpose::Client));
        assert_eq!(chain.chain[1], cross_b2);
        let chain = assert_ok(validate(
            &net.b_leaf,
            &net.a.der,
            &inter,
            &[],
            Purpose::Client,
        ));
        assert_eq!(chain.chain[1], net.cross_b);
    }
    assert_kind(
        validate(
            &leaf2,
            &net.a.der,
            std::slice::from_ref(&net.cross_b),
            &[],
            Purpose::Client,
        ),
        "key_id_mismatch",
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
