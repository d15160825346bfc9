//! Helpers of the `ca-tool` tests: certificates read with x509-parser, the
//! design's peer-certificate (cross-certificate) profile, and certificates made
//! by hand with B's root key (as a partner's compromised or malicious root could).

use super::*;

/// DER of the single certificate (or other PEM object) in a PEM or DER file.
pub(crate) fn der_of(path: &Path) -> Vec<u8> {
    let bytes = read_bytes(path);
    if bytes.first() == Some(&0x30) {
        return bytes;
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
        .unwrap_or_else(|e| panic!("{} is not PEM: {e:?}", path.display()));
    pem.contents
}

pub(crate) fn parse_cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("certificate parses");
    assert!(rest.is_empty(), "trailing bytes after certificate");
    cert
}

pub(crate) fn ski(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

pub(crate) fn aki_of(exts: &[X509Extension<'_>]) -> Option<Vec<u8>> {
    exts.iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => {
            a.key_identifier.as_ref().map(|k| k.0.to_vec())
        }
        _ => None,
    })
}

pub(crate) fn serial_hex(path: &Path) -> String {
    let der = der_of(path);
    hex(parse_cert(&der).raw_serial())
}

/// Attribute (OID, tag, content) triples of a name, in order.
pub(crate) fn name_attributes(name: &X509Name<'_>) -> Vec<(String, u32, Vec<u8>)> {
    name.iter()
        .map(|rdn| {
            let avas: Vec<_> = rdn.iter().collect();
            assert_eq!(avas.len(), 1, "multi-valued RDN");
            let ava = avas[0];
            (
                ava.attr_type().to_id_string(),
                ava.attr_value().header.tag().0,
                ava.attr_value().data.to_vec(),
            )
        })
        .collect()
}

/// Checks a cross-certificate against the design's peer-certificate profile.
pub(crate) fn check_cross_cert(cross: &Path, issuer_root: &Path, partner_root: &Path) {
    let (cross_der, issuer_der, partner_der) =
        (der_of(cross), der_of(issuer_root), der_of(partner_root));
    let (c, issuer, partner) = (
        parse_cert(&cross_der),
        parse_cert(&issuer_der),
        parse_cert(&partner_der),
    );
    let what = cross.display();
    assert_eq!(c.version(), X509Version::V3, "{what}: v3");
    assert_eq!(
        c.issuer().as_raw(),
        issuer.subject().as_raw(),
        "{what}: issuer is the issuing root's subject"
    );
    assert_eq!(
        c.subject().as_raw(),
        partner.subject().as_raw(),
        "{what}: subject byte-identical to the partner's root subject"
    );
    assert_eq!(
        c.public_key().raw,
        partner.public_key().raw,
        "{what}: the partner's root key"
    );
    let bc = c
        .basic_constraints()
        .expect("one basicConstraints")
        .expect("basicConstraints present");
    assert!(bc.critical, "{what}: basicConstraints critical");
    assert!(bc.value.ca, "{what}: CA");
    assert_eq!(bc.value.path_len_constraint, Some(0), "{what}: pathlen 0");
    let ku = c
        .key_usage()
        .expect("one keyUsage")
        .expect("keyUsage present");
    assert!(ku.critical, "{what}: keyUsage critical");
    assert!(
        ku.value.key_cert_sign() && ku.value.crl_sign(),
        "{what}: keyCertSign, cRLSign"
    );
    assert!(
        !ku.value.digital_signature() && !ku.value.key_encipherment(),
        "{what}: only keyCertSign, cRLSign"
    );
    let nc = c
        .name_constraints()
        .expect("one nameConstraints")
        .expect("nameConstraints present");
    assert!(nc.critical, "{what}: nameConstraints critical");
    let permitted = nc.value.permitted_subtrees.as_deref().unwrap_or(&[]);
    assert_eq!(permitted.len(), 1, "{what}: exactly one permitted subtree");
    match &permitted[0].base {
        GeneralName::DirectoryName(n) => assert_eq!(
            name_attributes(n),
            name_attributes(partner.subject()),
            "{what}: permitted directoryName is the partner's DN"
        ),
        other => panic!("{what}: permitted subtree is {other:?}, not a directoryName"),
    }
    assert!(
        nc.value
            .excluded_subtrees
            .as_deref()
            .unwrap_or(&[])
            .is_empty(),
        "{what}: no excluded subtrees"
    );
    assert!(
        c.extended_key_usage().expect("one EKU").is_none(),
        "{what}: no EKU"
    );
    assert_eq!(ski(&c), ski(&partner), "{what}: SKI = partner root's SKI");
    assert!(ski(&c).is_some(), "{what}: has an SKI");
    assert_eq!(
        aki_of(c.extensions()),
        ski(&issuer),
        "{what}: AKI = issuing root's SKI"
    );
    let serial = c.raw_serial();
    assert!(serial.len() >= 8, "{what}: serial of at least 64 bits");
    assert!(serial[0] & 0x80 == 0, "{what}: positive serial");
    assert!(
        c.validity().not_after.timestamp() <= partner.validity().not_after.timestamp()
            && c.validity().not_after.timestamp() <= issuer.validity().not_after.timestamp(),
        "{what}: valid no longer than both roots"
    );
    c.verify_signature(Some(issuer.public_key()))
        .unwrap_or_else(|e| panic!("{what}: not signed by the issuing root: {e:?}"));
}

/// Signs `csr` with B's root key directly with openssl (as a partner's compromised or
/// malicious root could), with the given extensions.
pub(crate) fn sign_with_b_root(
    t: &Path,
    csr: &Path,
    out: &Path,
    ca: &Path,
    ca_key: &Path,
    exts: &str,
) {
    let ext = t.join(format!(
        "{}.ext",
        out.file_name().unwrap().to_string_lossy()
    ));
    write_file(&ext, exts, 0o644);
    let mut pass_arg = OsString::from("file:");
    pass_arg.push(&world().pass);
    let passin = args!["-passin", pass_arg];
    openssl_sign_csr(csr, ca, ca_key, "0x5a5a5a5a5a5a5a5a5a", &ext, &passin, out);
}

pub(crate) const CA_EXTS: &str = "basicConstraints = critical,CA:TRUE\n\
keyUsage = critical,keyCertSign,cRLSign\n\
subjectKeyIdentifier = hash\n\
authorityKeyIdentifier = keyid\n";

pub(crate) const LEAF_EXTS: &str = "basicConstraints = critical,CA:FALSE\n\
keyUsage = critical,digitalSignature\n\
extendedKeyUsage = serverAuth,clientAuth\n\
subjectKeyIdentifier = hash\n\
authorityKeyIdentifier = keyid\n";
