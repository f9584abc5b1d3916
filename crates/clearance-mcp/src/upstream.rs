//! The proxy's side of the upstream server: one MCP client session, over a child process's
//! stdio or streamable HTTP, and the way its messages find their way back to the agent.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use rmcp::model::{
    CancelledNotificationParam, ClientConfig, ClientRequest, ClientResult, GetMeta as _, InitializeResult,
    ProgressToken, RequestMetaObject, ServerNotification, ServerRequest, ServerResult,
};
use rmcp::service::{NotificationContext, Peer, PeerRequestOptions, RequestContext, RunningService, ServiceError};
use rmcp::{ErrorData as McpError, RoleClient, RoleServer, Service, ServiceExt as _};

use crate::McpProxyError;

/// Environment variables that hold Clearance credentials: never passed to an upstream
/// server started as a child process.
const CREDENTIAL_VARIABLES: [&str; 3] = [
    "CLEARANCE_API_KEY",
    "CLEARANCE_ENFORCER_KEY",
    "CLEARANCE_BOOTSTRAP_ADMIN_KEY",
];

/// Where the governed MCP server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamSpec {
    /// A program the proxy starts, speaking MCP on its stdin/stdout.
    Command { program: String, args: Vec<String> },
    /// A streamable HTTP endpoint, e.g. `http://127.0.0.1:3001/mcp`.
    Url(String),
}

impl std::fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Command { program, .. } => write!(f, "`{program}`"),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

pub(crate) fn to_mcp(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        other => McpError::internal_error(format!("the upstream server failed: {other}"), None),
    }
}

/// The upstream's progress tokens of calls in flight, mapped to the agent's own: rmcp gives
/// every request it sends a token of its own, so progress is translated on the way back.
#[derive(Debug, Default)]
struct ProgressTokens(Mutex<HashMap<ProgressToken, ProgressToken>>);

impl ProgressTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProgressToken, ProgressToken>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a call's token mapping when the call ends, however it ends.
struct TokenMapping<'a> {
    tokens: &'a ProgressTokens,
    upstream: ProgressToken,
}

impl Drop for TokenMapping<'_> {
    fn drop(&mut self) {
        self.tokens.lock().remove(&self.upstream);
    }
}

/// The client half that talks to the upstream server: its requests to the client
/// (sampling, elicitation, roots) and its notifications go to the agent.
struct UpstreamClient {
    /// Set once the agent's session exists (see [`UpstreamLink::set_agent`]).
    agent: OnceLock<Peer<RoleServer>>,
    progress: ProgressTokens,
    info: ClientConfig,
}

impl Service<RoleClient> for UpstreamClient {
    async fn handle_request(
        &self,
        request: ServerRequest,
        _context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, McpError> {
        match self.agent.get() {
            Some(peer) => peer.send_request(request).await.map_err(to_mcp),
            None => Err(McpError::internal_error("the agent is not connected yet", None)),
        }
    }

    async fn handle_notification(
        &self,
        mut notification: ServerNotification,
        _context: NotificationContext<RoleClient>,
    ) -> Result<(), McpError> {
        if let ServerNotification::ProgressNotification(progress) = &mut notification {
            // Progress of something the agent did not ask to follow is not passed on.
            let Some(token) = self.progress.lock().get(&progress.params.progress_token).cloned() else {
                return Ok(());
            };
            progress.params.progress_token = token;
        }
        if let Some(peer) = self.agent.get()
            && let Err(e) = peer.send_notification(notification).await
        {
            tracing::warn!(error = %e, "could not forward a notification to the agent");
        }
        Ok(())
    }

    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }
}

/// One MCP client session with the upstream server.
pub(crate) struct UpstreamLink {
    service: RunningService<RoleClient, UpstreamClient>,
}

impl UpstreamLink {
    /// Connect and initialize, introducing the proxy to the server as `client` (the
    /// agent's own introduction, when the agent has already made it).
    pub(crate) async fn connect(spec: &UpstreamSpec, client: ClientConfig) -> Result<Self, McpProxyError> {
        let upstream_error = |message: String| McpProxyError::Upstream {
            upstream: spec.to_string(),
            message,
        };
        let handler = UpstreamClient {
            agent: OnceLock::new(),
            progress: ProgressTokens::default(),
            info: client,
        };
        let service = match spec {
            UpstreamSpec::Command { program, args } => {
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                for var in CREDENTIAL_VARIABLES {
                    command.env_remove(var);
                }
                let transport =
                    rmcp::transport::TokioChildProcess::new(command).map_err(|e| upstream_error(e.to_string()))?;
                handler.serve(transport).await
            }
            UpstreamSpec::Url(url) => {
                install_crypto_provider();
                let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
                handler.serve(transport).await
            }
        }
        .map_err(|e| upstream_error(e.to_string()))?;
        if service.peer_info().is_none() {
            return Err(upstream_error("it did not complete initialization".into()));
        }
        Ok(Self { service })
    }

    /// Where the upstream's requests and notifications go from now on.
    pub(crate) fn set_agent(&self, peer: Peer<RoleServer>) {
        let _ = self.service.service().agent.set(peer);
    }

    /// The upstream's answer to `initialize`, which the proxy gives the agent as its own.
    pub(crate) fn info(&self) -> InitializeResult {
        let Some(peer_info) = self.service.peer_info() else {
            return InitializeResult::default();
        };
        let mut info = InitializeResult::new(peer_info.capabilities.clone())
            .with_protocol_version(peer_info.protocol_version.clone());
        if let Some(s) = &peer_info.server_info {
            info = info.with_server_info(s.clone());
        }
        if let Some(i) = &peer_info.instructions {
            info = info.with_instructions(i.clone());
        }
        info
    }

    pub(crate) fn peer(&self) -> &Peer<RoleClient> {
        self.service.peer()
    }

    /// Send `request` with the agent's `_meta`, and wait for the answer unless the agent
    /// cancels first, in which case the upstream is told to cancel too.
    pub(crate) async fn forward(
        &self,
        mut request: ClientRequest,
        meta: RequestMetaObject,
        cancelled: impl Future<Output = ()>,
    ) -> Result<ServerResult, McpError> {
        let agent_token = meta.get_progress_token();
        request.get_meta_mut().extend(meta);
        let peer = self.service.peer();
        let handle = peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .map_err(to_mcp)?;
        let id = handle.id.clone();
        let progress = &self.service.service().progress;
        let _mapping = agent_token.map(|token| {
            progress.lock().insert(handle.progress_token.clone(), token);
            TokenMapping {
                tokens: progress,
                upstream: handle.progress_token.clone(),
            }
        });
        tokio::select! {
            answer = handle.await_response() => answer.map_err(to_mcp),
            () = cancelled => {
                let notice = CancelledNotificationParam::new(Some(id), Some("the agent cancelled the request".into()));
                if let Err(e) = peer.notify_cancelled(notice).await {
                    tracing::warn!(error = %e, "could not pass a cancellation upstream");
                }
                Err(McpError::internal_error("the agent cancelled the request", None))
            }
        }
    }

    pub(crate) async fn close(self) {
        let _ = self.service.cancel().await;
    }
}

/// reqwest is built without a default TLS crypto provider (rmcp's default would compile
/// a second one); HTTPS upstreams use ring, as the control plane client does.
fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Start the upstream server, list its tools, and return them as (name, inputSchema).
pub(crate) async fn list_tools(spec: &UpstreamSpec) -> Result<Vec<(String, serde_json::Value)>, McpProxyError> {
    let link = UpstreamLink::connect(spec, ClientConfig::default()).await?;
    let tools = link.peer().list_all_tools().await.map_err(|e| McpProxyError::Upstream {
        upstream: spec.to_string(),
        message: format!("tools/list: {e}"),
    });
    link.close().await;
    Ok(tools?
        .into_iter()
        .map(|t| (t.name.to_string(), serde_json::Value::Object((*t.input_schema).clone())))
        .collect())
}
