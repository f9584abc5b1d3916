use clearance_model::{ErrorCode, Refusal, Role};
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
    /// An execution lifecycle or attestation call refused by the state it found.
    #[error("{message}")]
    Refused { code: Refusal, message: String },
    /// The key that signs clearances was revoked: nothing can be issued until it is replaced.
    #[error(
        "the clearance signing key was revoked: replace it (move signing-key.pem aside and restart) before issuing"
    )]
    SigningKeyRevoked,
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    /// The stable code of the error body.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::InvalidApiKey => ErrorCode::InvalidApiKey,
            Self::UnauthorizedRole { .. } => ErrorCode::UnauthorizedRole,
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PolicyRejected(_) => ErrorCode::PolicyInvalid,
            Self::AuditUnavailable(_) => ErrorCode::AuditUnavailable,
            Self::StorageUnavailable(_) => ErrorCode::StorageUnavailable,
            Self::Refused { code, .. } => ErrorCode::from(*code),
            Self::SigningKeyRevoked => ErrorCode::SigningKeyRevoked,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The stable code as text (the same word as [`Self::error_code`]).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
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
