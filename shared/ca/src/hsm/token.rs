//! Loading a PKCS#11 module, finding the CA's token by its label, logging in,
//! and creating or finding the root key pair on it.

use std::fmt;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use peerlink_pki::keys::KeyType;
use rand_core::{OsRng, RngCore};

use super::config::{check_key_label, check_token_label};
use super::encoding::{ec_params, ED25519_PARAMS};
use super::key::TokenKey;
use super::HsmError;

/// A loaded and initialised PKCS#11 module. Finalised on drop when this
/// process initialised it.
pub(super) struct Module {
    ctx: Pkcs11,
    pub(super) path: PathBuf,
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
    pub(super) module: Module,
    slot: Slot,
    pub(super) label: String,
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
    pub(super) session: Session,
    pub(super) token: Token,
}

impl TokenSession {
    pub(super) fn p11(&self, operation: &'static str, source: P11Error) -> HsmError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
