//! RFC 8785 (JSON Canonicalization Scheme) bytes and SHA-256 digests of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Errors from canonicalization or digest parsing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("value cannot be canonicalized: {0}")]
    Canonicalize(String),
    #[error("digest `{0}` is not of the form `sha256:<64 lowercase hex digits>`")]
    MalformedDigest(String),
}

/// The RFC 8785 canonical JSON bytes of `value`.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| CanonicalError::Canonicalize(e.to_string()))
}

/// The digest a clearance's `args` claim carries: SHA-256 of the RFC 8785 canonical
/// JSON of the arguments.
pub fn argument_digest(arguments: &serde_json::Value) -> Result<Digest, CanonicalError> {
    Ok(Digest::of(&canonical_json(arguments)?))
}

/// A SHA-256 digest, written `sha256:<hex>` on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = CanonicalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || CanonicalError::MalformedDigest(s.chars().take(80).collect());
        let hex_part = s.strip_prefix("sha256:").ok_or_else(malformed)?;
        // Lowercase only, so that every digest has exactly one spelling.
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(malformed());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| malformed())?;
        Ok(Self(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let bytes = canonical_json(&json!({"b": [1, 2.0, "x"], "a": {"d": null, "c": true}}));
        assert_eq!(bytes.as_deref(), Ok(&br#"{"a":{"c":true,"d":null},"b":[1,2,"x"]}"#[..]));
    }

    #[test]
    fn rfc8785_number_serialization() {
        // RFC 8785 section 3.2.2.3: ECMAScript number formatting.
        let bytes = canonical_json(&json!([1e30, 4.5, 0.002, 1e-27, -0.0]));
        assert_eq!(bytes.as_deref(), Ok(&b"[1e+30,4.5,0.002,1e-27,0]"[..]));
    }

    #[test]
    fn digest_round_trips_and_rejects_other_spellings() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
        let upper = d.to_string().to_uppercase().replace("SHA256", "sha256");
        assert!(upper.parse::<Digest>().is_err());
        assert!("sha256:abcd".parse::<Digest>().is_err());
        assert!("md5:00".parse::<Digest>().is_err());
    }
}
