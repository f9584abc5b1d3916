//! `clearance lineage`: an execution's ancestors and descendants with their states.

use clearance_model::execution::{ExecutionView, LineageView};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Show an execution's lineage (admin, auditor, enforcer).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Execution id (the clearance's `jti`; base64url, so it may start with `-`).
    #[arg(allow_hyphen_values = true)]
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let client = Client::new(&args.client)?;
    let view: LineageView = client.get(&format!("/v1/executions/{}/lineage", args.id)).await?;
    if args.client.json {
        return print_json(&view);
    }
    for e in view.ancestors.iter().chain([&view.execution]).chain(&view.descendants) {
        print_line(e, e.execution_id == view.execution.execution_id);
    }
    Ok(())
}

fn print_line(e: &ExecutionView, this: bool) {
    let indent = "  ".repeat(usize::try_from(e.depth).unwrap_or(0));
    let mark = if this { "*" } else { " " };
    let reason = e.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
    println!(
        "{mark}{indent}{}  {:<10} {} on {} by {}{reason}",
        e.execution_id, e.state, e.action, e.resource, e.principal
    );
}
