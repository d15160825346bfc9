//! Certificate, CRL and CSR loading as operators hand files over (PEM, DER,
//! text before the block), then everything that consumes the result:
//! `NodeIdentity::from_root_der`, the chain validator with the input as the
//! leaf, the anchor, an intermediate or a CRL next to a fixed valid chain,
//! and `verify_csr`.
//!
//! Properties: no panic; `parse_all` never returns an empty list or an empty
//! object; a certificate that decodes, added as an extra intermediate, never
//! breaks the fixed valid chain (unrelated certificates are ignored).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_fuzz::fixed_chain;
use peerlink_pki::pemfile::{parse_all, ObjectKind};
use peerlink_pki::validate::{validate_chain, ValidationOptions};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Objects of one kind looked at per input (a file of many blocks adds
/// nothing the first few do not).
const MAX_OBJECTS: usize = 4;

fn objects(data: &[u8], kind: ObjectKind) -> Vec<Vec<u8>> {
    match parse_all(data, kind, "fuzz") {
        Ok(found) => {
            assert!(!found.is_empty(), "parse_all returned no {kind:?}");
            assert!(found.iter().all(|der| !der.is_empty()));
            found.into_iter().take(MAX_OBJECTS).collect()
        }
        Err(e) => {
            let _ = e.to_string();
            Vec::new()
        }
    }
}

fn certificate(der: &[u8]) {
    let chain = fixed_chain();
    let _ = peerlink_pki::identity::NodeIdentity::from_root_der(der);

    // As the leaf, under the fixed anchor and intermediate.
    let inter = [chain.cross_b.clone()];
    let crls = [chain.crl_b.clone()];
    let _ = validate_chain(der, &chain.options(&inter, &crls));
    // As the trust anchor of the fixed leaf, and as a leaf that is its own anchor.
    let as_anchor = ValidationOptions {
        anchor: der,
        ..chain.options(&inter, &crls)
    };
    let _ = validate_chain(&chain.leaf, &as_anchor);
    let _ = validate_chain(der, &as_anchor);
    // As an extra intermediate: must not break the valid chain if it decodes.
    let inter = [der.to_vec(), chain.cross_b.clone()];
    let result = validate_chain(&chain.leaf, &chain.options(&inter, &crls));
    let decodes = matches!(X509Certificate::from_der(der), Ok((rest, _)) if rest.is_empty());
    if decodes {
        if let Err(e) = result {
            panic!("a decodable extra intermediate broke the valid chain: {e}");
        }
    }
    // As the only intermediate (it may stand in for the cross-certificate).
    let inter = [der.to_vec()];
    let _ = validate_chain(&chain.leaf, &chain.options(&inter, &crls));
}

fn crl(der: &[u8]) {
    let chain = fixed_chain();
    let inter = [chain.cross_b.clone()];
    let crls = [der.to_vec(), chain.crl_b.clone()];
    let _ = validate_chain(&chain.leaf, &chain.options(&inter, &crls));
    let crls = [der.to_vec()];
    let _ = validate_chain(&chain.leaf, &chain.options(&inter, &crls));
}

fn csr(der: &[u8]) {
    let chain = fixed_chain();
    if let Ok(verified) = peerlink_ca::csr::verify_csr(der, &chain.subject_b) {
        if let Some(cn) = &verified.common_name {
            assert!(!cn.is_empty() && cn.len() <= 64);
        }
    }
    // Our own subject as arbitrary bytes too (it comes from a file on disk).
    let _ = peerlink_ca::csr::verify_csr(&chain.csr, der);
}

fuzz_target!(|data: &[u8]| {
    for der in objects(data, ObjectKind::Certificate) {
        certificate(&der);
    }
    for der in objects(data, ObjectKind::Crl) {
        crl(&der);
    }
    for der in objects(data, ObjectKind::Csr) {
        csr(&der);
    }
});
