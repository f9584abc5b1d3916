use clearance_model::Role;
use clearance_policy::PolicyError;

use crate::store::StoreError;

/// Failures of control plane operations. The server maps each to one HTTP status and
/// a stable `code`; none of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("missing, unknown or revoked API key")]
    InvalidApiKey,
    #[error("this operation needs the `{required}` role")]
    UnauthorizedRole { required: Role },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("policy bundle rejected: {0}")]
    PolicyRejected(#[from] PolicyError),
    #[error("the audit log is unavailable, so nothing was decided: {0}")]
    AuditUnavailable(String),
    #[error("storage is unavailable: {0}")]
    StorageUnavailable(String),
    /// An execution lifecycle call refused (`replayed`, `execution_revoked`,
    /// `execution_expired`, `clearance_invalid`, `not_started`, ...).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// The key that signs clearances was revoked: nothing can be issued until it is replaced.
    #[error(
        "the clearance signing key was revoked: replace it (move signing-key.pem aside and restart) before issuing"
    )]
    SigningKeyRevoked,
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::UnauthorizedRole { .. } => "unauthorized_role",
            Self::InvalidRequest(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PolicyRejected(_) => "policy_invalid",
            Self::AuditUnavailable(_) => "audit_unavailable",
            Self::StorageUnavailable(_) => "storage_unavailable",
            Self::Refused { code, .. } => code,
            Self::SigningKeyRevoked => "signing_key_revoked",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Exists(what) => Self::Conflict(what),
            e @ (StoreError::ExecutionState { .. } | StoreError::Challenge(_)) => Self::Conflict(e.to_string()),
            StoreError::Unavailable(why) => Self::StorageUnavailable(why),
        }
    }
}
