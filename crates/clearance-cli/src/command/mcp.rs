//! `clearance mcp ...`: helpers for governing MCP servers.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::command::mcp_proxy::{default_name, upstream_spec};
use crate::output::Failure;

/// Helpers for governing MCP servers: a Cedar schema generated from a server's tools.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start an MCP server, read its tools, and write a Cedar schema in which each tool's
    /// arguments are typed from its inputSchema (action `tool:<name>` on
    /// `McpServer::"<name>"`), so argument policies are validated when pushed.
    #[command(group(clap::ArgGroup::new("upstream").required(true).args(["upstream_cmd", "upstream_url"])))]
    Schema {
        /// The server's name (the `McpServer` id) [default: the program's file name, or
        /// the URL's host].
        #[arg(long)]
        name: Option<String>,
        /// The MCP server's program (its arguments follow `--`).
        #[arg(long)]
        upstream_cmd: Option<String>,
        /// The MCP server's streamable HTTP endpoint.
        #[arg(long)]
        upstream_url: Option<String>,
        /// Write the schema here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The MCP server program's own arguments, after `--` (put -o before `--`, or it
        /// goes to the server).
        #[arg(last = true)]
        upstream_args: Vec<String>,
    },
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Schema {
            name,
            upstream_cmd,
            upstream_url,
            output,
            upstream_args,
        } => {
            let upstream = upstream_spec(upstream_cmd.as_ref(), upstream_url.as_ref(), &upstream_args)?;
            let name = name.unwrap_or_else(|| default_name(&upstream));
            let text = clearance_mcp::upstream_schema(&name, &upstream)
                .await
                .map_err(|e| Failure::Error(e.into()))?;
            match output {
                Some(path) => {
                    std::fs::write(&path, &text).with_context(|| format!("writing `{}`", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}
