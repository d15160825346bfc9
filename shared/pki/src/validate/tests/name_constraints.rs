//! Name constraints (RFC 5280 4.2.1.10): subtrees, name comparison, subjectAltName,
//! the anchor's constraints, self-issued intermediates, unsupported forms.

use super::*;

#[test]
fn leaf_with_another_nodes_name_is_rejected() {
    let net = net();
    let evil = leaf_with(&net.b, with_cn(node_dn(ID_C), "gw1"), |_| {});
    let e = assert_kind(via_a(&net, &evil), "name_constraint");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "leaf certificate (O=Net, OU=a, serialNumber={ID_C}, CN=gw1)"
        )),
        "{msg}"
    );
    assert!(msg.contains(&format!("subject is outside the permitted directoryName subtree \"O=Net, OU=a, serialNumber={ID_B}\"")), "{msg}");
    assert!(msg.contains(&format!("of the name constraints of intermediate #1 certificate (O=Net, OU=a, serialNumber={ID_B})")), "{msg}");
    // Without the constraint (B's root pinned directly) the same leaf passes.
    assert_ok(validate(&evil, &net.b.der, &[], &[], Purpose::Client));
}

#[test]
fn subtree_is_a_prefix_match() {
    let net = net();
    let x = leaf_with(&net.b, with_cn(node_dn(ID_B), "x"), |_| {});
    assert_ok(via_a(&net, &x));
    // Exactly B's DN is within the subtree too.
    assert_ok(via_a(&net, &leaf_with(&net.b, node_dn(ID_B), |_| {})));
    // A shorter name (a proper prefix of the base) is not.
    let mut short = DistinguishedName::new();
    short.push(DnType::OrganizationName, "Net");
    short.push(DnType::OrganizationalUnitName, "a");
    assert_kind(
        via_a(&net, &leaf_with(&net.b, short, |_| {})),
        "name_constraint",
    );
    // Another OU is not.
    let mut other = DistinguishedName::new();
    other.push(DnType::OrganizationName, "Net");
    other.push(DnType::OrganizationalUnitName, "b");
    other.push(
        DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
        DnValue::PrintableString(ID_B.try_into().unwrap()),
    );
    assert_kind(
        via_a(&net, &leaf_with(&net.b, other, |_| {})),
        "name_constraint",
    );
}

#[test]
fn case_and_space_differences_are_equal() {
    let net = net();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        DnValue::PrintableString("  net ".try_into().unwrap()),
    );
    dn.push(
        DnType::OrganizationalUnitName,
        DnValue::PrintableString("A".try_into().unwrap()),
    );
    dn.push(
        DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
        DnValue::Utf8String(ID_B.to_uppercase()),
    );
    dn.push(DnType::CommonName, "gw1");
    assert_ok(via_a(&net, &leaf_with(&net.b, dn, |_| {})));
    // An IA5String is compared byte for byte, so it does not match "Net".
    let mut ia5 = node_dn(ID_B);
    ia5.push(
        DnType::OrganizationName,
        DnValue::Ia5String("Net".try_into().unwrap()),
    );
    assert_kind(
        via_a(&net, &leaf_with(&net.b, ia5, |_| {})),
        "name_constraint",
    );
}

#[test]
fn issuer_names_chain_by_rfc5280_comparison() {
    // The cross-cert spells B's DN differently (case, spaces, string types);
    // the leaf's issuer name still chains to it.
    let net = net();
    let mut spelled = DistinguishedName::new();
    spelled.push(
        DnType::OrganizationName,
        DnValue::PrintableString(" NET".try_into().unwrap()),
    );
    spelled.push(DnType::OrganizationalUnitName, "A ");
    spelled.push(
        DnType::CustomDnType(SERIAL_NUMBER.to_vec()),
        DnValue::Utf8String(ID_B.to_uppercase()),
    );
    let xc = cross_with(&net.a, &net.b, |p| p.distinguished_name = spelled);
    assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &[xc],
        &[],
        Purpose::Client,
    ));
}

#[test]
fn excluded_subtree() {
    let net = net();
    let xc = cross_with(&net.a, &net.b, |p| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(net.b.dn())],
            excluded_subtrees: vec![GeneralSubtree::DirectoryName(with_cn(net.b.dn(), "bad"))],
        })
    });
    let bad = leaf_with(&net.b, with_cn(node_dn(ID_B), "BAD"), |_| {});
    let e = assert_kind(
        validate(
            &bad,
            &net.a.der,
            std::slice::from_ref(&xc),
            &[],
            Purpose::Client,
        ),
        "name_constraint",
    );
    assert!(
        e.to_string().contains("excluded directoryName subtree"),
        "{e}"
    );
    assert_ok(validate(
        &net.b_leaf,
        &net.a.der,
        &[xc],
        &[],
        Purpose::Client,
    ));
}

#[test]
fn subject_alt_name_directory_names_are_constrained() {
    let net = net();
    let outside = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.custom_extensions.push(san_directory_name(&node_dn(ID_C)));
    });
    let e = assert_kind(via_a(&net, &outside), "name_constraint");
    assert!(
        e.to_string().contains("subjectAltName directoryName"),
        "{e}"
    );
    let inside = leaf_with(&net.b, with_cn(node_dn(ID_B), "gw1"), |p| {
        p.custom_extensions
            .push(san_directory_name(&with_cn(node_dn(ID_B), "alias")));
    });
    assert_ok(via_a(&net, &inside));
}

#[test]
fn empty_subject_is_refused_under_constraints() {
    let net = net();
    let empty = leaf_with(&net.b, DistinguishedName::new(), |p| {
        p.subject_alt_names = vec![rcgen::SanType::DnsName("gw.example".try_into().unwrap())];
    });
    let e = assert_kind(via_a(&net, &empty), "name_constraint");
    assert!(e.to_string().contains("is empty"), "{e}");
    // No constraints in the path: accepted.
    assert_ok(validate(&empty, &net.b.der, &[], &[], Purpose::Client));
}

#[test]
fn other_name_constraint_types_fail_closed() {
    let net = net();
    for extra in [
        GeneralSubtree::DnsName("example.com".into()),
        GeneralSubtree::IpAddress(rcgen::CidrSubnet::V4([10, 0, 0, 0], [255, 0, 0, 0])),
        GeneralSubtree::Rfc822Name("example.com".into()),
    ] {
        let xc = cross_with(&net.a, &net.b, |p| {
            p.name_constraints = Some(NameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DirectoryName(net.b.dn()), extra],
                excluded_subtrees: vec![],
            })
        });
        let e = assert_kind(
            validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
            "unsupported_name_constraint",
        );
        assert!(e.to_string().contains("intermediate #1"), "{e}");
    }
    let xc = cross_with(&net.a, &net.b, |p| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(net.b.dn())],
            excluded_subtrees: vec![GeneralSubtree::DnsName("example.com".into())],
        })
    });
    let e = assert_kind(
        validate(&net.b_leaf, &net.a.der, &[xc], &[], Purpose::Client),
        "unsupported_name_constraint",
    );
    assert!(e.to_string().contains("dNSName"), "{e}");
}

#[test]
fn anchor_name_constraints_apply() {
    // A's root constrained to A's own DN: the cross-cert for B falls outside.
    let net = net();
    let a_dn = node_dn(ID_A);
    let a = root_with(a_dn.clone(), p256(), |p| {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DirectoryName(a_dn)],
            excluded_subtrees: vec![],
        })
    });
    let xc = cross(&a, &net.b);
    let e = assert_kind(
        validate(&net.b_leaf, &a.der, &[xc], &[], Purpose::Client),
        "name_constraint",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
    assert!(
        e.to_string()
            .contains("of the name constraints of anchor certificate"),
        "{e}"
    );
    let own = leaf_with(&a, with_cn(node_dn(ID_A), "gw"), |_| {});
    assert_ok(validate(&own, &a.der, &[], &[], Purpose::Client));
}

#[test]
fn self_issued_intermediate_is_exempt_from_subject_constraints() {
    // Anchor -> CA "O=Net, OU=ca" (pathlen 0, permits only O=Net, OU=leafs)
    //        -> self-issued "O=Net, OU=ca" with a new key (a key rollover)
    //        -> leaf "O=Net, OU=leafs, CN=x".
    let anchor = root(ID_A);
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::OrganizationName, "Net");
    ca_dn.push(DnType::OrganizationalUnitName, "ca");
    let mut leafs = DistinguishedName::new();
    leafs.push(DnType::OrganizationName, "Net");
    leafs.push(DnType::OrganizationalUnitName, "leafs");

    let old = p256();
    let mut ca_params = root_params(ca_dn.clone());
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.use_authority_key_identifier_extension = true;
    ca_params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DirectoryName(leafs.clone())],
        excluded_subtrees: vec![],
    });
    let ca_der = issue_key(&anchor, &ca_params, &old);
    let ca = Ca {
        params: ca_params,
        key: old,
        der: ca_der,
    };

    let new = p256();
    let mut rollover_params = root_params(ca_dn.clone());
    rollover_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    rollover_params.use_authority_key_identifier_extension = true;
    let rollover_der = issue_key(&ca, &rollover_params, &new);
    let rollover = Ca {
        params: rollover_params,
        key: new,
        der: rollover_der,
    };

    let leaf = leaf_with(&rollover, with_cn(leafs.clone(), "x"), |_| {});
    let chain = assert_ok(validate(
        &leaf,
        &anchor.der,
        &[ca.der.clone(), rollover.der.clone()],
        &[],
        Purpose::Client,
    ));
    assert_eq!(chain.chain.len(), 4);

    // Control: a non-self-issued intermediate with the same out-of-subtree name shape.
    let mut sub_dn = ca_dn.clone();
    sub_dn.push(DnType::CommonName, "sub");
    let mut sub_params = root_params(sub_dn);
    sub_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let sub_key = p256();
    let sub_der = issue_key(&ca, &sub_params, &sub_key);
    let sub = Ca {
        params: sub_params,
        key: sub_key,
        der: sub_der,
    };
    let leaf2 = leaf_with(&sub, with_cn(leafs, "y"), |_| {});
    let e = assert_kind(
        validate(
            &leaf2,
            &anchor.der,
            &[ca.der.clone(), sub.der.clone()],
            &[],
            Purpose::Client,
        ),
        "name_constraint",
    );
    assert!(e.to_string().starts_with("intermediate #1"), "{e}");
}
