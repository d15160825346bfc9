//! Private keys in memory: their types, generation, and unencrypted PKCS#8.
//!
//! Both sides need this: the gateway generates its TLS key (`peer-gateway
//! keygen`) and reads it back unattended as a `PRIVATE KEY` PEM; the CA
//! generates its root key. Keeping a key at rest under a passphrase is the
//! CA's business alone (`peerlink_ca::keyfile`), so the gateway does not build
//! the password-based encryption.

use std::fmt;

use pkcs8::der::Decode;
use pkcs8::PrivateKeyInfo;
use rand_core::OsRng;
use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm};
use rustls_pki_types::PrivatePkcs8KeyDer;
use zeroize::Zeroizing;

/// The key types the tools can generate. Any of them may appear as a partner's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 bits, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA 3072 bits (what Swaptacular nodes use).
    Rsa3072,
    /// RSA 4096 bits.
    Rsa4096,
}

impl KeyType {
    /// Every key type, for help texts and tests.
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The name used on the command line and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The signature algorithm certificates signed by this key use.
    pub fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// Identifies the key type of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Option<KeyType> {
        use x509_parser::prelude::FromDer;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
        key_type_of(&spki)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies the key type of a parsed SubjectPublicKeyInfo (RSA by modulus size).
pub fn key_type_of(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<KeyType> {
    use x509_parser::oid_registry as oids;
    use x509_parser::public_key::PublicKey;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_SIG_ED25519 {
        return Some(KeyType::Ed25519);
    }
    if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        return if curve == oids::OID_EC_P256 {
            Some(KeyType::EcdsaP256)
        } else if curve == oids::OID_NIST_EC_P384 {
            Some(KeyType::EcdsaP384)
        } else {
            None
        };
    }
    if *alg == oids::OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed().ok()? {
            PublicKey::RSA(rsa) => match rsa.key_size() {
                2048 => Some(KeyType::Rsa2048),
                3072 => Some(KeyType::Rsa3072),
                4096 => Some(KeyType::Rsa4096),
                _ => None,
            },
            _ => None,
        };
    }
    None
}

/// Why a key could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file is not a private key of a supported kind.
    #[error("{0}: unsupported or malformed private key: {1}")]
    Unsupported(String, String),
    /// Key generation (or encoding a generated key) failed.
    #[error("key generation failed: {0}")]
    Generation(String),
}

/// A private key held in memory, zeroized on drop.
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    key_type: KeyType,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, [secret])", self.key_type)
    }
}

impl PrivateKey {
    /// Generates a fresh key of `key_type` from the operating system's RNG.
    pub fn generate(key_type: KeyType) -> Result<PrivateKey, KeyError> {
        let pkcs8 = match key_type {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let bits = match key_type {
                    KeyType::Rsa2048 => 2048,
                    KeyType::Rsa3072 => 3072,
                    _ => 4096,
                };
                generate_rsa(bits)?
            }
            _ => {
                let pair = KeyPair::generate_for(key_type.signature_algorithm())
                    .map_err(|e| KeyError::Generation(e.to_string()))?;
                Zeroizing::new(pair.serialize_der())
            }
        };
        Ok(PrivateKey { pkcs8, key_type })
    }

    /// Wraps an unencrypted PKCS#8 DER key, identifying its type.
    pub fn from_pkcs8_der(der: &[u8], name: &str) -> Result<PrivateKey, KeyError> {
        let info = PrivateKeyInfo::from_der(der)
            .map_err(|e| KeyError::Unsupported(name.into(), e.to_string()))?;
        let pair = KeyPair::try_from(der)
            .map_err(|e| KeyError::Unsupported(name.into(), e.to_string()))?;
        let key_type = KeyType::of_spki(&pair.subject_public_key_info()).ok_or_else(|| {
            KeyError::Unsupported(
                name.into(),
                format!("key algorithm {} is not supported", info.algorithm.oid),
            )
        })?;
        Ok(PrivateKey {
            pkcs8: Zeroizing::new(der.to_vec()),
            key_type,
        })
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The unencrypted PKCS#8 DER (for handing to TLS libraries; never log it).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// An rcgen signing key for issuing certificates and CRLs.
    pub fn signing_key(&self) -> Result<KeyPair, KeyError> {
        let der = PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        KeyPair::from_pkcs8_der_and_sign_algo(&der, self.key_type.signature_algorithm())
            .map_err(|e| KeyError::Unsupported("key".into(), e.to_string()))
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        use rcgen::PublicKeyData;
        Ok(self.signing_key()?.subject_public_key_info())
    }

    /// Unencrypted PKCS#8 PEM, for gateway keys that a service must read unattended.
    pub fn to_unencrypted_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pemfile::pem_encode("PRIVATE KEY", &self.pkcs8))
    }
}

fn generate_rsa(bits: usize) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut OsRng, bits)
        .map_err(|e| KeyError::Generation(e.to_string()))?;
    let doc = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::Generation(e.to_string()))?;
    Ok(Zeroizing::new(doc.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_keys_are_generated_and_identified() {
        let key = PrivateKey::generate(KeyType::Rsa2048).unwrap();
        assert_eq!(key.key_type(), KeyType::Rsa2048);
        let spki = key.public_key_der().unwrap();
        assert_eq!(KeyType::of_spki(&spki), Some(KeyType::Rsa2048));
        key.signing_key().unwrap();
    }
}
