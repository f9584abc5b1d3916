//! The HTTP client of the control plane API.

use clearance_model::ErrorCode;
use std::time::Duration;

use clap::Args;
use clearance_model::wire::ErrorBody;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::output::Failure;

pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";

/// Options every client subcommand takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Control plane URL.
    #[arg(long, env = "CLEARANCE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API key (`clr_...`). Prefer the environment variable: flags show up in `ps`.
    #[arg(long, env = "CLEARANCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Trust this CA (PEM, one or more certificates) for an `https://` --server signed by
    /// a private CA, besides the public roots.
    #[arg(long, env = "CLEARANCE_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// `builder`, trusting the certificates of `--ca-cert` too.
pub(crate) fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca_cert: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, Failure> {
    if let Some(pem) = read_ca_certs(ca_cert)? {
        for root in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Failure::Error(e.into()))? {
            builder = builder.add_root_certificate(root);
        }
    }
    Ok(builder)
}

/// The PEM text of `--ca-cert`, read once and checked to hold at least one certificate.
pub(crate) fn read_ca_certs(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, Failure> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path)
        .map_err(|e| Failure::Error(anyhow::anyhow!("reading the CA certificate `{}`: {e}", path.display())))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(Some(pem)),
        Ok(_) => Err(Failure::Error(anyhow::anyhow!(
            "`{}` holds no PEM certificate",
            path.display()
        ))),
        Err(e) => Err(Failure::Error(anyhow::anyhow!(
            "`{}` is not a PEM certificate: {e}",
            path.display()
        ))),
    }
}

#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Self, Failure> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(clearance_enforce::POOL_IDLE_TIMEOUT)
            .timeout(Duration::from_secs(30));
        let http = trusting(builder, args.ca_cert.as_deref())?
            .build()
            .map_err(|e| Failure::Error(e.into()))?;
        Ok(Self {
            http,
            base: args.server.trim_end_matches('/').to_owned(),
            key: args.api_key.clone(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(Method::GET, path, None::<&()>).await
    }

    /// GET a text/plain resource (checkpoints, verifier keys).
    pub async fn get_text(&self, path: &str) -> Result<String, Failure> {
        let (status, bytes) = self.fetch(Method::GET, path, None::<&()>).await?;
        if !status.is_success() {
            return Err(self.failure(status, &bytes));
        }
        String::from_utf8(bytes).map_err(|_| Failure::Error(anyhow::anyhow!("{path} answered with non-UTF-8")))
    }

    /// POST an empty JSON body to a resource that answers text/plain (a fresh checkpoint).
    pub async fn post_text(&self, path: &str) -> Result<String, Failure> {
        let (status, bytes) = self.fetch(Method::POST, path, Some(&serde_json::json!({}))).await?;
        if !status.is_success() {
            return Err(self.failure(status, &bytes));
        }
        String::from_utf8(bytes).map_err(|_| Failure::Error(anyhow::anyhow!("{path} answered with non-UTF-8")))
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, Failure> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, Failure> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), Failure> {
        self.send::<(), serde_json::Value>(Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Failure> {
        let (status, bytes) = self.fetch(method, path, body).await?;
        if status == StatusCode::NO_CONTENT {
            return serde_json::from_slice(b"null").map_err(|e| Failure::Error(e.into()));
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure::Error(anyhow::anyhow!("unexpected answer from {}{path}: {e}", self.base)));
        }
        Err(self.failure(status, &bytes))
    }

    /// An error answer as a failure with the server's code and message; a refused key
    /// also says where the key comes from.
    fn failure(&self, status: StatusCode, bytes: &[u8]) -> Failure {
        let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) else {
            return Failure::Error(anyhow::anyhow!("control plane answered {status} without an error body"));
        };
        let message = format!("{}: {}", body.error.code, body.error.message);
        match (status, body.error.code) {
            (_, ErrorCode::InvalidApiKey) => Failure::Unauthorized(match self.key {
                None => format!("{message}: no API key was given; set CLEARANCE_API_KEY (or pass --api-key)"),
                Some(_) => format!("{message}: check the key in CLEARANCE_API_KEY (or --api-key)"),
            }),
            (_, ErrorCode::UnauthorizedRole | ErrorCode::RateLimited) => Failure::Unauthorized(message),
            (StatusCode::SERVICE_UNAVAILABLE, _) => Failure::Unavailable(message),
            _ => Failure::Error(anyhow::anyhow!(message)),
        }
    }

    /// One request: the answer's status and body, or `Unavailable` if there was none.
    async fn fetch<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Vec<u8>), Failure> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(|e| {
            Failure::Unavailable(format!(
                "cannot reach the control plane at {}: {}",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| Failure::Unavailable(format!("reading the answer: {e}")))?;
        Ok((status, bytes.to_vec()))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
