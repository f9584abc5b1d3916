//! Strict parsing of JWS compact clearances (RFC 7515 section 7.1).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clearance_model::ClearanceClaims;
use clearance_model::limits::MAX_TOKEN_BYTES;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

/// The only algorithm a clearance may use (RFC 8037 section 3.1).
pub const JWS_ALGORITHM: &str = "EdDSA";
/// The media type in the `typ` header (RFC 8725 section 3.11: explicit typing).
pub const CLEARANCE_TYPE: &str = "clearance+jwt";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("clearance is {got} bytes, more than the limit of {max}")]
    Oversize { got: usize, max: usize },
    #[error("clearance is malformed: {0}")]
    Malformed(String),
    #[error("clearance algorithm `{alg}` is not accepted: only `EdDSA` is")]
    UnsupportedAlgorithm { alg: String },
    #[error("clearance type `{typ}` is not `clearance+jwt`")]
    WrongType { typ: String },
    #[error("clearance signature does not verify")]
    BadSignature,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// A clearance whose structure and header were checked, but not yet its signature.
/// Its claims are only reachable through [`UnverifiedToken::verify_signature`].
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    signing_input: &'a str,
    kid: String,
    payload: Vec<u8>,
    signature: Signature,
}

impl<'a> UnverifiedToken<'a> {
    pub fn parse(token: &'a str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversize {
                got: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let malformed = |what: &str| TokenError::Malformed(what.to_owned());
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("expected three base64url parts separated by `.`"));
        };
        // The engine rejects padding and non-zero trailing bits, so each token has
        // exactly one encoding and no byte of it can change unnoticed.
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| malformed("header is not base64url"))?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
        if header.alg != JWS_ALGORITHM {
            return Err(TokenError::UnsupportedAlgorithm {
                alg: header.alg.chars().take(32).collect(),
            });
        }
        match header.typ.as_deref() {
            Some(CLEARANCE_TYPE) => {}
            other => {
                return Err(TokenError::WrongType {
                    typ: other.unwrap_or("").chars().take(64).collect(),
                });
            }
        }
        let kid = header.kid.ok_or_else(|| malformed("header has no `kid`"))?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| malformed("payload is not base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| malformed("signature is not base64url"))?;
        let signature = Signature::from_slice(&signature).map_err(|_| malformed("signature is not 64 bytes"))?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(Self {
            signing_input,
            kid,
            payload,
            signature,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Check the signature with strict Ed25519 verification, then decode the claims.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<ClearanceClaims, TokenError> {
        key.verify_strict(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| TokenError::BadSignature)?;
        serde_json::from_slice(&self.payload).map_err(|e| TokenError::Malformed(format!("claims: {e}")))
    }
}
