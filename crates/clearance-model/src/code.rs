//! The closed vocabulary of everything an operator or agent can be told "no" with,
//! besides a decision's [`DenyReason`]s: API error codes, refusals of the execution
//! lifecycle, reasons a renewal stops an execution, and enforcement points' refusals.
//! Each is an enum serialized to the same stable snake_case code it always had; no code
//! is a free string anywhere, and adding one is a deliberate change here.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::reason::DenyReason;

/// Defines a closed code enum: variants, their wire spelling (snake_case of the name),
/// `as_str`, `Display`, and `ALL` for tests.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The stable wire code.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

codes! {
    /// Why the control plane refused an execution lifecycle or attestation call (HTTP
    /// 409): the request was well-formed, but the state it found says no.
    Refusal {
        /// The clearance was already started (single use).
        Replayed = "replayed",
        ExecutionRevoked = "execution_revoked",
        /// The clearance expired before it was started.
        ExecutionExpired = "execution_expired",
        /// The clearance was not signed by this control plane, or names another execution.
        ClearanceInvalid = "clearance_invalid",
        /// Renewal of an execution that was never started.
        NotStarted = "not_started",
        ChallengeUnknown = "challenge_unknown",
        ChallengeReplayed = "challenge_replayed",
        ChallengeExpired = "challenge_expired",
        AttestationWrongEnvironment = "attestation_wrong_environment",
        AttestationSignatureInvalid = "attestation_signature_invalid",
        AttestationTimeSkew = "attestation_time_skew",
    }
}

codes! {
    /// Why a renewal said "stop": the executor must end the execution.
    StopReason {
        ExecutionRevoked = "execution_revoked",
        ExecutionFinished = "execution_finished",
        LeaseExpired = "lease_expired",
        ParentRevoked = "parent_revoked",
        EnvironmentUnknown = "environment_unknown",
        EnvironmentUntrusted = "environment_untrusted",
        AttestationStale = "attestation_stale",
        MeasurementMismatch = "measurement_mismatch",
        NoActivePolicy = "no_active_policy",
        PolicyDenied = "policy_denied",
        PolicyForbidden = "policy_forbidden",
        PolicyError = "policy_error",
        InvalidRequest = "invalid_request",
    }
}

codes! {
    /// The `code` of every error body, from the control plane or an enforcement point.
    ErrorCode {
        // The decision path's deny reasons, spelled as in `DenyReason`.
        InvalidApiKey = "invalid_api_key",
        UnauthorizedRole = "unauthorized_role",
        InvalidRequest = "invalid_request",
        NoActivePolicy = "no_active_policy",
        ParentInvalid = "parent_invalid",
        ParentRevoked = "parent_revoked",
        ScopeExceedsParent = "scope_exceeds_parent",
        LineageTooDeep = "lineage_too_deep",
        EnvironmentUnknown = "environment_unknown",
        EnvironmentUntrusted = "environment_untrusted",
        AttestationStale = "attestation_stale",
        MeasurementMismatch = "measurement_mismatch",
        PolicyError = "policy_error",
        PolicyDenied = "policy_denied",
        PolicyForbidden = "policy_forbidden",
        AuditUnavailable = "audit_unavailable",
        /// A deny that named no reason (never recorded so; kept as a safe default).
        Denied = "denied",
        // The API.
        NotFound = "not_found",
        Conflict = "conflict",
        PolicyInvalid = "policy_invalid",
        StorageUnavailable = "storage_unavailable",
        SigningKeyRevoked = "signing_key_revoked",
        Internal = "internal",
        RateLimited = "rate_limited",
        RequestTooLarge = "request_too_large",
        HeadersTooLarge = "headers_too_large",
        MethodNotAllowed = "method_not_allowed",
        Timeout = "timeout",
        UnsupportedMediaType = "unsupported_media_type",
        // Lifecycle refusals and renewal stops (see `Refusal`, `StopReason`).
        Replayed = "replayed",
        ExecutionRevoked = "execution_revoked",
        ExecutionExpired = "execution_expired",
        ExecutionFinished = "execution_finished",
        LeaseExpired = "lease_expired",
        ClearanceInvalid = "clearance_invalid",
        NotStarted = "not_started",
        ChallengeUnknown = "challenge_unknown",
        ChallengeReplayed = "challenge_replayed",
        ChallengeExpired = "challenge_expired",
        AttestationWrongEnvironment = "attestation_wrong_environment",
        AttestationSignatureInvalid = "attestation_signature_invalid",
        AttestationTimeSkew = "attestation_time_skew",
        // An enforcement point's own checks of a clearance.
        Malformed = "malformed",
        Oversize = "oversize",
        WrongAlgorithm = "wrong_algorithm",
        WrongType = "wrong_type",
        UnknownKey = "unknown_key",
        BadSignature = "bad_signature",
        WrongIssuer = "wrong_issuer",
        WrongAudience = "wrong_audience",
        NotYetValid = "not_yet_valid",
        Expired = "expired",
        ActionMismatch = "action_mismatch",
        ResourceMismatch = "resource_mismatch",
        ArgumentsMismatch = "arguments_mismatch",
        ArgumentsInvalid = "arguments_invalid",
        Revoked = "revoked",
        RevocationViewStale = "revocation_view_stale",
        ReplayCacheUnavailable = "replay_cache_unavailable",
        // An enforcement point's other refusals.
        ControlPlaneUnavailable = "control_plane_unavailable",
        UpstreamUnavailable = "upstream_unavailable",
        ClearanceRequired = "clearance_required",
        Misconfigured = "misconfigured",
    }
}

/// The same word in the wider vocabulary: every smaller code enum converts by spelling,
/// and the tests prove each spelling exists.
fn widen(code: &'static str) -> ErrorCode {
    ErrorCode::ALL
        .iter()
        .copied()
        .find(|c| c.as_str() == code)
        .unwrap_or(ErrorCode::Internal)
}

impl From<DenyReason> for ErrorCode {
    fn from(r: DenyReason) -> Self {
        widen(r.as_str())
    }
}

impl From<Refusal> for ErrorCode {
    fn from(r: Refusal) -> Self {
        widen(r.as_str())
    }
}

impl From<StopReason> for ErrorCode {
    fn from(r: StopReason) -> Self {
        widen(r.as_str())
    }
}

impl StopReason {
    /// The stop a renewal answers when the decision path would now deny for `reason`
    /// (`None` for reasons that cannot arise at renewal).
    pub fn from_deny(reason: DenyReason) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == reason.as_str())
    }
}

impl ErrorCode {
    /// The code of a deny: its first reason.
    pub fn of_deny(reasons: &[DenyReason]) -> Self {
        reasons.first().map_or(Self::Denied, |r| Self::from(*r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_to_its_spelling_and_back() -> Result<(), serde_json::Error> {
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(c)?, serde_json::json!(c.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(serde_json::json!(c.as_str()))?, *c);
        }
        for r in StopReason::ALL {
            assert_eq!(serde_json::to_value(r)?, serde_json::json!(r.as_str()));
        }
        for r in Refusal::ALL {
            assert_eq!(serde_json::to_value(r)?, serde_json::json!(r.as_str()));
        }
        Ok(())
    }

    /// Every narrower code has its word in `ErrorCode` (no silent fallback).
    #[test]
    fn narrower_codes_widen_to_the_same_word() {
        for r in Refusal::ALL {
            assert_eq!(ErrorCode::from(*r).as_str(), r.as_str());
        }
        for r in StopReason::ALL {
            assert_eq!(ErrorCode::from(*r).as_str(), r.as_str());
        }
        for r in DenyReason::ALL {
            assert_eq!(ErrorCode::from(*r).as_str(), r.as_str());
        }
        assert_eq!(ErrorCode::of_deny(&[]), ErrorCode::Denied);
    }

    #[test]
    fn an_unknown_code_does_not_parse() {
        assert!(serde_json::from_value::<ErrorCode>(serde_json::json!("something_new")).is_err());
    }
}
