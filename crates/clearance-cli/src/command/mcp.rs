//! `clearance mcp ...`: helpers for governing MCP servers.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::output::Failure;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start an MCP server, read its tools, and write a Cedar schema in which each tool's
    /// arguments are typed from its inputSchema (action `tool:<name>` on
    /// `McpServer::"<name>"`), so argument policies are validated when pushed.
    Schema {
        /// The server's name (the `McpServer` id) [default: the program's file name].
        #[arg(long)]
        name: Option<String>,
        /// The MCP server's program (its arguments follow `--`).
        #[arg(long)]
        upstream_cmd: String,
        /// Write the schema here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(last = true)]
        upstream_args: Vec<String>,
    },
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Schema {
            name,
            upstream_cmd,
            output,
            upstream_args,
        } => {
            let name = name.unwrap_or_else(|| {
                std::path::Path::new(&upstream_cmd)
                    .file_name()
                    .map_or_else(|| upstream_cmd.clone(), |n| n.to_string_lossy().into_owned())
            });
            let text = clearance_mcp::upstream_schema(&name, &upstream_cmd, &upstream_args)
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
