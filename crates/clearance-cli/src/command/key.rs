//! `clearance key ...`: API keys.

use clap::Subcommand;
use clearance_model::wire::{IssuedKey, KeyList};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Manage API keys (admin key). Keys are shown once, when created.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Issue a new key for a principal.
    Create {
        principal: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a principal's keys (ids and dates only).
    List {
        principal: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a key by id. Requests presenting it fail from then on.
    Revoke {
        key_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Create { principal, client } => {
            let k: IssuedKey = Client::new(&client)?
                .post(&format!("/v1/principals/{principal}/keys"), &serde_json::json!({}))
                .await?;
            if client.json {
                return print_json(&k);
            }
            println!("API key {} for {} (shown once):", k.key_id, k.principal);
            println!("{}", k.key);
            Ok(())
        }
        Command::List { principal, client } => {
            let l: KeyList = Client::new(&client)?
                .get(&format!("/v1/principals/{principal}/keys"))
                .await?;
            if client.json {
                return print_json(&l);
            }
            for k in &l.keys {
                match &k.revoked_at {
                    Some(r) => println!("{}  created {}  revoked {r}", k.key_id, k.created_at),
                    None => println!("{}  created {}  active", k.key_id, k.created_at),
                }
            }
            Ok(())
        }
        Command::Revoke { key_id, client } => {
            Client::new(&client)?.delete(&format!("/v1/keys/{key_id}")).await?;
            if !client.json {
                println!("revoked {key_id}");
            }
            Ok(())
        }
    }
}
