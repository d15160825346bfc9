//! The reference to a root key on a token (`private/pkcs11.json`,
//! [`peerlink_pki::layout::TOKEN_CONFIG`]) and the rules for the labels an
//! operator gives: what is stored, with no secret in it.

use std::path::{Path, PathBuf};

use peerlink_pki::keys::KeyType;
use serde::{Deserialize, Serialize};

use super::HsmError;

/// Format tag of [`TokenConfig`] files this version writes and reads.
pub const CONFIG_FORMAT: &str = "peerlink-pkcs11-key/1";
/// Key label (`CKA_LABEL`) used when the operator gives none.
pub const DEFAULT_KEY_LABEL: &str = "peerlink-root";
/// Token labels are at most 32 bytes (`CK_TOKEN_INFO.label`).
pub const MAX_TOKEN_LABEL: usize = 32;
/// A generous bound for key labels, which PKCS#11 does not limit.
pub const MAX_KEY_LABEL: usize = 128;

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

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_pki::layout::TOKEN_CONFIG;

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
        let path = dir.path().join(TOKEN_CONFIG);
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
}
