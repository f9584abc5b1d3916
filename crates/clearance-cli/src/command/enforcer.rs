//! What `exec` and `proxy` share: how an enforcement point finds its control plane, its
//! keys, the JWKS it trusts and its replay cache.

use std::path::PathBuf;

use anyhow::Context as _;
use clearance_artifact::Jwks;
use clearance_enforce::{ClientOptions, ControlPlaneClient, Verifier};

use crate::client::DEFAULT_SERVER;
use crate::output::Failure;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EnforcerArgs {
    /// Control plane URL.
    #[arg(long, env = "CLEARANCE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API key with the `enforcer` role, which starts, renews and completes executions
    /// [default: --api-key].
    #[arg(long, env = "CLEARANCE_ENFORCER_KEY", hide_env_values = true)]
    pub enforcer_key: Option<String>,
    /// API key with the `agent` role, which asks for clearances.
    #[arg(long, env = "CLEARANCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The control plane's JWKS file to trust [default: fetched from --server].
    #[arg(long)]
    pub jwks: Option<PathBuf>,
    /// The `iss` clearances must carry [default: --server].
    #[arg(long, env = "CLEARANCE_ISSUER")]
    pub issuer: Option<String>,
    /// This enforcement point's environment id: clearances for any other are refused.
    #[arg(long, env = "CLEARANCE_ENVIRONMENT")]
    pub environment: Option<String>,
    /// A file this environment measures, NAME=PATH (repeatable): its SHA-256 is
    /// recomputed before each execution and must match the clearance's `env` binding.
    #[arg(long = "measure", value_name = "NAME=PATH")]
    pub measure: Vec<String>,
    /// A declared measurement, NAME=sha256:HEX (repeatable), e.g. a container image digest.
    #[arg(long = "measure-value", value_name = "NAME=DIGEST")]
    pub measure_value: Vec<String>,
    /// Seconds to wait for the control plane on each call before failing closed.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

impl EnforcerArgs {
    pub fn measurer(&self) -> Result<clearance_enforce::Measurer, Failure> {
        clearance_enforce::Measurer::new(&self.measure, &self.measure_value)
            .map_err(|e| Failure::Error(anyhow::anyhow!(e)))
    }

    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            connect_timeout: std::time::Duration::from_secs(self.timeout.clamp(1, 60)),
            request_timeout: std::time::Duration::from_secs(self.timeout.clamp(1, 600)),
        }
    }

    pub fn agent(&self) -> Result<Option<ControlPlaneClient>, Failure> {
        self.api_key
            .as_deref()
            .map(|k| ControlPlaneClient::new(&self.server, k, &self.options()))
            .transpose()
            .map_err(|e| Failure::Error(e.into()))
    }

    pub fn enforcer(&self) -> Result<ControlPlaneClient, Failure> {
        let key = self
            .enforcer_key
            .as_deref()
            .or(self.api_key.as_deref())
            .ok_or_else(|| {
                Failure::Error(anyhow::anyhow!(
                    "an enforcer key is needed: --enforcer-key or CLEARANCE_ENFORCER_KEY"
                ))
            })?;
        ControlPlaneClient::new(&self.server, key, &self.options()).map_err(|e| Failure::Error(e.into()))
    }

    /// The verifier: trusted keys from `--jwks` or the control plane.
    pub async fn verifier(&self, enforcer: &ControlPlaneClient) -> Result<Verifier, Failure> {
        let jwks: Jwks = match &self.jwks {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading JWKS `{}`", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parsing JWKS `{}`", path.display()))?
            }
            None => enforcer
                .jwks()
                .await
                .map_err(|e| Failure::Unavailable(format!("fetching the control plane's keys: {e}")))?,
        };
        let issuer = self
            .issuer
            .clone()
            .unwrap_or_else(|| self.server.trim_end_matches('/').to_owned());
        Ok(Verifier::new(jwks, issuer, self.environment.clone()))
    }
}

/// Where an enforcement point keeps its replay cache unless told otherwise.
pub(crate) fn default_state_file(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("clearance").join(name)
}
