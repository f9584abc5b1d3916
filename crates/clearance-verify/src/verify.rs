//! Clearance verification at an enforcement point (DESIGN.md section 3).

use clearance_artifact::{Jwks, TokenError, UnverifiedToken};
use clearance_model::limits::DEFAULT_LEEWAY_SECONDS;
use clearance_model::{CanonicalError, ClearanceClaims, Digest, ErrorCode, ResourceRef, argument_digest};

/// One variant per failed check, with what was found and what was wanted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("clearance is malformed: {0}")]
    Malformed(String),
    #[error("clearance is {got} bytes, more than the limit of {max}")]
    Oversize { got: usize, max: usize },
    #[error("clearance algorithm `{alg}` is not accepted: only `EdDSA` is")]
    WrongAlgorithm { alg: String },
    #[error("clearance type `{typ}` is not `clearance+jwt`")]
    WrongType { typ: String },
    #[error("clearance is signed by unknown key `{kid}`")]
    UnknownKey { kid: String },
    #[error("clearance signature does not verify")]
    BadSignature,
    #[error("clearance was issued by `{got}`, not `{want}`")]
    WrongIssuer { got: String, want: String },
    #[error("clearance is for environment `{}`, not `{}`", .got.as_deref().unwrap_or("<none>"), .want.as_deref().unwrap_or("<none>"))]
    WrongAudience { got: Option<String>, want: Option<String> },
    #[error("clearance is not valid before {nbf} (now {now}, leeway {leeway} s)")]
    NotYetValid { nbf: i64, now: i64, leeway: u64 },
    #[error("clearance expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired { exp: i64, now: i64, leeway: u64 },
    #[error("clearance is for action `{got}`, not `{want}`")]
    ActionMismatch { got: String, want: String },
    #[error("clearance is for resource `{got}`, not `{want}`")]
    ResourceMismatch { got: ResourceRef, want: ResourceRef },
    #[error("clearance is for arguments {got}, not {want}")]
    ArgumentsMismatch { got: Digest, want: Digest },
    #[error("arguments cannot be digested: {0}")]
    Arguments(String),
    #[error("clearance is revoked: {0}")]
    Revoked(String),
    #[error("the revocation view is {age_seconds} s old, past its bound of {bound_seconds} s: refusing everything")]
    RevocationViewStale { age_seconds: u64, bound_seconds: u64 },
    #[error("clearance `{jti}` was already used")]
    Replayed { jti: String },
    #[error("replay cache: {0}")]
    ReplayCache(String),
    #[error("measurement mismatch: {0}")]
    MeasurementMismatch(String),
}

impl VerifyError {
    /// The stable code, in the closed vocabulary.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::Oversize { .. } => ErrorCode::Oversize,
            Self::WrongAlgorithm { .. } => ErrorCode::WrongAlgorithm,
            Self::WrongType { .. } => ErrorCode::WrongType,
            Self::UnknownKey { .. } => ErrorCode::UnknownKey,
            Self::BadSignature => ErrorCode::BadSignature,
            Self::WrongIssuer { .. } => ErrorCode::WrongIssuer,
            Self::WrongAudience { .. } => ErrorCode::WrongAudience,
            Self::NotYetValid { .. } => ErrorCode::NotYetValid,
            Self::Expired { .. } => ErrorCode::Expired,
            Self::ActionMismatch { .. } => ErrorCode::ActionMismatch,
            Self::ResourceMismatch { .. } => ErrorCode::ResourceMismatch,
            Self::ArgumentsMismatch { .. } => ErrorCode::ArgumentsMismatch,
            Self::Arguments(_) => ErrorCode::ArgumentsInvalid,
            Self::Revoked(_) => ErrorCode::Revoked,
            Self::RevocationViewStale { .. } => ErrorCode::RevocationViewStale,
            Self::Replayed { .. } => ErrorCode::Replayed,
            Self::ReplayCache(_) => ErrorCode::ReplayCacheUnavailable,
            Self::MeasurementMismatch(_) => ErrorCode::MeasurementMismatch,
        }
    }

    /// The stable snake_case code, for wire formats and exit messages.
    pub const fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}

impl From<TokenError> for VerifyError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Oversize { got, max } => Self::Oversize { got, max },
            TokenError::Malformed(m) => Self::Malformed(m),
            TokenError::UnsupportedAlgorithm { alg } => Self::WrongAlgorithm { alg },
            TokenError::WrongType { typ } => Self::WrongType { typ },
            TokenError::BadSignature => Self::BadSignature,
        }
    }
}

/// Exactly the call an executor is about to make.
#[derive(Debug, Clone)]
pub struct ExpectedCall<'a> {
    action: &'a str,
    resource: &'a ResourceRef,
    arguments: Digest,
}

impl<'a> ExpectedCall<'a> {
    pub fn new(action: &'a str, resource: &'a ResourceRef, arguments: &serde_json::Value) -> Result<Self, VerifyError> {
        let arguments =
            argument_digest(arguments).map_err(|e: CanonicalError| VerifyError::Arguments(e.to_string()))?;
        Ok(Self {
            action,
            resource,
            arguments,
        })
    }
}

/// A clearance that passed every check for one call. Only [`Verifier`] builds it.
#[derive(Debug, Clone)]
pub struct VerifiedClearance {
    claims: ClearanceClaims,
    kid: String,
}

impl VerifiedClearance {
    pub fn claims(&self) -> &ClearanceClaims {
        &self.claims
    }

    /// The signing key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Checks clearances from one control plane, for one environment (or none).
///
/// Clones share their keys: [`Verifier::replace_keys`] on one (after the control plane
/// rotated its signing key) changes them all.
#[derive(Debug, Clone)]
pub struct Verifier {
    jwks: std::sync::Arc<std::sync::RwLock<Jwks>>,
    issuer: String,
    audience: Option<String>,
    leeway: u64,
}

impl Verifier {
    /// `audience` is this enforcement point's environment id. A verifier bound to an
    /// environment refuses clearances for any other (or none); one bound to none
    /// refuses clearances bound to an environment.
    pub fn new(jwks: Jwks, issuer: impl Into<String>, audience: Option<String>) -> Self {
        Self {
            jwks: std::sync::Arc::new(std::sync::RwLock::new(jwks)),
            issuer: issuer.into(),
            audience,
            leeway: DEFAULT_LEEWAY_SECONDS,
        }
    }

    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Trust these keys from now on, instead of the ones given before.
    pub fn replace_keys(&self, jwks: Jwks) {
        *self.jwks.write().unwrap_or_else(std::sync::PoisonError::into_inner) = jwks;
    }

    /// Clock leeway, in seconds, on `nbf` and `exp`.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// Every check that needs no server state, in order: structure, header, key,
    /// signature, issuer, audience, time window, then the exact call.
    pub fn verify(&self, token: &str, call: &ExpectedCall<'_>, now: i64) -> Result<VerifiedClearance, VerifyError> {
        let (claims, kid) = self.verify_token(token, now)?;
        if claims.act != call.action {
            return Err(VerifyError::ActionMismatch {
                got: claims.act,
                want: call.action.to_owned(),
            });
        }
        if &claims.res != call.resource {
            return Err(VerifyError::ResourceMismatch {
                got: claims.res,
                want: call.resource.clone(),
            });
        }
        if claims.args != call.arguments {
            return Err(VerifyError::ArgumentsMismatch {
                got: claims.args,
                want: call.arguments,
            });
        }
        Ok(VerifiedClearance { claims, kid })
    }

    /// The checks that do not depend on the call: for inspecting a clearance (the CLI's
    /// `verify` without `--action`). The claims returned authorize nothing.
    pub fn inspect(&self, token: &str, now: i64) -> Result<ClearanceClaims, VerifyError> {
        self.verify_token(token, now).map(|(claims, _)| claims)
    }

    fn verify_token(&self, token: &str, now: i64) -> Result<(ClearanceClaims, String), VerifyError> {
        let parsed = UnverifiedToken::parse(token)?;
        let key = self
            .jwks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .find(parsed.kid())
            .map_err(|_| VerifyError::UnknownKey {
                kid: parsed.kid().chars().take(64).collect(),
            })?;
        let claims = parsed.verify_signature(&key)?;
        if claims.iss != self.issuer {
            return Err(VerifyError::WrongIssuer {
                got: claims.iss,
                want: self.issuer.clone(),
            });
        }
        if claims.aud != self.audience {
            return Err(VerifyError::WrongAudience {
                got: claims.aud,
                want: self.audience.clone(),
            });
        }
        let leeway = i64::try_from(self.leeway).unwrap_or(i64::MAX);
        if now.saturating_add(leeway) < claims.nbf {
            return Err(VerifyError::NotYetValid {
                nbf: claims.nbf,
                now,
                leeway: self.leeway,
            });
        }
        if now.saturating_sub(leeway) >= claims.exp {
            return Err(VerifyError::Expired {
                exp: claims.exp,
                now,
                leeway: self.leeway,
            });
        }
        Ok((claims, parsed.kid().to_owned()))
    }
}
