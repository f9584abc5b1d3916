use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use clearance_model::wire::{CreatePrincipal, ErrorBody, IssuedKey, KeyList, PrincipalList, PrincipalView, Whoami};
use clearance_model::{KeyId, PrincipalId};

use crate::AppState;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::routes::{json_body, parse_id};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/principals", get(list_principals).post(create_principal))
        .route("/v1/principals/{id}/keys", get(list_keys).post(issue_key))
        .route("/v1/keys/{key_id}", delete(revoke_key))
        .route("/v1/whoami", get(whoami))
}

/// The principal and roles of the presented key (any role). Enforcement points use it to
/// check a caller's key before passing anything on in its name.
#[utoipa::path(get, path = "/v1/whoami", tag = "principals",
    responses((status = 200, body = Whoami), (status = 401, description = "`invalid_api_key`", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn whoami(Authenticated(caller): Authenticated) -> Json<Whoami> {
    Json(Whoami {
        id: caller.id,
        roles: caller.roles,
    })
}

fn principal_id(raw: &str) -> Result<PrincipalId, ApiError> {
    parse_id(raw)
}

/// Create a principal with roles (admin).
#[utoipa::path(post, path = "/v1/principals", tag = "principals", request_body = CreatePrincipal,
    responses((status = 201, body = PrincipalView), (status = 409, description = "exists (`conflict`)", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create_principal(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PrincipalView>), ApiError> {
    let req: CreatePrincipal = json_body(body)?;
    Ok((
        StatusCode::CREATED,
        Json(state.plane().create_principal(&caller, &req).await?),
    ))
}

/// List principals (admin, auditor).
#[utoipa::path(get, path = "/v1/principals", tag = "principals", responses((status = 200, body = PrincipalList)),
    security(("api_key" = [])))]
pub(crate) async fn list_principals(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<PrincipalList>, ApiError> {
    Ok(Json(PrincipalList {
        principals: state.plane().list_principals(&caller).await?,
    }))
}

/// Issue a new API key for a principal (admin). The key is in this response only.
#[utoipa::path(post, path = "/v1/principals/{id}/keys", tag = "principals",
    params(("id" = String, Path, description = "principal id")),
    responses((status = 201, body = IssuedKey), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn issue_key(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let id = principal_id(&id)?;
    Ok((StatusCode::CREATED, Json(state.plane().issue_key(&caller, &id).await?)))
}

/// List a principal's keys by id, with revocation times (admin, auditor).
#[utoipa::path(get, path = "/v1/principals/{id}/keys", tag = "principals",
    params(("id" = String, Path, description = "principal id")),
    responses((status = 200, body = KeyList)), security(("api_key" = [])))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<KeyList>, ApiError> {
    let id = principal_id(&id)?;
    Ok(Json(KeyList {
        keys: state.plane().list_keys(&caller, &id).await?,
    }))
}

/// Revoke an API key (admin). Takes effect on the next request that presents it.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "principals",
    params(("key_id" = String, Path, description = "key id")),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key_id: KeyId = parse_id(&key_id)?;
    state.plane().revoke_key(&caller, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
