//! One agent session: the proxy's `ServerHandler`, served over stdio (one agent, in the
//! proxy's own name) or streamable HTTP (each caller in the name of the Clearance API key it
//! presents). rmcp's streamable HTTP service takes only a `ServerHandler`, so every method
//! is mapped back to the one [`Proxy::handle`].
//!
//! The upstream session opens on the agent's `initialize`, introducing the proxy to the
//! server with the agent's own introduction (its capabilities, e.g. sampling, so the
//! server offers what it would offer the agent directly), and each agent session has its
//! own, so the upstream's requests and notifications reach the right agent. Over HTTP the
//! key is checked with the control plane before anything is passed on, the session stays
//! bound to the key that opened it, and the key is never sent upstream.

use std::sync::Arc;

use axum::http::request::Parts;
use clearance_enforce::{CallError, ControlPlaneClient};
use clearance_model::ErrorCode;
use clearance_model::{Digest, Role};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientConfig, ClientNotification, ClientRequest,
    CompleteRequestParams, CompleteResult, CustomNotification, CustomRequest, CustomResult, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, InitializeRequestParams, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, Notification, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Request,
    RequestNoParam, RequestOptionalParam, ServerConfig, ServerResult, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::http::bearer;
use crate::upstream::UpstreamLink;
use crate::{Proxy, forwarded_upstream};

/// The JSON-RPC error code for a caller without a valid key (server-defined range).
pub(crate) const UNAUTHENTICATED: i32 = -32001;

/// In whose name a session's calls are authorized.
pub(crate) enum Caller {
    /// The proxy's own agent key (stdio: the one agent is whoever started the proxy).
    Fixed(ControlPlaneClient),
    /// The key on each HTTP request.
    Bearer,
}

fn refused(reason: ErrorCode, message: String) -> McpError {
    McpError::new(
        rmcp::model::ErrorCode(UNAUTHENTICATED),
        format!("{reason}: {message}"),
        Some(json!({"reason": reason})),
    )
}

/// The key the HTTP request carried (the middleware let no request without one through).
fn caller_key(context: &RequestContext<RoleServer>) -> Result<String, McpError> {
    context
        .extensions
        .get::<Parts>()
        .and_then(|parts| bearer(&parts.headers))
        .map(str::to_owned)
        .ok_or_else(|| refused(ErrorCode::InvalidApiKey, "no API key on this request".into()))
}

/// An agent's key, checked with the control plane: valid, and holding the agent role.
async fn check_agent(agent: &ControlPlaneClient) -> Result<(), McpError> {
    match agent.whoami().await {
        Ok(me) if me.roles.contains(&Role::Agent) => Ok(()),
        Ok(me) => Err(refused(
            ErrorCode::UnauthorizedRole,
            format!("principal `{}` does not hold the agent role", me.id),
        )),
        Err(CallError::Refused { code, message, .. }) => Err(refused(code, message)),
        Err(e @ CallError::Unavailable(_)) => Err(McpError::internal_error(
            format!("{}: the API key cannot be checked: {e}", e.code()),
            Some(json!({"reason": e.code()})),
        )),
    }
}

/// One agent session (over HTTP, for a stateless request, one request).
pub(crate) struct Session {
    proxy: Arc<Proxy>,
    caller: Caller,
    connected: tokio::sync::OnceCell<Connected>,
}

struct Connected {
    upstream: UpstreamLink,
    /// Over HTTP, the digest of the key that opened the session: later requests must carry
    /// the same key. Comparing digests keeps the comparison from revealing the key.
    key: Option<Digest>,
    info: ServerConfig,
}

impl Session {
    pub(crate) fn new(proxy: Arc<Proxy>, caller: Caller) -> Self {
        Self {
            proxy,
            caller,
            connected: tokio::sync::OnceCell::new(),
        }
    }

    /// The session's upstream link and the caller's view of the control plane; the first
    /// request (over HTTP: after checking the key) opens the upstream session, introducing
    /// the agent by `client` when it has introduced itself.
    async fn open(
        &self,
        context: &RequestContext<RoleServer>,
        client: Option<ClientConfig>,
    ) -> Result<(&Connected, ControlPlaneClient), McpError> {
        let (agent, digest) = match &self.caller {
            Caller::Fixed(agent) => (agent.clone(), None),
            Caller::Bearer => {
                let key = caller_key(context)?;
                (
                    self.proxy.governor.pipeline.enforcer().with_key(&key),
                    Some(Digest::of(key.as_bytes())),
                )
            }
        };
        let connected = self
            .connected
            .get_or_try_init(|| async {
                if digest.is_some() {
                    check_agent(&agent).await?;
                }
                let upstream = UpstreamLink::connect(&self.proxy.config.upstream, client.unwrap_or_default())
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                upstream.set_agent(context.peer.clone());
                let info = upstream.info();
                Ok::<_, McpError>(Connected {
                    upstream,
                    key: digest,
                    info,
                })
            })
            .await?;
        if connected.key != digest {
            return Err(refused(
                ErrorCode::InvalidApiKey,
                "this session belongs to another API key".into(),
            ));
        }
        Ok((connected, agent))
    }

    async fn dispatch(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let (connected, agent) = self.open(&context, None).await?;
        self.proxy.handle(request, context, &connected.upstream, &agent).await
    }

    async fn notify(&self, notification: ClientNotification) {
        let Some(connected) = self.connected.get() else {
            return;
        };
        if forwarded_upstream(&notification)
            && let Err(e) = connected.upstream.peer().send_notification(notification).await
        {
            tracing::warn!(error = %e, "could not forward a notification upstream");
        }
    }
}

/// A result of the type a method promises. rmcp reads upstream results into an untagged
/// enum, where one shape can match an earlier variant (an empty object, say), so a
/// result of another variant is read again as the expected type.
pub(crate) fn expect<T: DeserializeOwned>(result: ServerResult) -> Result<T, McpError> {
    serde_json::to_value(&result)
        .and_then(serde_json::from_value)
        .map_err(|e| McpError::internal_error(format!("the upstream server answered unexpectedly: {e}"), None))
}

impl ServerHandler for Session {
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        let (connected, _) = self.open(&context, Some(request)).await?;
        Ok(connected.info.clone())
    }

    fn get_info(&self) -> ServerConfig {
        self.connected.get().map(|c| c.info.clone()).unwrap_or_default()
    }

    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), McpError> {
        let request = ClientRequest::PingRequest(RequestNoParam::default());
        self.dispatch(request, context).await.map(|_| ())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let request = ClientRequest::CallToolRequest(Request::new(request));
        match self.dispatch(request, context).await? {
            ServerResult::CallToolResult(r) => Ok(r.into()),
            ServerResult::InputRequiredResult(r) => Ok(r.into()),
            ServerResult::CreateTaskResult(r) => Ok(r.into()),
            other => expect::<CallToolResult>(other).map(Into::into),
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let request = ClientRequest::ListToolsRequest(optional(request));
        expect(self.dispatch(request, context).await?)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let request = ClientRequest::GetPromptRequest(Request::new(request));
        match self.dispatch(request, context).await? {
            ServerResult::GetPromptResult(r) => Ok(r.into()),
            ServerResult::InputRequiredResult(r) => Ok(r.into()),
            other => expect::<GetPromptResult>(other).map(Into::into),
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let request = ClientRequest::ListPromptsRequest(optional(request));
        expect(self.dispatch(request, context).await?)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let request = ClientRequest::ReadResourceRequest(Request::new(request));
        match self.dispatch(request, context).await? {
            ServerResult::ReadResourceResult(r) => Ok(r.into()),
            ServerResult::InputRequiredResult(r) => Ok(r.into()),
            other => expect::<ReadResourceResult>(other).map(Into::into),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let request = ClientRequest::ListResourcesRequest(optional(request));
        expect(self.dispatch(request, context).await?)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let request = ClientRequest::ListResourceTemplatesRequest(optional(request));
        expect(self.dispatch(request, context).await?)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let request = ClientRequest::SubscribeRequest(Request::new(request));
        self.dispatch(request, context).await.map(|_| ())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let request = ClientRequest::UnsubscribeRequest(Request::new(request));
        self.dispatch(request, context).await.map(|_| ())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let request = ClientRequest::CompleteRequest(Request::new(request));
        expect(self.dispatch(request, context).await?)
    }

    #[expect(
        deprecated,
        reason = "logging/setLevel is deprecated (SEP-2577) but older agents and servers still send it"
    )]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let request = ClientRequest::SetLevelRequest(Request::new(request));
        self.dispatch(request, context).await.map(|_| ())
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        match self.dispatch(ClientRequest::CustomRequest(request), context).await? {
            ServerResult::CustomResult(r) => Ok(r),
            other => expect(other),
        }
    }

    async fn on_progress(&self, notification: ProgressNotificationParam, _context: NotificationContext<RoleServer>) {
        self.notify(ClientNotification::ProgressNotification(Notification::new(
            notification,
        )))
        .await;
    }

    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {
        self.notify(ClientNotification::RootsListChangedNotification(Default::default()))
            .await;
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
        self.notify(ClientNotification::CustomNotification(notification)).await;
    }
}

fn optional<M: Default, P>(params: Option<P>) -> RequestOptionalParam<M, P> {
    RequestOptionalParam {
        method: M::default(),
        params,
        extensions: rmcp::model::Extensions::default(),
    }
}
