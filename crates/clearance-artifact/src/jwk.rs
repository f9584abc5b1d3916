//! JSON Web Keys for Ed25519 (RFC 8037 section 2) and their RFC 7638 thumbprints.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    #[error("key `{kid}` is not an Ed25519 key (kty `{kty}`, crv `{crv}`)")]
    NotEd25519 { kid: String, kty: String, crv: String },
    #[error("key `{kid}` has an invalid `x`")]
    BadPublicKey { kid: String },
    #[error("key `{kid}` does not match its thumbprint `{thumbprint}`")]
    KidMismatch { kid: String, thumbprint: String },
    #[error("no key with id `{0}`")]
    UnknownKid(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub crv: String,
    #[serde(default)]
    pub x: String,
    #[serde(default)]
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
            kid: thumbprint(key),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }

    /// The key, after checking it is Ed25519 and that `kid` is its thumbprint.
    pub fn verifying_key(&self) -> Result<VerifyingKey, JwkError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(JwkError::NotEd25519 {
                kid: self.kid.clone(),
                kty: self.kty.clone(),
                crv: self.crv.clone(),
            });
        }
        let bad = || JwkError::BadPublicKey { kid: self.kid.clone() };
        let bytes: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        let expected = thumbprint(&key);
        if expected != self.kid {
            return Err(JwkError::KidMismatch {
                kid: self.kid.clone(),
                thumbprint: expected,
            });
        }
        Ok(key)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The Ed25519 key with id `kid`.
    pub fn find(&self, kid: &str) -> Result<VerifyingKey, JwkError> {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| JwkError::UnknownKid(kid.chars().take(64).collect()))?
            .verifying_key()
    }
}

/// RFC 7638 section 3: SHA-256 over the required members in lexicographic order,
/// which for an OKP key (RFC 8037 section 2) are `crv`, `kty`, `x`.
pub(crate) fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 appendix A.3: the thumbprint of the example Ed25519 public key.
    #[test]
    fn rfc8037_thumbprint_vector() -> Result<(), Box<dyn std::error::Error>> {
        let x = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")?;
        let key = VerifyingKey::from_bytes(&x.as_slice().try_into()?)?;
        assert_eq!(thumbprint(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        Ok(())
    }

    #[test]
    fn rejects_mismatched_kid() -> Result<(), Box<dyn std::error::Error>> {
        let key = VerifyingKey::from_bytes(&[
            215, 90, 152, 1, 130, 177, 10, 183, 213, 75, 254, 211, 201, 100, 7, 58, 14, 225, 114, 243, 218, 166, 35,
            37, 175, 2, 26, 104, 247, 7, 81, 26,
        ])?;
        let mut jwk = Jwk::from_verifying_key(&key);
        assert_eq!(jwk.verifying_key(), Ok(key));
        jwk.kid = "other".into();
        assert!(matches!(jwk.verifying_key(), Err(JwkError::KidMismatch { .. })));
        Ok(())
    }
}
