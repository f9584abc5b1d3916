//! The environment registry and attestation.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clearance_model::environment::{
    AttestRequest, AttestationView, Challenge, EnvironmentList, EnvironmentView, Quarantined, RegisterEnvironment,
    UpdateEnvironment,
};
use clearance_model::execution::RevokeRequest;
use clearance_model::wire::ErrorBody;

use crate::AppState;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::routes::{json_body, json_body_or_default};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/environments", get(list).post(register))
        .route("/v1/environments/{id}", get(show).patch(update))
        .route("/v1/environments/{id}/quarantine", post(quarantine))
        .route("/v1/environments/{id}/release", post(release))
        .route("/v1/environments/{id}/challenge", post(challenge))
        .route("/v1/environments/{id}/attest", post(attest))
}

/// Register an environment with its attestation key and expected measurements (admin).
#[utoipa::path(post, path = "/v1/environments", tag = "environments", request_body = RegisterEnvironment,
    responses((status = 201, body = EnvironmentView), (status = 409, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn register(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EnvironmentView>), ApiError> {
    let req: RegisterEnvironment = json_body(body)?;
    Ok((
        StatusCode::CREATED,
        Json(state.plane().register_environment(&caller, &req).await?),
    ))
}

/// List environments (admin, auditor, enforcer).
#[utoipa::path(get, path = "/v1/environments", tag = "environments",
    responses((status = 200, body = EnvironmentList)), security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<EnvironmentList>, ApiError> {
    Ok(Json(EnvironmentList {
        environments: state.plane().list_environments(&caller).await?,
    }))
}

/// One environment with its latest attestation (admin, auditor, enforcer).
#[utoipa::path(get, path = "/v1/environments/{id}", tag = "environments",
    params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = EnvironmentView), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<EnvironmentView>, ApiError> {
    Ok(Json(state.plane().environment(&caller, &id).await?))
}

/// Replace expectations and/or labels (admin).
#[utoipa::path(patch, path = "/v1/environments/{id}", tag = "environments", request_body = UpdateEnvironment,
    params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = EnvironmentView)), security(("api_key" = [])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnvironmentView>, ApiError> {
    let req: UpdateEnvironment = json_body(body)?;
    Ok(Json(state.plane().update_environment(&caller, &id, &req).await?))
}

/// Quarantine: deny new requests and revoke every live execution bound to it (admin).
#[utoipa::path(post, path = "/v1/environments/{id}/quarantine", tag = "environments", request_body = RevokeRequest,
    params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = Quarantined)), security(("api_key" = [])))]
pub(crate) async fn quarantine(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Quarantined>, ApiError> {
    let req: RevokeRequest = json_body_or_default(body)?;
    Ok(Json(state.plane().quarantine_environment(&caller, &id, &req).await?))
}

/// Lift a quarantine (admin). The environment must attest again before it is used.
#[utoipa::path(post, path = "/v1/environments/{id}/release", tag = "environments",
    params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = Quarantined)), security(("api_key" = [])))]
pub(crate) async fn release(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Quarantined>, ApiError> {
    Ok(Json(state.plane().release_environment(&caller, &id).await?))
}

/// A one-time challenge for the next attestation (enforcer). Valid for 60 s.
#[utoipa::path(post, path = "/v1/environments/{id}/challenge", tag = "environments",
    params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = Challenge)), security(("api_key" = [])))]
pub(crate) async fn challenge(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Challenge>, ApiError> {
    Ok(Json(state.plane().challenge(&caller, &id).await?))
}

/// Submit signed evidence (enforcer). Refusals: `attestation_signature_invalid`,
/// `attestation_wrong_environment`, `attestation_time_skew`, `challenge_unknown`,
/// `challenge_replayed`, `challenge_expired` (409).
#[utoipa::path(post, path = "/v1/environments/{id}/attest", tag = "environments", request_body = AttestRequest,
    params(("id" = String, Path, description = "environment id")),
    responses((status = 200, body = AttestationView), (status = 409, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn attest(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AttestationView>, ApiError> {
    let req: AttestRequest = json_body(body)?;
    Ok(Json(state.plane().attest(&caller, &id, &req).await?))
}
