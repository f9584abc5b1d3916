//! One task appends decision entries, batching whatever is waiting into one transaction
//! (group commit): one fsync serves the whole batch.

use std::time::Duration;

use clearance_core::StoreError;
use clearance_model::{LogIndex, Timestamp};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

pub(crate) struct AppendJob {
    pub entry: Vec<u8>,
    pub reply: oneshot::Sender<Result<LogIndex, StoreError>>,
}

pub(crate) async fn run(pool: SqlitePool, mut jobs: mpsc::Receiver<AppendJob>, max_batch: usize, timeout: Duration) {
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
            tracing::error!(error = %e, entries = batch.len(), "log append failed");
        }
        for (i, job) in batch.drain(..).enumerate() {
            let answer = outcome.clone().map(|start| LogIndex(start + i as u64));
            // The caller may have given up (timeout); nothing to do then.
            let _ = job.reply.send(answer);
        }
    }
}

async fn write_batch(pool: &SqlitePool, batch: &[AppendJob]) -> Result<u64, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(unavailable)?;
    let start = next_index(&mut tx).await?;
    let now = Timestamp::now().seconds();
    for (i, job) in batch.iter().enumerate() {
        insert_entry(&mut tx, start + i as u64, &job.entry, now).await?;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(start)
}

/// The next free index. Called inside a write transaction, so no other writer can take it.
pub(crate) async fn next_index(tx: &mut sqlx::SqliteConnection) -> Result<u64, StoreError> {
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
    u64::try_from(next).map_err(|_| StoreError::Unavailable("log index out of range".into()))
}

pub(crate) async fn insert_entry(
    tx: &mut sqlx::SqliteConnection,
    idx: u64,
    entry: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    let idx = i64::try_from(idx).map_err(|_| StoreError::Unavailable("log index out of range".into()))?;
    sqlx::query("INSERT INTO log_entries (idx, entry, appended_at) VALUES (?, ?, ?)")
        .bind(idx)
        .bind(entry)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("database: {e}"))
}
