//! The decision and the closed list of reasons a request can be denied for.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The outcome of an execution request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Why a request was denied. Exhaustive on purpose: adding a reason is a wire change,
/// and every `match` on it must decide what the new reason means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// Stage 1: the API key is missing, unknown or revoked.
    InvalidApiKey,
    /// Stage 2: the principal lacks the role the operation needs.
    UnauthorizedRole,
    /// Stage 3: the request is malformed, too large, names an unknown action, or its
    /// arguments do not conform to the action's declared type.
    InvalidRequest,
    /// Stage 6: no policy version has been activated yet.
    NoActivePolicy,
    /// Stage 4: the parent clearance does not verify.
    ParentInvalid,
    /// Stage 4: the parent execution was revoked.
    ParentRevoked,
    /// Stage 4: the child asks for more than its parent may delegate.
    ScopeExceedsParent,
    /// Stage 4: the lineage would be deeper than allowed.
    LineageTooDeep,
    /// Stage 5: the target environment is not registered.
    EnvironmentUnknown,
    /// Stage 5: the target environment is quarantined.
    EnvironmentUntrusted,
    /// Stage 5: the environment's attestation is too old.
    AttestationStale,
    /// Stage 5: the attested measurements differ from the expected ones.
    MeasurementMismatch,
    /// Stage 6: a policy failed to evaluate. Cedar would skip it; Clearance denies.
    PolicyError,
    /// Stage 6: no policy permits the request.
    PolicyDenied,
    /// Stage 6: a `forbid` policy matched.
    PolicyForbidden,
    /// Stage 7: the decision could not be made durable in the audit log.
    AuditUnavailable,
}

impl DenyReason {
    /// Every reason, in stage order.
    pub const ALL: &'static [Self] = &[
        Self::InvalidApiKey,
        Self::UnauthorizedRole,
        Self::InvalidRequest,
        Self::NoActivePolicy,
        Self::ParentInvalid,
        Self::ParentRevoked,
        Self::ScopeExceedsParent,
        Self::LineageTooDeep,
        Self::EnvironmentUnknown,
        Self::EnvironmentUntrusted,
        Self::AttestationStale,
        Self::MeasurementMismatch,
        Self::PolicyError,
        Self::PolicyDenied,
        Self::PolicyForbidden,
        Self::AuditUnavailable,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::UnauthorizedRole => "unauthorized_role",
            Self::InvalidRequest => "invalid_request",
            Self::NoActivePolicy => "no_active_policy",
            Self::ParentInvalid => "parent_invalid",
            Self::ParentRevoked => "parent_revoked",
            Self::ScopeExceedsParent => "scope_exceeds_parent",
            Self::LineageTooDeep => "lineage_too_deep",
            Self::EnvironmentUnknown => "environment_unknown",
            Self::EnvironmentUntrusted => "environment_untrusted",
            Self::AttestationStale => "attestation_stale",
            Self::MeasurementMismatch => "measurement_mismatch",
            Self::PolicyError => "policy_error",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyForbidden => "policy_forbidden",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_as_str() -> Result<(), serde_json::Error> {
        for r in [
            DenyReason::InvalidApiKey,
            DenyReason::PolicyForbidden,
            DenyReason::AuditUnavailable,
            DenyReason::NoActivePolicy,
        ] {
            assert_eq!(serde_json::to_value(r)?, serde_json::json!(r.as_str()));
        }
        Ok(())
    }
}
