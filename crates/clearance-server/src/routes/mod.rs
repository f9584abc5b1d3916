pub(crate) mod authorize;
pub(crate) mod environments;
pub(crate) mod executions;
pub(crate) mod log;
pub(crate) mod meta;
pub(crate) mod policies;
pub(crate) mod principals;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parse a JSON body after authentication, so callers without a key learn nothing about
/// what the endpoint accepts. A body over the size limit keeps its 413.
pub(crate) fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = match body {
        Ok(b) => b,
        Err(rejection) => {
            return Err(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON for this endpoint: {e}")))
}

/// Like [`json_body`], but an empty body means the type's default.
pub(crate) fn json_body_or_default<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    match &body {
        Ok(b) if b.is_empty() => Ok(T::default()),
        _ => json_body(body),
    }
}

/// Parse an id from the path; a malformed one is `400 invalid_request`.
pub(crate) fn parse_id<T: std::str::FromStr<Err = clearance_model::IdError>>(raw: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|e: clearance_model::IdError| ApiError::BadRequest(e.to_string()))
}
