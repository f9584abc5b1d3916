//! Identifier newtypes. Each is parsed once at the edge and carried typed afterwards.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::canonical::Digest;
use crate::limits;

/// Errors from parsing identifiers.
/// The formats of the ids, as regular expressions for the OpenAPI document. Each parser
/// below accepts exactly what its pattern matches (the tests hold them together).
pub mod patterns {
    /// [`super::PrincipalId`]: 1 to 128 of `a-z A-Z 0-9 . _ -`.
    pub const PRINCIPAL: &str = "^[A-Za-z0-9._-]{1,128}$";
    /// [`super::ExecutionId`]: 16 random bytes, base64url without padding.
    pub const EXECUTION: &str = "^[A-Za-z0-9_-]{21}[AQgw]$";
    /// [`super::KeyId`]: 8 random bytes in lowercase hex.
    pub const KEY: &str = "^[0-9a-f]{16}$";
    /// [`super::PolicyVersion`]: the SHA-256 of the bundle.
    pub const POLICY_VERSION: &str = "^sha256:[0-9a-f]{64}$";
    /// An environment id: 1 to 128 of `a-z A-Z 0-9 - _ . :`.
    pub const ENVIRONMENT: &str = "^[A-Za-z0-9._:-]{1,128}$";
    /// A signing key's id: its RFC 7638 thumbprint, 32 bytes base64url without padding.
    pub const SIGNING_KEY: &str = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$";
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error(
        "principal id `{0}` is invalid: use 1 to {max} characters from a-z, A-Z, 0-9, `.`, `_`, `-`",
        max = limits::MAX_PRINCIPAL_ID_BYTES
    )]
    Principal(String),
    #[error("execution id `{0}` is invalid: expected 22 base64url characters")]
    Execution(String),
    #[error("key id `{0}` is invalid: expected 16 lowercase hex digits")]
    Key(String),
    #[error("policy version `{0}` is invalid: expected `sha256:<64 lowercase hex digits>`")]
    PolicyVersion(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], IdError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| IdError::Random(e.to_string()))?;
    Ok(buf)
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Who calls the control plane: an agent, an operator or an enforcer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(String);
string_id!(PrincipalId);

impl FromStr for PrincipalId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= limits::MAX_PRINCIPAL_ID_BYTES
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Principal(truncated(s)))
        }
    }
}

/// The id of one execution: the clearance's `jti`. 128 random bits, base64url.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId(String);
string_id!(ExecutionId);

impl ExecutionId {
    pub fn random() -> Result<Self, IdError> {
        Ok(Self(URL_SAFE_NO_PAD.encode(random_bytes::<16>()?)))
    }
}

impl FromStr for ExecutionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match URL_SAFE_NO_PAD.decode(s) {
            Ok(bytes) if bytes.len() == 16 && s.len() == 22 => Ok(Self(s.to_owned())),
            _ => Err(IdError::Execution(truncated(s))),
        }
    }
}

/// The public id of an API key (the key itself is never stored).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);
string_id!(KeyId);

impl KeyId {
    pub fn random() -> Result<Self, IdError> {
        Ok(Self(hex::encode(random_bytes::<8>()?)))
    }
}

impl FromStr for KeyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Key(truncated(s)))
        }
    }
}

/// An immutable policy version, named by the SHA-256 of its bundle's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyVersion(Digest);

impl PolicyVersion {
    pub const fn from_digest(d: Digest) -> Self {
        Self(d)
    }
    pub const fn digest(&self) -> &Digest {
        &self.0
    }
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl fmt::Debug for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyVersion({})", self.0)
    }
}
impl FromStr for PolicyVersion {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self).map_err(|_| IdError::PolicyVersion(truncated(s)))
    }
}
impl Serialize for PolicyVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}
impl<'de> Deserialize<'de> for PolicyVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Digest::deserialize(d).map(Self)
    }
}

/// The position of an entry in the audit log (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    proptest::proptest! {
        /// Each documented pattern accepts exactly what its parser accepts.
        #[test]
        fn patterns_agree_with_the_parsers(s in "[A-Za-z0-9_:.-]{0,3}|[A-Za-z0-9_-]{20,23}|[0-9a-fA-F]{15,17}|sha256:[0-9a-f]{63,65}") {
            proptest::prop_assert_eq!(matches(patterns::PRINCIPAL, &s), s.parse::<PrincipalId>().is_ok(), "{}", s);
            proptest::prop_assert_eq!(matches(patterns::EXECUTION, &s), s.parse::<ExecutionId>().is_ok(), "{}", s);
            proptest::prop_assert_eq!(matches(patterns::KEY, &s), s.parse::<KeyId>().is_ok(), "{}", s);
            proptest::prop_assert_eq!(matches(patterns::POLICY_VERSION, &s), s.parse::<PolicyVersion>().is_ok(), "{}", s);
        }
    }

    #[test]
    fn generated_ids_match_their_patterns() {
        for _ in 0..200 {
            assert!(matches(patterns::EXECUTION, ExecutionId::random().unwrap().as_str()));
            assert!(matches(patterns::KEY, KeyId::random().unwrap().as_str()));
        }
        let thumbprint = URL_SAFE_NO_PAD.encode(crate::canonical::Digest::of(b"key").as_bytes());
        assert!(matches(patterns::SIGNING_KEY, &thumbprint), "{thumbprint}");
    }

    #[test]
    fn principal_ids() {
        assert!("billing-bot".parse::<PrincipalId>().is_ok());
        assert!("a.b_c-1".parse::<PrincipalId>().is_ok());
        for bad in ["", "has space", "quote\"", "slash/", "ünïcode", &"x".repeat(129)] {
            assert!(bad.parse::<PrincipalId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn execution_ids_are_random_and_parse() -> Result<(), IdError> {
        let a = ExecutionId::random()?;
        let b = ExecutionId::random()?;
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 22);
        assert_eq!(a.as_str().parse::<ExecutionId>()?, a);
        assert!("short".parse::<ExecutionId>().is_err());
        Ok(())
    }

    #[test]
    fn key_ids() -> Result<(), IdError> {
        let k = KeyId::random()?;
        assert_eq!(k.as_str().parse::<KeyId>()?, k);
        assert!("0123456789ABCDEF".parse::<KeyId>().is_err());
        Ok(())
    }
}
