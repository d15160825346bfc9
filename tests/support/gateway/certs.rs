//! Keys and certificates made for a network's nodes besides those of
//! [`Net::add_node`](super::Net::add_node): more gateway keys, certificates signed
//! with openssl (bypassing `ca-tool`'s checks), and `openssl s_client` against a
//! gateway.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{peer_gateway, Net, LEAF_EXTENSIONS};
use crate::{openssl, openssl_sign_csr, run, Outcome};

impl Net {
    /// Decrypts `name`'s root key with `openssl pkey` (as an operator could) into a
    /// file in the temporary directory and returns its path.
    pub fn decrypted_root_key(&self, name: &str) -> PathBuf {
        let node = self.node(name);
        let out = self.path(&format!("{name}-root-plain.key"));
        let mut passin = OsString::from("file:");
        passin.push(&self.pass);
        openssl(args![
            "pkey",
            "-in",
            node.ca.root_key(),
            "-passin",
            passin,
            "-out",
            &out
        ])
        .assert_success();
        out
    }

    /// Signs `csr` with `issuer`'s root key using `openssl x509 -req` (bypassing
    /// `ca-tool`'s checks, e.g. a subject that is not the issuer's DN) into `out`.
    pub fn openssl_sign_leaf(&self, issuer: &str, csr: &Path, out: &Path) {
        self.openssl_sign_leaf_with(issuer, csr, out, LEAF_EXTENSIONS, "0x5eed0123456789abcdef");
    }

    /// Like [`Net::openssl_sign_leaf`], with the extensions of the `[leaf]` section
    /// `extensions` (e.g. a certificate without clientAuth) and serial `serial`.
    pub fn openssl_sign_leaf_with(
        &self,
        issuer: &str,
        csr: &Path,
        out: &Path,
        extensions: &str,
        serial: &str,
    ) {
        let key = self.decrypted_root_key(issuer);
        let ext = self.path("leaf.ext");
        fs::write(&ext, extensions).expect("write leaf.ext");
        let root = self.node(issuer).ca.root_cert();
        openssl_sign_csr(
            csr,
            &root,
            &key,
            serial,
            &ext,
            &args!["-extensions", "leaf"],
            out,
        );
    }

    /// Signs `csr` with `issuer`'s root key using `openssl ca` with explicit validity
    /// dates (`YYYYMMDDHHMMSSZ`), e.g. a certificate that has already expired.
    pub fn openssl_sign_leaf_dated(
        &self,
        issuer: &str,
        csr: &Path,
        out: &Path,
        start: &str,
        end: &str,
    ) {
        let key = self.decrypted_root_key(issuer);
        let db = self.path(&format!("openssl-ca-{issuer}"));
        fs::create_dir_all(&db).expect("mkdir");
        fs::write(db.join("index.txt"), "").expect("index.txt");
        let cnf = db.join("ca.cnf");
        fs::write(
            &cnf,
            format!(
                "[ca]\ndefault_ca = the_ca\n[the_ca]\ndatabase = {db}/index.txt\n\
                 new_certs_dir = {db}\nrand_serial = yes\ndefault_md = sha256\n\
                 policy = any\nunique_subject = no\nemail_in_dn = no\n\
                 [any]\norganizationName = supplied\norganizationalUnitName = supplied\n\
                 serialNumber = supplied\ncommonName = optional\n{LEAF_EXTENSIONS}",
                db = db.display()
            ),
        )
        .expect("write ca.cnf");
        openssl(args![
            "ca",
            "-batch",
            "-config",
            &cnf,
            "-cert",
            self.node(issuer).ca.root_cert(),
            "-keyfile",
            &key,
            "-in",
            csr,
            "-out",
            out,
            "-startdate",
            start,
            "-enddate",
            end,
            "-extensions",
            "leaf",
            "-preserveDN",
            "-notext"
        ])
        .assert_success();
    }

    /// Four certificates of nodes a, b and d, none of which issued c's: b's root,
    /// the cross-cert a issued to b, d's root and a's root. Appended to c's genuine
    /// chain they make it longer without making it valid (the cap on presented
    /// chains is checked before any signature).
    pub fn chain_padding(&self) -> [PathBuf; 4] {
        [
            self.node("b").ca.root_cert(),
            self.cross_cert("b", "a"),
            self.node("d").ca.root_cert(),
            self.node("a").ca.root_cert(),
        ]
    }

    /// `peer-gateway keygen` for `name`'s DN plus `CN=cn` into `<file>.key`/`<file>.csr`
    /// in the temporary directory; returns (key, csr).
    pub fn keygen(&self, name: &str, cn: &str, file: &str) -> (PathBuf, PathBuf) {
        let key = self.path(&format!("{file}.key"));
        let csr = self.path(&format!("{file}.csr"));
        peer_gateway(args![
            "keygen",
            "--node-dir",
            &self.node(name).ca.dir,
            "--out-key",
            &key,
            "--out-csr",
            &csr,
            "--cn",
            cn
        ])
        .assert_success();
        (key, csr)
    }

    /// `timeout 10 openssl s_client -connect <name's listener> -tls1_3 -alpn peerlink/1
    /// -CAfile <name's root> <extra>` with stdin at end of file.
    pub fn s_client(&self, name: &str, extra: &[OsString]) -> Outcome {
        let mut a = args!["-tls1_3", "-alpn", "peerlink/1"];
        a.extend(extra.iter().cloned());
        self.s_client_plain(name, &a)
    }

    /// `timeout 10 openssl s_client -connect <name's listener> -CAfile <name's root>
    /// <extra>` with stdin at end of file: no protocol version and no ALPN unless
    /// `extra` names them.
    pub fn s_client_plain(&self, name: &str, extra: &[OsString]) -> Outcome {
        let node = self.node(name);
        let mut a = args![
            "10",
            "openssl",
            "s_client",
            "-connect",
            node.endpoint(),
            "-CAfile",
            node.ca.root_cert()
        ];
        a.extend(extra.iter().cloned());
        run(Command::new("timeout").args(&a))
    }
}
