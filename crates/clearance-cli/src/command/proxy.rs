//! `clearance proxy`: an HTTP reverse proxy that lets nothing through without a clearance.

use axum::serve::ListenerExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clearance_enforce::proxy::{DEFAULT_MAX_BODY, Proxy, ProxyConfig, ProxyMode, RouteTemplate};
use clearance_model::ResourceRef;

use crate::command::authorize::parse_resource;
use crate::command::enforcer::{Enforcement, EnforcerArgs, Revocations, staleness};
use crate::output::Failure;

const AFTER_HELP: &str = "\
Each request is the call `<METHOD> <route>` on --resource, with arguments
{method, path, params?, query?, body? | body_sha256?} (params: the route template's
captures; body: the JSON body, or the SHA-256 of any other body).

gateway: the proxy asks for a clearance itself with its agent key (--api-key).
verify:  the caller sends a clearance for exactly this request in the `Clearance` header.

Either way the clearance is verified here (signature, binding, revocation view, replay
cache) and started on the control plane before the upstream sees the request, with the
clearance attached in the `Clearance` header. Refusals are JSON
{\"error\": {\"code\": ..., \"message\": ...}}: 403 for a deny or a refused clearance, 503
when the control plane or the revocation stream is unavailable (fail closed).";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    Gateway,
    Verify,
}

/// Put Clearance in front of an HTTP API.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// Address to listen on (port 0 for any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:7701")]
    listen: String,
    /// Base URL of the API to protect.
    #[arg(long)]
    upstream: String,
    /// Who asks for each request's clearance: the proxy itself, with its own agent key
    /// (`gateway`), or the caller, who presents one in the `Clearance` header (`verify`).
    #[arg(long, value_enum, default_value = "gateway")]
    mode: Mode,
    /// The resource every request acts on, as TYPE/ID (for example `Api/payments`).
    #[arg(long, value_parser = parse_resource)]
    resource: ResourceRef,
    /// A governed route, `METHOD /path/{param}` (repeatable). With none, the action is
    /// the method and the literal path; with some, unmatched requests are refused.
    #[arg(long = "route")]
    routes: Vec<String>,
    /// Replay cache file (kept by this proxy alone).
    #[arg(long, env = "CLEARANCE_REPLAY_CACHE", default_value = "./clearance-proxy-replay")]
    replay_cache: PathBuf,
    /// Seconds after which a revocation view that has not heard from the control plane
    /// is stale and every request is refused.
    #[arg(long, default_value_t = clearance_model::execution::DEFAULT_REVOCATION_STALENESS_SECONDS)]
    revocation_staleness: u64,
    /// Largest request body, in bytes (responses may be 16 times larger).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body: usize,
    #[command(flatten)]
    enforcer: EnforcerArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let routes = args
        .routes
        .iter()
        .map(|r| r.parse::<RouteTemplate>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Error(anyhow::anyhow!(e)))?;
    let upstream_url = reqwest::Url::parse(&args.upstream).context("--upstream is not a URL")?;
    if !matches!(upstream_url.scheme(), "http" | "https") {
        return Err(Failure::Error(anyhow::anyhow!(
            "--upstream must be an http or https URL"
        )));
    }
    let staleness = staleness(args.revocation_staleness)?;
    let mode = match args.mode {
        Mode::Gateway => ProxyMode::Gateway,
        Mode::Verify => ProxyMode::Verify,
    };
    let agent = args.enforcer.agent()?;
    if mode == ProxyMode::Gateway && agent.is_none() {
        return Err(Failure::Error(anyhow::anyhow!(
            "gateway mode asks for clearances: give an agent key with --api-key or CLEARANCE_API_KEY"
        )));
    }
    let Enforcement {
        pipeline,
        follower: _follower,
        ..
    } = args
        .enforcer
        .enforcement(&args.replay_cache, Revocations::Follow { staleness, wait: true })
        .await?;
    let upstream = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the upstream client")?;
    let proxy = Arc::new(Proxy {
        config: ProxyConfig {
            mode,
            upstream: args.upstream.trim_end_matches('/').to_owned(),
            resource: args.resource,
            routes,
            environment: args.enforcer.environment.clone(),
            max_body: args.max_body,
        },
        agent,
        pipeline,
        upstream,
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    eprintln!("clearance proxy: listening on http://{bound}");
    let app = clearance_enforce::proxy::router(proxy);
    // Without NODELAY an answer written in more than one piece can wait for the client's
    // delayed ACK (up to 40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::command::serve::shutdown())
        .await
        .context("serving")?;
    Ok(())
}
