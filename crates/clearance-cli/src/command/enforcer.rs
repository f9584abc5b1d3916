//! What `exec`, `proxy` and `mcp-proxy` share: how an enforcement point finds its control
//! plane, its keys, the JWKS it trusts, its replay cache and its revocation view, put
//! together once as the admission pipeline.

use std::path::PathBuf;

use anyhow::Context as _;
use clearance_artifact::Jwks;
use clearance_enforce::{ClientOptions, ControlPlaneClient, Gate, Pipeline, ReplayCache, RevocationView, Verifier};
use clearance_model::Timestamp;

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
    /// Trust this CA (PEM, one or more certificates) for an `https://` --server signed by
    /// a private CA, besides the public roots.
    #[arg(long, env = "CLEARANCE_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

impl EnforcerArgs {
    pub fn measurer(&self) -> Result<clearance_enforce::Measurer, Failure> {
        clearance_enforce::Measurer::new(&self.measure, &self.measure_value)
            .map_err(|e| Failure::Error(anyhow::anyhow!(e)))
    }

    pub fn options(&self) -> Result<ClientOptions, Failure> {
        Ok(ClientOptions {
            connect_timeout: std::time::Duration::from_secs(self.timeout.clamp(1, 60)),
            request_timeout: std::time::Duration::from_secs(self.timeout.clamp(1, 600)),
            ca_certs: crate::client::read_ca_certs(self.ca_cert.as_deref())?,
        })
    }

    pub fn agent(&self) -> Result<Option<ControlPlaneClient>, Failure> {
        let Some(key) = self.api_key.as_deref() else {
            return Ok(None);
        };
        ControlPlaneClient::new(&self.server, key, &self.options()?)
            .map(Some)
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
        ControlPlaneClient::new(&self.server, key, &self.options()?).map_err(|e| Failure::Error(e.into()))
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

/// How an enforcement point learns of revocations between its calls to the control plane.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Revocations {
    /// Admit through `start` only, and follow the stream for work already running (a
    /// one-shot executor such as `exec`, which stops a revoked command at once).
    Watch,
    /// Follow the revocation stream; refuse everything once the view is older than
    /// `staleness`. With `wait`, give the stream up to 5 s to deliver a first heartbeat.
    Follow { staleness: std::time::Duration, wait: bool },
}

/// A running enforcement point's pipeline, and the task that follows revocations for it.
#[derive(Debug)]
pub(crate) struct Enforcement {
    pub pipeline: Pipeline,
    /// With `Revocations::Watch`: the view the follower keeps current.
    pub watch: Option<std::sync::Arc<RevocationView>>,
    /// Keep it as long as the pipeline serves: dropping it stops following revocations.
    pub follower: Follower,
}

/// The revocation follower task, stopped when dropped.
#[derive(Debug)]
pub(crate) struct Follower(Option<tokio::task::JoinHandle<()>>);

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.abort();
        }
    }
}

impl EnforcerArgs {
    /// Everything an enforcement point checks with, set up once: the enforcer key, the
    /// trusted keys, the measurements, the replay cache at `replay`, and revocations.
    pub async fn enforcement(
        &self,
        replay: &std::path::Path,
        revocations: Revocations,
    ) -> Result<Enforcement, Failure> {
        let enforcer = self.enforcer()?;
        let measurer = self.measurer()?;
        let verifier = self.verifier(&enforcer).await?;
        let replay =
            ReplayCache::open(replay, Timestamp::now().seconds()).map_err(|e| Failure::Error(anyhow::anyhow!(e)))?;
        let (view, follower) = match revocations {
            Revocations::Watch => {
                let view = std::sync::Arc::new(RevocationView::new(clearance_server::HEARTBEAT_INTERVAL * 3));
                let follower = self.follow(&enforcer, &view);
                (Some(view), Some(follower))
            }
            Revocations::Follow { staleness, wait } => {
                let view = std::sync::Arc::new(RevocationView::new(staleness));
                let follower = self.follow(&enforcer, &view);
                if wait {
                    let ready = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                    while view.age().is_none() && tokio::time::Instant::now() < ready {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    if view.age().is_none() {
                        eprintln!("warning: no revocation heartbeat yet; refusing requests until one arrives");
                    }
                }
                (Some(view), Some(follower))
            }
        };
        let (gated, watch) = match revocations {
            Revocations::Watch => (None, view),
            Revocations::Follow { .. } => (view, None),
        };
        let gate = Gate::new(verifier, replay, gated).with_measurer(measurer);
        let mut pipeline = Pipeline::new(enforcer, gate);
        if self.jwks.is_none() {
            // Keys fetched from the control plane follow its rotations; a --jwks file is
            // what the operator pinned.
            pipeline = pipeline.refreshing_keys();
        }
        Ok(Enforcement {
            pipeline,
            watch,
            follower: Follower(follower),
        })
    }
}

impl EnforcerArgs {
    /// Keep `view` current from the revocation stream, reconnecting as needed.
    fn follow(
        &self,
        enforcer: &ControlPlaneClient,
        view: &std::sync::Arc<RevocationView>,
    ) -> tokio::task::JoinHandle<()> {
        let (client, view) = (enforcer.clone(), std::sync::Arc::clone(view));
        tokio::spawn(async move {
            client
                .follow_revocations(view, clearance_server::HEARTBEAT_INTERVAL * 3)
                .await;
        })
    }
}

/// `--revocation-staleness` checked against the stream's heartbeat.
pub(crate) fn staleness(seconds: u64) -> Result<std::time::Duration, Failure> {
    let staleness = std::time::Duration::from_secs(seconds.max(1));
    if staleness < clearance_server::HEARTBEAT_INTERVAL * 2 {
        return Err(Failure::Error(anyhow::anyhow!(
            "--revocation-staleness must be at least twice the stream's heartbeat interval ({} s)",
            clearance_server::HEARTBEAT_INTERVAL.as_secs()
        )));
    }
    Ok(staleness)
}

/// Where an enforcement point keeps its replay cache unless told otherwise.
pub(crate) fn default_state_file(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("clearance").join(name)
}
