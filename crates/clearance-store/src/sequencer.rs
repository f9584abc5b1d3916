//! One task appends decision entries, batching whatever is waiting into one transaction
//! (group commit): one fsync serves the whole batch. Every writer of the log, this task
//! and the admin transactions alike, goes through [`append_leaves`], which writes each
//! entry together with the Merkle nodes it completes.

use std::time::Duration;

use clearance_core::{ExecutionChange, LogAppend, StoreError};
use clearance_log::{Hash, leaf_hash, node_hash};
use clearance_model::{LogIndex, Timestamp};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

pub(crate) enum Job {
    Append {
        entry: LogAppend,
        /// Applied first; if its precondition fails, this job's entry is not appended
        /// and its reply is the conflict, while the rest of the batch commits.
        change: Option<ExecutionChange>,
        reply: oneshot::Sender<Result<LogIndex, StoreError>>,
    },
    /// Keep an issued clearance for evidence bundles. Rides on the next batch's commit;
    /// nobody waits for it (the clearance is not part of any proof).
    Clearance { execution_id: String, token: String },
}

pub(crate) async fn run(pool: SqlitePool, mut jobs: mpsc::Receiver<Job>, max_batch: usize, timeout: Duration) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = match tokio::time::timeout(timeout, write_batch(&pool, &batch)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "log append timed out after {timeout:?}"
            ))),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = batch.len(), "log append failed");
        }
        let mut results = match outcome {
            Ok(per_job) => per_job.into_iter(),
            Err(e) => vec![Err(e); batch.len()].into_iter(),
        };
        for job in batch.drain(..) {
            let result = results.next();
            if let Job::Append { reply, .. } = job {
                // The caller may have given up (timeout); nothing to do then.
                let _ = reply.send(result.unwrap_or_else(|| Err(StoreError::Unavailable("lost reply".into()))));
            }
        }
    }
}

/// One transaction for the whole batch. Returns one result per job, in order: the index
/// of its entry, or the conflict that kept it out.
async fn write_batch(pool: &SqlitePool, batch: &[Job]) -> Result<Vec<Result<LogIndex, StoreError>>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(unavailable)?;
    let now = Timestamp::now().seconds();
    let mut entries: Vec<LogAppend> = Vec::with_capacity(batch.len());
    // Per job: Ok(position in `entries`; none for a job without an entry) or its conflict.
    let mut positions: Vec<Result<Option<u64>, StoreError>> = Vec::with_capacity(batch.len());
    for job in batch {
        match job {
            Job::Append { entry, change, .. } => {
                let extra = match change {
                    None => Ok(Vec::new()),
                    Some(change) => crate::executions::apply(&mut tx, change, now).await?,
                };
                match extra {
                    Ok(extra) => {
                        positions.push(Ok(Some(entries.len() as u64)));
                        entries.push(entry.clone());
                        entries.extend(extra);
                    }
                    Err(conflict) => positions.push(Err(conflict)),
                }
            }
            Job::Clearance { execution_id, token } => {
                sqlx::query("INSERT INTO clearances (execution_id, token) VALUES (?, ?) ON CONFLICT DO NOTHING")
                    .bind(execution_id)
                    .bind(token)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                positions.push(Ok(None));
            }
        }
    }
    let refs: Vec<&LogAppend> = entries.iter().collect();
    let start = append_leaves(&mut tx, &refs, now).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(positions
        .into_iter()
        .map(|p| p.map(|i| LogIndex(start + i.unwrap_or(0))))
        .collect())
}

/// The next free index. Called inside a write transaction, so no other writer can take it.
async fn next_index(tx: &mut sqlx::SqliteConnection) -> Result<u64, StoreError> {
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
    u64::try_from(next).map_err(|_| StoreError::Unavailable("log index out of range".into()))
}

fn sql_index(i: u64) -> Result<i64, StoreError> {
    i64::try_from(i).map_err(|_| StoreError::Unavailable("log index out of range".into()))
}

/// Append entries at the next indexes with their Merkle nodes, inside the caller's write
/// transaction. Returns the first index.
pub(crate) async fn append_leaves(
    tx: &mut sqlx::SqliteConnection,
    entries: &[&LogAppend],
    now: i64,
) -> Result<u64, StoreError> {
    let start = next_index(tx).await?;
    for (i, e) in entries.iter().enumerate() {
        let idx = start + i as u64;
        sqlx::query("INSERT INTO log_entries (idx, entry, appended_at, execution_id) VALUES (?, ?, ?, ?)")
            .bind(sql_index(idx)?)
            .bind(&e.entry)
            .bind(now)
            .bind(e.execution.as_ref().map(|x| x.as_str().to_owned()))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        insert_nodes_for_leaf(tx, idx, leaf_hash(&e.entry)).await?;
    }
    Ok(start)
}

/// Store leaf `idx` and every perfect subtree it completes (RFC 6962 shape).
pub(crate) async fn insert_nodes_for_leaf(
    tx: &mut sqlx::SqliteConnection,
    idx: u64,
    leaf: Hash,
) -> Result<(), StoreError> {
    let (mut level, mut index, mut hash) = (0u32, idx, leaf);
    insert_node(tx, level, index, &hash).await?;
    while index & 1 == 1 {
        let left: Vec<u8> = sqlx::query_scalar("SELECT hash FROM log_nodes WHERE level = ? AND idx = ?")
            .bind(i64::from(level))
            .bind(sql_index(index - 1)?)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| StoreError::Unavailable(format!("log node ({level}, {}) is missing", index - 1)))?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        insert_node(tx, level, index, &hash).await?;
    }
    Ok(())
}

async fn insert_node(tx: &mut sqlx::SqliteConnection, level: u32, index: u64, hash: &Hash) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)")
        .bind(i64::from(level))
        .bind(sql_index(index)?)
        .bind(&hash[..])
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("database: {e}"))
}
