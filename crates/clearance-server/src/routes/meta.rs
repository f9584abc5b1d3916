use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi as _;

use crate::AppState;
use crate::error::ApiError;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The public keys that verify clearances (RFC 7517), for any JOSE library.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "meta", responses((status = 200, description = "JWK set")))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    (
        // Short: after a rotation, verifiers behind a cache learn the new key within a minute.
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(serde_json::to_value(state.plane().published_keys()).unwrap_or_default()),
    )
        .into_response()
}

/// The process is up.
#[utoipa::path(get, path = "/livez", tag = "meta", responses((status = 200)))]
pub(crate) async fn livez() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready to decide: the database accepts writes, the signing key is loaded and the
/// active policy (if any) is valid. `503` with the failing check otherwise.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200), (status = 503)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let r = state.plane().readiness().await;
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let check = |ok: bool, err: Option<String>| match err {
        None if ok => json!({"ok": true}),
        _ => json!({"ok": false, "error": err}),
    };
    let body = json!({
        "status": if r.ready() { "ready" } else { "unavailable" },
        "checks": {
            "storage": check(r.storage.is_ok(), r.storage.clone().err()),
            "signing_key": match &r.signing_key {
                Ok(()) => json!({"ok": true, "kid": state.plane().engine().signer().kid()}),
                Err(e) => json!({"ok": false, "kid": state.plane().engine().signer().kid(), "error": e}),
            },
            "policy": match &r.policy {
                Ok(v) => json!({"ok": true, "active_version": v}),
                Err(e) => json!({"ok": false, "error": e}),
            },
        }
    });
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1")))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::Core(clearance_core::CoreError::NotFound("endpoint".into()))
}
