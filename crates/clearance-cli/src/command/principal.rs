//! `clearance principal ...`: who may call the control plane.

use clap::Subcommand;
use clearance_model::Role;
use clearance_model::wire::{CreatePrincipal, IssuedKey, PrincipalList, PrincipalView};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Manage principals (admin key).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a principal with one or more roles; --with-key also issues its first key.
    Create {
        /// Principal id: letters, digits, `.`, `_`, `-`.
        id: String,
        /// Role (repeat for several): admin (principals, keys, policies, environments,
        /// revocations), agent (asks for clearances), enforcer (starts, renews and
        /// completes executions; attests environments) or auditor (reads the log,
        /// evidence and lineage).
        #[arg(long = "role", required = true)]
        roles: Vec<Role>,
        /// Issue an API key for it right away (printed once).
        #[arg(long)]
        with_key: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List principals and their roles.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Create {
            id,
            roles,
            with_key,
            client,
        } => {
            let id = id
                .parse()
                .map_err(|e: clearance_model::IdError| Failure::Error(e.into()))?;
            let c = Client::new(&client)?;
            let created: PrincipalView = c.post("/v1/principals", &CreatePrincipal { id, roles }).await?;
            let key: Option<IssuedKey> = if with_key {
                Some(
                    c.post(&format!("/v1/principals/{}/keys", created.id), &serde_json::json!({}))
                        .await?,
                )
            } else {
                None
            };
            if client.json {
                return print_json(&serde_json::json!({"principal": created, "key": key}));
            }
            let roles: Vec<&str> = created.roles.iter().map(|r| r.as_str()).collect();
            println!("created principal {} ({})", created.id, roles.join(", "));
            if let Some(k) = key {
                println!("API key {} (shown once):", k.key_id);
                println!("{}", k.key);
            }
            Ok(())
        }
        Command::List { client } => {
            let l: PrincipalList = Client::new(&client)?.get("/v1/principals").await?;
            if client.json {
                return print_json(&l);
            }
            for p in &l.principals {
                let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
                println!("{}  {}  {}", p.id, roles.join(","), p.created_at);
            }
            Ok(())
        }
    }
}
