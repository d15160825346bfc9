//! Arbitrary bytes as a partner's bundle: `peerlink_ca::bundle::verify`.
//!
//! Properties: no panic; what verifies is internally consistent (the node id
//! of the info equals the certificate's, endpoints are well-formed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use time::macros::datetime;

fuzz_target!(|data: &[u8]| {
    // A fixed time inside the validity of the seed bundles, and one far away.
    for now in [
        datetime!(2027-01-01 12:00 UTC),
        datetime!(9999-12-31 23:59:59 UTC),
    ] {
        if let Ok(bundle) = peerlink_ca::bundle::verify(data, now) {
            assert_eq!(bundle.info.node_id, bundle.identity.node_id);
            for e in &bundle.info.endpoints {
                assert!(peerlink_pki::endpoint::check_endpoint(e).is_ok());
            }
            let _ = peerlink_pki::identity::NodeIdentity::from_root_der(&bundle.root_der)
                .expect("a verified bundle's root has an identity");
        }
    }
});
