//! Execution lifecycle (start, renew, complete), revocation and lineage.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use clearance_model::ExecutionId;
use clearance_model::execution::{
    CompleteRequest, Completed, Lease, LineageView, RenewRequest, RenewResponse, RevocationKind, RevocationList,
    RevokeRequest, Revoked, StartRequest,
};
use clearance_model::wire::{ErrorBody, SigningKeyRotated};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::routes::{json_body, json_body_or_default, parse_id};

/// How often a revocation stream says "nothing new" so that its consumer can tell a
/// quiet stream from a dead one.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/executions/{id}/start", post(start))
        .route("/v1/executions/{id}/renew", post(renew))
        .route("/v1/executions/{id}/complete", post(complete))
        .route("/v1/executions/{id}/revoke", post(revoke_execution))
        .route("/v1/executions/{id}/lineage", get(lineage))
        .route("/v1/principals/{id}/revoke", post(revoke_principal))
        .route("/v1/signing-keys/{kid}/revoke", post(revoke_signing_key))
        .route("/v1/signing-keys/rotate", post(rotate_signing_key))
        .route("/v1/revocations", get(revocations))
        .route("/v1/revocations/stream", get(stream))
}

fn execution_id(raw: &str) -> Result<ExecutionId, ApiError> {
    parse_id(raw)
}

/// Consume a clearance and take a lease (enforcer). A second start of the same clearance
/// is `409 replayed`, however many race.
#[utoipa::path(post, path = "/v1/executions/{id}/start", tag = "executions", request_body = StartRequest,
    params(("id" = String, Path, description = "execution id (the clearance's jti)")),
    responses((status = 200, body = Lease),
        (status = 409, description = "`replayed`, `execution_revoked`, `execution_expired`, `clearance_invalid`", body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn start(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Lease>, ApiError> {
    let req: StartRequest = json_body(body)?;
    Ok(Json(state.plane().start(&caller, &execution_id(&id)?, &req).await?))
}

/// Extend a lease after re-checking revocation and the active policy (enforcer).
/// `renewed: false` means stop now.
#[utoipa::path(post, path = "/v1/executions/{id}/renew", tag = "executions", request_body = RenewRequest,
    params(("id" = String, Path, description = "execution id")),
    responses((status = 200, body = RenewResponse)), security(("api_key" = [])))]
pub(crate) async fn renew(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RenewResponse>, ApiError> {
    let req: RenewRequest = json_body_or_default(body)?;
    Ok(Json(state.plane().renew(&caller, &execution_id(&id)?, &req).await?))
}

/// Record how an execution ended (enforcer).
#[utoipa::path(post, path = "/v1/executions/{id}/complete", tag = "executions", request_body = CompleteRequest,
    params(("id" = String, Path, description = "execution id")),
    responses((status = 200, body = Completed)), security(("api_key" = [])))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Completed>, ApiError> {
    let req: CompleteRequest = json_body(body)?;
    Ok(Json(state.plane().complete(&caller, &execution_id(&id)?, &req).await?))
}

/// Revoke an execution and its whole subtree (admin).
#[utoipa::path(post, path = "/v1/executions/{id}/revoke", tag = "executions", request_body = RevokeRequest,
    params(("id" = String, Path, description = "execution id")),
    responses((status = 200, body = Revoked)), security(("api_key" = [])))]
pub(crate) async fn revoke_execution(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Revoked>, ApiError> {
    let req: RevokeRequest = json_body_or_default(body)?;
    let id = execution_id(&id)?;
    Ok(Json(
        state
            .plane()
            .revoke(&caller, RevocationKind::Execution, id.as_str(), &req)
            .await?,
    ))
}

/// Revoke a principal: its API keys stop working and its executions, with their
/// subtrees, are revoked (admin).
#[utoipa::path(post, path = "/v1/principals/{id}/revoke", tag = "executions", request_body = RevokeRequest,
    params(("id" = String, Path, description = "principal id")),
    responses((status = 200, body = Revoked)), security(("api_key" = [])))]
pub(crate) async fn revoke_principal(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Revoked>, ApiError> {
    let req: RevokeRequest = json_body_or_default(body)?;
    let id: clearance_model::PrincipalId = parse_id(&id)?;
    Ok(Json(
        state
            .plane()
            .revoke(&caller, RevocationKind::Principal, id.as_str(), &req)
            .await?,
    ))
}

/// Revoke a clearance signing key by `kid`: every clearance it signed is revoked
/// (admin). Revoking the current key stops issuance until the key is replaced.
#[utoipa::path(post, path = "/v1/signing-keys/{kid}/revoke", tag = "executions", request_body = RevokeRequest,
    params(("kid" = String, Path, description = "JWK thumbprint")),
    responses((status = 200, body = Revoked)), security(("api_key" = [])))]
pub(crate) async fn revoke_signing_key(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(kid): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Revoked>, ApiError> {
    let req: RevokeRequest = json_body_or_default(body)?;
    if !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::BadRequest("a `kid` is base64url".into()));
    }
    Ok(Json(
        state
            .plane()
            .revoke(&caller, RevocationKind::SigningKey, &kid, &req)
            .await?,
    ))
}

/// Replace the clearance signing key (admin): the new key signs from the next decision
/// on; the one it replaces stays in the JWKS until every clearance it signed has expired.
/// Also the way back after revoking the signing key. `409` on a shared database.
#[utoipa::path(post, path = "/v1/signing-keys/rotate", tag = "executions",
    responses((status = 200, body = SigningKeyRotated), (status = 409, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn rotate_signing_key(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<SigningKeyRotated>, ApiError> {
    Ok(Json(state.plane().rotate_signing_key(&caller).await?))
}

/// An execution's ancestors and descendants with their states (admin, auditor, enforcer).
#[utoipa::path(get, path = "/v1/executions/{id}/lineage", tag = "executions",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 200, body = LineageView), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub(crate) async fn lineage(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<LineageView>, ApiError> {
    Ok(Json(state.plane().lineage(&caller, &execution_id(&id)?).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SinceQuery {
    /// Return records with a sequence number above this (0 for all).
    #[serde(default, deserialize_with = "super::int64::required")]
    since: u64,
    /// At most this many [default: 1000].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

impl SinceQuery {
    /// The query, refused when `limit` is out of its range.
    fn checked(q: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let most = clearance_core::MAX_REVOCATIONS_PER_PAGE;
        if q.limit.is_some_and(|l| !(1..=most).contains(&l)) {
            return Err(ApiError::BadRequest(format!("`limit` must be between 1 and {most}")));
        }
        Ok(q)
    }
}

/// Revocation records after `since` (enforcer, admin, auditor).
#[utoipa::path(get, path = "/v1/revocations", tag = "executions", params(SinceQuery),
    responses((status = 200, body = RevocationList)), security(("api_key" = [])))]
pub(crate) async fn revocations(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    q: Result<Query<SinceQuery>, QueryRejection>,
) -> Result<Json<RevocationList>, ApiError> {
    let q = SinceQuery::checked(q)?;
    Ok(Json(state.plane().revocations(&caller, q.since, q.limit).await?))
}

/// Server-sent events: every revocation after `since` as a `revocation` event (data: the
/// record as JSON, id: its seq), then new ones as they commit, with a `heartbeat` event
/// (data: `{"latest": seq}`) every 2 seconds. A consumer that misses heartbeats must
/// treat its view as stale. Enforcer, admin or auditor.
#[utoipa::path(get, path = "/v1/revocations/stream", tag = "executions", params(SinceQuery),
    responses((status = 200, description = "text/event-stream of revocation and heartbeat events")),
    security(("api_key" = [])))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    q: Result<Query<SinceQuery>, QueryRejection>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let q = SinceQuery::checked(q)?;
    // Authorize once up front (the same roles as the list), and fail before streaming.
    state.plane().revocations(&caller, q.since, Some(1)).await?;
    let watch = state.plane().watch_revocations();
    let stopping = state.stopping();
    let stream = futures_util::stream::unfold(
        Streamer {
            stopping,
            state,
            caller,
            watch,
            since: q.since,
            pending: std::collections::VecDeque::new(),
            dirty: true,
            heartbeat: tokio::time::interval(HEARTBEAT_INTERVAL),
        },
        |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        },
    );
    Ok(Sse::new(stream))
}

struct Streamer {
    state: AppState,
    /// The server is shutting down: end the stream so shutdown need not wait for it.
    stopping: tokio::sync::watch::Receiver<bool>,
    caller: clearance_core::Caller,
    watch: tokio::sync::watch::Receiver<u64>,
    since: u64,
    pending: std::collections::VecDeque<SseEvent>,
    /// Whether storage may hold records not yet sent.
    dirty: bool,
    heartbeat: tokio::time::Interval,
}

impl Streamer {
    /// The next event; `None` ends the stream (the consumer reconnects with `since`).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.dirty {
                // Mark as seen before reading, so a revocation committed meanwhile wakes us.
                self.watch.borrow_and_update();
                let page = match self.state.plane().revocations(&self.caller, self.since, None).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation stream ended: storage unavailable");
                        return None;
                    }
                };
                // A full page may have more behind it.
                self.dirty = page.revocations.len() >= clearance_core::MAX_REVOCATIONS_PER_PAGE as usize;
                for r in page.revocations {
                    self.since = r.seq;
                    let data = serde_json::to_string(&r).ok()?;
                    self.pending
                        .push_back(SseEvent::default().event("revocation").id(r.seq.to_string()).data(data));
                }
                continue;
            }
            tokio::select! {
                _ = self.stopping.wait_for(|s| *s) => return None,
                changed = self.watch.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.dirty = true;
                }
                _ = self.heartbeat.tick() => {
                    let data = serde_json::json!({ "latest": self.since }).to_string();
                    return Some(SseEvent::default().event("heartbeat").data(data));
                }
            }
        }
    }
}
