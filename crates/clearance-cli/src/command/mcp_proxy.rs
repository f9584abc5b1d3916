//! `clearance mcp-proxy`: govern an MCP server's tool calls for any MCP client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clearance_enforce::{Gate, ReplayCache, RevocationView};
use clearance_mcp::{Governor, McpProxyConfig};
use clearance_model::Timestamp;

use crate::command::enforcer::{EnforcerArgs, default_state_file};
use crate::output::Failure;

const AFTER_HELP: &str = "\
Configure it as the MCP server command of your client; it starts the real server itself:

  clearance mcp-proxy --name everything --upstream-cmd npx -- -y @modelcontextprotocol/server-everything

Every tools/call is the action `tool:<name>`, prompts/get `prompt:<name>` and
resources/read `resources/read` (arguments {uri}), on resource McpServer::\"<name>\", with
the call's arguments as the request arguments. A denied call returns a tool error naming
the reason and policies, and never reaches the server; an allowed one is forwarded with
its clearance in `_meta.clearance` and completed with the digest of its result. ping,
tools/list, notifications and server-to-client requests pass through; other methods are
refused unless given with --allow-method. Clearance's own keys are removed from the
server's environment. stdout carries the MCP session: diagnostics go to stderr.";

/// Put Clearance between an MCP client and an MCP server (stdio on both sides).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// The server's name: the id of the `McpServer` resource policies see
    /// [default: the upstream program's file name].
    #[arg(long)]
    name: Option<String>,
    /// The upstream MCP server's program (its arguments follow `--`).
    #[arg(long)]
    upstream_cmd: String,
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

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&args.upstream_cmd)
            .file_name()
            .map_or_else(|| args.upstream_cmd.clone(), |n| n.to_string_lossy().into_owned())
    });
    let agent = args.enforcer.agent()?.ok_or_else(|| {
        Failure::Error(anyhow::anyhow!(
            "the proxy asks for clearances: give an agent key with --api-key or CLEARANCE_API_KEY"
        ))
    })?;
    let enforcer = args.enforcer.enforcer()?;
    let measurer = args.enforcer.measurer()?;
    let verifier = args.enforcer.verifier(&enforcer).await?;
    let path = args
        .replay_cache
        .clone()
        .unwrap_or_else(|| default_state_file(&format!("mcp-replay-{name}")));
    let replay =
        ReplayCache::open(&path, Timestamp::now().seconds()).map_err(|e| Failure::Error(anyhow::anyhow!(e)))?;
    let staleness = Duration::from_secs(args.revocation_staleness.max(1));
    let view = Arc::new(RevocationView::new(staleness));
    let follower = {
        let (client, view) = (enforcer.clone(), Arc::clone(&view));
        tokio::spawn(async move {
            client
                .follow_revocations(view, clearance_server::HEARTBEAT_INTERVAL * 3)
                .await;
        })
    };
    let config = McpProxyConfig {
        server_name: name,
        upstream_program: args.upstream_cmd.clone(),
        upstream_args: args.upstream_args.clone(),
        allow_methods: args.allow_methods.clone(),
        environment: args.enforcer.environment.clone(),
    };
    let governor = Governor {
        agent,
        enforcer,
        gate: Gate::new(verifier, replay, Some(view)).with_measurer(measurer),
    };
    let outcome = clearance_mcp::run_stdio(config, governor).await;
    follower.abort();
    outcome.map_err(|e| Failure::Error(e.into()))
}
