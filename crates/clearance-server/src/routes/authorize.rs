use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clearance_core::{Caller, CoreError};
use clearance_model::DenyReason;
use clearance_model::ErrorCode;
use clearance_model::execution::{AuthorizeAndStartRequest, AuthorizeAndStartResponse};
use clearance_model::wire::{
    AuthorizeRequest, AuthorizeResponse, ErrorBody, ErrorDetail, PermittedRequest, PermittedResponse,
};

use crate::AppState;
use crate::auth::{Authenticated, OnBehalfOf};
use crate::error::ApiError;
use crate::routes::json_body;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/authorize", post(authorize))
        .route("/v1/authorize/permitted", post(permitted))
        .route("/v1/executions/authorize-and-start", post(authorize_and_start))
}

/// Which of the given actions on a resource some permit policy could grant the caller,
/// whatever the arguments (agent role). For showing an agent only the tools it may use:
/// conditions are not evaluated and nothing is decided or logged; every call is still
/// authorized in full.
#[utoipa::path(
    post, path = "/v1/authorize/permitted", tag = "decisions",
    request_body = PermittedRequest,
    responses(
        (status = 200, description = "The permitted subset of the actions, in the order asked", body = PermittedResponse),
        (status = 400, description = "Malformed body or too many actions (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key (`invalid_api_key`)", body = ErrorBody),
        (status = 403, description = "The principal lacks the `agent` role (`unauthorized_role`)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn permitted(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PermittedResponse>, ApiError> {
    let req: PermittedRequest = json_body(body)?;
    Ok(Json(state.plane().permitted(&caller, &req)?))
}

/// Ask for a clearance. Allow and deny are both `200` with the decision; a request from a
/// principal without the `agent` role is `403`, a request that does not fit the active
/// schema `400`, and both are still recorded in the log.
#[utoipa::path(
    post, path = "/v1/authorize", tag = "decisions",
    request_body = AuthorizeRequest,
    responses(
        (status = 200, description = "Decision (allow with a clearance, or deny with reasons)", body = AuthorizeResponse),
        (status = 400, description = "Malformed body, unknown action or ill-typed arguments (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key (`invalid_api_key`)", body = ErrorBody),
        (status = 403, description = "The principal lacks the `agent` role (`unauthorized_role`)", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`request_too_large`)", body = ErrorBody),
        (status = 503, description = "The decision could not be made durable (`audit_unavailable`); no clearance", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn authorize(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: AuthorizeRequest = json_body(body)?;
    let result = state.plane().authorize(&caller, &req).await;
    Ok(Json(recorded(&state, &caller, &req, started, result)?).into_response())
}

/// Decide for the agent whose key is in the `Clearance-Agent-Key` header and, on allow,
/// start the execution in the same commit (enforcer; for an enforcement point that asks
/// for the clearance itself and runs the call at once, such as a gateway). The decision
/// is answered as by `/v1/authorize`; an allow also carries the lease, and its clearance
/// cannot be started again.
#[utoipa::path(
    post, path = "/v1/executions/authorize-and-start", tag = "executions",
    request_body = AuthorizeAndStartRequest,
    params(("Clearance-Agent-Key" = String, Header, description = "the API key of the agent the request is for")),
    responses(
        (status = 200, description = "Decision; on allow, the clearance and the started execution's lease", body = AuthorizeAndStartResponse),
        (status = 400, description = "Malformed body, unknown action or ill-typed arguments (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked key, the caller's or the agent's (`invalid_api_key`)", body = ErrorBody),
        (status = 403, description = "The caller lacks the `enforcer` role or the agent the `agent` role (`unauthorized_role`)", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`request_too_large`)", body = ErrorBody),
        (status = 503, description = "The decision could not be made durable (`audit_unavailable`); no clearance", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn authorize_and_start(
    State(state): State<AppState>,
    Authenticated(enforcer): Authenticated,
    OnBehalfOf(agent): OnBehalfOf,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AuthorizeAndStartResponse>, ApiError> {
    let started = Instant::now();
    let req: AuthorizeAndStartRequest = json_body(body)?;
    let (result, lease) = match state.plane().authorize_and_start(&agent, &enforcer, &req).await {
        Ok(r) => (Ok(r.authorization), r.lease),
        Err(e) => (Err(e), None),
    };
    let authorization = recorded(&state, &agent, &req.request, started, result)?;
    if let Some(lease) = &lease {
        tracing::info!(execution_id = %lease.execution_id, by = %enforcer.id, "started with its decision");
    }
    Ok(Json(AuthorizeAndStartResponse { authorization, lease }))
}

/// A decision as the API answers it: counted, logged, and a deny for a client error
/// (wrong role, request that does not fit the schema) turned into its status.
fn recorded(
    state: &AppState,
    caller: &Caller,
    req: &AuthorizeRequest,
    started: Instant,
    result: Result<AuthorizeResponse, CoreError>,
) -> Result<AuthorizeResponse, ApiError> {
    state.metrics().authorize_latency(started.elapsed().as_secs_f64());
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, CoreError::AuditUnavailable(_)) {
                state
                    .metrics()
                    .decision(clearance_model::Decision::Deny, &[DenyReason::AuditUnavailable]);
            }
            return Err(e.into());
        }
    };
    state.metrics().decision(response.decision, &response.reasons);
    tracing::info!(
        execution_id = %response.execution_id,
        principal = %caller.id,
        action = %req.action,
        decision = response.decision.as_str(),
        reasons = ?response.reasons,
        log_index = ?response.log_index,
        "decision"
    );
    let client_error = response.reasons.iter().find_map(|r| match r {
        DenyReason::UnauthorizedRole => Some(StatusCode::FORBIDDEN),
        DenyReason::InvalidRequest => Some(StatusCode::BAD_REQUEST),
        _ => None,
    });
    match client_error {
        Some(status) => Err(ApiError::Recorded {
            status,
            detail: ErrorDetail {
                code: response
                    .reasons
                    .first()
                    .map_or(ErrorCode::InvalidRequest, |r| ErrorCode::from(*r)),
                message: response.message.unwrap_or_default(),
                reasons: response.reasons,
                execution_id: Some(response.execution_id),
                log_index: response.log_index,
            },
        }),
        None => Ok(response),
    }
}
