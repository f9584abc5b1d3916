#![doc = include_str!("../README.md")]

use std::sync::{Arc, Mutex, PoisonError};

use clearance_enforce::{Admission, ControlPlaneClient, NotAdmitted, Pipeline};
use clearance_model::execution::{CompleteRequest, CompletionStatus};
use clearance_model::wire::{AuthorizeRequest, PermittedRequest};
use clearance_model::{Digest, ErrorCode, ResourceRef, canonical_json};
use rmcp::model::{CallToolResult, ClientNotification, ClientRequest, ContentBlock, ListToolsResult, ServerResult};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServiceExt as _};
use serde_json::{Value, json};
use tokio::task::JoinSet;

mod http;
mod schema;
mod session;
mod upstream;

pub use http::{HttpOptions, run_http};
pub use schema::cedar_schema;
use session::{Caller, Session};
use upstream::UpstreamLink;
pub use upstream::UpstreamSpec;

/// The `_meta` key under which a forwarded request carries its clearance.
pub const CLEARANCE_META_KEY: &str = "clearance";
/// The resource type every governed call acts on; its id is the server's name.
pub const RESOURCE_TYPE: &str = "McpServer";
/// Request methods that pass through without a clearance.
pub const ALWAYS_ALLOWED: [&str; 2] = ["ping", "tools/list"];

#[derive(Debug, thiserror::Error)]
pub enum McpProxyError {
    #[error("cannot use the upstream server {upstream}: {message}")]
    Upstream { upstream: String, message: String },
    #[error("MCP session: {0}")]
    Session(String),
    #[error("serving MCP over HTTP: {0}")]
    Http(String),
}

/// How the proxy is set up.
#[derive(Debug, Clone)]
pub struct McpProxyConfig {
    /// The upstream server's name: the id of the `McpServer` resource policies see.
    pub server_name: String,
    pub upstream: UpstreamSpec,
    /// Request methods allowed through ungoverned besides `ping` and `tools/list`
    /// (e.g. `resources/list`, `prompts/list`).
    pub allow_methods: Vec<String>,
    pub environment: Option<String>,
    /// Answer `tools/list` with only the tools some policy could permit the caller.
    pub hide_unpermitted_tools: bool,
}

/// The control plane side: who asks, and the admission pipeline.
#[derive(Debug)]
pub struct Governor {
    /// The key calls are authorized in the name of over stdio. Over HTTP every caller
    /// presents its own, and this is not used.
    pub agent: Option<ControlPlaneClient>,
    pub pipeline: Pipeline,
}

/// Why a call was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: ErrorCode,
    pub message: String,
    pub policies: Vec<String>,
}

impl Denial {
    fn text(&self) -> String {
        let policies = if self.policies.is_empty() {
            String::new()
        } else {
            format!(" (policies: {})", self.policies.join(", "))
        };
        format!("clearance refused this call: {}: {}{policies}", self.code, self.message)
    }

    fn from_refusal(r: NotAdmitted) -> Self {
        match r {
            NotAdmitted::Denied {
                reasons,
                message,
                policies,
                ..
            } => Self {
                code: ErrorCode::of_deny(&reasons),
                message,
                policies,
            },
            other => Self {
                code: other.code(),
                message: other.to_string(),
                policies: Vec::new(),
            },
        }
    }

    /// How the agent hears of it: a tool error for a tool call (so a model sees why),
    /// a JSON-RPC error for anything else.
    fn answer(&self, request: &ClientRequest) -> Result<ServerResult, McpError> {
        if matches!(request, ClientRequest::CallToolRequest(_)) {
            let mut result = CallToolResult::error(vec![ContentBlock::text(self.text())]);
            result.structured_content = Some(json!({
                "clearance": {"reason": self.code, "message": self.message, "policies": self.policies}
            }));
            return Ok(ServerResult::CallToolResult(result));
        }
        Err(McpError::invalid_request(
            self.text(),
            Some(json!({"reason": self.code, "policies": self.policies})),
        ))
    }
}

/// What the proxy reads of an agent's message, for the `mcp_message` fuzz target: the
/// JSON-RPC message as rmcp parses it, then the governed call and its argument digest.
#[cfg(fuzzing)]
pub fn fuzz_client_message(data: &[u8]) {
    if let Ok(rmcp::model::ClientJsonRpcMessage::Request(r)) = serde_json::from_slice(data)
        && let Some((_, arguments)) = governed(&r.request)
    {
        let _ = clearance_model::argument_digest(&arguments);
    }
}

/// The governed call a request makes: its action and arguments.
fn governed(req: &ClientRequest) -> Option<(String, Value)> {
    match req {
        ClientRequest::CallToolRequest(r) => Some((
            format!("tool:{}", r.params.name),
            Value::Object(r.params.arguments.clone().unwrap_or_default()),
        )),
        ClientRequest::ReadResourceRequest(r) => Some(("resources/read".to_owned(), json!({"uri": r.params.uri}))),
        ClientRequest::GetPromptRequest(r) => Some((
            format!("prompt:{}", r.params.name),
            Value::Object(r.params.arguments.clone().unwrap_or_default()),
        )),
        _ => None,
    }
}

/// What every agent session shares: the configuration and the control plane side.
struct Proxy {
    config: McpProxyConfig,
    governor: Governor,
    resource: ResourceRef,
    /// Completion reports sent after the agent has its answer.
    completions: Mutex<JoinSet<()>>,
}

impl Proxy {
    fn new(config: McpProxyConfig, governor: Governor) -> Arc<Self> {
        let resource = ResourceRef::new(RESOURCE_TYPE, config.server_name.clone());
        Arc::new(Self {
            config,
            governor,
            resource,
            completions: Mutex::new(JoinSet::new()),
        })
    }

    /// Authorize in `agent`'s name, then admit (verify locally, start).
    async fn admit(&self, agent: &ControlPlaneClient, action: &str, arguments: &Value) -> Result<Admission, Denial> {
        let ask = AuthorizeRequest {
            action: action.to_owned(),
            resource: self.resource.clone(),
            arguments: arguments.clone(),
            context: json!({}),
            environment: self.config.environment.clone(),
            parent: None,
            ttl_seconds: None,
            delegate: None,
        };
        self.governor
            .pipeline
            .authorize_and_admit(agent, &ask, None)
            .await
            .map_err(Denial::from_refusal)
    }

    /// Record how the call ended, after the agent has its answer.
    fn complete(&self, admission: Admission, result: &Result<ServerResult, McpError>) {
        let (status, digest) = match result {
            Ok(r) => {
                let failed = matches!(r, ServerResult::CallToolResult(c) if c.is_error == Some(true));
                let digest = serde_json::to_value(r)
                    .ok()
                    .and_then(|v| canonical_json(&v).ok())
                    .map(|b| Digest::of(&b));
                let status = if failed {
                    CompletionStatus::Failed
                } else {
                    CompletionStatus::Succeeded
                };
                (status, digest)
            }
            Err(_) => (CompletionStatus::Failed, None),
        };
        let report = CompleteRequest {
            status,
            exit_code: None,
            output_digest: digest,
        };
        let mut pending = self.completions.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap the reports already sent, so a long-running proxy keeps only those in flight.
        while pending.try_join_next().is_some() {}
        pending.spawn(self.governor.pipeline.complete(admission, report));
    }

    /// Wait for the completion reports still in flight (each bounded by the control plane
    /// client's timeout), so that stopping the proxy right after an answer loses none.
    async fn finish(&self) {
        let mut pending = std::mem::take(&mut *self.completions.lock().unwrap_or_else(PoisonError::into_inner));
        while pending.join_next().await.is_some() {}
    }

    /// A `tools/list` answer with only the tools some policy could permit `agent` (its
    /// conditions on arguments aside). If the control plane cannot say, nothing is shown.
    async fn permitted_tools(
        &self,
        result: ServerResult,
        agent: &ControlPlaneClient,
    ) -> Result<ServerResult, McpError> {
        let mut list: ListToolsResult = session::expect(result)?;
        let ask = PermittedRequest {
            resource: self.resource.clone(),
            actions: list.tools.iter().map(|t| format!("tool:{}", t.name)).collect(),
        };
        let answer = agent.permitted(&ask).await.map_err(|e| {
            McpError::internal_error(
                format!("{}: cannot tell which tools are permitted: {e}", e.code()),
                Some(json!({"reason": e.code()})),
            )
        })?;
        list.tools.retain(|t| {
            answer
                .permitted
                .iter()
                .any(|a| a.strip_prefix("tool:") == Some(&*t.name))
        });
        Ok(ServerResult::ListToolsResult(list))
    }

    /// Every request but `initialize`: governed ones in `agent`'s name, the always-allowed
    /// and configured ones straight through, anything else refused.
    async fn handle(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
        upstream: &UpstreamLink,
        agent: &ControlPlaneClient,
    ) -> Result<ServerResult, McpError> {
        let method = request.method().to_owned();
        let mut meta = context.meta;
        let Some((action, arguments)) = governed(&request) else {
            if ALWAYS_ALLOWED.contains(&method.as_str()) || self.config.allow_methods.contains(&method) {
                let result = upstream.forward(request, meta, context.ct.cancelled()).await?;
                if method == "tools/list" && self.config.hide_unpermitted_tools {
                    return self.permitted_tools(result, agent).await;
                }
                return Ok(result);
            }
            return Err(McpError::invalid_request(
                format!("clearance does not forward `{method}` (allow it with --allow-method)"),
                Some(json!({"reason": ErrorCode::MethodNotAllowed})),
            ));
        };
        let admission = match self.admit(agent, &action, &arguments).await {
            Ok(a) => a,
            Err(denial) => return denial.answer(&request),
        };
        meta.insert(
            CLEARANCE_META_KEY.to_owned(),
            Value::String(admission.token().to_owned()),
        );
        let result = upstream.forward(request, meta, context.ct.cancelled()).await;
        self.complete(admission, &result);
        result
    }
}

/// Notifications from the agent the upstream should hear. `initialized` belongs to the
/// proxy's own session with the upstream, and a cancellation is passed on by the call it
/// cancels (with the upstream's request id, not the agent's).
fn forwarded_upstream(notification: &ClientNotification) -> bool {
    !matches!(
        notification,
        ClientNotification::InitializedNotification(_) | ClientNotification::CancelledNotification(_)
    )
}

/// Serve one agent on stdin/stdout, in front of the upstream server, until either side
/// closes. The upstream session opens when the agent initializes.
pub async fn run_stdio(config: McpProxyConfig, governor: Governor) -> Result<(), McpProxyError> {
    let agent = governor
        .agent
        .clone()
        .ok_or_else(|| McpProxyError::Session("over stdio the proxy needs an agent key of its own".into()))?;
    let proxy = Proxy::new(config, governor);
    let session = Session::new(Arc::clone(&proxy), Caller::Fixed(agent))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpProxyError::Session(e.to_string()))?;
    // When the agent goes, the session drops its upstream link, which ends the upstream
    // session (and stops a child process).
    let outcome = session.waiting().await;
    proxy.finish().await;
    outcome.map(|_| ()).map_err(|e| McpProxyError::Session(e.to_string()))
}

/// Start the upstream server, list its tools, and write the Cedar schema for them.
pub async fn upstream_schema(server_name: &str, upstream: &UpstreamSpec) -> Result<String, McpProxyError> {
    let tools = upstream::list_tools(upstream).await?;
    Ok(cedar_schema(server_name, &tools))
}
