//! Limits and hostile input: path length, bounded search, leaf equal to the
//! anchor, garbage and mutated DER, the error type itself.

use super::*;
use crate::der;

#[test]
fn too_long_paths() {
    let anchor = root_with(node_dn(ID_A), p256(), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
    });
    let mut cas = vec![anchor];
    for i in 0..7 {
        let mut params = root_params(node_dn(&format!("ca{i}")));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.use_authority_key_identifier_extension = true;
        let key = p256();
        let der = issue_key(cas.last().unwrap(), &params, &key);
        cas.push(Ca { params, key, der });
    }
    let inter: Vec<Vec<u8>> = cas[1..].iter().map(|c| c.der.clone()).collect();
    // Leaf under ca5: leaf + 6 intermediates + anchor = 8 certificates.
    let ok_leaf = leaf_with(&cas[6], with_cn(node_dn("x"), "gw"), |_| {});
    assert_eq!(
        assert_ok(validate(
            &ok_leaf,
            &cas[0].der,
            &inter,
            &[],
            Purpose::Client
        ))
        .chain
        .len(),
        8
    );
    // Leaf under ca6: 9 certificates.
    let long_leaf = leaf_with(&cas[7], with_cn(node_dn("x"), "gw"), |_| {});
    let e = assert_kind(
        validate(&long_leaf, &cas[0].der, &inter, &[], Purpose::Client),
        "too_long",
    );
    assert!(e.to_string().contains("longer than 8"), "{e}");
}

#[test]
fn path_search_is_bounded() {
    // Six keys that all use the name of B and certify each other: every
    // ordering of them is a candidate path that never reaches the anchor.
    let cas: Vec<Ca> = (0..6)
        .map(|_| {
            let key = p256();
            let mut params = root_params(node_dn(ID_B));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_identifier_method = KeyIdMethod::PreSpecified(params.key_identifier(&key));
            Ca {
                params,
                key,
                der: vec![],
            }
        })
        .collect();
    let mut mesh = Vec::new();
    for subject in &cas {
        for issuer in &cas {
            mesh.push(issue_key(issuer, &subject.params, &subject.key));
        }
    }
    let leaf = leaf_with(&cas[0], with_cn(node_dn(ID_B), "gw"), |_| {});
    let a = root(ID_A);
    let e = assert_kind(
        validate(&leaf, &a.der, &mesh, &[], Purpose::Client),
        "too_complex",
    );
    assert!(e.to_string().contains("gave up"), "{e}");
    // Adding the real way out (a cross-cert from A) still finds it quickly,
    // because candidates with a matching key identifier come first.
    let mut with_exit = vec![cross(&a, &cas[0])];
    with_exit.extend(mesh);
    assert_ok(validate(&leaf, &a.der, &with_exit, &[], Purpose::Client));
}

#[test]
fn reissued_anchor_validates_against_the_old_one() {
    // Same name and key, new validity: [new root, old root] is a valid path.
    let old = root(ID_A);
    let mut params = old.params.clone();
    params.serial_number = Some(next_serial());
    params.not_after = AT + Duration::days(9000);
    let new = params.self_signed(&old.key).unwrap().der().to_vec();
    assert_eq!(
        assert_ok(validate(&new, &old.der, &[], &[], Purpose::Any))
            .chain
            .len(),
        2
    );
}

#[test]
fn leaf_equal_to_anchor() {
    let net = net();
    let chain = assert_ok(validate(&net.a.der, &net.a.der, &[], &[], Purpose::Any));
    assert_eq!(chain.chain, vec![net.a.der.clone()]);
    assert_eq!(
        chain.leaf_subject,
        format!("O=Net, OU=a, serialNumber={ID_A}")
    );
    assert_kind(
        validate(&net.a.der, &net.a.der, &[], &[], Purpose::Client),
        "ca_as_leaf",
    );
    // Another self-signed cert with the anchor's name but a different key is not the anchor.
    let other = root(ID_A);
    assert_kind(
        validate(&other.der, &net.a.der, &[], &[], Purpose::Any),
        "bad_signature",
    );
    // A self-signed server certificate pinned as its own anchor.
    let key = p256();
    let self_signed = leaf_params(with_cn(node_dn(ID_B), "gw1"))
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    assert_ok(validate(
        &self_signed,
        &self_signed,
        &[],
        &[],
        Purpose::Server,
    ));
}

/// A small deterministic generator, to keep the tests reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_is_malformed_without_panicking() {
    let net = net();
    let a = &net.a.der;
    let inter = std::slice::from_ref(&net.cross_b);
    let mut seed = 0x1234_5678_9abc_def0u64;
    for len in [0usize, 1, 2, 16, 300, 2000] {
        let junk: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        let e = assert_kind(validate(&junk, a, inter, &[], Purpose::Client), "malformed");
        assert!(e.to_string().starts_with("the leaf certificate"), "{e}");
        let e = assert_kind(
            validate(&net.b_leaf, &junk, inter, &[], Purpose::Client),
            "malformed",
        );
        assert!(e.to_string().starts_with("the trust anchor"), "{e}");
        let e = assert_kind(
            validate(
                &net.b_leaf,
                a,
                &[net.cross_b.clone(), junk.clone()],
                &[],
                Purpose::Client,
            ),
            "malformed",
        );
        assert!(
            e.to_string().starts_with("intermediate certificate #2"),
            "{e}"
        );
        let e = assert_kind(
            validate(
                &net.b_leaf,
                a,
                inter,
                std::slice::from_ref(&junk),
                Purpose::Client,
            ),
            "malformed",
        );
        assert!(e.to_string().starts_with("CRL #1"), "{e}");
    }
    // Every truncation of the leaf, and a trailing byte.
    for cut in 0..net.b_leaf.len() {
        assert_kind(via_a(&net, &net.b_leaf[..cut]), "malformed");
    }
    let mut long = net.b_leaf.clone();
    long.push(0);
    assert_kind(via_a(&net, &long), "malformed");
    let crl = sign_crl(&crl_params(&[&net.b_leaf]), &net.b);
    for cut in [0, 1, crl.len() / 2, crl.len() - 1] {
        assert_kind(
            validate(
                &net.b_leaf,
                a,
                inter,
                &[crl[..cut].to_vec()],
                Purpose::Client,
            ),
            "malformed",
        );
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let net = net();
    let crl = sign_crl(&crl_params(&[]), &net.b);
    let a = &net.a.der;
    let mut seed = 0xfeed_beef_1234_5678u64;
    for pos in 0..net.b_leaf.len() {
        let mut leaf = net.b_leaf.clone();
        leaf[pos] ^= (xorshift(&mut seed) as u8) | 1;
        let result = validate(
            &leaf,
            a,
            std::slice::from_ref(&net.cross_b),
            std::slice::from_ref(&crl),
            Purpose::Client,
        );
        // Whatever the outcome, a valid chain must still have B's key and name constraints.
        if let Ok(chain) = result {
            assert!(chain
                .leaf_subject
                .starts_with(&format!("O=Net, OU=a, serialNumber={ID_B}")));
        }
    }
    for pos in 0..net.cross_b.len() {
        let mut xc = net.cross_b.clone();
        xc[pos] ^= (xorshift(&mut seed) as u8) | 1;
        let _ = validate(
            &net.b_leaf,
            a,
            &[xc],
            std::slice::from_ref(&crl),
            Purpose::Client,
        );
    }
    for pos in 0..crl.len() {
        let mut bad = crl.clone();
        bad[pos] ^= (xorshift(&mut seed) as u8) | 1;
        let _ = validate(
            &net.b_leaf,
            a,
            std::slice::from_ref(&net.cross_b),
            &[bad],
            Purpose::Client,
        );
    }
}

#[test]
fn error_stays_small() {
    // Callers wrap ValidationError in their own errors; keep it under clippy's
    // result_large_err threshold (128 bytes).
    assert!(std::mem::size_of::<ValidationError>() <= 120);
}

#[test]
fn kinds_are_distinct() {
    let mut kinds = ValidationError::KINDS.to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), ValidationError::KINDS.len());
}

#[test]
fn issuer_and_subject_found_without_full_decoding() {
    let net = net();
    for der in [&net.a.der, &net.cross_b, &net.b_leaf] {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).expect("parses");
        assert_eq!(
            der::cert_issuer_and_subject(der),
            Some((cert.issuer().as_raw(), cert.subject().as_raw()))
        );
    }
    // Anything that is not a certificate gives nothing.
    let leaf = &net.b_leaf;
    assert_eq!(der::cert_issuer_and_subject(&leaf[..leaf.len() - 1]), None);
    assert_eq!(der::cert_issuer_and_subject(&[0x30, 0x00]), None);
    assert_eq!(der::cert_issuer_and_subject(b"not DER"), None);
}
