//! The one place where failures become HTTP responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clearance_core::CoreError;
use clearance_model::wire::{ErrorBody, ErrorDetail};
use clearance_model::{DenyReason, ErrorCode};

#[derive(Debug)]
pub enum ApiError {
    Core(CoreError),
    /// The body is not the JSON the endpoint takes.
    BadRequest(String),
    /// Too many invalid keys from this address; try again after `retry_after`.
    RateLimited {
        retry_after: std::time::Duration,
    },
    TooLarge,
    /// A decision was recorded, but it is a client error (unauthorized role, invalid
    /// request): answered with its reason, execution id and log index.
    Recorded {
        status: StatusCode,
        detail: ErrorDetail,
    },
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        Self::Core(e)
    }
}

pub(crate) fn status_of(e: &CoreError) -> StatusCode {
    match e {
        CoreError::InvalidApiKey => StatusCode::UNAUTHORIZED,
        CoreError::UnauthorizedRole { .. } => StatusCode::FORBIDDEN,
        CoreError::InvalidRequest(_) | CoreError::PolicyRejected(_) => StatusCode::BAD_REQUEST,
        CoreError::NotFound(_) => StatusCode::NOT_FOUND,
        CoreError::Conflict(_) | CoreError::Refused { .. } => StatusCode::CONFLICT,
        CoreError::SigningKeyRevoked => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::AuditUnavailable(_) | CoreError::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn detail(code: ErrorCode, message: String) -> ErrorDetail {
    ErrorDetail {
        code,
        message,
        reasons: Vec::new(),
        execution_id: None,
        log_index: None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            Self::Core(e) => {
                let status = status_of(&e);
                let mut d = detail(e.error_code(), e.to_string());
                d.reasons = match &e {
                    CoreError::InvalidApiKey => vec![DenyReason::InvalidApiKey],
                    CoreError::UnauthorizedRole { .. } => vec![DenyReason::UnauthorizedRole],
                    CoreError::AuditUnavailable(_) => vec![DenyReason::AuditUnavailable],
                    _ => Vec::new(),
                };
                if let CoreError::PolicyRejected(p) = &e {
                    d.message = p.messages().join("\n");
                }
                if status.is_server_error() {
                    tracing::error!(code = e.code(), error = %e, "request failed");
                }
                (status, d)
            }
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, detail(ErrorCode::InvalidRequest, message)),
            Self::RateLimited { retry_after } => {
                let body = Json(ErrorBody {
                    error: detail(
                        ErrorCode::RateLimited,
                        "too many invalid API keys from this address: try again later".into(),
                    ),
                });
                // Whole seconds, rounded up (RFC 9110 section 10.2.3).
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
                if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return response;
            }
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                detail(
                    ErrorCode::RequestTooLarge,
                    format!(
                        "request body is larger than this endpoint accepts: {} bytes ({} for policy bundles)",
                        clearance_model::limits::MAX_REQUEST_BYTES,
                        clearance_model::limits::MAX_POLICY_REQUEST_BYTES
                    ),
                ),
            ),
            Self::Recorded { status, detail } => (status, detail),
        };
        (status, Json(ErrorBody { error: detail })).into_response()
    }
}

/// The most header bytes (names and values) a request may carry.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;

/// A request head over [`MAX_HEADER_BYTES`] or [`MAX_HEADERS`] is refused with
/// `431 headers_too_large` and the JSON error body. (The HTTP parser itself takes up to
/// 400 fields and about 400 KiB, so such heads reach this check; beyond those, it answers
/// 431 itself, without a body.)
pub(crate) async fn limit_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let mut out = (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Json(ErrorBody {
                error: detail(
                    ErrorCode::HeadersTooLarge,
                    format!(
                        "the request carries {} header fields in {bytes} bytes; at most {MAX_HEADERS} fields and \
                         {MAX_HEADER_BYTES} bytes are taken",
                        headers.len()
                    ),
                ),
            }),
        )
            .into_response();
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return out;
    }
    next.run(request).await
}

/// Every request body the API takes is JSON: a body sent as anything else is refused
/// (`415 unsupported_media_type`) before it is read, rather than parsed regardless.
pub(crate) async fn require_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|l| l.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || (v.starts_with("application/") && v.ends_with("+json")));
    if has_body && !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(ErrorBody {
                error: detail(
                    ErrorCode::UnsupportedMediaType,
                    "send the request body as `Content-Type: application/json`".to_owned(),
                ),
            }),
        )
            .into_response();
    }
    next.run(request).await
}

/// Rewrite any error response that is not already JSON (the framework's own 404, 405,
/// 413, 408, a caught panic's 500) into the stable error body.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::MethodNotAllowed, "this endpoint does not take that method"),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::RequestTooLarge, "request body is larger than the limit"),
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "the request took too long and was abandoned"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (ErrorCode::UnsupportedMediaType, "send a JSON body"),
        s if s.is_server_error() => (ErrorCode::Internal, "internal error"),
        _ => (ErrorCode::InvalidRequest, "the request was rejected"),
    };
    let mut out = (
        status,
        Json(ErrorBody {
            error: detail(code, message.to_owned()),
        }),
    )
        .into_response();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}
