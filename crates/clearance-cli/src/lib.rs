//! The `clearance` command: the control plane server and a client for it.
//! Each subcommand lives in its own file under `command/`; none holds business rules.

mod client;
mod command;
mod config;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::Failure;

const AFTER_HELP: &str = "\
Exit codes:
  0  success: allowed, verified, done
  1  error: bad input, unreadable file, unexpected server answer
  2  usage error (wrong flags)
  3  denied: the control plane decided `deny`
  4  rejected: a clearance, an evidence bundle or the log did not verify
  5  not authenticated or not authorized (invalid_api_key, unauthorized_role, rate_limited)
  6  unavailable: the control plane cannot be reached, or cannot record decisions
`clearance exec` passes its command's exit code through and uses 120-127 for its own
outcomes (see `clearance exec --help`).";

/// Clearance: pre-execution authorization for AI agents.
///
/// Start a control plane with `clearance serve` (SQLite in ./clearance-data, no
/// configuration needed), then drive it with the client subcommands.
#[derive(Debug, Parser)]
#[command(name = "clearance", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(command::serve::Args),
    Init(command::init::Args),
    RecoverAdmin(command::init::RecoverArgs),
    Authorize(command::authorize::Args),
    Exec(command::exec::Args),
    Proxy(command::proxy::Args),
    McpProxy(command::mcp_proxy::Args),
    #[command(subcommand)]
    Mcp(command::mcp::Command),
    Verify(command::verify::Args),
    Revoke(command::revoke::Args),
    #[command(subcommand)]
    Env(command::env::Command),
    Lineage(command::lineage::Args),
    #[command(subcommand)]
    Policy(command::policy::Command),
    #[command(subcommand)]
    Principal(command::principal::Command),
    #[command(subcommand)]
    Key(command::key::Command),
    #[command(subcommand)]
    Log(command::log::Command),
    #[command(subcommand)]
    Evidence(command::evidence::Command),
    Completions(command::docs::CompletionsArgs),
    Man(command::docs::ManArgs),
}

/// Run a parsed command line and turn its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            return output::report(Failure::Error(anyhow::anyhow!("cannot start the async runtime: {e}")));
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => command::serve::run(args).await,
            Command::Init(args) => command::init::run(args).await,
            Command::RecoverAdmin(args) => command::init::recover(args).await,
            Command::Authorize(args) => command::authorize::run(args).await,
            Command::Exec(args) => command::exec::run(args).await,
            Command::Proxy(args) => command::proxy::run(args).await,
            Command::McpProxy(args) => command::mcp_proxy::run(args).await,
            Command::Mcp(cmd) => command::mcp::run(cmd).await,
            Command::Verify(args) => command::verify::run(args).await,
            Command::Revoke(args) => command::revoke::run(args).await,
            Command::Env(cmd) => command::env::run(cmd).await,
            Command::Lineage(args) => command::lineage::run(args).await,
            Command::Policy(cmd) => command::policy::run(cmd).await,
            Command::Principal(cmd) => command::principal::run(cmd).await,
            Command::Key(cmd) => command::key::run(cmd).await,
            Command::Log(cmd) => command::log::run(cmd).await,
            Command::Evidence(cmd) => command::evidence::run(cmd).await,
            Command::Completions(args) => command::docs::completions(&args),
            Command::Man(args) => command::docs::man(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => output::report(failure),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap's own consistency checks over every subcommand (one found `policy activate`'s
    /// `version` argument clashing with `--version`, which panicked at its `--help`).
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Every subcommand, argument and option says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "clearance", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
