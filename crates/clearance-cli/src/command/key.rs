//! `clearance key ...`: API keys, and the clearance signing key's rotation.

use clap::Subcommand;
use clearance_model::wire::{IssuedKey, KeyList, SigningKeyRotated};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Manage API keys (admin key; keys are shown once, when created), and rotate the
/// clearance signing key.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Issue a new key for a principal.
    Create {
        /// The principal's id (`clearance principal list`).
        principal: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a principal's keys (ids and dates only).
    List {
        /// The principal's id (`clearance principal list`).
        principal: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a key by id. Requests presenting it fail from then on.
    Revoke {
        /// The key's id, as `key list` prints it (not the key itself). Ids are base64url
        /// and may start with `-`.
        #[arg(allow_hyphen_values = true)]
        key_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace the control plane's clearance signing key (admin key).
    ///
    /// The new key signs from the next decision on and is saved in the data directory first; the old one
    /// stays in the JWKS until every clearance it signed has expired (the longest
    /// clearance lifetime plus 5 s of clock leeway). Enforcement points that fetched the
    /// JWKS from the server pick up the new key on their own. Also the way back after
    /// revoking the signing key. Not available on a shared PostgreSQL database yet.
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the control plane's JWKS: the public keys that verify clearances (no key
    /// needed). Saved to a file, it lets `verify --jwks`, `evidence verify --jwks` and the
    /// enforcement points' `--jwks` work offline.
    Jwks {
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
        Command::Jwks { client } => {
            // Printed as served (pretty JSON either way): a JWK set is already JSON.
            let jwks: serde_json::Value = Client::new(&client)?.get("/.well-known/jwks.json").await?;
            print_json(&jwks)
        }
        Command::Rotate { client } => {
            let r: SigningKeyRotated = Client::new(&client)?
                .post("/v1/signing-keys/rotate", &serde_json::json!({}))
                .await?;
            if client.json {
                return print_json(&r);
            }
            println!("signing key rotated: clearances are now signed by {}", r.kid);
            println!(
                "the previous key {} stays in the JWKS until {}",
                r.previous,
                clearance_model::Timestamp(r.previous_published_until).to_rfc3339()
            );
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
