//! `clearance policy ...`: policy bundles and versions.

use anyhow::Context as _;
use clap::Subcommand;
use clearance_model::wire::{PolicyActivated, PolicyBundle, PolicyList, PolicyPushed, PolicyValidated};

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Manage policy versions (admin key).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate a bundle and store it as an immutable version (named by its SHA-256).
    Push {
        #[command(flatten)]
        files: BundleFiles,
        /// Also make it the active version.
        #[arg(long)]
        activate: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Validate a bundle with the server's strict validation, without storing it.
    Validate {
        #[command(flatten)]
        files: BundleFiles,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a stored version the active one.
    Activate {
        /// The version, `sha256:<hex>`.
        version: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List stored versions.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct BundleFiles {
    /// Cedar schema file (Cedar schema syntax).
    #[arg(long)]
    schema: std::path::PathBuf,
    /// Cedar policies file. Name policies with `@id("...")`.
    #[arg(long)]
    policies: std::path::PathBuf,
}

impl BundleFiles {
    fn read(&self) -> anyhow::Result<PolicyBundle> {
        let read =
            |p: &std::path::Path| std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()));
        Ok(PolicyBundle {
            schema: read(&self.schema)?,
            policies: read(&self.policies)?,
        })
    }
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Push {
            files,
            activate,
            client,
        } => {
            let c = Client::new(&client)?;
            let pushed: PolicyPushed = c.post("/v1/policies", &files.read()?).await?;
            let activated: Option<PolicyActivated> = if activate {
                Some(
                    c.post(
                        &format!("/v1/policies/{}/activate", pushed.version),
                        &serde_json::json!({}),
                    )
                    .await?,
                )
            } else {
                None
            };
            if client.json {
                return print_json(&serde_json::json!({"pushed": pushed, "activated": activated}));
            }
            let what = if pushed.created { "pushed" } else { "already stored" };
            println!(
                "{what} {} ({} policies: {})",
                pushed.version,
                pushed.policy_ids.len(),
                pushed.policy_ids.join(", ")
            );
            if let Some(a) = activated {
                println!("activated {} (log index {})", a.version, a.log_index);
            } else {
                println!("not active yet: clearance policy activate {}", pushed.version);
            }
            Ok(())
        }
        Command::Validate { files, client } => {
            let v: PolicyValidated = Client::new(&client)?
                .post("/v1/policies/validate", &files.read()?)
                .await?;
            if client.json {
                return print_json(&v);
            }
            println!("valid {}", v.version);
            println!("  policies  {}", v.policy_ids.join(", "));
            println!("  actions   {}", v.actions.join(", "));
            Ok(())
        }
        Command::Activate { version, client } => {
            let a: PolicyActivated = Client::new(&client)?
                .post(&format!("/v1/policies/{version}/activate"), &serde_json::json!({}))
                .await?;
            if client.json {
                return print_json(&a);
            }
            println!("activated {} (log index {})", a.version, a.log_index);
            Ok(())
        }
        Command::List { client } => {
            let l: PolicyList = Client::new(&client)?.get("/v1/policies").await?;
            if client.json {
                return print_json(&l);
            }
            for p in &l.policies {
                println!(
                    "{}  {}{}",
                    p.version,
                    p.created_at,
                    if p.active { "  active" } else { "" }
                );
            }
            if l.policies.is_empty() {
                println!("no policy versions yet");
            }
            Ok(())
        }
    }
}
