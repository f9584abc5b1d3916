//! `clearance authorize`: ask for a clearance.

use anyhow::Context as _;
use clearance_model::execution::Delegation;
use clearance_model::wire::{AuthorizeRequest, AuthorizeResponse};
use clearance_model::{Decision, ResourceRef};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Ask the control plane for a clearance (needs an agent key). Prints the decision and,
/// when allowed, the clearance on the last line. Exit code 3 when denied.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The action, as declared in the policy schema.
    #[arg(long)]
    action: String,
    /// The resource as TYPE/ID, for example `Tool/stripe`.
    #[arg(long, value_parser = parse_resource)]
    resource: ResourceRef,
    /// Arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Declared context as a JSON object.
    #[arg(long, default_value = "{}")]
    context: String,
    /// Target environment id (the clearance's audience).
    #[arg(long)]
    environment: Option<String>,
    /// Wanted lifetime in seconds.
    #[arg(long)]
    ttl: Option<u64>,
    /// Parent clearance: ask for a child execution within the parent's delegable scope.
    #[arg(long, env = "CLEARANCE_PARENT", hide_env_values = true)]
    parent: Option<String>,
    /// Let the holder delegate these actions to children (repeatable; comma-separated).
    #[arg(long = "delegate-action", value_delimiter = ',')]
    delegate_actions: Vec<String>,
    /// Resources children may act on, as TYPE/ID [default: this request's resource].
    #[arg(long = "delegate-resource", value_parser = parse_resource)]
    delegate_resources: Vec<ResourceRef>,
    /// Longest lifetime, in seconds, a child clearance may have.
    #[arg(long)]
    delegate_ttl: Option<u64>,
    /// How many generations below may exist (1: children only).
    #[arg(long, default_value_t = 1)]
    delegate_depth: u32,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn parse_resource(s: &str) -> Result<ResourceRef, String> {
    match s.split_once('/') {
        Some((kind, id)) if !kind.is_empty() && !id.is_empty() => Ok(ResourceRef::new(kind, id)),
        _ => Err(format!("`{s}` is not TYPE/ID (for example `Tool/stripe`)")),
    }
}

pub(crate) fn parse_object(what: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(text).with_context(|| format!("--{what} is not valid JSON"))?;
    anyhow::ensure!(value.is_object(), "--{what} must be a JSON object");
    Ok(value)
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let request = AuthorizeRequest {
        action: args.action,
        resource: args.resource,
        arguments: parse_object("args", &args.args)?,
        context: parse_object("context", &args.context)?,
        environment: args.environment,
        parent: args.parent,
        ttl_seconds: args.ttl,
        delegate: (!args.delegate_actions.is_empty()).then(|| Delegation {
            actions: args.delegate_actions,
            resources: (!args.delegate_resources.is_empty()).then_some(args.delegate_resources),
            ttl_seconds: args.delegate_ttl,
            depth: args.delegate_depth,
        }),
    };
    let client = Client::new(&args.client)?;
    let response: AuthorizeResponse = client.post("/v1/authorize", &request).await?;
    if args.client.json {
        print_json(&response)?;
    } else {
        print_human(&request, &response);
    }
    match response.decision {
        Decision::Allow => Ok(()),
        Decision::Deny => Err(Failure::Denied),
    }
}

fn print_human(req: &AuthorizeRequest, r: &AuthorizeResponse) {
    let reasons: Vec<&str> = r.reasons.iter().map(|x| x.as_str()).collect();
    match r.decision {
        Decision::Allow => println!("allow  {} on {}", req.action, req.resource),
        Decision::Deny => println!("deny   {} on {}: {}", req.action, req.resource, reasons.join(", ")),
    }
    if let Some(m) = &r.message {
        println!("  message    {m}");
    }
    if !r.policies.is_empty() {
        println!("  policies   {}", r.policies.join(", "));
    }
    if let Some(v) = &r.policy_version {
        println!("  version    {v}");
    }
    println!("  execution  {}", r.execution_id);
    if let Some(i) = r.log_index {
        println!("  log index  {i}");
    }
    if let Some(e) = &r.expires_at {
        println!("  expires    {e}");
    }
    if let Some(c) = &r.clearance {
        println!("{c}");
    }
}
