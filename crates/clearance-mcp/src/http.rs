//! The agent's side over streamable HTTP: rmcp's streamable HTTP service at `/mcp`, one
//! [`Session`] per agent session, behind a check that every request carries a key.

use axum::serve::ListenerExt as _;
use clearance_model::ErrorCode;
use std::sync::Arc;

use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

use crate::session::{Caller, Session, UNAUTHENTICATED};
use crate::{Governor, McpProxyConfig, McpProxyError, Proxy};

/// How the HTTP endpoint is served.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` values accepted besides the loopback names (rmcp refuses others, against
    /// DNS rebinding); needed when agents reach the proxy by another name.
    pub allowed_hosts: Vec<String>,
    /// A session the agent neither uses nor ends (`DELETE`) for this long is closed, and
    /// its upstream session with it.
    pub session_idle: std::time::Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            session_idle: std::time::Duration::from_secs(300),
        }
    }
}

/// Serve agents at `/mcp` on `listener` until `shutdown` completes.
pub async fn run_http(
    config: McpProxyConfig,
    governor: Governor,
    listener: tokio::net::TcpListener,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), McpProxyError> {
    let proxy = Proxy::new(config, governor);
    let sessions_proxy = Arc::clone(&proxy);
    let mut hosts = StreamableHttpServerConfig::default().allowed_hosts;
    hosts.extend(options.allowed_hosts);
    let cancel = StreamableHttpServerConfig::default().cancellation_token;
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(options.session_idle);
    let service = StreamableHttpService::new(
        move || Ok(Session::new(Arc::clone(&sessions_proxy), Caller::Bearer)),
        Arc::new(sessions),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(hosts)
            .with_cancellation_token(cancel.clone()),
    );
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(require_key));
    // Answers are SSE streams written in pieces: without NODELAY each piece can wait for
    // the agent's delayed ACK (measured: 40 ms per call).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let outcome = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await;
    proxy.finish().await;
    outcome.map_err(|e| McpProxyError::Http(e.to_string()))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A request without a key is refused before rmcp sees it: `401` with a JSON-RPC error.
async fn require_key(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if bearer(request.headers()).is_some() {
        return next.run(request).await;
    }
    let body = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": UNAUTHENTICATED,
            "message": "invalid_api_key: present your Clearance API key as `Authorization: Bearer <key>`",
            "data": {"reason": ErrorCode::InvalidApiKey},
        }
    });
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer")],
        axum::Json(body),
    )
        .into_response()
}
