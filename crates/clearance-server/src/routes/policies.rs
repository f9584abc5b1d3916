use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clearance_model::PolicyVersion;
use clearance_model::limits::MAX_POLICY_REQUEST_BYTES;
use clearance_model::wire::{ErrorBody, PolicyActivated, PolicyBundle, PolicyList, PolicyPushed, PolicyValidated};

use crate::AppState;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::routes::json_body;

pub(crate) fn routes() -> Router<AppState> {
    // Bundles are the one kind of body larger than the API's default limit.
    let bundle_limit = || DefaultBodyLimit::max(MAX_POLICY_REQUEST_BYTES);
    Router::new()
        .route(
            "/v1/policies",
            get(list_policies).post(push_policy).layer(bundle_limit()),
        )
        .route("/v1/policies/validate", post(validate_policy).layer(bundle_limit()))
        .route("/v1/policies/{version}/activate", post(activate_policy))
}

/// Store a bundle as an immutable version after strict validation (admin). Does not
/// activate it; an invalid bundle is rejected with the validator's messages and the
/// active version stays as it was.
#[utoipa::path(post, path = "/v1/policies", tag = "policies", request_body = PolicyBundle,
    responses((status = 201, body = PolicyPushed), (status = 200, description = "identical bundle already stored", body = PolicyPushed),
        (status = 400, description = "rejected (`policy_invalid`)", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn push_policy(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PolicyPushed>), ApiError> {
    let bundle: PolicyBundle = json_body(body)?;
    let pushed = state.plane().push_policy(&caller, &bundle).await?;
    let status = if pushed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(pushed)))
}

/// Validate a bundle without storing it (admin).
#[utoipa::path(post, path = "/v1/policies/validate", tag = "policies", request_body = PolicyBundle,
    responses((status = 200, body = PolicyValidated), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn validate_policy(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PolicyValidated>, ApiError> {
    let bundle: PolicyBundle = json_body(body)?;
    Ok(Json(state.plane().validate_policy(&caller, &bundle).await?))
}

/// Make a stored version the active one (admin). Recorded in the log.
#[utoipa::path(post, path = "/v1/policies/{version}/activate", tag = "policies",
    params(("version" = String, Path, description = "`sha256:<hex>`")),
    responses((status = 200, body = PolicyActivated), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn activate_policy(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(version): Path<String>,
) -> Result<Json<PolicyActivated>, ApiError> {
    let version: PolicyVersion = crate::routes::parse_id(&version)?;
    Ok(Json(state.plane().activate_policy(&caller, &version).await?))
}

/// List stored versions, marking the active one (admin, auditor).
#[utoipa::path(get, path = "/v1/policies", tag = "policies", responses((status = 200, body = PolicyList)),
    security(("api_key" = [])))]
pub(crate) async fn list_policies(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<PolicyList>, ApiError> {
    Ok(Json(PolicyList {
        policies: state.plane().list_policies(&caller).await?,
    }))
}
