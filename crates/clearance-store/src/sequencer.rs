//! One task per store appends decision entries, batching whatever is waiting into one
//! transaction (group commit): one fsync serves the whole batch. Every writer of the log,
//! this task and the admin transactions alike, goes through `append_leaves` (in
//! `sql.rs`), which writes each entry together with the Merkle nodes it completes.

use std::future::Future;
use std::time::Duration;

use clearance_core::{
    Applied, ExecutionChange, ExecutionRecord, ExecutionStatus, LogAppend, Seal, StartNow, StoreError, StoredCheckpoint,
};
use clearance_model::execution::ExecutionState;
use clearance_model::{ExecutionId, LogIndex, Timestamp};
use tokio::sync::{mpsc, oneshot};

pub(crate) enum Job {
    Append {
        /// The execution `change` applies to.
        id: Option<ExecutionId>,
        entry: LogAppend,
        /// Applied first; if it is refused, this job's entry is not appended and its
        /// reply is the refusal, while the rest of the batch commits.
        change: Option<ExecutionChange>,
        /// Signs the clearance of an allowed decision once the entry's index is known;
        /// the token is stored in the same commit. Taken when the batch is written.
        seal: Option<Seal>,
        /// With an `Authorize` change: start the execution in the same commit, its entry
        /// right after this job's.
        start: Option<StartNow>,
        reply: oneshot::Sender<Result<Applied, StoreError>>,
    },
    /// Store a signed checkpoint. It goes through the writer like everything else, so
    /// under load it waits its turn in a batch instead of failing on a busy database.
    Checkpoint {
        checkpoint: StoredCheckpoint,
        at: Timestamp,
        reply: oneshot::Sender<Result<Applied, StoreError>>,
    },
    /// Record a health check: readiness answers through the same writer and commit as
    /// decisions, so a writer that stopped or cannot commit shows in `/readyz`.
    Health {
        at: Timestamp,
        reply: oneshot::Sender<Result<Applied, StoreError>>,
    },
}

impl Job {
    fn reply(self, result: Result<Applied, StoreError>) {
        let (Self::Append { reply, .. } | Self::Checkpoint { reply, .. } | Self::Health { reply, .. }) = self;
        // The caller may have given up (timeout); nothing to do then.
        let _ = reply.send(result);
    }
}

/// Run until every sender is gone. `write` commits one batch and answers per job.
pub(crate) async fn run<W, F>(mut jobs: mpsc::Receiver<Job>, max_batch: usize, timeout: Duration, write: W)
where
    W: Fn(Vec<Job>) -> F,
    F: Future<Output = (Vec<Job>, Result<Vec<Result<Applied, StoreError>>, StoreError>)>,
{
    while let Some(first) = jobs.recv().await {
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len();
        // A batch that panics (a bug, never expected) is lost like a timed-out one, and
        // the sequencer goes on: one bad batch must not stop every later decision.
        let written = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(write(batch)));
        let (batch, outcome) = match tokio::time::timeout(timeout, written).await {
            Ok(Ok(done)) => done,
            // The batch was dropped with the future: its callers see their replies
            // dropped, which they report as the append failing.
            Ok(Err(_)) => {
                tracing::error!(
                    jobs = size,
                    "log append panicked; its jobs failed and the sequencer goes on"
                );
                continue;
            }
            Err(_) => {
                tracing::error!(jobs = size, "log append timed out after {timeout:?}");
                continue;
            }
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = batch.len(), "log append failed");
        }
        let mut results = match outcome {
            Ok(per_job) => per_job.into_iter(),
            Err(e) => vec![Err(e); batch.len()].into_iter(),
        };
        for job in batch {
            let result = results.next();
            job.reply(result.unwrap_or_else(|| Err(StoreError::Unavailable("lost reply".into()))));
        }
    }
}

/// Whether a connection coming back to its pool may serve again. One still inside a
/// transaction is not: a COMMIT that failed (a full disk) can leave it there for good,
/// since SQLite already rolled back and the driver's ROLLBACK then fails too; reused, it
/// would refuse every later transaction and the log would stay unwritable after the
/// disk was freed. Closing it lets the pool open a fresh one.
pub(crate) fn reusable(conn: &mut impl sqlx::Connection) -> bool {
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("closing a database connection left inside a transaction by a failed write");
    }
    clean
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("database: {e}"))
}

// ---- pieces of a batch both writers share (sql.rs for PostgreSQL, sqlite_writer.rs) ----

/// What a job's seal signed for the entry at `index` (`None` without a seal); an error
/// refuses the job before anything of it is written.
pub(crate) fn seal(seal: &mut Option<Seal>, index: LogIndex) -> Result<Option<String>, StoreError> {
    seal.take()
        .map(|seal| seal(index))
        .transpose()
        .map_err(|e| StoreError::Unavailable(format!("the clearance could not be signed: {e}")))
}

/// The answer to a job that appends no entry.
pub(crate) const fn no_entry(start: u64) -> Applied {
    Applied {
        index: LogIndex(start),
        parent: None,
        clearance: None,
        started: None,
    }
}

/// An execution's row as read for a change: `SELECT` [`STATUS_COLUMNS`].
pub(crate) type StatusRow = (
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// The columns of a [`StatusRow`], in order.
pub(crate) const STATUS_COLUMNS: &str = "state, expires_at, started_at, lease_until, finished_at, exit_code, reason";

pub(crate) fn status(
    (found, expires_at, started_at, lease_until, finished_at, exit_code, reason): StatusRow,
) -> Result<ExecutionStatus, StoreError> {
    Ok(ExecutionStatus {
        state: state(&found)?,
        expires_at: Timestamp(expires_at),
        started_at: started_at.map(Timestamp),
        lease_until: lease_until.map(Timestamp),
        finished_at: finished_at.map(Timestamp),
        exit_code: exit_code
            .map(|c| i32::try_from(c).map_err(|_| corrupt("exit code")))
            .transpose()?,
        reason,
    })
}

pub(crate) fn state(s: &str) -> Result<ExecutionState, StoreError> {
    ExecutionState::parse(s).ok_or_else(|| corrupt("execution state"))
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt {what} in the database"))
}

/// Why a store refuses to open a log whose entry `index` is gone or altered.
pub(crate) fn altered(index: u64) -> StoreError {
    StoreError::Unavailable(format!(
        "log entry {index} is missing or no longer matches its recorded hash: the log was \
         altered; run `clearance log verify` and restore the database from a backup"
    ))
}

/// An execution to insert, and its status when it is started in the same commit.
pub(crate) type NewExecution<'a> = (&'a ExecutionRecord, Option<ExecutionStatus>);

/// For an `Authorize` job: the new execution's status once started, if the job starts
/// it. `Err` refuses the job (the state machine said no).
pub(crate) fn started_status(
    record: &ExecutionRecord,
    start: Option<&StartNow>,
) -> Result<Option<ExecutionStatus>, StoreError> {
    start.map(|s| s.status(record)).transpose()
}

/// What a batch writes besides its execution changes, gathered as its jobs pass: the
/// entries (a start's right after its decision's) and the clearances.
#[derive(Debug, Default)]
pub(crate) struct Accepted<'a> {
    pub(crate) entries: Vec<&'a LogAppend>,
    pub(crate) clearances: Vec<(&'a str, String)>,
}

impl<'a> Accepted<'a> {
    /// The index of the next entry accepted, in a batch that starts at `start`.
    pub(crate) fn next_index(&self, start: u64) -> LogIndex {
        LogIndex(start + self.entries.len() as u64)
    }

    /// Queue what a job that passed writes, and say what it did.
    pub(crate) fn job(
        &mut self,
        id: Option<&'a ExecutionId>,
        entry: &'a LogAppend,
        start: Option<&'a StartNow>,
        (index, parent): (LogIndex, Option<ExecutionState>),
        clearance: Option<String>,
    ) -> Applied {
        if let (Some(id), Some(token)) = (id, &clearance) {
            self.clearances.push((id.as_str(), token.clone()));
        }
        self.entries.push(entry);
        let started = start.map(|s| {
            self.entries.push(&s.entry);
            LogIndex(index.0 + 1)
        });
        Applied {
            index,
            parent,
            clearance,
            started,
        }
    }
}
