//! `clearance proxy`: an HTTP reverse proxy that lets a request reach its upstream only
//! with a verified, started clearance bound to exactly that method, path, query and body.
//!
//! The call a request makes is `action = "<METHOD> <route>"` (the matching `--route`
//! template, or the literal path when no templates are configured) on the configured
//! resource, with arguments `{method, path, params?, query?, body? | body_sha256?}`:
//! `params` are the template's captures, `query` the query string (each name once),
//! `body` the JSON body, or `body_sha256` the digest of a non-JSON body.

use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clearance_model::execution::{CompleteRequest, CompletionStatus};
use clearance_model::wire::{AuthorizeRequest, ErrorBody, ErrorDetail};
use clearance_model::{DenyReason, Digest, ErrorCode, ExecutionId, ResourceRef};
use serde_json::{Map, Value, json};

use crate::client::ControlPlaneClient;
use crate::pipeline::{Admission, Call, NotAdmitted, Pipeline};
use clearance_verify::VerifyError;

/// The header that carries a clearance: from the caller in verify mode, and always to
/// the upstream, so it can check the clearance itself.
pub const CLEARANCE_HEADER: &str = "clearance";

/// Largest request or response body the proxy buffers.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// The proxy asks for a clearance itself, with its own agent key.
    Gateway,
    /// The caller must present a clearance in the `Clearance` header.
    Verify,
}

/// `METHOD /path/{name}/...`: `{name}` matches one path segment and becomes `params.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    text: String,
    method: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl FromStr for RouteTemplate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (method, path) = s
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("route `{s}` is not `METHOD /path`"))?;
        let method = method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("route `{s}`: `{method}` is not an HTTP method"));
        }
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!("route `{s}`: the path must start with `/`"));
        }
        let segments = split_path(path)
            .map(|seg| match seg.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                Some(name) if !name.is_empty() => Ok(Segment::Param(name.to_owned())),
                Some(_) => Err(format!("route `{s}` has an empty `{{}}`")),
                None => Ok(Segment::Literal(seg.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: format!("{method} {path}"),
            method,
            segments,
        })
    }
}

fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl RouteTemplate {
    fn matches(&self, method: &str, path: &str) -> Option<Map<String, Value>> {
        if self.method != method {
            return None;
        }
        let mut params = Map::new();
        let mut parts = split_path(path);
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), Value::String(part.to_owned()));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }
}

/// The governed call an HTTP request makes.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    pub action: String,
    pub arguments: Value,
}

/// Map a request to its call. Errors are client errors (unknown route, bad JSON body,
/// repeated query names).
pub fn http_call(
    method: &str,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    routes: &[RouteTemplate],
) -> Result<HttpCall, String> {
    let (action, params) = if routes.is_empty() {
        (format!("{method} {path}"), Map::new())
    } else {
        routes
            .iter()
            .find_map(|r| r.matches(method, path).map(|p| (r.text.clone(), p)))
            .ok_or_else(|| format!("`{method} {path}` matches no governed route"))?
    };
    let mut args = Map::new();
    args.insert("method".into(), json!(method));
    args.insert("path".into(), json!(path));
    if !params.is_empty() {
        args.insert("params".into(), Value::Object(params));
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let mut map = Map::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k)?, percent_decode(v)?);
            if map.insert(k.clone(), Value::String(v)).is_some() {
                return Err(format!("query parameter `{k}` appears more than once"));
            }
        }
        args.insert("query".into(), Value::Object(map));
    }
    if !body.is_empty() {
        let is_json = content_type.is_some_and(|c| {
            let c = c.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            c == "application/json" || c.ends_with("+json")
        });
        if is_json {
            let v: Value = serde_json::from_slice(body).map_err(|e| format!("the JSON body does not parse: {e}"))?;
            args.insert("body".into(), v);
        } else {
            args.insert("body_sha256".into(), json!(Digest::of(body).to_string()));
        }
    }
    Ok(HttpCall {
        action,
        arguments: Value::Object(args),
    })
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in `{s}`"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query `{s}` is not UTF-8"))
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub mode: ProxyMode,
    /// Base URL of the upstream, e.g. `http://127.0.0.1:9000`.
    pub upstream: String,
    pub resource: ResourceRef,
    pub routes: Vec<RouteTemplate>,
    pub environment: Option<String>,
    pub max_body: usize,
}

#[derive(Debug)]
pub struct Proxy {
    pub config: ProxyConfig,
    /// Gateway mode: asks for clearances.
    pub agent: Option<ControlPlaneClient>,
    /// Admits and completes executions.
    pub pipeline: Pipeline,
    pub upstream: reqwest::Client,
}

pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new().fallback(handle).with_state(proxy)
}

fn refuse(
    status: StatusCode,
    code: ErrorCode,
    message: String,
    reasons: Vec<DenyReason>,
    id: Option<ExecutionId>,
) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: ErrorDetail {
                code,
                message,
                reasons,
                execution_id: id,
                log_index: None,
            },
        }),
    )
        .into_response()
}

fn verify_refusal(e: &VerifyError) -> Response {
    let status = match e {
        VerifyError::RevocationViewStale { .. } | VerifyError::ReplayCache(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    refuse(status, e.error_code(), e.to_string(), Vec::new(), None)
}

/// The answer to a request the pipeline let nothing through for.
fn refusal(r: NotAdmitted) -> Response {
    match r {
        NotAdmitted::Denied {
            reasons,
            message,
            execution_id,
            ..
        } => {
            let code = ErrorCode::of_deny(&reasons);
            refuse(StatusCode::FORBIDDEN, code, message, reasons, Some(execution_id))
        }
        NotAdmitted::Rejected(e) => verify_refusal(&e),
        NotAdmitted::Refused { code, message } => refuse(StatusCode::FORBIDDEN, code, message, Vec::new(), None),
        NotAdmitted::Unavailable(m) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ControlPlaneUnavailable,
            format!("the control plane is unavailable, so nothing is let through: {m}"),
            Vec::new(),
            None,
        ),
    }
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones the proxy sets itself.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | CLEARANCE_HEADER
    )
}

async fn handle(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, p.config.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::RequestTooLarge,
                format!("the body is larger than {} bytes", p.config.max_body),
                Vec::new(),
                None,
            );
        }
    };
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let call = match http_call(&method, &path, query.as_deref(), content_type, &body, &p.config.routes) {
        Ok(c) => c,
        Err(m) => return refuse(StatusCode::FORBIDDEN, ErrorCode::InvalidRequest, m, Vec::new(), None),
    };
    let governed = Call {
        action: &call.action,
        resource: &p.config.resource,
        arguments: &call.arguments,
    };
    let admitted = match p.config.mode {
        ProxyMode::Verify => match parts.headers.get(CLEARANCE_HEADER).and_then(|v| v.to_str().ok()) {
            Some(t) => p.pipeline.admit(t.trim().to_owned(), governed, None).await,
            None => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    ErrorCode::ClearanceRequired,
                    format!("present a clearance for `{}` in the `Clearance` header", call.action),
                    Vec::new(),
                    None,
                );
            }
        },
        ProxyMode::Gateway => {
            let Some(agent) = &p.agent else {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Misconfigured,
                    "gateway mode has no agent key".into(),
                    Vec::new(),
                    None,
                );
            };
            let ask = AuthorizeRequest {
                action: call.action.clone(),
                resource: p.config.resource.clone(),
                arguments: call.arguments.clone(),
                context: json!({}),
                environment: p.config.environment.clone(),
                parent: None,
                ttl_seconds: None,
                delegate: None,
            };
            p.pipeline.authorize_and_admit(agent, &ask, None).await
        }
    };
    let admission = match admitted {
        Ok(a) => a,
        Err(r) => return refusal(r),
    };
    let (response, status, digest) = forward(&p, &parts, body, &admission).await;
    let report = CompleteRequest {
        status,
        exit_code: None,
        output_digest: digest,
    };
    // Reported after the answer leaves: the upstream already acted, so the caller need
    // not wait for the record (best effort, like `exec`'s).
    tokio::spawn(p.pipeline.complete(admission, report));
    response
}

/// Send the request upstream with the clearance attached. Returns the response for the
/// caller, how the execution went, and the digest of the response body.
async fn forward(
    p: &Proxy,
    parts: &axum::http::request::Parts,
    body: Bytes,
    admission: &Admission,
) -> (Response, CompletionStatus, Option<Digest>) {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{path_and_query}", p.config.upstream.trim_end_matches('/'));
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if forwardable(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    match HeaderValue::from_str(admission.token()) {
        Ok(v) => {
            headers.insert(CLEARANCE_HEADER, v);
        }
        Err(_) => {
            return (
                refuse(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Malformed,
                    "the clearance is not a valid header value".into(),
                    Vec::new(),
                    None,
                ),
                CompletionStatus::Failed,
                None,
            );
        }
    }
    let sent = p
        .upstream
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => {
            return (
                refuse(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::UpstreamUnavailable,
                    format!("the upstream did not answer: {e}"),
                    Vec::new(),
                    None,
                ),
                CompletionStatus::Failed,
                None,
            );
        }
    };
    let status = upstream.status();
    let mut out_headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if forwardable(name) {
            out_headers.append(name.clone(), value.clone());
        }
    }
    let bytes = match read_limited(upstream, p.config.max_body * 16).await {
        Ok(b) => b,
        Err(m) => {
            return (
                refuse(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::UpstreamUnavailable,
                    m,
                    Vec::new(),
                    None,
                ),
                CompletionStatus::Failed,
                None,
            );
        }
    };
    let digest = Digest::of(&bytes);
    let completion = if status.is_server_error() {
        CompletionStatus::Failed
    } else {
        CompletionStatus::Succeeded
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    (response, completion, Some(digest))
}

async fn read_limited(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| format!("reading the upstream's answer: {e}"))?
    {
        if out.len() + chunk.len() > max {
            return Err(format!("the upstream's answer is larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
