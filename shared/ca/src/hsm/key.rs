//! A root key on a token as an rcgen signing key: every signature is made by
//! the token and verified against the public key before it is handed out.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as P11KeyType, ObjectHandle};
use peerlink_pki::keys::KeyType;
use peerlink_pki::signature;
use sha2::Digest;

use super::config::{TokenConfig, CONFIG_FORMAT};
use super::encoding::{
    ec_params_match, ecdsa_raw_to_der, parse_ec_point, rsa_public_key_der, SHA256_DIGEST_INFO,
};
use super::token::TokenSession;
use super::HsmError;

/// How a key on the token protects itself, as the token reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated on the token.
    pub local: bool,
    /// Whether the token handed out any private key value when asked (it must not).
    pub value_readable: bool,
}

impl KeyProtection {
    /// Whether the key can never leave the token in the clear.
    pub fn is_protected(&self) -> bool {
        self.sensitive && !self.extractable && !self.value_readable
    }
}

impl fmt::Display for KeyProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        parts.push(if self.sensitive {
            "sensitive"
        } else {
            "NOT sensitive"
        });
        parts.push(if self.extractable {
            "EXTRACTABLE"
        } else {
            "not extractable"
        });
        if self.always_sensitive {
            parts.push("always sensitive");
        }
        if self.never_extractable {
            parts.push("never extractable");
        }
        if self.local {
            parts.push("generated on the token");
        }
        if self.value_readable {
            parts.push("PRIVATE VALUE READABLE");
        }
        f.write_str(&parts.join(", "))
    }
}

/// A root key on a token: an rcgen signing key whose every signature is made by
/// the token and verified here before it is returned.
///
/// rcgen's error type cannot carry the reason of a failed signature; it is kept
/// here and [`TokenKey::take_error`] returns it.
pub struct TokenKey {
    // Declared first: the session closes before the module is finalised.
    session: Mutex<TokenSession>,
    private: ObjectHandle,
    public_handle: Option<ObjectHandle>,
    key_type: KeyType,
    /// The key as rcgen's `der_bytes` wants it: EC point, Ed25519 key, or RSAPublicKey DER.
    public_key: Vec<u8>,
    spki: Vec<u8>,
    token_label: String,
    key_label: String,
    key_id: Vec<u8>,
    last_error: Mutex<Option<HsmError>>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenKey({}, token {:?}, label {:?}, id {})",
            self.key_type,
            self.token_label,
            self.key_label,
            hex::encode(&self.key_id)
        )
    }
}

impl TokenKey {
    /// Wraps a key pair found or generated on the token; on failure the session
    /// is handed back so the caller can clean up.
    pub(super) fn new(
        session: TokenSession,
        key_type: KeyType,
        key_label: &str,
        key_id: Vec<u8>,
        private: ObjectHandle,
        public_handle: Option<ObjectHandle>,
    ) -> Result<TokenKey, Box<(TokenSession, HsmError)>> {
        let public_key = match read_public_key(&session, key_type, private, public_handle) {
            Ok(k) => k,
            Err(e) => return Err(Box::new((session, e))),
        };
        let token_label = session.token.label.clone();
        let mut key = TokenKey {
            session: Mutex::new(session),
            private,
            public_handle,
            key_type,
            public_key,
            spki: Vec::new(),
            token_label,
            key_label: key_label.to_string(),
            key_id,
            last_error: Mutex::new(None),
        };
        key.spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        if KeyType::of_spki(&key.spki) != Some(key_type) {
            let e = HsmError::BadTokenData(format!(
                "the public key read from the token is not a valid {key_type} key"
            ));
            let session = key
                .session
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return Err(Box::new((session, e)));
        }
        Ok(key)
    }

    fn session(&self) -> MutexGuard<'_, TokenSession> {
        // A panic while holding the lock leaves the session usable: PKCS#11 calls are atomic.
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// DER SubjectPublicKeyInfo of the key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The token label.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// `CKA_LABEL` of the key.
    pub fn key_label(&self) -> &str {
        &self.key_label
    }

    /// `CKA_ID` of the key.
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// The reference to store in `private/pkcs11.json`.
    pub fn config(&self) -> TokenConfig {
        TokenConfig {
            format: CONFIG_FORMAT.into(),
            module: self.session().token.module.path.clone(),
            token_label: self.token_label.clone(),
            key_label: self.key_label.clone(),
            key_id: hex::encode(&self.key_id),
            key_type: self.key_type.name().into(),
        }
    }

    /// The reason of the last failed [`rcgen::SigningKey::sign`], if any.
    pub fn take_error(&self) -> Option<HsmError> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Reads the private key's protection attributes, and checks that the token
    /// refuses to hand out its value.
    pub fn protection(&self) -> Result<KeyProtection, HsmError> {
        let s = self.session();
        let attrs = s
            .session
            .get_attributes(
                self.private,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Local,
                ],
            )
            .map_err(|e| s.p11("C_GetAttributeValue", e))?;
        let mut p = KeyProtection {
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
            local: false,
            value_readable: false,
        };
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => p.sensitive = v,
                Attribute::Extractable(v) => p.extractable = v,
                Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                Attribute::NeverExtractable(v) => p.never_extractable = v,
                Attribute::Local(v) => p.local = v,
                _ => {}
            }
        }
        let secret_attrs: &[AttributeType] = match self.key_type {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &[
                AttributeType::PrivateExponent,
                AttributeType::Prime1,
                AttributeType::Prime2,
            ],
            _ => &[AttributeType::Value],
        };
        // A sensitive attribute is skipped (CKR_ATTRIBUTE_SENSITIVE); anything returned is a leak.
        let secret = s
            .session
            .get_attributes(self.private, secret_attrs)
            .map_err(|e| s.p11("C_GetAttributeValue", e))?;
        p.value_readable = secret.iter().any(|a| match a {
            Attribute::Value(v) | Attribute::PrivateExponent(v) => !v.is_empty(),
            Attribute::Prime1(v) | Attribute::Prime2(v) => !v.is_empty(),
            _ => false,
        });
        Ok(p)
    }

    /// Removes the key pair from the token (used when `init` fails after generating it).
    pub fn destroy(self) -> Result<(), HsmError> {
        let s = self.session();
        s.session
            .destroy_object(self.private)
            .map_err(|e| s.p11("C_DestroyObject", e))?;
        if let Some(public) = self.public_handle {
            s.session
                .destroy_object(public)
                .map_err(|e| s.p11("C_DestroyObject", e))?;
        }
        Ok(())
    }

    /// Signs `message` on the token and returns the signature in the form X.509 uses.
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let s = self.session();
        let sign = |mechanism: &Mechanism, data: &[u8]| {
            s.session
                .sign(mechanism, self.private, data)
                .map_err(|e| s.p11("C_Sign", e))
        };
        let signature = match self.key_type {
            KeyType::EcdsaP256 => {
                let raw = sign(&Mechanism::Ecdsa, &sha2::Sha256::digest(message))?;
                ecdsa_raw_to_der(&raw, 32)?
            }
            KeyType::EcdsaP384 => {
                let raw = sign(&Mechanism::Ecdsa, &sha2::Sha384::digest(message))?;
                ecdsa_raw_to_der(&raw, 48)?
            }
            KeyType::Ed25519 => sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message,
            )?,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let mut digest_info = SHA256_DIGEST_INFO.to_vec();
                digest_info.extend_from_slice(&sha2::Sha256::digest(message));
                sign(&Mechanism::RsaPkcs, &digest_info)?
            }
        };
        drop(s);
        // Never hand out a signature that does not verify: it would make
        // certificates that every partner rejects.
        let (_, bits) =
            signature::split_spki(&self.spki).map_err(|e| HsmError::BadTokenData(e.to_string()))?;
        signature::algorithm_for(self.key_type)
            .verify_signature(&bits, message, &signature)
            .map_err(|_| HsmError::BadSignature)?;
        Ok(signature)
    }
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.key_type.signature_algorithm()
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_message(msg).map_err(|e| {
            *self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// Reads the public half in the form rcgen's `der_bytes` wants, from the public
/// key object (or, lacking one, the private key object's public attributes).
fn read_public_key(
    session: &TokenSession,
    key_type: KeyType,
    private: ObjectHandle,
    public: Option<ObjectHandle>,
) -> Result<Vec<u8>, HsmError> {
    let object = public.unwrap_or(private);
    let get = |types: &[AttributeType]| {
        session
            .session
            .get_attributes(object, types)
            .map_err(|e| session.p11("C_GetAttributeValue", e))
    };
    let missing = |what: &str| {
        HsmError::BadTokenData(format!(
            "the key on the token has no readable {what}{}",
            if public.is_none() {
                " (and no public key object)"
            } else {
                ""
            }
        ))
    };
    let kind = get(&[AttributeType::KeyType])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::KeyType(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| missing("CKA_KEY_TYPE"))?;
    let wrong_kind = || {
        HsmError::BadTokenData(format!(
            "the key on the token is of type {kind}, not {key_type}"
        ))
    };
    match key_type {
        KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::Ed25519 => {
            let expected_kind = if key_type == KeyType::Ed25519 {
                P11KeyType::EC_EDWARDS
            } else {
                P11KeyType::EC
            };
            if kind != expected_kind {
                return Err(wrong_kind());
            }
            let mut params = None;
            let mut point = None;
            for a in get(&[AttributeType::EcParams, AttributeType::EcPoint])? {
                match a {
                    Attribute::EcParams(p) => params = Some(p),
                    Attribute::EcPoint(p) => point = Some(p),
                    _ => {}
                }
            }
            let params = params.ok_or_else(|| missing("CKA_EC_PARAMS"))?;
            let point = point.ok_or_else(|| missing("CKA_EC_POINT"))?;
            if !ec_params_match(key_type, &params) {
                return Err(HsmError::BadTokenData(format!(
                    "the key on the token is on another curve than {key_type} (CKA_EC_PARAMS {})",
                    hex::encode(&params)
                )));
            }
            parse_ec_point(&point, key_type)
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            if kind != P11KeyType::RSA {
                return Err(wrong_kind());
            }
            let mut modulus = None;
            let mut exponent = None;
            for a in get(&[AttributeType::Modulus, AttributeType::PublicExponent])? {
                match a {
                    Attribute::Modulus(m) => modulus = Some(m),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let modulus = modulus.ok_or_else(|| missing("CKA_MODULUS"))?;
            let exponent = exponent.ok_or_else(|| missing("CKA_PUBLIC_EXPONENT"))?;
            Ok(rsa_public_key_der(&modulus, &exponent))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signers_stay_shareable_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<TokenKey>();
        send_sync::<crate::profiles::RootSigner>();
    }
}
