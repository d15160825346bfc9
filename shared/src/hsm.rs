//! Root keys on a PKCS#11 token (a hardware security module, a smart card, or
//! SoftHSM for testing) as an alternative to the passphrase-encrypted file.
//!
//! The key pair is generated *on* the token as sensitive and non-extractable,
//! so the private key never exists outside it. The CA directory only records
//! where the key is ([`TokenConfig`], `private/pkcs11.json`: module path,
//! token label, key label and id; no secret). Every signature is made by the
//! token and checked against the public key before it is used.
//!
//! Mechanisms are the most widely supported ones: the message is hashed here
//! and signed with plain `CKM_ECDSA` (whose raw `r || s` output is converted to
//! the DER `ECDSA-Sig-Value` X.509 wants), `CKM_RSA_PKCS` over a SHA-256
//! `DigestInfo`, or `CKM_EDDSA`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeType, KeyType as P11KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::keys::KeyType;

/// File name of the token reference inside the CA's `private/` directory.
pub const CONFIG_FILE: &str = "pkcs11.json";
/// Format tag of [`TokenConfig`] files this version writes and reads.
pub const CONFIG_FORMAT: &str = "peerlink-pkcs11-key/1";
/// Key label (`CKA_LABEL`) used when the operator gives none.
pub const DEFAULT_KEY_LABEL: &str = "peerlink-root";
/// Token labels are at most 32 bytes (`CK_TOKEN_INFO.label`).
pub const MAX_TOKEN_LABEL: usize = 32;
/// A generous bound for key labels, which PKCS#11 does not limit.
pub const MAX_KEY_LABEL: usize = 128;

/// DER of the namedCurve OID prime256v1 (`CKA_EC_PARAMS`).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the namedCurve OID secp384r1.
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID id-Ed25519 (RFC 8410), as PKCS#11 3.0 `CKA_EC_PARAMS` of Edwards keys.
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER prefix of a SHA-256 `DigestInfo` (RFC 8017 9.2, note 1).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Why the token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module file does not exist.
    #[error(
        "PKCS#11 module {0} does not exist; install the token's PKCS#11 library \
         (for SoftHSM2: apt-get install softhsm2) or give its path"
    )]
    ModuleMissing(PathBuf),
    /// The module could not be loaded or initialised.
    #[error("cannot use PKCS#11 module {module}: {reason}")]
    Module {
        /// The module path.
        module: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No token with that label is present.
    #[error(
        "no token labelled {label:?} is present (module {module}; tokens present: {present}); \
         plug it in or check the token label"
    )]
    TokenNotFound {
        /// The label looked for.
        label: String,
        /// The module path.
        module: PathBuf,
        /// Labels of the tokens that are present.
        present: String,
    },
    /// Several tokens carry the label.
    #[error("{count} tokens are labelled {label:?}; remove all but the CA's token")]
    AmbiguousToken {
        /// The label.
        label: String,
        /// How many tokens carry it.
        count: usize,
    },
    /// The token is not ready for use (not initialised, no user PIN).
    #[error("token {label:?} is not ready: {reason}")]
    TokenNotReady {
        /// The token label.
        label: String,
        /// Why.
        reason: String,
    },
    /// The PIN was refused.
    #[error("the token refused the PIN for token {label:?} (wrong PIN); nothing was changed")]
    WrongPin {
        /// The token label.
        label: String,
    },
    /// The user PIN is locked.
    #[error(
        "the user PIN of token {label:?} is locked after too many wrong PINs; \
         unlock it with the security officer PIN; nothing was changed"
    )]
    PinLocked {
        /// The token label.
        label: String,
    },
    /// An empty PIN was given.
    #[error("the token PIN is empty")]
    EmptyPin,
    /// The key is not on the token.
    #[error(
        "token {token_label:?} holds no private key labelled {key_label:?}{id}; \
         is this the CA's token?"
    )]
    KeyNotFound {
        /// The token label.
        token_label: String,
        /// The key label.
        key_label: String,
        /// " with id ..." or empty.
        id: String,
    },
    /// More than one key matches.
    #[error(
        "token {token_label:?} holds {count} private keys labelled {key_label:?} with the same id; \
         refusing to guess which one is the root key"
    )]
    AmbiguousKey {
        /// The token label.
        token_label: String,
        /// The key label.
        key_label: String,
        /// How many match.
        count: usize,
    },
    /// `init` would reuse a label.
    #[error(
        "token {token_label:?} already holds an object labelled {key_label:?}; \
         choose another --key-label (an existing key is never reused or overwritten)"
    )]
    KeyLabelTaken {
        /// The token label.
        token_label: String,
        /// The key label.
        key_label: String,
    },
    /// Something the token cannot do, or a key type this tool does not use on tokens.
    #[error("{0}")]
    Unsupported(String),
    /// The token returned data that does not make sense.
    #[error("the token returned malformed data: {0}")]
    BadTokenData(String),
    /// The token's key does not protect itself as required.
    #[error("the key generated on token {token_label:?} is not protected: {reason}")]
    Unprotected {
        /// The token label.
        token_label: String,
        /// What is wrong.
        reason: String,
    },
    /// A signature from the token does not verify with the token's public key.
    #[error(
        "the token's signature does not verify with its public key \
         (the key pair on the token is inconsistent or the token is faulty)"
    )]
    BadSignature,
    /// The `pkcs11.json` file is unusable.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Invalid operator input (labels).
    #[error("{0}")]
    Input(String),
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {operation} failed on token {token_label:?}: {source}")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The token label.
        token_label: String,
        /// The module's answer.
        source: P11Error,
    },
}

/// Where a root key on a token is: the content of `private/pkcs11.json`. No secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Always [`CONFIG_FORMAT`].
    pub format: String,
    /// Absolute path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label (`CK_TOKEN_INFO.label`).
    pub token_label: String,
    /// `CKA_LABEL` of the key pair.
    pub key_label: String,
    /// `CKA_ID` of the key pair, lowercase hex.
    pub key_id: String,
    /// The key type name (see [`KeyType::name`]).
    pub key_type: String,
}

impl TokenConfig {
    /// Reads and checks a `pkcs11.json` file.
    pub fn load(path: &Path) -> Result<TokenConfig, HsmError> {
        let bad = |reason: String| HsmError::Config {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let config: TokenConfig = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not a PKCS#11 key reference: {e}")))?;
        if config.format != CONFIG_FORMAT {
            return Err(bad(format!(
                "unknown format {:?} (this version reads {CONFIG_FORMAT:?})",
                config.format
            )));
        }
        check_token_label(&config.token_label).map_err(|e| bad(e.to_string()))?;
        check_key_label(&config.key_label).map_err(|e| bad(e.to_string()))?;
        config.key_id_bytes().map_err(|e| bad(e.to_string()))?;
        config.key_type().map_err(|e| bad(e.to_string()))?;
        Ok(config)
    }

    /// The JSON text written to `private/pkcs11.json`.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The key id as bytes.
    pub fn key_id_bytes(&self) -> Result<Vec<u8>, HsmError> {
        match hex::decode(&self.key_id) {
            Ok(id) if !id.is_empty() => Ok(id),
            _ => Err(HsmError::Input(format!(
                "key_id {:?} is not a non-empty hex string",
                self.key_id
            ))),
        }
    }

    /// The key type.
    pub fn key_type(&self) -> Result<KeyType, HsmError> {
        KeyType::from_name(&self.key_type)
            .ok_or_else(|| HsmError::Input(format!("unknown key_type {:?}", self.key_type)))
    }
}

/// Checks a token label as given on the command line.
pub fn check_token_label(label: &str) -> Result<(), HsmError> {
    if label.trim().is_empty() {
        return Err(HsmError::Input("the token label is empty".into()));
    }
    if label.len() > MAX_TOKEN_LABEL {
        return Err(HsmError::Input(format!(
            "token label {label:?} is longer than {MAX_TOKEN_LABEL} bytes"
        )));
    }
    if label != label.trim_end() {
        return Err(HsmError::Input(format!(
            "token label {label:?} ends with spaces, which PKCS#11 cannot tell from padding"
        )));
    }
    Ok(())
}

/// Checks a key label as given on the command line.
pub fn check_key_label(label: &str) -> Result<(), HsmError> {
    if label.is_empty() {
        return Err(HsmError::Input("the key label is empty".into()));
    }
    if label.len() > MAX_KEY_LABEL || label.chars().any(char::is_control) {
        return Err(HsmError::Input(format!(
            "key label {label:?} must be at most {MAX_KEY_LABEL} bytes of printable text"
        )));
    }
    Ok(())
}

/// A loaded and initialised PKCS#11 module. Finalised on drop when this
/// process initialised it.
struct Module {
    ctx: Pkcs11,
    path: PathBuf,
    finalize: bool,
}

impl Drop for Module {
    fn drop(&mut self) {
        if self.finalize {
            let _ = self.ctx.clone().finalize();
        }
    }
}

impl Module {
    fn load(path: &Path) -> Result<Module, HsmError> {
        if !path.is_file() {
            return Err(HsmError::ModuleMissing(path.to_path_buf()));
        }
        let err = |reason: String| HsmError::Module {
            module: path.to_path_buf(),
            reason,
        };
        let ctx = Pkcs11::new(path).map_err(|e| err(e.to_string()))?;
        let finalize = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => true,
            Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) => return Err(err(format!("C_Initialize: {e}"))),
        };
        Ok(Module {
            ctx,
            path: path.to_path_buf(),
            finalize,
        })
    }
}

/// A token found by its label, not yet logged in.
pub struct Token {
    module: Module,
    slot: Slot,
    label: String,
    protected_authentication_path: bool,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Token({:?} via {})",
            self.label,
            self.module.path.display()
        )
    }
}

impl Token {
    /// Loads `module` and finds the one token labelled `label`.
    pub fn open(module: &Path, label: &str) -> Result<Token, HsmError> {
        check_token_label(label)?;
        let module = Module::load(module)?;
        let p11 = |operation, source| HsmError::Pkcs11 {
            operation,
            token_label: label.to_string(),
            source,
        };
        let slots = module
            .ctx
            .get_slots_with_token()
            .map_err(|e| p11("C_GetSlotList", e))?;
        let mut present = Vec::new();
        let mut found = Vec::new();
        for slot in slots {
            let info = module
                .ctx
                .get_token_info(slot)
                .map_err(|e| p11("C_GetTokenInfo", e))?;
            if info.label() == label {
                found.push((slot, info));
            } else if info.token_initialized() {
                present.push(format!("{:?}", info.label()));
            }
        }
        if found.len() > 1 {
            return Err(HsmError::AmbiguousToken {
                label: label.into(),
                count: found.len(),
            });
        }
        let Some((slot, info)) = found.pop() else {
            return Err(HsmError::TokenNotFound {
                label: label.into(),
                module: module.path.clone(),
                present: if present.is_empty() {
                    "none".into()
                } else {
                    present.join(", ")
                },
            });
        };
        let not_ready = |reason: &str| HsmError::TokenNotReady {
            label: label.into(),
            reason: reason.into(),
        };
        if !info.token_initialized() {
            return Err(not_ready("it is not initialised"));
        }
        if !info.user_pin_initialized() {
            return Err(not_ready(
                "its user PIN is not set (set it with the security officer PIN first)",
            ));
        }
        if info.user_pin_locked() {
            return Err(HsmError::PinLocked {
                label: label.into(),
            });
        }
        Ok(Token {
            module,
            slot,
            label: label.to_string(),
            protected_authentication_path: info.protected_authentication_path(),
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The module path.
    pub fn module_path(&self) -> &Path {
        &self.module.path
    }

    /// Whether the PIN is entered on the token's own PIN pad rather than given by us.
    pub fn protected_authentication_path(&self) -> bool {
        self.protected_authentication_path
    }

    fn p11(&self, operation: &'static str, source: P11Error) -> HsmError {
        HsmError::Pkcs11 {
            operation,
            token_label: self.label.clone(),
            source,
        }
    }

    /// Opens a session (read-write when `write`) and logs the user in with `pin`
    /// (`None`: on the token's PIN pad).
    pub fn login(self, pin: Option<&[u8]>, write: bool) -> Result<TokenSession, HsmError> {
        if pin.is_some_and(<[u8]>::is_empty) {
            return Err(HsmError::EmptyPin);
        }
        let session = if write {
            self.module.ctx.open_rw_session(self.slot)
        } else {
            self.module.ctx.open_ro_session(self.slot)
        }
        .map_err(|e| self.p11("C_OpenSession", e))?;
        let result = match pin {
            Some(pin) => {
                let pin = RawAuthPin::new(Box::new(pin.to_vec()));
                session.login_with_raw(UserType::User, &pin)
            }
            None => session.login(UserType::User, None),
        };
        match result {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(P11Error::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                return Err(HsmError::WrongPin {
                    label: self.label.clone(),
                })
            }
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => {
                return Err(HsmError::PinLocked {
                    label: self.label.clone(),
                })
            }
            Err(e) => return Err(self.p11("C_Login", e)),
        }
        Ok(TokenSession {
            session,
            token: self,
        })
    }
}

/// A logged-in session on a token.
pub struct TokenSession {
    // Declared first: the session closes before the module is finalised.
    session: Session,
    token: Token,
}

impl TokenSession {
    fn p11(&self, operation: &'static str, source: P11Error) -> HsmError {
        self.token.p11(operation, source)
    }

    /// Generates a sensitive, non-extractable key pair of `key_type` labelled
    /// `key_label` with a fresh random `CKA_ID`, refusing a label already in use.
    pub fn generate_key(self, key_type: KeyType, key_label: &str) -> Result<TokenKey, HsmError> {
        check_key_label(key_label)?;
        let taken = self
            .session
            .find_objects(&[
                Attribute::Token(true),
                Attribute::Label(key_label.as_bytes().to_vec()),
            ])
            .map_err(|e| self.p11("C_FindObjects", e))?;
        if !taken.is_empty() {
            return Err(HsmError::KeyLabelTaken {
                token_label: self.token.label.clone(),
                key_label: key_label.into(),
            });
        }
        let mut id = vec![0u8; 16];
        OsRng.fill_bytes(&mut id);
        let label = Attribute::Label(key_label.as_bytes().to_vec());
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            label.clone(),
            Attribute::Id(id.clone()),
        ];
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            label,
            Attribute::Id(id.clone()),
        ];
        let mechanism = match key_type {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
                public.push(Attribute::EcParams(ec_params(key_type).to_vec()));
                Mechanism::EccKeyPairGen
            }
            KeyType::Ed25519 => {
                public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
                Mechanism::EccEdwardsKeyPairGen
            }
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                public.push(Attribute::ModulusBits(cryptoki::types::Ulong::from(
                    cryptoki_sys_ulong(rsa_bits(key_type)),
                )));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let (public_handle, private_handle) = self
            .session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| match e {
                P11Error::Pkcs11(
                    RvError::MechanismInvalid
                    | RvError::CurveNotSupported
                    | RvError::DomainParamsInvalid
                    | RvError::KeySizeRange
                    | RvError::TemplateInconsistent
                    | RvError::AttributeValueInvalid,
                    _,
                ) => HsmError::Unsupported(format!(
                    "token {:?} cannot generate a {key_type} key ({e})",
                    self.token.label
                )),
                e => self.p11("C_GenerateKeyPair", e),
            })?;
        let key = TokenKey::new(
            self,
            key_type,
            key_label,
            id,
            private_handle,
            Some(public_handle),
        );
        match key {
            Ok(key) => Ok(key),
            Err(failed) => {
                let (session, e) = *failed;
                // Leave nothing behind on the token for a key this tool cannot use.
                let _ = session.session.destroy_object(private_handle);
                let _ = session.session.destroy_object(public_handle);
                Err(e)
            }
        }
    }

    /// Finds the key pair labelled `key_label` (and with `CKA_ID` `key_id`, when given).
    pub fn open_key(
        self,
        key_type: KeyType,
        key_label: &str,
        key_id: Option<&[u8]>,
    ) -> Result<TokenKey, HsmError> {
        let mut template = vec![
            Attribute::Token(true),
            Attribute::Label(key_label.as_bytes().to_vec()),
        ];
        if let Some(id) = key_id {
            template.push(Attribute::Id(id.to_vec()));
        }
        let find = |class: ObjectClass| {
            let mut t = template.clone();
            t.push(Attribute::Class(class));
            self.session
                .find_objects(&t)
                .map_err(|e| self.p11("C_FindObjects", e))
        };
        let mut private = find(ObjectClass::PRIVATE_KEY)?;
        let public = find(ObjectClass::PUBLIC_KEY)?;
        if private.len() > 1 {
            return Err(HsmError::AmbiguousKey {
                token_label: self.token.label.clone(),
                key_label: key_label.into(),
                count: private.len(),
            });
        }
        let Some(private) = private.pop() else {
            return Err(HsmError::KeyNotFound {
                token_label: self.token.label.clone(),
                key_label: key_label.into(),
                id: key_id.map_or_else(String::new, |id| format!(" with id {}", hex::encode(id))),
            });
        };
        let id = match key_id {
            Some(id) => id.to_vec(),
            None => {
                let attrs = self
                    .session
                    .get_attributes(private, &[AttributeType::Id])
                    .map_err(|e| self.p11("C_GetAttributeValue", e))?;
                attrs
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::Id(id) => Some(id),
                        _ => None,
                    })
                    .unwrap_or_default()
            }
        };
        // The public half is read from the public key object; a token that keeps
        // only the private object is served from the private object's attributes.
        let public = if public.len() == 1 {
            public.first().copied()
        } else {
            None
        };
        TokenKey::new(self, key_type, key_label, id, private, public).map_err(|failed| failed.1)
    }
}

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
    fn new(
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
        let (_, bits) = crate::signature::split_spki(&self.spki)
            .map_err(|e| HsmError::BadTokenData(e.to_string()))?;
        crate::signature::algorithm_for(self.key_type)
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

fn ec_params(key_type: KeyType) -> &'static [u8] {
    match key_type {
        KeyType::EcdsaP384 => P384_PARAMS,
        KeyType::Ed25519 => ED25519_PARAMS,
        _ => P256_PARAMS,
    }
}

/// Widens to `CK_ULONG` (unsigned long: at least 32 bits on every platform).
fn cryptoki_sys_ulong(v: u32) -> std::os::raw::c_ulong {
    v.into()
}

fn rsa_bits(key_type: KeyType) -> u32 {
    match key_type {
        KeyType::Rsa2048 => 2048,
        KeyType::Rsa3072 => 3072,
        _ => 4096,
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

fn ec_params_match(key_type: KeyType, params: &[u8]) -> bool {
    match key_type {
        // PKCS#11 3.0 also allows the curve name as a PrintableString for Edwards curves.
        KeyType::Ed25519 => params == ED25519_PARAMS || params == b"\x13\x0cedwards25519",
        _ => params == ec_params(key_type),
    }
}

/// The public point from `CKA_EC_POINT`: normally a DER OCTET STRING wrapping
/// the point (uncompressed `04 || x || y` for ECDSA, 32 bytes for Ed25519);
/// some modules return the bare point, which is accepted too.
pub fn parse_ec_point(attr: &[u8], key_type: KeyType) -> Result<Vec<u8>, HsmError> {
    let point_len = match key_type {
        KeyType::EcdsaP256 => 65,
        KeyType::EcdsaP384 => 97,
        KeyType::Ed25519 => 32,
        other => {
            return Err(HsmError::Unsupported(format!(
                "{other} keys have no EC point"
            )))
        }
    };
    let uncompressed = |p: &[u8]| key_type == KeyType::Ed25519 || p.first() == Some(&0x04);
    if attr.len() == point_len && uncompressed(attr) {
        return Ok(attr.to_vec());
    }
    let bad = |why: &str| HsmError::BadTokenData(format!("CKA_EC_POINT {why}"));
    let (tag, content, rest) = der_read(attr).ok_or_else(|| bad("is not DER"))?;
    if tag != 0x04 || !rest.is_empty() {
        return Err(bad("is not an OCTET STRING"));
    }
    if content.len() != point_len {
        return Err(bad(&format!(
            "holds {} bytes, not the {point_len} of a {key_type} point",
            content.len()
        )));
    }
    if !uncompressed(content) {
        return Err(bad("is not an uncompressed point"));
    }
    Ok(content.to_vec())
}

/// Converts a raw PKCS#11 ECDSA signature `r || s` (each `coord_len` bytes)
/// into the DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub fn ecdsa_raw_to_der(raw: &[u8], coord_len: usize) -> Result<Vec<u8>, HsmError> {
    if raw.len() != 2 * coord_len {
        return Err(HsmError::BadTokenData(format!(
            "ECDSA signature of {} bytes, expected {}",
            raw.len(),
            2 * coord_len
        )));
    }
    let (r, s) = raw.split_at(coord_len);
    if r.iter().all(|b| *b == 0) || s.iter().all(|b| *b == 0) {
        return Err(HsmError::BadTokenData(
            "ECDSA signature with r or s = 0".into(),
        ));
    }
    let mut body = der_unsigned_integer(r);
    body.extend(der_unsigned_integer(s));
    Ok(der_tlv(0x30, &body))
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
fn rsa_public_key_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut body = der_unsigned_integer(modulus);
    body.extend(der_unsigned_integer(exponent));
    der_tlv(0x30, &body)
}

/// DER INTEGER of a big-endian unsigned magnitude: minimal, positive.
fn der_unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let trimmed = &magnitude[start..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tlv(0x02, &content)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one DER TLV with a single-byte tag: (tag, content, rest).
fn der_read(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, data) = data.split_first()?;
    let (&first, mut data) = data.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || data.len() < n {
            return None;
        }
        let mut len = 0usize;
        for b in &data[..n] {
            len = (len << 8) | usize::from(*b);
        }
        if len < 0x80 {
            return None; // not minimal
        }
        data = &data[n..];
        len
    };
    if data.len() < len {
        return None;
    }
    Some((tag, &data[..len], &data[len..]))
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

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        // High bit set in r: a zero byte is prepended; leading zeros in s are stripped.
        let mut raw = vec![0x80; 32];
        raw.extend(std::iter::repeat_n(0u8, 31));
        raw.push(0x05);
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        let mut expected = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        expected.extend(vec![0x80; 32]);
        expected.extend([0x02, 0x01, 0x05]);
        assert_eq!(der, expected);
        // P-384 sizes; wrong lengths and zero halves are refused.
        let der = ecdsa_raw_to_der(&[0x7f; 96], 48).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x64, 0x02, 0x30]);
        assert!(ecdsa_raw_to_der(&[1; 63], 32).is_err());
        assert!(ecdsa_raw_to_der(&[0; 64], 32).is_err());
    }

    #[test]
    fn der_signatures_verify_with_ring() {
        // A signature ring made in fixed form, converted, verifies in ASN.1 form.
        use ring::signature::{self as sig, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        for (fixed, asn1, coord) in [
            (
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                &sig::ECDSA_P256_SHA256_ASN1,
                32,
            ),
            (
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
                &sig::ECDSA_P384_SHA384_ASN1,
                48,
            ),
        ] {
            let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(fixed, &rng).unwrap();
            let pair = sig::EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref(), &rng).unwrap();
            for _ in 0..20 {
                let raw = pair.sign(&rng, b"message").unwrap();
                let der = ecdsa_raw_to_der(raw.as_ref(), coord).unwrap();
                sig::UnparsedPublicKey::new(asn1, pair.public_key().as_ref())
                    .verify(b"message", &der)
                    .unwrap();
            }
        }
    }

    #[test]
    fn ec_points_are_unwrapped() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&point);
        assert_eq!(parse_ec_point(&wrapped, KeyType::EcdsaP256).unwrap(), point);
        assert_eq!(parse_ec_point(&point, KeyType::EcdsaP256).unwrap(), point);
        // P-384: 97 bytes, still the short length form.
        let mut p384 = vec![0x04];
        p384.extend([9u8; 96]);
        let mut wrapped = vec![0x04, 0x61];
        wrapped.extend(&p384);
        assert_eq!(parse_ec_point(&wrapped, KeyType::EcdsaP384).unwrap(), p384);
        // Wrong curve size, trailing bytes, compressed points, wrong tag.
        assert!(parse_ec_point(&wrapped, KeyType::EcdsaP256).is_err());
        let mut trailing = vec![0x04, 0x41];
        trailing.extend(&point);
        trailing.push(0);
        assert!(parse_ec_point(&trailing, KeyType::EcdsaP256).is_err());
        let mut compressed = vec![0x04, 0x41, 0x02];
        compressed.extend([7u8; 64]);
        assert!(parse_ec_point(&compressed, KeyType::EcdsaP256).is_err());
        let mut bitstring = vec![0x03, 0x41];
        bitstring.extend(&point);
        assert!(parse_ec_point(&bitstring, KeyType::EcdsaP256).is_err());
        assert!(parse_ec_point(&[], KeyType::EcdsaP256).is_err());
        // Ed25519: 32 bytes, bare or wrapped.
        let mut ed = vec![0x04, 0x20];
        ed.extend([3u8; 32]);
        assert_eq!(parse_ec_point(&ed, KeyType::Ed25519).unwrap(), [3u8; 32]);
    }

    #[test]
    fn rsa_public_keys_are_encoded_like_rcgen_reads_them() {
        let key = crate::keys::PrivateKey::generate(KeyType::Rsa2048).unwrap();
        let spki = key.public_key_der().unwrap();
        let (_, parsed) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(
                &spki,
            )
            .unwrap();
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = parsed.parsed() else {
            panic!("not RSA");
        };
        // x509-parser gives the INTEGER contents (with a leading zero byte): feed them as the
        // token would (bare magnitudes) and get the same RSAPublicKey bytes back.
        let der = rsa_public_key_der(rsa.modulus, rsa.exponent);
        assert_eq!(der, parsed.subject_public_key.data.as_ref());
    }

    #[test]
    fn der_lengths_use_the_long_form_when_needed() {
        let long = der_tlv(0x30, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x30, 0x82, 0x01, 0x2c]);
        let (tag, content, rest) = der_read(&long).unwrap();
        assert_eq!((tag, content.len(), rest.len()), (0x30, 300, 0));
        assert!(der_read(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).is_none());
    }

    #[test]
    fn configs_round_trip_and_are_checked() {
        let config = TokenConfig {
            format: CONFIG_FORMAT.into(),
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "CA token".into(),
            key_label: DEFAULT_KEY_LABEL.into(),
            key_id: "00ff".into(),
            key_type: "ecdsa-p384".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, config.to_json()).unwrap();
        assert_eq!(TokenConfig::load(&path).unwrap(), config);
        assert_eq!(config.key_type().unwrap(), KeyType::EcdsaP384);
        for (field, value) in [
            ("format", "other/1"),
            ("key_id", "xyz"),
            ("key_type", "dsa"),
            ("token_label", ""),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(&config.to_json()).unwrap();
            v[field] = value.into();
            std::fs::write(&path, v.to_string()).unwrap();
            assert!(TokenConfig::load(&path).is_err(), "{field}={value}");
        }
        std::fs::write(&path, "{").unwrap();
        assert!(TokenConfig::load(&path).is_err());
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_token_label("CA").is_ok());
        assert!(check_token_label("").is_err());
        assert!(check_token_label("trailing ").is_err());
        assert!(check_token_label(&"x".repeat(33)).is_err());
        assert!(check_key_label(DEFAULT_KEY_LABEL).is_ok());
        assert!(check_key_label("").is_err());
        assert!(check_key_label("a\nb").is_err());
    }

    #[test]
    fn a_missing_module_is_reported_as_such() {
        let err = Token::open(Path::new("/nonexistent/libpkcs11.so"), "CA").unwrap_err();
        assert!(matches!(err, HsmError::ModuleMissing(_)), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("lib.so");
        std::fs::write(&fake, b"not a library").unwrap();
        let err = Token::open(&fake, "CA").unwrap_err();
        assert!(matches!(err, HsmError::Module { .. }), "{err}");
    }
}
