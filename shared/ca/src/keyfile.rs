//! The root key at rest: PKCS#8 encrypted with a passphrase.
//!
//! The root key is the one secret of a node. It is only ever written as a PKCS#8
//! `ENCRYPTED PRIVATE KEY` (PBES2: scrypt + AES-256-CBC), which `openssl pkey`
//! reads with the same passphrase, so an operator is never locked into this
//! tool to use or back up their key. Only the CA needs this; gateway keys are
//! read unattended and stay unencrypted ([`peerlink_pki::keys`]).

use peerlink_pki::keys::{KeyError, PrivateKey};
use pkcs8::der::Decode;
use pkcs8::pkcs5::{pbes2, scrypt};
use pkcs8::{EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// scrypt cost: N = 2^14, r = 8 (16 MiB), as `openssl pkcs8 -scrypt` uses;
/// OpenSSL refuses to decrypt anything needing more than 32 MiB, so N is kept
/// there and the parallelism p raises the work instead.
const SCRYPT_LOG_N: u8 = 14;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 4;

/// PEM label of encrypted keys.
pub const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// Why a key could not be stored under or recovered with a passphrase.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The passphrase does not decrypt the key.
    #[error("wrong passphrase for {0} (or the key file is corrupt); nothing was changed")]
    WrongPassphrase(String),
    /// The file is not an encrypted PKCS#8 key.
    #[error(
        "{0}: not an encrypted private key (expected -----BEGIN ENCRYPTED PRIVATE KEY-----): {1}"
    )]
    NotAnEncryptedKey(String, String),
    /// An empty or too short passphrase.
    #[error("the passphrase is {0}; use at least 8 characters")]
    WeakPassphrase(&'static str),
    /// The key itself could not be read or encrypted.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Rejects passphrases too weak to protect a root key.
pub fn check_passphrase(passphrase: &[u8]) -> Result<(), KeyFileError> {
    if passphrase.is_empty() {
        return Err(KeyFileError::WeakPassphrase("empty"));
    }
    if passphrase.len() < 8 {
        return Err(KeyFileError::WeakPassphrase("too short"));
    }
    Ok(())
}

/// Encrypts `key` with `passphrase` (PBES2, scrypt, AES-256-CBC) as PEM.
///
/// The plaintext inside is always a version 1 PrivateKeyInfo (RFC 5208), with
/// no `publicKey` field: OpenSSL 3.0 decodes PKCS#8 with a template that has no
/// such field, so the version 2 form (RFC 5958 OneAsymmetricKey) that ring
/// generates for Ed25519 keys decrypts there but then fails to decode
/// ("unsupported"). Dropping the field loses nothing: the public key is
/// derived from the private key again when the key is loaded.
pub fn encrypt_pem(key: &PrivateKey, passphrase: &[u8]) -> Result<Zeroizing<String>, KeyFileError> {
    check_passphrase(passphrase)?;
    let generation = |e: &dyn std::fmt::Display| KeyError::Generation(e.to_string());
    let mut info = PrivateKeyInfo::from_der(key.pkcs8_der())
        .map_err(|e| KeyError::Unsupported("key".into(), e.to_string()))?;
    info.public_key = None;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut iv);
    let params =
        scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, 32).map_err(|e| generation(&e))?;
    let pbes2 =
        pbes2::Parameters::scrypt_aes256cbc(params, &salt, &iv).map_err(|e| generation(&e))?;
    let doc = info
        .encrypt_with_params(pbes2, passphrase)
        .map_err(|e| generation(&e))?;
    let pem = doc
        .to_pem(ENCRYPTED_LABEL, LineEnding::LF)
        .map_err(|e| generation(&e))?;
    Ok(pem)
}

/// Decrypts a PKCS#8 `ENCRYPTED PRIVATE KEY` PEM (ours or one `openssl pkcs8 -topk8` wrote);
/// `name` (the file) is named in errors.
pub fn decrypt_pem(
    pem_text: &[u8],
    passphrase: &[u8],
    name: &str,
) -> Result<PrivateKey, KeyFileError> {
    let not_encrypted = |detail: String| KeyFileError::NotAnEncryptedKey(name.into(), detail);
    let text = std::str::from_utf8(pem_text).map_err(|_| not_encrypted("not text".into()))?;
    let parsed = pem::parse(text).map_err(|e| not_encrypted(e.to_string()))?;
    if parsed.tag() != ENCRYPTED_LABEL {
        return Err(not_encrypted(format!("found a {} block", parsed.tag())));
    }
    let encrypted = EncryptedPrivateKeyInfo::from_der(parsed.contents())
        .map_err(|e| not_encrypted(e.to_string()))?;
    let decrypted = encrypted
        .decrypt(passphrase)
        .map_err(|_| KeyFileError::WrongPassphrase(name.into()))?;
    // A wrong passphrase slips past the padding check 1 time in 256; the
    // result then fails to parse, which is the same mistake.
    PrivateKey::from_pkcs8_der(decrypted.as_bytes(), name)
        .map_err(|_| KeyFileError::WrongPassphrase(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_pki::keys::KeyType;

    #[test]
    fn encrypt_decrypt_round_trip_for_every_fast_key_type() {
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519] {
            let key = PrivateKey::generate(kt).unwrap();
            let pem = encrypt_pem(&key, b"correct horse").unwrap();
            assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
            let back = decrypt_pem(pem.as_bytes(), b"correct horse", "k").unwrap();
            assert_eq!(back.key_type(), kt);
            assert_eq!(
                back.public_key_der().unwrap(),
                key.public_key_der().unwrap()
            );
            // What was stored is a version 1 PrivateKeyInfo, which OpenSSL 3.0 decodes.
            let stored = PrivateKeyInfo::from_der(back.pkcs8_der()).unwrap();
            assert_eq!(stored.public_key, None, "{kt}");
            assert_eq!(stored.version(), pkcs8::Version::V1, "{kt}");
        }
    }

    #[test]
    fn ed25519_keys_are_stored_without_the_v2_public_key() {
        // ring generates Ed25519 keys as version 2 (with publicKey), which
        // OpenSSL 3.0 cannot decode; the stored form must not carry it.
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let generated = PrivateKeyInfo::from_der(key.pkcs8_der()).unwrap();
        assert_eq!(generated.version(), pkcs8::Version::V2);
        let pem = encrypt_pem(&key, b"correct horse").unwrap();
        let back = decrypt_pem(pem.as_bytes(), b"correct horse", "k").unwrap();
        let stored = PrivateKeyInfo::from_der(back.pkcs8_der()).unwrap();
        assert_eq!(stored.version(), pkcs8::Version::V1);
        assert_eq!(stored.private_key, generated.private_key);
        // The key still signs, and its public key is the generated one.
        let signing = back.signing_key().unwrap();
        rcgen::SigningKey::sign(&signing, b"message").unwrap();
    }

    #[test]
    fn wrong_passphrase_is_reported_as_such() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let pem = encrypt_pem(&key, b"correct horse").unwrap();
        for wrong in [&b"battery staple"[..], b"correct hors", b"x"] {
            let err = decrypt_pem(pem.as_bytes(), wrong, "k").unwrap_err();
            assert!(matches!(err, KeyFileError::WrongPassphrase(_)), "{err}");
        }
    }

    #[test]
    fn unencrypted_key_is_refused() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let pem = key.to_unencrypted_pem();
        let err = decrypt_pem(pem.as_bytes(), b"whatever1", "k").unwrap_err();
        assert!(matches!(err, KeyFileError::NotAnEncryptedKey(..)), "{err}");
    }

    #[test]
    fn short_passphrases_are_refused() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        assert!(encrypt_pem(&key, b"").is_err());
        assert!(encrypt_pem(&key, b"short").is_err());
    }
}
