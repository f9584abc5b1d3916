//! `clearance mcp-proxy`: govern an MCP server's tool calls for any MCP client.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clearance_mcp::{Governor, HttpOptions, McpProxyConfig, UpstreamSpec};

use crate::command::enforcer::{Enforcement, EnforcerArgs, Revocations, default_state_file};
use crate::output::Failure;

const AFTER_HELP: &str = "\
Over stdio, configure it as the MCP server command of your client; it starts the real
server itself (and authorizes in the name of its own agent key, CLEARANCE_API_KEY):

  clearance mcp-proxy --name everything --upstream-cmd npx -- -y @modelcontextprotocol/server-everything

Over streamable HTTP (--listen), agents connect to http://ADDR/mcp, each presenting its own
Clearance API key as `Authorization: Bearer <key>`; calls are authorized in that key's
name, which must hold the agent role. The key is never sent upstream. Each agent session
gets its own upstream session:

  clearance mcp-proxy --listen 127.0.0.1:8400 --name everything --upstream-url http://127.0.0.1:3001/mcp

Every tools/call is the action `tool:<name>`, prompts/get `prompt:<name>` and
resources/read `resources/read` (arguments {uri}), on resource McpServer::\"<name>\", with
the call's arguments as the request arguments. A denied call returns a tool error naming
the reason and policies, and never reaches the server; an allowed one is forwarded with
its clearance in `_meta.clearance` and completed with the digest of its result. ping,
tools/list, notifications and server-to-client requests pass through; other methods are
refused unless given with --allow-method. Clearance's own keys are removed from the
server's environment. stdout carries the MCP session: diagnostics go to stderr.";

/// Put Clearance between an MCP client and an MCP server (stdio or streamable HTTP on
/// either side).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
#[command(group(clap::ArgGroup::new("upstream").required(true).args(["upstream_cmd", "upstream_url"])))]
pub(crate) struct Args {
    /// The server's name: the id of the `McpServer` resource policies see
    /// [default: the upstream program's file name, or the URL's host].
    #[arg(long)]
    name: Option<String>,
    /// The upstream MCP server's program, started by the proxy (its arguments follow `--`).
    #[arg(long)]
    upstream_cmd: Option<String>,
    /// The upstream MCP server's streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp.
    #[arg(long)]
    upstream_url: Option<String>,
    /// Serve agents over streamable HTTP at http://ADDR/mcp instead of stdio (port 0 for
    /// any free port; the bound address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A `Host` an HTTP agent may use besides localhost, 127.0.0.1 and ::1 (repeatable);
    /// others are refused, against DNS rebinding.
    #[arg(long = "allowed-host", requires = "listen")]
    allowed_hosts: Vec<String>,
    /// Seconds after which an HTTP agent session that is neither used nor ended is closed,
    /// and its upstream session (or server process) with it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "listen", value_parser = clap::value_parser!(u64).range(1..))]
    session_idle_timeout: u64,
    /// Answer tools/list with only the tools some policy could permit the caller (whose
    /// permit's scope takes in this principal, this server and the tool's action; its
    /// conditions on arguments are not evaluated). Every call is still authorized in full.
    #[arg(long)]
    hide_unpermitted_tools: bool,
    /// A request method to pass through ungoverned (repeatable), e.g. `resources/list`.
    #[arg(long = "allow-method")]
    allow_methods: Vec<String>,
    /// Replay cache file [default: $XDG_STATE_HOME/clearance/mcp-replay-<name>].
    #[arg(long, env = "CLEARANCE_REPLAY_CACHE")]
    replay_cache: Option<PathBuf>,
    /// Seconds after which a revocation view that has not heard from the control plane
    /// is stale and every call is refused.
    #[arg(long, default_value_t = clearance_model::execution::DEFAULT_REVOCATION_STALENESS_SECONDS)]
    revocation_staleness: u64,
    #[command(flatten)]
    enforcer: EnforcerArgs,
    /// The upstream server's arguments.
    #[arg(last = true)]
    upstream_args: Vec<String>,
}

/// Which upstream the flags name (clap makes sure exactly one is given).
pub(crate) fn upstream_spec(
    cmd: Option<&String>,
    url: Option<&String>,
    args: &[String],
) -> Result<UpstreamSpec, Failure> {
    match (cmd, url) {
        (Some(program), None) => Ok(UpstreamSpec::Command {
            program: program.clone(),
            args: args.to_vec(),
        }),
        (None, Some(url)) if args.is_empty() => {
            let parsed =
                reqwest::Url::parse(url).map_err(|e| Failure::Error(anyhow::anyhow!("--upstream-url `{url}`: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Failure::Error(anyhow::anyhow!(
                    "--upstream-url `{url}` is not an http(s) URL"
                )));
            }
            Ok(UpstreamSpec::Url(url.clone()))
        }
        (None, Some(_)) => Err(Failure::Error(anyhow::anyhow!(
            "arguments after `--` are for --upstream-cmd, not --upstream-url"
        ))),
        _ => Err(Failure::Error(anyhow::anyhow!(
            "give one of --upstream-cmd and --upstream-url"
        ))),
    }
}

/// The `McpServer` id when none is given: the program's file name or the URL's host.
pub(crate) fn default_name(spec: &UpstreamSpec) -> String {
    match spec {
        UpstreamSpec::Command { program, .. } => std::path::Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned()),
        UpstreamSpec::Url(url) => reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| url.clone()),
    }
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let upstream = upstream_spec(
        args.upstream_cmd.as_ref(),
        args.upstream_url.as_ref(),
        &args.upstream_args,
    )?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&upstream));
    let agent = args.enforcer.agent()?;
    if agent.is_none() && args.listen.is_none() {
        return Err(Failure::Error(anyhow::anyhow!(
            "over stdio the proxy asks for clearances in its own name: give an agent key with --api-key or CLEARANCE_API_KEY"
        )));
    }
    let path = args
        .replay_cache
        .clone()
        .unwrap_or_else(|| default_state_file(&format!("mcp-replay-{name}")));
    let staleness = Duration::from_secs(args.revocation_staleness.max(1));
    let Enforcement { pipeline, follower, .. } = args
        .enforcer
        .enforcement(&path, Revocations::Follow { staleness, wait: false })
        .await?;
    let config = McpProxyConfig {
        server_name: name,
        upstream,
        allow_methods: args.allow_methods.clone(),
        environment: args.enforcer.environment.clone(),
        hide_unpermitted_tools: args.hide_unpermitted_tools,
    };
    let governor = Governor {
        // Over HTTP each caller presents its own key; the proxy's is never used for them.
        agent: if args.listen.is_some() { None } else { agent },
        pipeline,
    };
    let outcome = match &args.listen {
        None => clearance_mcp::run_stdio(config, governor).await,
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on `{listen}`"))?;
            let bound = listener.local_addr().context("reading the bound address")?;
            eprintln!("clearance mcp-proxy: listening on http://{bound}/mcp");
            if !bound.ip().is_loopback() {
                eprintln!(
                    "warning: agents send their API keys to this address in plain HTTP; \
                     put a TLS terminator in front of it or listen on loopback"
                );
            }
            let options = HttpOptions {
                allowed_hosts: args.allowed_hosts.clone(),
                session_idle: Duration::from_secs(args.session_idle_timeout),
            };
            clearance_mcp::run_http(config, governor, listener, options, crate::command::serve::shutdown()).await
        }
    };
    drop(follower);
    outcome.map_err(|e| Failure::Error(e.into()))
}
