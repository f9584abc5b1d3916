//! `clearance revoke`: revoke an execution (with its subtree), a principal or a signing key.

use clearance_model::execution::{RevokeRequest, Revoked};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Target {
    /// An execution and every execution below it in its lineage.
    Execution,
    /// A principal: its API keys stop working and its executions are revoked.
    Principal,
    /// A clearance signing key (`kid`): every clearance it signed is revoked.
    SigningKey,
}

/// Revoke something (admin). Enforcement points learn of it from the revocation stream;
/// running executions are stopped as soon as their enforcement point hears of it (at the latest
/// at their next lease renewal).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to revoke.
    #[arg(value_enum)]
    target: Target,
    /// Execution id, principal id or key id (base64url ids may start with `-`).
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// Why (recorded in the log and sent to enforcement points).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let path = match args.target {
        Target::Execution => format!("/v1/executions/{}/revoke", args.id),
        Target::Principal => format!("/v1/principals/{}/revoke", args.id),
        Target::SigningKey => format!("/v1/signing-keys/{}/revoke", args.id),
    };
    let client = Client::new(&args.client)?;
    let revoked: Revoked = client.post(&path, &RevokeRequest { reason: args.reason }).await?;
    if args.client.json {
        return print_json(&revoked);
    }
    if revoked.revocations.is_empty() {
        println!("nothing to revoke: already revoked or finished");
    }
    for r in &revoked.revocations {
        println!("revoked {} {} (seq {}): {}", r.kind.as_str(), r.id, r.seq, r.reason);
    }
    Ok(())
}
