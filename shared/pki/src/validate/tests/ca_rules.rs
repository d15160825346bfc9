//! What makes an issuer an issuer and a leaf a leaf: basicConstraints, pathLen,
//! keyUsage, extendedKeyUsage.

use super::*;

#[test]
fn path_len_of_the_cross_cert_is_enforced() {
    let net = net();
    let mut sub_params = root_params(with_cn(node_dn(ID_B), "sub"));
    sub_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let sub_key = p256();
    let sub_der = issue_key(&net.b, &sub_params, &sub_key);
    let sub = Ca {
        params: sub_params,
        key: sub_key,
        der: sub_der,
    };
    let leaf = leaf_with(&sub, with_cn(node_dn(ID_B), "gw9"), |_| {});
    let e = assert_kind(
        validate(
            &leaf,
            &net.a.der,
            &[net.cross_b.clone(), sub.der.clone()],
            &[],
            Purpose::Client,
        ),
        "path_len",
    );
    let msg = e.to_string();
    assert!(msg.starts_with("intermediate #1"), "{msg}");
    assert!(msg.contains("of intermediate #2 certificate"), "{msg}");
    assert!(msg.contains("pathLenConstraint 0"), "{msg}");
    // Under B's own root (pathlen 1) one intermediate is fine.
    assert_ok(validate(
        &leaf,
        &net.b.der,
        std::slice::from_ref(&sub.der),
        &[],
        Purpose::Client,
    ));
}

/// A chain of CAs below `top`, each unconstrained; returns them top-down.
fn ca_chain(top: &Ca, names: &[&str], self_issued_after: Option<usize>) -> Vec<Ca> {
    let mut out: Vec<Ca> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let issuer = out.last().unwrap_or(top);
        // Optionally repeat the issuer's name (a self-issued certificate).
        let dn = if self_issued_after == Some(i) {
            issuer.dn()
        } else {
            with_cn(node_dn(ID_B), name)
        };
        let mut params = root_params(dn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.use_authority_key_identifier_extension = true;
        let key = p256();
        let der = issue_key(issuer, &params, &key);
        out.push(Ca { params, key, der });
    }
    out
}

#[test]
fn path_len_counts_non_self_issued_intermediates() {
    // B's root (pathlen 1) as the anchor: one intermediate below it is fine,
    // two are not, and a self-issued one in between does not count.
    let b = root(ID_B);
    let two = ca_chain(&b, &["one", "two"], None);
    let ders: Vec<Vec<u8>> = two.iter().map(|c| c.der.clone()).collect();
    let leaf = leaf_with(&two[1], with_cn(node_dn(ID_B), "gw"), |_| {});
    let e = assert_kind(
        validate(&leaf, &b.der, &ders, &[], Purpose::Client),
        "path_len",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    assert!(e.to_string().contains("of anchor certificate"), "{e}");
    let leaf = leaf_with(&two[0], with_cn(node_dn(ID_B), "gw"), |_| {});
    assert_ok(validate(&leaf, &b.der, &ders, &[], Purpose::Client));

    let rolled = ca_chain(&b, &["one", "one-again"], Some(1));
    let ders: Vec<Vec<u8>> = rolled.iter().map(|c| c.der.clone()).collect();
    let leaf = leaf_with(&rolled[1], with_cn(node_dn(ID_B), "gw"), |_| {});
    let chain = assert_ok(validate(&leaf, &b.der, &ders, &[], Purpose::Client));
    assert_eq!(chain.chain.len(), 4);
}

#[test]
fn anchor_path_len_applies() {
    let net = net();
    let a0 = root_with(node_dn(ID_A), p256(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0))
    });
    let xc = cross(&a0, &net.b);
    let e = assert_kind(
        validate(&net.b_leaf, &a0.der, &[xc], &[], Purpose::Client),
        "path_len",
    );
    assert!(e.to_string().contains("of anchor certificate"), "{e}");
}

#[test]
fn leaf_that_is_a_ca() {
    let net = net();
    let ca_leaf = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    });
    assert_kind(via_a(&net, &ca_leaf), "ca_as_leaf");
    assert_kind(
        validate(
            &ca_leaf,
            &net.a.der,
            std::slice::from_ref(&net.cross_b),
            &[],
            Purpose::Server,
        ),
        "ca_as_leaf",
    );
    assert_ok(validate(
        &ca_leaf,
        &net.a.der,
        std::slice::from_ref(&net.cross_b),
        &[],
        Purpose::Any,
    ));
}

#[test]
fn extended_key_usage() {
    let net = net();
    let dn = || with_cn(node_dn(ID_B), "gw1");
    let none = leaf_with(&net.b, dn(), |p| p.extended_key_usages.clear());
    let e = assert_kind(via_a(&net, &none), "eku");
    assert!(e.to_string().contains("no extendedKeyUsage"), "{e}");
    let server_only = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    assert_kind(via_a(&net, &server_only), "eku");
    let b = &net.b.der;
    assert_ok(validate(&server_only, b, &[], &[], Purpose::Server));
    let client_only = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
    });
    assert_ok(validate(&client_only, b, &[], &[], Purpose::Client));
    let e = assert_kind(validate(&client_only, b, &[], &[], Purpose::Server), "eku");
    assert!(e.to_string().contains("serverAuth"), "{e}");
    // anyExtendedKeyUsage alone is not enough (strict profile).
    let any = leaf_with(&net.b, dn(), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any]
    });
    assert_kind(validate(&any, b, &[], &[], Purpose::Server), "eku");
    assert_ok(validate(&none, b, &[], &[], Purpose::Any));
}

#[test]
fn key_usage() {
    let net = net();
    let b = &net.b.der;
    // Leaf without digitalSignature.
    let enc_only = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
    });
    assert_kind(
        validate(&enc_only, b, &[], &[], Purpose::Client),
        "key_usage",
    );
    assert_ok(validate(&enc_only, b, &[], &[], Purpose::Any));
    // RSA-style leaf with digitalSignature + keyEncipherment is fine.
    let rsa_style = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    });
    assert_ok(validate(&rsa_style, b, &[], &[], Purpose::Client));
    // Intermediate without keyCertSign.
    let xc = cross_with(&net.a, &net.b, |p| {
        p.key_usages = vec![KeyUsagePurpose::CrlSign]
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
        "key_usage",
    );
    assert!(e.to_string().contains("keyCertSign"), "{e}");
    // Anchor with keyUsage but no keyCertSign.
    let a = root_with(node_dn(ID_A), p256(), |p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature]
    });
    let xc = cross(&a, &net.b);
    assert_kind(
        validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client),
        "key_usage",
    );
}

#[test]
fn issuers_must_be_cas() {
    let net = net();
    // Intermediate with cA=FALSE.
    let not_ca = cross_with(&net.a, &net.b, |p| {
        p.is_ca = IsCa::ExplicitNoCa;
        p.name_constraints = None;
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[not_ca], &[], Purpose::Client),
        "not_ca",
    );
    assert!(e.to_string().contains("cA=FALSE"), "{e}");
    // Intermediate without basicConstraints.
    let no_bc = cross_with(&net.a, &net.b, |p| {
        p.is_ca = IsCa::NoCa;
        p.name_constraints = None;
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[no_bc], &[], Purpose::Client),
        "not_ca",
    );
    assert!(e.to_string().contains("no basicConstraints"), "{e}");
    // Anchor with cA=FALSE.
    let a = root_with(node_dn(ID_A), p256(), |p| {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![];
    });
    let xc = cross(&a, &net.b);
    assert_kind(
        validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client),
        "not_ca",
    );
    // Anchor without any basicConstraints: accepted (v3 root without the extension).
    let a = root_with(node_dn(ID_A), p256(), |p| p.is_ca = IsCa::NoCa);
    let xc = cross(&a, &net.b);
    assert_ok(validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client));
}
