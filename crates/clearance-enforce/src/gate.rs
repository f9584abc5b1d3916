//! The whole local check an enforcement point makes before it lets a call through:
//! signature and binding, revocation view, replay cache, in that order.

use std::sync::Arc;

use crate::state::{ReplayCache, RevocationView};
use clearance_verify::{ExpectedCall, VerifiedClearance, Verifier, VerifyError};

#[derive(Debug)]
pub struct Gate {
    verifier: Verifier,
    replay: ReplayCache,
    revocations: Option<Arc<RevocationView>>,
    measurer: Option<crate::measure::Measurer>,
}

impl Gate {
    /// Without a revocation view, revocation is left to the control plane's `start`
    /// (which checks it atomically): right for a one-shot executor such as `exec`, which
    /// cannot start anything without the control plane anyway.
    pub fn new(verifier: Verifier, replay: ReplayCache, revocations: Option<Arc<RevocationView>>) -> Self {
        Self {
            verifier,
            replay,
            revocations,
            measurer: None,
        }
    }

    /// Recompute these measurements before each admission and refuse clearances whose
    /// `env` binding differs (`measurement_mismatch`).
    pub fn with_measurer(mut self, measurer: crate::measure::Measurer) -> Self {
        self.measurer = (!measurer.is_empty()).then_some(measurer);
        self
    }

    /// Trust these keys from now on (the control plane's current JWKS).
    pub fn replace_keys(&self, jwks: clearance_verify::Jwks) {
        self.verifier.replace_keys(jwks);
    }

    pub fn revocations(&self) -> Option<&Arc<RevocationView>> {
        self.revocations.as_ref()
    }

    pub fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    /// Verify `token` for exactly `call`, refuse it if revoked (or if the revocation
    /// view is stale), then consume it. A clearance admitted once is never admitted
    /// again by this gate, even across restarts.
    pub fn admit(&self, token: &str, call: &ExpectedCall<'_>, now: i64) -> Result<VerifiedClearance, VerifyError> {
        let verified = self.verifier.verify(token, call, now)?;
        if let Some(view) = &self.revocations {
            view.check(verified.claims(), verified.kid())?;
        }
        if let Some(m) = &self.measurer {
            m.check(verified.claims())?;
        }
        // Kept as long as the verifier would still accept the clearance; issued, by this
        // machine's clock, no earlier than its `iat` less the allowed skew.
        let leeway = i64::try_from(self.verifier.leeway()).unwrap_or(i64::MAX);
        let claims = verified.claims();
        self.replay.consume(
            claims.jti.as_str(),
            claims.iat.saturating_sub(leeway),
            claims.exp.saturating_add(leeway),
            now,
        )?;
        Ok(verified)
    }
}
