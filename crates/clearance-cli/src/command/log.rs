//! `clearance log ...`: the audit log.

use std::time::Instant;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;
use clearance_log::{Checkpoint, NoteVerifier, TlogProof};
use clearance_model::event::Event;
use clearance_model::wire::{InclusionProofView, LogEntries};
use clearance_model::{Decision, Timestamp};

use crate::client::{Client, ClientArgs};
use crate::config::{DEFAULT_DATA_DIR, LOG_KEY_FILE};
use crate::output::{Failure, print_json};

/// Read and verify the append-only audit log.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the latest signed checkpoint (C2SP tlog-checkpoint note). Anyone may read
    /// it; keep one to check later evidence against (`evidence verify
    /// --trusted-checkpoint`).
    Checkpoint {
        /// Have the server sign a checkpoint of the log as it is now, rather than print
        /// the latest (auditor or admin key; the checkpointer signs one every second
        /// anyway while the log grows).
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the log's C2SP verifier key (`<origin>+<hash>+<key>`): what `evidence verify
    /// --log-key` and `log verify --log-key` check checkpoint signatures with.
    VerifierKey {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the most recent entries, decoded: decisions, executions, revocations and
    /// governance changes, one per line (auditor or admin key).
    Tail {
        /// How many entries, at most 1000.
        #[arg(short = 'n', long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        count: u64,
        /// Show only the decisions (allow and deny) among those entries.
        #[arg(long)]
        decisions: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print an offline-verifiable inclusion proof (C2SP tlog-proof) of one entry.
    Proof {
        /// The entry's log index.
        #[arg(long)]
        index: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Recompute the whole tree from the stored entries and check every stored
    /// checkpoint against it. Reads the database directly; exit code 4 if it was altered.
    Verify {
        /// Data directory of the control plane.
        #[arg(long, env = "CLEARANCE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
        /// Read the log from this PostgreSQL database instead of the data directory's
        /// SQLite file (`postgres://user@host/db`); nothing is written.
        #[arg(long, env = "CLEARANCE_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// With --database: the schema the control plane keeps its tables in (ignored
        /// for the data directory's SQLite file).
        #[arg(long, env = "CLEARANCE_DATABASE_SCHEMA")]
        schema: Option<String>,
        /// The log's verifier key, if you hold it from elsewhere [default: derived from
        /// the data directory's log key and the stored origin].
        #[arg(long)]
        log_key: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Checkpoint { now, client } => {
            let c = Client::new(&client)?;
            let note = if now {
                c.post_text("/v1/log/checkpoint").await?
            } else {
                c.get_text("/v1/log/checkpoint").await?
            };
            if client.json {
                let checkpoint = Checkpoint::from_text(note_text(&note)).context("the server's checkpoint")?;
                return print_json(&serde_json::json!({
                    "origin": checkpoint.origin,
                    "size": checkpoint.size,
                    "root_hash": STANDARD.encode(checkpoint.root),
                    "note": note,
                }));
            }
            print!("{note}");
            Ok(())
        }
        Command::VerifierKey { client } => {
            let key = Client::new(&client)?.get_text("/v1/log/verifier-key").await?;
            if client.json {
                return print_json(&serde_json::json!({ "verifier_key": key.trim_end() }));
            }
            println!("{}", key.trim_end());
            Ok(())
        }
        Command::Tail {
            count,
            decisions,
            client,
        } => tail(&Client::new(&client)?, count, decisions, client.json).await,
        Command::Proof { index, client } => {
            let c = Client::new(&client)?;
            let note = c.get_text("/v1/log/checkpoint").await?;
            let checkpoint = Checkpoint::from_text(note_text(&note)).context("the server's checkpoint")?;
            let proof: InclusionProofView = c
                .get(&format!(
                    "/v1/log/proof/inclusion?index={index}&size={}",
                    checkpoint.size
                ))
                .await?;
            let hashes = proof
                .proof
                .iter()
                .map(|h| STANDARD.decode(h).ok().and_then(|b| b.try_into().ok()))
                .collect::<Option<Vec<_>>>()
                .context("the server's proof is not base64 hashes")?;
            if client.json {
                return print_json(&serde_json::json!({
                    "index": index,
                    "size": checkpoint.size,
                    "leaf_hash": proof.leaf_hash,
                    "proof": proof.proof,
                    "checkpoint": note,
                }));
            }
            print!(
                "{}",
                TlogProof {
                    extra: None,
                    index,
                    proof: hashes,
                    checkpoint: note
                }
                .encode()
            );
            Ok(())
        }
        Command::Verify {
            data_dir,
            database,
            schema,
            log_key,
            json,
        } => {
            let log = match &database {
                Some(url) => clearance_store::PgStore::open_read_only(url, schema.as_deref()).await,
                None => {
                    let db = data_dir.join("clearance.db");
                    if !db.exists() {
                        return Err(Failure::Error(anyhow::anyhow!("no database at `{}`", db.display())));
                    }
                    clearance_store::SqliteStore::open_read_only(&db).await
                }
            }
            .map_err(|e| Failure::Error(e.into()))?;
            verify(&log, &data_dir, log_key.as_deref(), json).await
        }
    }
}

async fn verify(
    log: &clearance_store::LogReader,
    data_dir: &std::path::Path,
    log_key: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let verifier = match log_key {
        Some(k) => NoteVerifier::parse(k).context("--log-key")?,
        None => derive_verifier(log, data_dir).await?,
    };
    let started = Instant::now();
    let report = clearance_store::verify_log(log, &verifier, |n| {
        if !json && n % 100_000 == 0 {
            eprintln!("  {n} entries read");
        }
    })
    .await
    .map_err(|e| Failure::Error(e.into()))?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = report.entries as f64 / seconds.max(1e-9);
    if json {
        print_json(&serde_json::json!({
            "entries": report.entries,
            "checkpoints": report.checkpoints,
            "seconds": seconds,
            "entries_per_second": rate,
            "ok": report.divergence.is_none(),
            "divergence": report.divergence.as_ref().map(|d| serde_json::json!({
                "first_index": d.first_index, "last_index": d.last_index, "reason": d.reason,
            })),
        }))?;
    } else {
        println!(
            "read {} entries and {} checkpoints in {seconds:.2} s ({rate:.0} entries/s)",
            report.entries, report.checkpoints
        );
    }
    match report.divergence {
        None => {
            if !json {
                println!("ok: every checkpoint matches the entries");
            }
            Ok(())
        }
        Some(d) => {
            let place = match d.last_index {
                None => format!("first divergent index {}", d.first_index),
                Some(last) => format!("first divergent index is between {} and {}", d.first_index, last),
            };
            Err(Failure::Rejected(format!("the log was altered: {place}: {}", d.reason)))
        }
    }
}

/// The verifier key from the data directory's log key and the stored origin.
async fn derive_verifier(
    log: &clearance_store::LogReader,
    data_dir: &std::path::Path,
) -> Result<NoteVerifier, Failure> {
    let key = clearance_artifact::load_key(&data_dir.join(LOG_KEY_FILE)).map_err(|e| Failure::Error(e.into()))?;
    let origin: String = log.origin().await.map_err(|e| Failure::Error(e.into()))?;
    let signer = clearance_log::NoteSigner::new(origin, key).context("the stored log origin")?;
    Ok(signer.verifier())
}

/// A signed note's text: everything up to the blank line that starts its signatures,
/// ending in its newline.
fn note_text(note: &str) -> &str {
    note.find("\n\n").map_or(note, |at| &note[..=at])
}

/// The last `count` entries of the log as it is now (a checkpoint signed for the purpose
/// says how long it is), decoded.
async fn tail(c: &Client, count: u64, decisions: bool, json: bool) -> Result<(), Failure> {
    let note = c.post_text("/v1/log/checkpoint").await?;
    let size = Checkpoint::from_text(note_text(&note))
        .context("the server's checkpoint")?
        .size;
    let start = size.saturating_sub(count);
    let page: LogEntries = c.get(&format!("/v1/log/entries?start={start}&end={size}")).await?;
    let mut events = Vec::new();
    for view in page.entries {
        let bytes = STANDARD
            .decode(&view.entry)
            .with_context(|| format!("entry {} is not base64", view.index))?;
        let event: Event =
            serde_json::from_slice(&bytes).with_context(|| format!("entry {} is not a known event", view.index))?;
        if !decisions || matches!(event, Event::Decision(_)) {
            events.push((view.index, event));
        }
    }
    if json {
        let list: Vec<_> = events
            .iter()
            .map(|(index, event)| serde_json::json!({ "index": index, "event": event }))
            .collect();
        return print_json(&serde_json::json!({ "size": size, "entries": list }));
    }
    if events.is_empty() {
        let what = if decisions { "decisions" } else { "entries" };
        println!("no {what} among the last {count} entries (the log holds {size})");
    }
    for (index, event) in &events {
        println!("{index:>8}  {}", summary(event));
    }
    Ok(())
}

/// One line for an entry: when, what, and the ids to follow it up with.
fn summary(event: &Event) -> String {
    let at = |t: i64| Timestamp(t).to_string();
    match event {
        Event::Decision(d) => {
            let verdict = match d.decision {
                Decision::Allow => "allow".to_owned(),
                Decision::Deny => {
                    let reasons: Vec<&str> = d.reasons.iter().map(|r| r.as_str()).collect();
                    format!("deny ({})", reasons.join(", "))
                }
            };
            let env = d.environment.as_deref().map(|e| format!(" in {e}")).unwrap_or_default();
            format!(
                "{}  {verdict} {} on {} for {}{env}  execution {}",
                at(d.time),
                d.action,
                d.resource,
                d.principal,
                d.execution_id
            )
        }
        Event::ExecutionStarted {
            time, execution_id, by, ..
        } => {
            format!("{}  started execution {execution_id} (by {by})", at(*time))
        }
        Event::ExecutionRenewed { time, execution_id, .. } => {
            format!("{}  renewed execution {execution_id}", at(*time))
        }
        Event::ExecutionCompleted {
            time,
            execution_id,
            status,
            exit_code,
            ..
        } => {
            let code = exit_code.map(|c| format!(", exit code {c}")).unwrap_or_default();
            format!(
                "{}  completed execution {execution_id}: {}{code}",
                at(*time),
                status.as_str()
            )
        }
        Event::Revocation {
            time, kind, id, reason, ..
        } => format!("{}  revoked {} {id}: {reason}", at(*time), kind.as_str()),
        Event::PolicyActivated { time, by, version } => format!("{}  policy {version} activated by {by}", at(*time)),
        Event::PrincipalCreated {
            time, principal, roles, ..
        } => {
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            format!("{}  principal {principal} created ({})", at(*time), roles.join(", "))
        }
        Event::KeyIssued {
            time,
            principal,
            key_id,
            ..
        } => format!("{}  key {key_id} issued to {principal}", at(*time)),
        Event::KeyRevoked { time, key_id, .. } => format!("{}  key {key_id} revoked", at(*time)),
        Event::EnvironmentRegistered { time, environment, .. } => {
            format!("{}  environment {environment} registered", at(*time))
        }
        Event::EnvironmentUpdated { time, environment, .. } => {
            format!("{}  environment {environment} updated", at(*time))
        }
        Event::EnvironmentReleased { time, environment, .. } => {
            format!("{}  environment {environment} released from quarantine", at(*time))
        }
        Event::EnvironmentAttested {
            time,
            environment,
            matches,
            mismatched,
            ..
        } => {
            let verdict = if *matches {
                "matches".to_owned()
            } else {
                format!("does NOT match ({})", mismatched.join(", "))
            };
            format!("{}  environment {environment} attested: {verdict}", at(*time))
        }
    }
}
