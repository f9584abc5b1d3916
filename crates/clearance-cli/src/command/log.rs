//! `clearance log ...`: the audit log.

use std::time::Instant;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;
use clearance_log::{Checkpoint, NoteVerifier, TlogProof};
use clearance_model::wire::InclusionProofView;

use crate::client::{Client, ClientArgs};
use crate::config::{DEFAULT_DATA_DIR, LOG_KEY_FILE};
use crate::output::{Failure, print_json};

/// Read and verify the append-only audit log.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the latest signed checkpoint (C2SP tlog-checkpoint note).
    Checkpoint {
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
        /// With --database: the schema the control plane keeps its tables in.
        #[arg(long, env = "CLEARANCE_DATABASE_SCHEMA", requires = "database")]
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
        Command::Checkpoint { client } => {
            print!("{}", Client::new(&client)?.get_text("/v1/log/checkpoint").await?);
            Ok(())
        }
        Command::Proof { index, client } => {
            let c = Client::new(&client)?;
            let note = c.get_text("/v1/log/checkpoint").await?;
            let text = note.rsplit_once("\n\n").map_or(note.as_str(), |(t, _)| t).to_owned() + "\n";
            let checkpoint = Checkpoint::from_text(&text).context("the server's checkpoint")?;
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
