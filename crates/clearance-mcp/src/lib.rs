#![doc = include_str!("../README.md")]

use std::sync::{Arc, OnceLock};

use clearance_enforce::{CallError, ControlPlaneClient, ExpectedCall, Gate};
use clearance_model::execution::{CompleteRequest, CompletionStatus, StartRequest};
use clearance_model::wire::AuthorizeRequest;
use clearance_model::{Decision, Digest, ExecutionId, ResourceRef, Timestamp, canonical_json};
use rmcp::model::{
    CallToolResult, ClientConfig, ClientNotification, ClientRequest, ClientResult, ContentBlock, InitializeResult,
    MetaObject, RequestMetaObject, ServerConfig, ServerNotification, ServerRequest, ServerResult,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, ServiceError};
use rmcp::{ErrorData as McpError, RoleClient, RoleServer, Service, ServiceExt};
use serde_json::{Value, json};

mod schema;
pub use schema::cedar_schema;

/// The `_meta` key under which a forwarded request carries its clearance.
pub const CLEARANCE_META_KEY: &str = "clearance";
/// The resource type every governed call acts on; its id is the server's name.
pub const RESOURCE_TYPE: &str = "McpServer";
/// Request methods that pass through without a clearance.
pub const ALWAYS_ALLOWED: [&str; 2] = ["ping", "tools/list"];

#[derive(Debug, thiserror::Error)]
pub enum McpProxyError {
    #[error("cannot start the upstream server `{program}`: {message}")]
    Upstream { program: String, message: String },
    #[error("MCP session: {0}")]
    Session(String),
}

/// How the proxy is set up.
#[derive(Debug, Clone)]
pub struct McpProxyConfig {
    /// The upstream server's name: the id of the `McpServer` resource policies see.
    pub server_name: String,
    pub upstream_program: String,
    pub upstream_args: Vec<String>,
    /// Request methods allowed through ungoverned besides `ping` and `tools/list`
    /// (e.g. `resources/list`, `prompts/list`).
    pub allow_methods: Vec<String>,
    pub environment: Option<String>,
}

/// The control plane side: who asks, who starts, and the local checks.
#[derive(Debug)]
pub struct Governor {
    pub agent: ControlPlaneClient,
    pub enforcer: ControlPlaneClient,
    pub gate: Gate,
}

/// Why a call was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: String,
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

    fn from_call(e: CallError) -> Self {
        Self {
            code: e.code().to_owned(),
            message: e.to_string(),
            policies: Vec::new(),
        }
    }
}

struct Admitted {
    token: String,
    id: ExecutionId,
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

/// Add the clearance to the request's `_meta`, keeping what the client put there.
fn attach(req: &mut ClientRequest, token: &str) {
    let meta = match req {
        ClientRequest::CallToolRequest(r) => &mut r.params.meta,
        ClientRequest::ReadResourceRequest(r) => &mut r.params.meta,
        ClientRequest::GetPromptRequest(r) => &mut r.params.meta,
        _ => return,
    };
    let mut object = meta.take().map(|m| m.0.0).unwrap_or_default();
    object.insert(CLEARANCE_META_KEY.to_owned(), Value::String(token.to_owned()));
    *meta = Some(RequestMetaObject(MetaObject(object)));
}

fn to_mcp(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        other => McpError::internal_error(format!("the upstream server failed: {other}"), None),
    }
}

struct Downstream {
    config: McpProxyConfig,
    governor: Arc<Governor>,
    resource: ResourceRef,
    upstream: Peer<RoleClient>,
    info: ServerConfig,
}

impl Downstream {
    async fn admit(&self, action: &str, arguments: &Value) -> Result<Admitted, Denial> {
        let g = &self.governor;
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
        let answer = g.agent.authorize(&ask).await.map_err(Denial::from_call)?;
        if answer.decision != Decision::Allow {
            return Err(Denial {
                code: answer
                    .reasons
                    .first()
                    .map_or_else(|| "denied".to_owned(), |r| r.as_str().to_owned()),
                message: answer.message.unwrap_or_default(),
                policies: answer.policies,
            });
        }
        let token = answer.clearance.ok_or_else(|| Denial {
            code: "control_plane_unavailable".into(),
            message: "an allow decision came without a clearance".into(),
            policies: Vec::new(),
        })?;
        let local = |e: clearance_enforce::VerifyError| Denial {
            code: e.code().to_owned(),
            message: e.to_string(),
            policies: Vec::new(),
        };
        let call = ExpectedCall::new(action, &self.resource, arguments).map_err(local)?;
        let verified = g.gate.admit(&token, &call, Timestamp::now().seconds()).map_err(local)?;
        let id = verified.claims().jti.clone();
        let start = StartRequest {
            clearance: token.clone(),
            lease_seconds: None,
        };
        g.enforcer.start(&id, &start).await.map_err(Denial::from_call)?;
        Ok(Admitted { token, id })
    }

    fn complete(&self, id: ExecutionId, result: &Result<ServerResult, McpError>) {
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
        let enforcer = self.governor.enforcer.clone();
        tokio::spawn(async move {
            let req = CompleteRequest {
                status,
                exit_code: None,
                output_digest: digest,
            };
            if let Err(e) = enforcer.complete(&id, &req).await {
                tracing::warn!(execution_id = %id, error = %e, "could not report the call's completion");
            }
        });
    }
}

impl Service<RoleServer> for Downstream {
    async fn handle_request(
        &self,
        mut request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        // The agent's handshake is with the proxy, which speaks for the upstream server
        // (whose own handshake happened when the proxy started).
        if let ClientRequest::InitializeRequest(init) = &request {
            context.peer.set_peer_info(init.params.clone());
            return Ok(ServerResult::InitializeResult(self.info.clone()));
        }
        let method = request.method().to_owned();
        let Some((action, arguments)) = governed(&request) else {
            if ALWAYS_ALLOWED.contains(&method.as_str()) || self.config.allow_methods.contains(&method) {
                return self.upstream.send_request(request).await.map_err(to_mcp);
            }
            return Err(McpError::invalid_request(
                format!("clearance does not forward `{method}` (allow it with --allow-method)"),
                Some(json!({"reason": "method_not_allowed"})),
            ));
        };
        let admitted = match self.admit(&action, &arguments).await {
            Ok(a) => a,
            Err(denial) => {
                if matches!(request, ClientRequest::CallToolRequest(_)) {
                    let mut result = CallToolResult::error(vec![ContentBlock::text(denial.text())]);
                    result.structured_content = Some(json!({
                        "clearance": {"reason": denial.code, "message": denial.message, "policies": denial.policies}
                    }));
                    return Ok(ServerResult::CallToolResult(result));
                }
                return Err(McpError::invalid_request(
                    denial.text(),
                    Some(json!({"reason": denial.code, "policies": denial.policies})),
                ));
            }
        };
        attach(&mut request, &admitted.token);
        let result = self.upstream.send_request(request).await.map_err(to_mcp);
        self.complete(admitted.id, &result);
        result
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        _context: NotificationContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Err(e) = self.upstream.send_notification(notification).await {
            tracing::warn!(error = %e, "could not forward a notification upstream");
        }
        Ok(())
    }

    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }
}

/// The upstream side: server-to-client requests and notifications go back to the agent.
struct Upstream {
    downstream: Arc<OnceLock<Peer<RoleServer>>>,
}

impl Service<RoleClient> for Upstream {
    async fn handle_request(
        &self,
        request: ServerRequest,
        _context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, McpError> {
        match self.downstream.get() {
            Some(peer) => peer.send_request(request).await.map_err(to_mcp),
            None => Err(McpError::internal_error("the agent is not connected yet", None)),
        }
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        _context: NotificationContext<RoleClient>,
    ) -> Result<(), McpError> {
        if let Some(peer) = self.downstream.get()
            && let Err(e) = peer.send_notification(notification).await
        {
            tracing::warn!(error = %e, "could not forward a notification to the agent");
        }
        Ok(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::default()
    }
}

/// Environment variables that hold Clearance credentials: never passed to the upstream.
const CREDENTIAL_VARIABLES: [&str; 3] = [
    "CLEARANCE_API_KEY",
    "CLEARANCE_ENFORCER_KEY",
    "CLEARANCE_BOOTSTRAP_ADMIN_KEY",
];

/// Serve one agent on stdin/stdout, in front of an upstream server started as a child
/// process, until either side closes.
pub async fn run_stdio(config: McpProxyConfig, governor: Governor) -> Result<(), McpProxyError> {
    let mut command = tokio::process::Command::new(&config.upstream_program);
    command.args(&config.upstream_args);
    for var in CREDENTIAL_VARIABLES {
        command.env_remove(var);
    }
    let upstream_error = |message: String| McpProxyError::Upstream {
        program: config.upstream_program.clone(),
        message,
    };
    let transport = rmcp::transport::TokioChildProcess::new(command).map_err(|e| upstream_error(e.to_string()))?;
    let agent_peer = Arc::new(OnceLock::new());
    let upstream = Upstream {
        downstream: Arc::clone(&agent_peer),
    }
    .serve(transport)
    .await
    .map_err(|e| upstream_error(e.to_string()))?;
    let peer_info = upstream
        .peer_info()
        .ok_or_else(|| upstream_error("it did not complete initialization".into()))?;
    let mut info =
        InitializeResult::new(peer_info.capabilities.clone()).with_protocol_version(peer_info.protocol_version.clone());
    if let Some(s) = &peer_info.server_info {
        info = info.with_server_info(s.clone());
    }
    if let Some(i) = &peer_info.instructions {
        info = info.with_instructions(i.clone());
    }
    let resource = ResourceRef::new(RESOURCE_TYPE, config.server_name.clone());
    let downstream = Downstream {
        config,
        governor: Arc::new(governor),
        resource,
        upstream: upstream.peer().clone(),
        info,
    }
    .serve(rmcp::transport::stdio())
    .await
    .map_err(|e| McpProxyError::Session(e.to_string()))?;
    let _ = agent_peer.set(downstream.peer().clone());
    downstream
        .waiting()
        .await
        .map_err(|e| McpProxyError::Session(e.to_string()))?;
    let _ = upstream.cancel().await;
    Ok(())
}

/// Start the upstream server, list its tools, and write the Cedar schema for them.
pub async fn upstream_schema(server_name: &str, program: &str, args: &[String]) -> Result<String, McpProxyError> {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    for var in CREDENTIAL_VARIABLES {
        command.env_remove(var);
    }
    let upstream_error = |message: String| McpProxyError::Upstream {
        program: program.to_owned(),
        message,
    };
    let transport = rmcp::transport::TokioChildProcess::new(command).map_err(|e| upstream_error(e.to_string()))?;
    let client = ().serve(transport).await.map_err(|e| upstream_error(e.to_string()))?;
    let tools = client
        .list_all_tools()
        .await
        .map_err(|e| upstream_error(format!("tools/list: {e}")))?;
    let _ = client.cancel().await;
    let pairs: Vec<(String, Value)> = tools
        .into_iter()
        .map(|t| (t.name.to_string(), Value::Object((*t.input_schema).clone())))
        .collect();
    Ok(cedar_schema(server_name, &pairs))
}
