//! `clearance evidence ...`: export and check evidence bundles.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use clearance_artifact::Jwks;
use clearance_enforce::{EvidenceTrust, verify_evidence};
use clearance_model::wire::EvidenceBundle;

use crate::client::{Client, ClientArgs};
use crate::output::{Failure, print_json};

/// Evidence bundles: one file proving an execution's story, checkable offline.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write the bundle of one execution (auditor or admin key).
    Export {
        /// The execution id (the clearance's `jti`; `execution_id` in responses). Ids are
        /// base64url and may start with `-`.
        #[arg(allow_hyphen_values = true)]
        execution_id: String,
        /// Output file [default: standard output].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Include a consistency proof with this tree size (the size of a checkpoint the
        /// auditor saved), so `verify --trusted-checkpoint` can check it offline.
        #[arg(long)]
        consistency_with: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check every signature, digest and proof in a bundle, with no network and no
    /// database. Exit code 4 names the check that failed.
    Verify {
        /// The bundle file.
        file: PathBuf,
        /// A checkpoint note saved earlier: also prove the bundle's log is its extension.
        #[arg(long)]
        trusted_checkpoint: Option<PathBuf>,
        /// The log's verifier key from a trusted source (otherwise the bundle's is used).
        #[arg(long)]
        log_key: Option<String>,
        /// The control plane's JWKS file from a trusted source (otherwise the bundle's).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Export {
            execution_id,
            output,
            consistency_with,
            client,
        } => {
            let mut path = format!("/v1/evidence/{execution_id}");
            if let Some(size) = consistency_with {
                path.push_str(&format!("?consistency_with={size}"));
            }
            let bundle: EvidenceBundle = Client::new(&client)?.get(&path).await?;
            let text = serde_json::to_string_pretty(&bundle).map_err(|e| Failure::Error(e.into()))? + "\n";
            match output {
                Some(p) => {
                    std::fs::write(&p, text).with_context(|| format!("writing `{}`", p.display()))?;
                    eprintln!("wrote the evidence of {execution_id} to {}", p.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Verify {
            file,
            trusted_checkpoint,
            log_key,
            jwks,
            json,
        } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading `{}`", file.display()))?;
            let bundle: EvidenceBundle = serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Rejected(format!("format: `{}` is not an evidence bundle: {e}", file.display()))
            })?;
            let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()));
            let trust = EvidenceTrust {
                log_key,
                jwks: match &jwks {
                    Some(p) => Some(serde_json::from_str::<Jwks>(&read(p)?).context("--jwks is not a JWK set")?),
                    None => None,
                },
                trusted_checkpoint: trusted_checkpoint.as_ref().map(read).transpose()?,
            };
            match verify_evidence(&bundle, &trust) {
                Ok(report) => {
                    if json {
                        return print_json(&serde_json::json!({
                            "valid": true,
                            "execution_id": bundle.execution_id,
                            "decision": report.decision,
                            "entries": report.entries,
                            "checkpoint_size": report.checkpoint_size,
                            "clearance_checked": report.clearance_checked,
                            "keys_pinned": report.keys_pinned,
                            "consistent_with_trusted": report.consistent_with_trusted,
                            "lifecycle": report.lifecycle,
                        }));
                    }
                    let indexes: Vec<String> = report.entries.iter().map(|i| i.to_string()).collect();
                    println!(
                        "verified: execution {} was decided `{}`",
                        bundle.execution_id,
                        report.decision.as_str()
                    );
                    println!(
                        "  entries     {} included in the checkpoint of size {}",
                        indexes.join(", "),
                        report.checkpoint_size
                    );
                    println!(
                        "  clearance   {}",
                        if report.clearance_checked {
                            "signature and claims match the decision"
                        } else {
                            "not in the bundle"
                        }
                    );
                    for step in &report.lifecycle {
                        println!("  then        {step}");
                    }
                    if let Some(size) = report.consistent_with_trusted {
                        println!("  consistent  with the trusted checkpoint of size {size}");
                    }
                    // Name exactly the keys that came from the bundle itself.
                    let mut unpinned = Vec::new();
                    if trust.log_key.is_none() {
                        unpinned.push("the log's verifier key (pin it with --log-key)");
                    }
                    if trust.jwks.is_none() && bundle.clearance.is_some() {
                        unpinned.push("the clearance's JWKS (pin it with --jwks)");
                    }
                    if !unpinned.is_empty() {
                        println!(
                            "  note        taken from the bundle itself, so only as trustworthy as its source: {}",
                            unpinned.join("; ")
                        );
                    }
                    Ok(())
                }
                Err(e) => {
                    if json {
                        print_json(
                            &serde_json::json!({"valid": false, "error": {"code": e.code(), "message": e.to_string()}}),
                        )?;
                    }
                    Err(Failure::Rejected(format!("{}: {e}", e.code())))
                }
            }
        }
    }
}
