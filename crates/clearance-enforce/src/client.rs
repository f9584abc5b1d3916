//! The calls an enforcement point makes to the control plane, and the revocation stream
//! follower. Anything but a well-formed success is an error, and every error is a "no".

use std::sync::Arc;
use std::time::Duration;

use clearance_artifact::Jwks;
use clearance_model::execution::{
    AGENT_KEY_HEADER, AuthorizeAndStartResponse, CompleteRequest, Completed, Lease, RenewRequest, RenewResponse,
    RevocationRecord, StartRequest,
};
use clearance_model::wire::{
    AuthorizeRequest, AuthorizeResponse, ErrorBody, PermittedRequest, PermittedResponse, Whoami,
};
use clearance_model::{ErrorCode, ExecutionId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::RevocationView;

/// Why a control plane call did not succeed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// Unreachable, too slow, a 5xx, or an answer that is not what the API promises.
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// The control plane answered with an error (`code` is its stable error code).
    #[error("control plane refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: ErrorCode,
        message: String,
    },
}

impl CallError {
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) => ErrorCode::ControlPlaneUnavailable,
            Self::Refused { code, .. } => *code,
        }
    }
}

/// How long a client keeps an idle connection to the control plane: less than the
/// server's keep-alive (its header timeout, 10 s by default), so a call never races the
/// server closing the connection. A server run with `--header-timeout` under 5 s
/// brings that race back.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeouts default to values an interactive executor can live with; all are bounded.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Whole-request bound for every call except the revocation stream.
    pub request_timeout: Duration,
    /// Certificates (PEM) of a private CA to trust for an `https` control plane, besides
    /// the public roots.
    pub ca_certs: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ca_certs: None,
        }
    }
}

/// One API key's view of the control plane.
#[derive(Clone)]
pub struct ControlPlaneClient {
    http: reqwest::Client,
    stream_http: reqwest::Client,
    base: String,
    key: String,
}

/// The key stays out of every log and error that prints a client.
impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneClient")
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ControlPlaneClient {
    pub fn new(base: &str, key: &str, options: &ClientOptions) -> Result<Self, CallError> {
        let roots = match &options.ca_certs {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| CallError::Unavailable(format!("the CA certificates are not PEM: {e}")))?,
            None => Vec::new(),
        };
        let build = |timeout: Option<Duration>| {
            // Idle connections go before the server closes them: see POOL_IDLE_TIMEOUT.
            let mut b = reqwest::Client::builder()
                .connect_timeout(options.connect_timeout)
                .pool_idle_timeout(POOL_IDLE_TIMEOUT);
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            for root in &roots {
                b = b.add_root_certificate(root.clone());
            }
            b.build()
                .map_err(|e| CallError::Unavailable(format!("HTTP client: {e}")))
        };
        Ok(Self {
            http: build(Some(options.request_timeout))?,
            stream_http: build(None)?,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same control plane, connections and timeouts, in the name of another key
    /// (e.g. the caller of an HTTP enforcement point, who presents its own).
    #[must_use]
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CallError> {
        self.call_for(method, path, body, None).await
    }

    /// A call, with `agent`'s key in the `Clearance-Agent-Key` header when this client
    /// acts for it.
    async fn call_for<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        agent: Option<&Self>,
    ) -> Result<T, CallError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(agent) = agent {
            req = req.header(AGENT_KEY_HEADER, &agent.key);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| CallError::Unavailable(describe(&e)))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| CallError::Unavailable(describe(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Unavailable(format!("malformed answer from {path}: {e}")));
        }
        if status.is_server_error() {
            return Err(CallError::Unavailable(format!("{path} answered {status}")));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(CallError::Refused {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            }),
            Err(_) => Err(CallError::Unavailable(format!(
                "{path} answered {status} without an error body"
            ))),
        }
    }

    pub async fn authorize(&self, req: &AuthorizeRequest) -> Result<AuthorizeResponse, CallError> {
        self.call(reqwest::Method::POST, "/v1/authorize", Some(req)).await
    }

    /// Decide for `agent` and, on allow, start the execution in the same request and
    /// commit. This client's key must be an enforcer's.
    pub async fn authorize_and_start(
        &self,
        agent: &Self,
        request: &AuthorizeRequest,
        lease_seconds: Option<u64>,
    ) -> Result<AuthorizeAndStartResponse, CallError> {
        /// `AuthorizeAndStartRequest`, borrowing the agent's request.
        #[derive(Serialize)]
        struct Ask<'a> {
            request: &'a AuthorizeRequest,
            #[serde(skip_serializing_if = "Option::is_none")]
            lease_seconds: Option<u64>,
        }
        let ask = Ask { request, lease_seconds };
        self.call_for(
            reqwest::Method::POST,
            "/v1/executions/authorize-and-start",
            Some(&ask),
            Some(agent),
        )
        .await
    }

    pub async fn start(&self, id: &ExecutionId, req: &StartRequest) -> Result<Lease, CallError> {
        self.call(reqwest::Method::POST, &format!("/v1/executions/{id}/start"), Some(req))
            .await
    }

    pub async fn renew(&self, id: &ExecutionId, req: &RenewRequest) -> Result<RenewResponse, CallError> {
        self.call(reqwest::Method::POST, &format!("/v1/executions/{id}/renew"), Some(req))
            .await
    }

    pub async fn complete(&self, id: &ExecutionId, req: &CompleteRequest) -> Result<Completed, CallError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/executions/{id}/complete"),
            Some(req),
        )
        .await
    }

    /// Which of `req.actions` some policy could permit this key's principal.
    pub async fn permitted(&self, req: &PermittedRequest) -> Result<PermittedResponse, CallError> {
        self.call(reqwest::Method::POST, "/v1/authorize/permitted", Some(req))
            .await
    }

    /// Who this client's key belongs to; `invalid_api_key` if it is no valid key.
    pub async fn whoami(&self) -> Result<Whoami, CallError> {
        self.call::<(), _>(reqwest::Method::GET, "/v1/whoami", None).await
    }

    /// The control plane's signing keys. An enforcement point may instead be given a
    /// JWKS file it trusts.
    pub async fn jwks(&self) -> Result<Jwks, CallError> {
        self.call::<(), _>(reqwest::Method::GET, "/.well-known/jwks.json", None)
            .await
    }

    /// Keep `view` current from the revocation stream until the task is dropped:
    /// reconnects (resuming after the last seq) whenever the stream ends, errs or goes
    /// quiet for longer than `quiet`. Never marks the view fresh on its own: only the
    /// control plane's heartbeats do.
    pub async fn follow_revocations(&self, view: Arc<RevocationView>, quiet: Duration) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.stream_once(&view, quiet).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "revocation stream interrupted; reconnecting");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn stream_once(&self, view: &RevocationView, quiet: Duration) -> Result<(), CallError> {
        let url = format!("{}/v1/revocations/stream?since={}", self.base, view.seq());
        let mut res = tokio::time::timeout(quiet, self.stream_http.get(url).bearer_auth(&self.key).send())
            .await
            .map_err(|_| CallError::Unavailable("revocation stream did not answer".into()))?
            .map_err(|e| CallError::Unavailable(describe(&e)))?;
        if !res.status().is_success() {
            return Err(CallError::Unavailable(format!(
                "revocation stream answered {}",
                res.status()
            )));
        }
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::time::timeout(quiet, res.chunk())
                .await
                .map_err(|_| CallError::Unavailable("revocation stream went quiet".into()))?
                .map_err(|e| CallError::Unavailable(describe(&e)))?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            for event in parser.push(&chunk) {
                match event.name.as_str() {
                    "revocation" => {
                        let record: RevocationRecord = serde_json::from_str(&event.data)
                            .map_err(|e| CallError::Unavailable(format!("malformed revocation event: {e}")))?;
                        view.apply(&record);
                    }
                    "heartbeat" => {
                        let latest = serde_json::from_str::<serde_json::Value>(&event.data)
                            .ok()
                            .and_then(|v| v.get("latest").and_then(serde_json::Value::as_u64))
                            .ok_or_else(|| CallError::Unavailable("malformed heartbeat".into()))?;
                        view.heard(latest);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub name: String,
    pub data: String,
}

/// Incremental `text/event-stream` parser (the subset the control plane emits: `event`,
/// `data`, `id` fields and comments; events end at a blank line).
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end.0).collect();
            self.buffer.drain(..end.1);
            let text = String::from_utf8_lossy(&block);
            let (mut name, mut data) = (String::from("message"), Vec::new());
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if !data.is_empty() {
                events.push(SseEvent {
                    name,
                    data: data.join("\n"),
                });
            }
        }
        events
    }
}

/// Where the first event ends: (length of the block, length of the separator).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}
