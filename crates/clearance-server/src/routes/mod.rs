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
