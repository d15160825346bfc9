//! Root keys as swpt_ca_scripts leaves them, for `ca-tool import-swaptacular`.
//!
//! `generate-masterkey` runs `openssl genrsa -aes128`. OpenSSL 3 writes that
//! as PKCS#8 (`ENCRYPTED PRIVATE KEY`, PBES2), which [`crate::keyfile`] reads;
//! OpenSSL 1.1 (and so every node created before 2021 or so, including
//! swpt_stomp's test data) wrote OpenSSL's traditional format instead:
//!
//! ```text
//! -----BEGIN RSA PRIVATE KEY-----
//! Proc-Type: 4,ENCRYPTED
//! DEK-Info: AES-128-CBC,<IV in hex>
//! ```
//!
//! whose key is `EVP_BytesToKey(MD5, passphrase, salt = first 8 bytes of the
//! IV, 1 round)` and whose content is a PKCS#1 RSAPrivateKey in AES-CBC with
//! PKCS#7 padding. Both are read here; the key leaves as PKCS#8 in memory, to
//! be re-encrypted the way ca-tool keeps keys.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use md5::{Digest, Md5};
use peerlink_pki::keys::{KeyError, PrivateKey};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use zeroize::Zeroizing;

use crate::keyfile::{self, KeyFileError};

/// Decrypts a root key written by openssl (`ENCRYPTED PRIVATE KEY`, or an
/// encrypted traditional `RSA PRIVATE KEY`); `name` (the file) is named in errors.
pub fn decrypt(pem_text: &[u8], passphrase: &[u8], name: &str) -> Result<PrivateKey, KeyFileError> {
    let unsupported = |detail: String| KeyFileError::NotAnEncryptedKey(name.into(), detail);
    let text = std::str::from_utf8(pem_text).map_err(|_| unsupported("not text".into()))?;
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| unsupported("no PEM block".into()))?;
    let parsed = pem::parse(&text[start..]).map_err(|e| unsupported(e.to_string()))?;
    match parsed.tag() {
        keyfile::ENCRYPTED_LABEL => {
            keyfile::decrypt_pem(&text.as_bytes()[start..], passphrase, name)
        }
        "RSA PRIVATE KEY" => {
            let headers = parsed.headers();
            let pkcs1 = match headers.get("DEK-Info") {
                None => Zeroizing::new(parsed.contents().to_vec()),
                Some(dek) => decrypt_traditional(dek, parsed.contents(), passphrase, name)?,
            };
            let key = rsa::RsaPrivateKey::from_pkcs1_der(&pkcs1)
                .map_err(|_| KeyFileError::WrongPassphrase(name.into()))?;
            let pkcs8 = key
                .to_pkcs8_der()
                .map_err(|e| KeyError::Unsupported(name.into(), e.to_string()))?;
            Ok(PrivateKey::from_pkcs8_der(pkcs8.as_bytes(), name)?)
        }
        "PRIVATE KEY" => Ok(PrivateKey::from_pkcs8_der(parsed.contents(), name)?),
        other => Err(unsupported(format!("found a {other} block"))),
    }
}

/// Decrypts the content of a traditional encrypted PEM block (`DEK-Info: ALG,IV`).
fn decrypt_traditional(
    dek_info: &str,
    data: &[u8],
    passphrase: &[u8],
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let unsupported = |detail: String| KeyFileError::NotAnEncryptedKey(name.into(), detail);
    let (alg, iv_hex) = dek_info
        .split_once(',')
        .ok_or_else(|| unsupported(format!("malformed DEK-Info {dek_info:?}")))?;
    let key_len = match alg.trim() {
        "AES-128-CBC" => 16,
        "AES-192-CBC" => 24,
        "AES-256-CBC" => 32,
        other => {
            return Err(unsupported(format!(
                "cipher {other} is not supported (AES-CBC is); convert a copy of the key with \
                 `openssl pkcs8 -topk8 -v2 aes-256-cbc` and import that"
            )))
        }
    };
    let iv = hex::decode(iv_hex.trim())
        .ok()
        .filter(|iv| iv.len() == 16)
        .ok_or_else(|| unsupported(format!("malformed DEK-Info IV {iv_hex:?}")))?;
    let key = bytes_to_key(passphrase, &iv[..8], key_len);
    let wrong = |_| KeyFileError::WrongPassphrase(name.into());
    let plain = match key_len {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .map_err(|e| unsupported(e.to_string()))?
            .decrypt_padded_vec_mut::<Pkcs7>(data)
            .map_err(wrong)?,
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
            .map_err(|e| unsupported(e.to_string()))?
            .decrypt_padded_vec_mut::<Pkcs7>(data)
            .map_err(wrong)?,
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
            .map_err(|e| unsupported(e.to_string()))?
            .decrypt_padded_vec_mut::<Pkcs7>(data)
            .map_err(wrong)?,
    };
    Ok(Zeroizing::new(plain))
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one round: D_i = MD5(D_{i-1} || pass || salt).
fn bytes_to_key(passphrase: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < len {
        let mut md5 = Md5::new();
        md5.update(&previous);
        md5.update(passphrase);
        md5.update(salt);
        previous = md5.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(len);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// swpt_stomp's test nodes (in the `shared/` folder beside the repository).
    fn test_data_key(node: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/third_party/swpt_stomp/test_data")
            .join(node)
            .join("private/root-ca.key");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_traditional_keys_of_swaptacular_nodes_decrypt() {
        let pem = test_data_key("AA");
        let key = decrypt(&pem, b"123456", "AA").unwrap();
        assert_eq!(key.key_type(), peerlink_pki::keys::KeyType::Rsa3072);
        let err = decrypt(&pem, b"654321", "AA").unwrap_err();
        assert!(matches!(err, KeyFileError::WrongPassphrase(_)), "{err}");
    }

    #[test]
    fn pkcs8_keys_and_other_ciphers() {
        let key = PrivateKey::generate(peerlink_pki::keys::KeyType::EcdsaP256).unwrap();
        let pem = keyfile::encrypt_pem(&key, b"correct horse").unwrap();
        let back = decrypt(
            format!("text before\n{}", *pem).as_bytes(),
            b"correct horse",
            "k",
        );
        assert_eq!(back.unwrap().pkcs8_der(), key.pkcs8_der());
        let des = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,0011223344556677\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = decrypt(des.as_bytes(), b"x", "k").unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8"), "{err}");
    }
}
