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

/// Counters in queries (log indices, tree sizes, sequence numbers) are documented as
/// non-negative int64: a value above `i64::MAX` is refused like any malformed one, rather
/// than accepted past what the document promises.
pub(crate) mod int64 {
    use serde::{Deserialize as _, Deserializer};

    fn check<E: serde::de::Error>(v: u64) -> Result<u64, E> {
        if i64::try_from(v).is_ok() {
            Ok(v)
        } else {
            Err(E::custom(format!("{v} is above the largest value taken, {}", i64::MAX)))
        }
    }

    pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        check(u64::deserialize(d)?)
    }

    pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<u64>::deserialize(d)?.map(check).transpose()
    }
}
