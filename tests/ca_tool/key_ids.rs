//! Key identifiers across CAs: ca-tool's CAs and CAs made by openssl the way
//! Swaptacular's `swpt_ca_scripts` make them, cross-signing each other, with
//! `openssl verify -x509_strict`, `ca-tool verify` and the validator library
//! judging every mix.
//!
//! openssl takes a certificate as the issuer of another only when the
//! latter's authorityKeyIdentifier names the former's subjectKeyIdentifier,
//! and it computes both as SHA-1 of the key (RFC 5280 4.2.1.2 method 1). A
//! ca-tool CA must therefore write method-1 identifiers: a partner's openssl
//! CA cross-signs our root with `subjectKeyIdentifier = hash`, and our leaf's
//! AKI has to name that.
//!
//! "Their" CA is not made by running the interactive scripts: it reproduces
//! their openssl commands (`generate-masterkey`, `init-ca`, `sign-peercert`,
//! `generate-serverkey`, `sign-servercert`) with the real
//! `root-ca.conf.template` from `../shared/third_party/swpt_ca_scripts`, its
//! `ca_ext`, `sub_ca_ext`, `server_official_ext` and `server_ext` sections,
//! and answers given as options (`-batch`, `-passin`) instead of prompts. The
//! one addition is a P-256 root key (the scripts make RSA-3072 only), so that
//! both key types are mixed. It exchanges a ca-tool bundle (signed with
//! `openssl dgst -sha256 -sign`) instead of an info-bundle zip, which ca-tool
//! does not read.
//!
//! Run: `cargo test --test ca_tool key_ids::`.

use std::process::Command;

use peerlink_pki::validate::{validate_chain, Purpose, ValidationOptions};

use super::*;

const SWPT_ORG: &str = "Swaptacular Nodes Registry";
const OUR_UNIT: &str = "Creditors Agents";
const THEIR_UNIT: &str = "Accounting Authorities";

/// `../shared/third_party/swpt_ca_scripts/root-ca.conf.template`.
fn conf_template() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("third_party")
        .join("swpt_ca_scripts")
        .join("root-ca.conf.template");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the Swaptacular snapshots must be beside the repository (../shared/third_party)",
            path.display()
        )
    })
}

/// `-passin file:PASS` (and the like) for openssl.
fn pass_arg(pass: &Path) -> OsString {
    let mut arg = OsString::from("file:");
    arg.push(pass);
    arg
}

/// A root CA made with openssl as `swpt_ca_scripts` makes one.
struct SwptCa {
    dir: PathBuf,
    pass: PathBuf,
    node_id: String,
}

impl SwptCa {
    /// `generate-masterkey` (`openssl genrsa -aes128 ... 3072`, or an
    /// AES-128-encrypted P-256 key for `key == "p256"`) and `init-ca` as an
    /// accounting authority with prefix `node_id`: root-ca.conf from the
    /// template, `openssl req -reqexts ca_ext`, `openssl ca -selfsign -extensions ca_ext`.
    fn init(dir: &Path, key: &str, node_id: &str, pass: &Path) -> SwptCa {
        for sub in ["private", "certs", "db"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create CA directory");
        }
        set_mode(&dir.join("private"), 0o700);
        write_file(&dir.join("db/index"), "", 0o644);
        write_file(
            &dir.join("db/serial"),
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a01\n",
            0o644,
        );
        write_file(&dir.join("db/crlnumber"), "1001\n", 0o644);
        let key_file = dir.join("private/root-ca.key");
        let passout = pass_arg(pass);
        match key {
            "rsa3072" => openssl(args![
                "genrsa", "-aes128", "-passout", &passout, "-out", &key_file, "3072"
            ]),
            "p256" => openssl(args![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-aes128",
                "-pass",
                &passout,
                "-out",
                &key_file
            ]),
            other => panic!("unknown key kind {other}"),
        }
        .assert_success();
        let conf = conf_template()
            .replace("$ORGANIZATIONAL_UNIT_NAME", THEIR_UNIT)
            .replace("$SERIAL_NUMBER", node_id);
        write_file(&dir.join("root-ca.conf"), conf, 0o644);
        let ca = SwptCa {
            dir: dir.to_path_buf(),
            pass: pass.to_path_buf(),
            node_id: node_id.to_string(),
        };
        let self_csr = dir.join("db/self.csr");
        ca.openssl(&args![
            "req",
            "-new",
            "-config",
            ca.conf(),
            "-out",
            &self_csr,
            "-key",
            &key_file,
            "-passin",
            pass_arg(pass),
            "-reqexts",
            "ca_ext"
        ])
        .assert_success();
        ca.openssl(&args![
            "ca",
            "-batch",
            "-selfsign",
            "-config",
            ca.conf(),
            "-in",
            &self_csr,
            "-out",
            ca.root_cert(),
            "-extensions",
            "ca_ext",
            "-passin",
            pass_arg(pass)
        ])
        .assert_success();
        ca
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("root-ca.conf")
    }

    fn root_cert(&self) -> PathBuf {
        self.dir.join("root-ca.crt")
    }

    fn root_key(&self) -> PathBuf {
        self.dir.join("private/root-ca.key")
    }

    /// openssl with the environment the scripts set (`SWPT_CA_DIR`).
    fn openssl(&self, args: &[OsString]) -> Outcome {
        run(Command::new("openssl")
            .args(args)
            .env("SWPT_CA_DIR", &self.dir))
    }

    /// `sign-peercert`: `openssl ca -extensions sub_ca_ext` over the partner
    /// root's CSR, with the partner's DN in `DN_O`, `DN_OU`, `DN_SERIAL_NUMBER`
    /// (the name constraint) and the subnet an accounting authority reserves.
    fn sign_peercert(&self, csr: &Path, unit: &str, node_id: &str, out: &Path) {
        let o = run(Command::new("openssl")
            .args(args![
                "ca",
                "-batch",
                "-config",
                self.conf(),
                "-in",
                csr,
                "-out",
                out,
                "-extensions",
                "sub_ca_ext",
                "-passin",
                pass_arg(&self.pass)
            ])
            .env("SWPT_CA_DIR", &self.dir)
            .env("DN_O", SWPT_ORG)
            .env("DN_OU", unit)
            .env("DN_SERIAL_NUMBER", node_id)
            .env("SWPT_SUBNET", "Subnet: 000001"));
        o.assert_success();
    }

    /// `generate-serverkey` and `sign-servercert`: an RSA key and CSR from the
    /// config's `[req]` (`-reqexts server_official_ext`), signed with
    /// `-extensions server_ext` for 365 days. Returns the certificate.
    fn sign_servercert(&self, dir: &Path) -> PathBuf {
        let (key, csr, crt) = (
            dir.join("srv.key"),
            dir.join("srv.csr"),
            dir.join("srv.crt"),
        );
        self.openssl(&args![
            "req",
            "-new",
            "-nodes",
            "-config",
            self.conf(),
            "-out",
            &csr,
            "-keyout",
            &key,
            "-reqexts",
            "server_official_ext"
        ])
        .assert_success();
        self.openssl(&args![
            "ca",
            "-batch",
            "-config",
            self.conf(),
            "-in",
            &csr,
            "-out",
            &crt,
            "-days",
            "365",
            "-extensions",
            "server_ext",
            "-passin",
            pass_arg(&self.pass)
        ])
        .assert_success();
        crt
    }

    /// A `peerlink-bundle/1` for this root, signed with `openssl dgst -sha256
    /// -sign` by its key (RSA PKCS#1 v1.5 or ECDSA, as the format says).
    fn ca_tool_bundle(&self, dir: &Path) -> PathBuf {
        let root_der = dir.join("their-root.der");
        openssl(args![
            "x509",
            "-in",
            self.root_cert(),
            "-outform",
            "DER",
            "-out",
            &root_der
        ])
        .assert_success();
        let fp = openssl(args!["dgst", "-sha256", "-r", &root_der]);
        fp.assert_success();
        let info = format!(
            "{{\"format\":\"peerlink-bundle/1\",\"node_id\":\"{}\",\"subject\":\"O={SWPT_ORG}, OU={THEIR_UNIT}, serialNumber={}\",\"root_sha256\":\"{}\",\"endpoints\":[\"127.0.0.1:7100\"],\"created_at\":\"2026-01-01T00:00:00Z\"}}",
            self.node_id,
            self.node_id,
            &fp.stdout[..64]
        );
        let info_file = dir.join("info.json");
        write_file(&info_file, &info, 0o644);
        let sig_file = dir.join("info.sig");
        openssl(args![
            "dgst",
            "-sha256",
            "-sign",
            self.root_key(),
            "-passin",
            pass_arg(&self.pass),
            "-out",
            &sig_file,
            &info_file
        ])
        .assert_success();
        let bundle = format!(
            "Peer-link node bundle made with openssl\n\n{}{}{}",
            read_text(&self.root_cert()),
            pem_encode("PEERLINK NODE INFO", info.as_bytes()),
            pem_encode("PEERLINK NODE INFO SIGNATURE", &read_bytes(&sig_file)),
        );
        let path = dir.join("their.bundle");
        write_file(&path, bundle, 0o644);
        path
    }
}

/// A ca-tool CA with the Swaptacular names, its gateway certificate (an
/// openssl P-256 CSR signed with `sign-server`), and a CSR for its root (as an
/// info-bundle carries one) made with `openssl x509 -x509toreq`.
struct OurCa {
    ca: CaFixture,
    gw: PathBuf,
    root_csr: PathBuf,
}

fn our_ca(dir: &Path, key_type: &str) -> OurCa {
    let ca = CaFixture::init(
        &dir.join("ca"),
        SWPT_ORG,
        OUR_UNIT,
        Some(key_type),
        None,
        &world().pass,
    );
    let csr = openssl_csr_in(dir, "gw", "p256", &ca.openssl_subject(Some("gw1")));
    let gw = dir.join("gw.crt");
    ca.sign_server(&csr, &gw).assert_success();
    let root_csr = dir.join("root.csr");
    openssl(args![
        "x509",
        "-x509toreq",
        "-in",
        ca.root_cert(),
        "-signkey",
        ca.root_key(),
        "-passin",
        pass_arg(&world().pass),
        "-out",
        &root_csr
    ])
    .assert_success();
    OurCa { ca, gw, root_csr }
}

/// The method-1 key identifier of a certificate's key as openssl computes it:
/// the SKI of a throw-away certificate that openssl makes for the same key with
/// `subjectKeyIdentifier = hash`.
fn openssl_key_id(t: &Path, name: &str, key: &Path, pass: &Path) -> Vec<u8> {
    let out = t.join(format!("{name}-keyid.crt"));
    openssl(args![
        "req",
        "-x509",
        "-new",
        "-key",
        key,
        "-passin",
        pass_arg(pass),
        "-subj",
        "/CN=key id",
        "-days",
        "1",
        "-addext",
        "subjectKeyIdentifier=hash",
        "-out",
        &out
    ])
    .assert_success();
    ski(&parse_cert(&der_of(&out))).expect("openssl wrote an SKI")
}

/// The openssl `-purpose` and the `--purpose` of ca-tool for a TLS role.
fn purposes(role: Purpose) -> (&'static str, &'static str) {
    match role {
        Purpose::Client => ("sslclient", "client"),
        Purpose::Server => ("sslserver", "server"),
        Purpose::Any => ("any", "any"),
    }
}

/// Asserts that openssl (`-x509_strict`), `ca-tool verify` and the library all
/// accept `leaf` under `anchor` with `untrusted`, for `role`.
#[track_caller]
fn all_accept(what: &str, anchor: &Path, untrusted: &[&Path], leaf: &Path, role: Purpose) {
    let (openssl_purpose, ca_tool_purpose) = purposes(role);
    let o = openssl_verify(
        &["-x509_strict", "-purpose", openssl_purpose],
        anchor,
        untrusted,
        leaf,
    );
    assert!(
        o.success() && o.stdout.trim_end().ends_with(": OK"),
        "{what}: openssl verify -x509_strict refuses the chain:\n{}{}",
        o.stdout,
        o.stderr
    );
    ca_verify(
        anchor,
        untrusted,
        &[],
        &["--purpose", ca_tool_purpose],
        leaf,
    )
    .assert_success()
    .assert_stdout_contains("OK");
    let intermediates: Vec<Vec<u8>> = untrusted.iter().map(|p| der_of(p)).collect();
    let anchor_der = der_of(anchor);
    let chain = validate_chain(
        &der_of(leaf),
        &ValidationOptions {
            anchor: &anchor_der,
            intermediates: &intermediates,
            crls: &[],
            at: x509_parser::time::ASN1Time::now().to_datetime(),
            purpose: role,
        },
    )
    .unwrap_or_else(|e| panic!("{what}: the validator library refuses the chain: {e}"));
    assert_eq!(chain.chain.len(), untrusted.len() + 2, "{what}");
}

/// The four chains between a ca-tool CA and a swpt_ca_scripts CA that
/// cross-signed each other, each judged by openssl, ca-tool and the library.
fn check_mixes(t: &Path, ours: &OurCa, theirs: &SwptCa, label: &str) {
    let what = |chain: &str| format!("{label}: {chain}");
    // They sign our root (sign-peercert), we sign theirs (sign-peer on a bundle).
    let their_cross = t.join(format!("{label}-their-cross.crt"));
    theirs.sign_peercert(&ours.root_csr, OUR_UNIT, &ours.ca.node_id, &their_cross);
    let our_cross = t.join(format!("{label}-our-cross.crt"));
    let bundle_dir = t.join(format!("{label}-bundle"));
    std::fs::create_dir_all(&bundle_dir).unwrap();
    let bundle = theirs.ca_tool_bundle(&bundle_dir);
    ours.ca
        .sign_peer(&bundle, &our_cross, None)
        .assert_success();
    let their_leaf_dir = t.join(format!("{label}-their-gw"));
    std::fs::create_dir_all(&their_leaf_dir).unwrap();
    let their_leaf = theirs.sign_servercert(&their_leaf_dir);

    // The identifiers themselves: method 1 for everything ca-tool made; the
    // cross-certs repeat the subject root's SKI; every AKI names its issuer's SKI.
    let (our_root, their_root) = (der_of(&ours.ca.root_cert()), der_of(&theirs.root_cert()));
    let our_ski = ski(&parse_cert(&our_root)).expect("our root has an SKI");
    let their_ski = ski(&parse_cert(&their_root)).expect("their root has an SKI");
    assert_eq!(
        our_ski,
        openssl_key_id(t, label, &ours.ca.root_key(), &world().pass),
        "{label}: our root SKI is what openssl computes for its key"
    );
    let (gw, their_x, our_x) = (der_of(&ours.gw), der_of(&their_cross), der_of(&our_cross));
    let (gw, their_x, our_x) = (parse_cert(&gw), parse_cert(&their_x), parse_cert(&our_x));
    assert_eq!(
        aki_of(gw.extensions()),
        Some(our_ski.clone()),
        "{label}: our leaf's AKI"
    );
    assert_eq!(
        ski(&their_x),
        Some(our_ski.clone()),
        "{label}: their cross-cert's SKI (openssl's hash)"
    );
    assert_eq!(
        ski(&our_x),
        Some(their_ski.clone()),
        "{label}: our cross-cert repeats their SKI"
    );
    assert_eq!(
        aki_of(our_x.extensions()),
        Some(our_ski),
        "{label}: our cross-cert's AKI"
    );

    // 1. We dial them: our leaf through their cross-cert, under their root.
    all_accept(
        &what("our leaf + their cross-cert under their root"),
        &theirs.root_cert(),
        &[&their_cross],
        &ours.gw,
        Purpose::Client,
    );
    // 2. They dial us: their leaf through our cross-cert, under our root.
    all_accept(
        &what("their leaf + our cross-cert under our root"),
        &ours.ca.root_cert(),
        &[&our_cross],
        &their_leaf,
        Purpose::Client,
    );
    // 3. They dialed us and check our server certificate under our pinned root.
    all_accept(
        &what("our leaf under our root"),
        &ours.ca.root_cert(),
        &[],
        &ours.gw,
        Purpose::Server,
    );
    // 4. We dialed them and check their server certificate under their pinned root.
    all_accept(
        &what("their leaf under their root"),
        &theirs.root_cert(),
        &[],
        &their_leaf,
        Purpose::Server,
    );
}

#[test]
fn interop_every_mix_with_openssl_made_cas_chains() {
    let t = tmp();
    let pass = &world().pass;
    let theirs_rsa = SwptCa::init(&t.path().join("their-rsa"), "rsa3072", "1234abcd", pass);
    let theirs_p256 = SwptCa::init(&t.path().join("their-p256"), "p256", "5678ef01", pass);
    let make_ours = |name: &str, key_type: &str| {
        let dir = t.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        our_ca(&dir, key_type)
    };
    let ours_p256 = make_ours("our-p256", "ecdsa-p256");
    let ours_rsa = make_ours("our-rsa", "rsa-3072");
    for (ours, theirs, label) in [
        (&ours_p256, &theirs_rsa, "ours-p256-theirs-rsa3072"),
        (&ours_rsa, &theirs_p256, "ours-rsa3072-theirs-p256"),
        (&ours_p256, &theirs_p256, "ours-p256-theirs-p256"),
        (&ours_rsa, &theirs_rsa, "ours-rsa3072-theirs-rsa3072"),
    ] {
        check_mixes(t.path(), ours, theirs, label);
    }
}

#[test]
fn security_a_key_identifier_mismatch_is_refused_like_openssl() {
    // Their root cross-signs ours with a subjectKeyIdentifier that is not the
    // one our leaf's AKI names: openssl does not take it as the issuer (error
    // 20), and neither do ca-tool verify and the library, which say why.
    let t = tmp();
    let pass = &world().pass;
    let theirs = SwptCa::init(&t.path().join("their"), "p256", "1234abcd", pass);
    let ours = our_ca(t.path(), "ecdsa-p256");
    let ext = t.path().join("wrong-ski.ext");
    write_file(
        &ext,
        format!(
            "basicConstraints = critical,CA:true,pathlen:0\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             nameConstraints = critical,permitted;dirName:our_dn\n\
             subjectKeyIdentifier = {}\n\
             authorityKeyIdentifier = keyid:always\n\
             [our_dn]\n\
             O = {SWPT_ORG}\n\
             OU = {OUR_UNIT}\n\
             serialNumber = {}\n",
            "42".repeat(20),
            ours.ca.node_id
        ),
        0o644,
    );
    let cross = t.path().join("wrong-ski-cross.crt");
    openssl_sign_csr(
        &ours.root_csr,
        &theirs.root_cert(),
        &theirs.root_key(),
        "0x4b4b4b4b4b4b4b4b4b",
        &ext,
        &args!["-passin", pass_arg(pass)],
        &cross,
    );
    let o = openssl_verify(
        &["-x509_strict", "-purpose", "sslclient"],
        &theirs.root_cert(),
        &[&cross],
        &ours.gw,
    );
    o.assert_failure();
    assert!(
        o.all_output().contains("error 20"),
        "openssl refuses with error 20 (unable to get local issuer certificate):\n{o:?}"
    );
    let out = ca_verify(
        &theirs.root_cert(),
        &[&cross],
        &[],
        &["--purpose", "client"],
        &ours.gw,
    );
    assert_invalid(&out, &["authorityKeyIdentifier"]);
    out.assert_stderr_contains(&"42".repeat(20));
    let err = validate_chain(
        &der_of(&ours.gw),
        &ValidationOptions {
            anchor: &der_of(&theirs.root_cert()),
            intermediates: &[der_of(&cross)],
            crls: &[],
            at: x509_parser::time::ASN1Time::now().to_datetime(),
            purpose: Purpose::Client,
        },
    )
    .expect_err("the library refuses the key identifier mismatch");
    assert_eq!(err.kind(), "key_id_mismatch", "{err}");
}
