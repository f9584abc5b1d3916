use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clearance_model::ExecutionId;
use clearance_model::wire::{ConsistencyProofView, ErrorBody, EvidenceBundle, InclusionProofView, LogEntries};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Authenticated;
use crate::error::ApiError;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/log/checkpoint", get(checkpoint).post(new_checkpoint))
        .route("/v1/log/verifier-key", get(verifier_key))
        .route("/v1/log/entries", get(entries))
        .route("/v1/log/proof/inclusion", get(inclusion))
        .route("/v1/log/proof/consistency", get(consistency))
        .route("/v1/evidence/{execution_id}", get(evidence))
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// The latest signed checkpoint (C2SP tlog-checkpoint note).
#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log",
    responses((status = 200, description = "C2SP checkpoint note", content_type = "text/plain")))]
pub(crate) async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(text(state.plane().latest_checkpoint().await?.note))
}

/// Sign a checkpoint now if the log has grown since the last one (auditor, admin).
#[utoipa::path(post, path = "/v1/log/checkpoint", tag = "log",
    responses((status = 200, description = "C2SP checkpoint note", content_type = "text/plain")),
    security(("api_key" = [])))]
pub(crate) async fn new_checkpoint(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    Ok(text(state.plane().checkpoint_for(&caller).await?.note))
}

/// The log's C2SP note verifier key: `name+keyid+base64(0x01 || Ed25519 key)`.
#[utoipa::path(get, path = "/v1/log/verifier-key", tag = "log",
    responses((status = 200, description = "C2SP verifier key", content_type = "text/plain")))]
pub(crate) async fn verifier_key(State(state): State<AppState>) -> Response {
    text(format!("{}\n", state.plane().log_verifier_key()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct Range {
    /// First index.
    #[serde(deserialize_with = "super::int64::required")]
    start: u64,
    /// One past the last index (at most 1,000 more than `start`).
    #[serde(deserialize_with = "super::int64::required")]
    end: u64,
}

/// Log entries `[start, end)`, each as base64 of its exact bytes (auditor, admin).
#[utoipa::path(get, path = "/v1/log/entries", tag = "log", params(Range),
    responses((status = 200, body = LogEntries), (status = 400, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn entries(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    q: Result<Query<Range>, QueryRejection>,
) -> Result<Json<LogEntries>, ApiError> {
    let r = query(q)?;
    Ok(Json(state.plane().log_entries(&caller, r.start, r.end).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct InclusionQuery {
    #[serde(deserialize_with = "super::int64::required")]
    index: u64,
    /// Tree size [default: the latest checkpoint's].
    #[serde(default, deserialize_with = "super::int64::optional")]
    size: Option<u64>,
}

/// Inclusion proof of entry `index` in the tree of `size` entries (RFC 6962 section 2.1.1).
#[utoipa::path(get, path = "/v1/log/proof/inclusion", tag = "log", params(InclusionQuery),
    responses((status = 200, body = InclusionProofView), (status = 400, body = ErrorBody)))]
pub(crate) async fn inclusion(
    State(state): State<AppState>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<InclusionProofView>, ApiError> {
    let q = query(q)?;
    let size = match q.size {
        Some(s) => s,
        None => state.plane().latest_checkpoint().await?.size,
    };
    Ok(Json(state.plane().inclusion_proof(q.index, size).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistencyQuery {
    #[serde(deserialize_with = "super::int64::required")]
    from: u64,
    #[serde(deserialize_with = "super::int64::required")]
    to: u64,
}

/// Consistency proof between the trees of `from` and `to` entries (RFC 6962 section 2.1.2).
#[utoipa::path(get, path = "/v1/log/proof/consistency", tag = "log", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProofView), (status = 400, body = ErrorBody)))]
pub(crate) async fn consistency(
    State(state): State<AppState>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<ConsistencyProofView>, ApiError> {
    let q = query(q)?;
    Ok(Json(state.plane().consistency_proof(q.from, q.to).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvidenceQuery {
    /// Also prove consistency between this tree size (an auditor's saved checkpoint) and
    /// the bundle's checkpoint.
    #[serde(default, deserialize_with = "super::int64::optional")]
    consistency_with: Option<u64>,
}

/// An execution's evidence bundle, verifiable offline (auditor, admin).
#[utoipa::path(get, path = "/v1/evidence/{execution_id}", tag = "log",
    params(("execution_id" = String, Path, description = "execution id (the clearance `jti`)"), EvidenceQuery),
    responses((status = 200, body = EvidenceBundle), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn evidence(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    q: Result<Query<EvidenceQuery>, QueryRejection>,
) -> Result<Json<EvidenceBundle>, ApiError> {
    let q = query(q)?;
    let id: ExecutionId = crate::routes::parse_id(&id)?;
    Ok(Json(state.plane().evidence(&caller, &id, q.consistency_with).await?))
}
