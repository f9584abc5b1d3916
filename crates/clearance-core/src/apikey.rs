//! API keys: random, shown once, stored only as SHA-256, compared in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::error::CoreError;

pub const API_KEY_PREFIX: &str = "clr_";
/// A generated key carries 256 random bits; a supplied one must be at least this long
/// after the prefix (>= 128 bits of base64url).
const MIN_SECRET_CHARS: usize = 22;
const MAX_KEY_CHARS: usize = 256;

/// A presented or generated API key. Never printed by `Debug`.
pub struct ApiKey(Zeroizing<String>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    pub fn generate() -> Result<Self, CoreError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|e| CoreError::Internal(format!("random: {e}")))?;
        Ok(Self(Zeroizing::new(format!(
            "{API_KEY_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(secret.as_ref())
        ))))
    }

    /// Accept a key of the right shape. The message never echoes the key.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let secret = s.strip_prefix(API_KEY_PREFIX).ok_or(CoreError::InvalidApiKey)?;
        let ok = secret.len() >= MIN_SECRET_CHARS
            && s.len() <= MAX_KEY_CHARS
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(Zeroizing::new(s.to_owned())))
        } else {
            Err(CoreError::InvalidApiKey)
        }
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The key itself, for showing once to whoever created it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of an API key: the only form in which a key is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() -> Result<(), CoreError> {
        let a = ApiKey::generate()?;
        let b = ApiKey::generate()?;
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 4 + 43);
        assert!(ApiKey::parse(a.expose())?.hash().ct_eq(&a.hash()));
        assert!(!a.hash().ct_eq(&b.hash()));
        assert_eq!(format!("{a:?}"), "ApiKey(<redacted>)");
        Ok(())
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "",
            "clr_",
            "clr_short",
            "sk_0123456789012345678901234567",
            "clr_has space in it 012345678901",
        ] {
            assert!(matches!(ApiKey::parse(bad), Err(CoreError::InvalidApiKey)), "{bad}");
        }
    }
}
