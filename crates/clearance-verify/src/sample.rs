//! A signed sample clearance for tests and benchmarks (this crate's and those of the
//! crates built on it). Verification never uses it.

use clearance_artifact::{ClearanceSigner, Jwks, KeyError, TokenError};
use clearance_model::{
    CanonicalError, ClearanceClaims, Digest, ExecutionId, IdError, LogIndex, PolicyVersion, ResourceRef,
    argument_digest,
};
use serde_json::{Value, json};

/// A fresh signing key, and the claims of a refund of 120 EUR on `Tool::"stripe"` by
/// `billing-bot`, valid for 60 s from `now`. Fields are public so a test can bend them.
#[derive(Debug)]
pub struct Sample {
    pub signer: ClearanceSigner,
    pub claims: ClearanceClaims,
    pub args: Value,
    pub resource: ResourceRef,
}

/// What can go wrong making a sample (randomness, signing).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl Sample {
    pub fn refund(issuer: &str, now: i64) -> Result<Self, SampleError> {
        let args = json!({"amount": 120, "currency": "EUR", "charge": "ch_123"});
        let resource = ResourceRef::new("Tool", "stripe");
        let claims = ClearanceClaims {
            iss: issuer.to_owned(),
            sub: "billing-bot".into(),
            aud: None,
            jti: ExecutionId::random()?,
            iat: now,
            nbf: now,
            exp: now + 60,
            act: "refund".into(),
            res: resource.clone(),
            args: argument_digest(&args)?,
            env: None,
            pol: PolicyVersion::from_digest(Digest::of(b"bundle")),
            log: LogIndex(42),
            par: None,
            dep: 0,
            dlg: None,
        };
        Ok(Self {
            signer: ClearanceSigner::generate()?,
            claims,
            args,
            resource,
        })
    }

    /// The clearance of the current claims.
    pub fn token(&self) -> Result<String, SampleError> {
        Ok(self.signer.sign(&self.claims)?)
    }

    /// The same claims under a fresh execution id (a new clearance for the same call).
    pub fn fresh_token(&self) -> Result<String, SampleError> {
        let mut claims = self.claims.clone();
        claims.jti = ExecutionId::random()?;
        Ok(self.signer.sign(&claims)?)
    }

    /// The keys that verify it.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.signer.jwk()],
        }
    }
}
