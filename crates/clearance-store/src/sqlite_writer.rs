//! The SQLite log writer: one thread owns one connection and writes each group commit
//! with direct calls. sqlx's SQLite driver runs every connection on a worker thread and
//! hands it each statement through a channel, so a batch cost one thread hand-off (two
//! context switches) per statement; here it costs one per batch. It makes the same writes
//! as the PostgreSQL batch in `sql.rs` (row by row here, multi-row there), and the
//! conformance suite holds both backends to the same behaviour.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use clearance_core::{
    Applied, EnvironmentRecord, ExecutionChange, ExecutionRecord, ExecutionStatus, StoreError, StoredCheckpoint,
};

use crate::rows::{ENV_COLUMNS, EXECUTION_COLUMNS, environment_row, execution_row};
use clearance_log::{Hash, NodeId, leaf_hash};
use clearance_model::execution::ExecutionState;
use clearance_model::{ExecutionId, Timestamp};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::sequencer::{
    Accepted, Job, NewExecution, STATUS_COLUMNS, StatusRow, corrupt, no_entry, started_status, status,
};

type Outcome = Result<Vec<Result<Applied, StoreError>>, StoreError>;
type Request = (Vec<Job>, oneshot::Sender<(Vec<Job>, Outcome)>);

/// The handle the sequencer writes through.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    batches: std::sync::mpsc::Sender<Request>,
}

impl Writer {
    /// Start the writer thread for the database at `path` (created and migrated already).
    /// It ends when every handle is gone.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let (batches, requests) = std::sync::mpsc::channel::<Request>();
        let path = path.to_owned();
        // Opened here first, so a database the writer cannot open fails the store's open.
        let conn = open(&path, busy_timeout)?;
        std::thread::Builder::new()
            .name("clearance-log-writer".into())
            .spawn(move || serve(&path, busy_timeout, Some(conn), &requests))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the log writer: {e}")))?;
        Ok(Self { batches })
    }

    /// Write one batch in one transaction: per job, what its append did or the refusal
    /// that kept it out. The jobs come back with the outcome, for their replies.
    pub(crate) async fn write(&self, batch: Vec<Job>) -> (Vec<Job>, Outcome) {
        let (reply, answer) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError((batch, _))) = self.batches.send((batch, reply)) {
            return (batch, Err(StoreError::Unavailable("the log writer has stopped".into())));
        }
        // If the thread died mid-batch the jobs went with it: their callers see their
        // replies dropped, which they report as the append failing.
        answer.await.unwrap_or_else(|_| {
            (
                Vec::new(),
                Err(StoreError::Unavailable("the log writer stopped during a write".into())),
            )
        })
    }
}

fn serve(
    path: &Path,
    busy_timeout: Duration,
    mut conn: Option<Connection>,
    requests: &std::sync::mpsc::Receiver<Request>,
) {
    while let Ok((mut batch, reply)) = requests.recv() {
        let outcome = match conn.take().map_or_else(|| open(path, busy_timeout), Ok) {
            Ok(mut c) => {
                // A panic (a bug, never expected) fails this batch only: the connection,
                // rolled back when dropped, is replaced, and the thread serves on.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_batch(&mut c, &mut batch))) {
                    Ok(outcome) => {
                        conn = reusable(c);
                        outcome
                    }
                    Err(_) => {
                        tracing::error!("the log writer panicked on a batch; it failed and the writer goes on");
                        Err(StoreError::Unavailable("the log writer failed on this batch".into()))
                    }
                }
            }
            Err(e) => Err(e),
        };
        let _ = reply.send((batch, outcome));
    }
}

/// The connection, unless a failed write left it inside a transaction: a COMMIT that
/// failed (a full disk) can leave it there for good, and every later batch would then be
/// refused. A fresh connection is opened for the next batch instead.
fn reusable(conn: Connection) -> Option<Connection> {
    if conn.is_autocommit() {
        return Some(conn);
    }
    let _ = conn.execute_batch("ROLLBACK");
    if conn.is_autocommit() {
        Some(conn)
    } else {
        tracing::warn!("closing the log writer's connection, left inside a transaction by a failed write");
        None
    }
}

fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot open database `{}`: {e}", path.display())))?;
    conn.busy_timeout(busy_timeout).map_err(unavailable)?;
    // As the pool's connections: WAL (a property of the file, already set), every commit
    // synced, foreign keys enforced.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(unavailable)?;
    Ok(conn)
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("database: {e}"))
}

fn int(i: u64) -> Result<i64, StoreError> {
    i64::try_from(i).map_err(|_| StoreError::Unavailable(format!("{i} is out of the database's range")))
}

/// Refuse a database whose entries no longer hash to the leaves recorded when they were
/// appended, as `sql.rs`'s `check_leaves` does on PostgreSQL: one sequential pass at
/// startup, read with direct calls (through sqlx every row would cross threads).
pub(crate) fn check_leaves(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::Unavailable(format!("cannot open database `{}`: {e}", path.display())))?;
    let mut all = conn
        .prepare(
            "SELECT e.idx, e.entry, n.hash FROM log_entries e \
             LEFT JOIN log_nodes n ON n.level = 0 AND n.idx = e.idx ORDER BY e.idx",
        )
        .map_err(unavailable)?;
    let mut rows = all.query([]).map_err(unavailable)?;
    let mut next: u64 = 0;
    while let Some(row) = rows.next().map_err(unavailable)? {
        let idx: i64 = row.get(0).map_err(unavailable)?;
        let entry = row.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(unavailable)?;
        let leaf = row
            .get_ref(2)
            .and_then(|v| Ok(v.as_blob_or_null()?))
            .map_err(unavailable)?;
        if u64::try_from(idx).ok() != Some(next) || leaf != Some(&leaf_hash(entry)[..]) {
            return Err(crate::sequencer::altered(next));
        }
        next += 1;
    }
    Ok(())
}

/// The writes of `sql.rs`'s `write_batch`, in the same order.
fn write_batch(conn: &mut Connection, batch: &mut [Job]) -> Outcome {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let next: i64 = tx
        .query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries", [], |r| r.get(0))
        .map_err(unavailable)?;
    let start = u64::try_from(next).map_err(|_| corrupt("log size"))?;
    let mut accepted = Accepted::default();
    let mut authorized: Vec<NewExecution<'_>> = Vec::new();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        match job {
            Job::Append {
                id,
                entry,
                change,
                seal,
                start: start_now,
                ..
            } => {
                let index = accepted.next_index(start);
                // Signed first: a seal that fails refuses the job before anything of it
                // is written.
                let clearance = match crate::sequencer::seal(seal, index) {
                    Ok(token) => token,
                    Err(refused) => {
                        results.push(Err(refused));
                        continue;
                    }
                };
                let applied = match (&*id, &*change) {
                    // Inserted together after the loop, as in `sql.rs`.
                    (Some(_), Some(ExecutionChange::Authorize(record))) => {
                        match started_status(record, start_now.as_ref()) {
                            Ok(started) => authorized.push((&**record, started)),
                            Err(refused) => {
                                results.push(Err(refused));
                                continue;
                            }
                        }
                        match &record.parent {
                            Some(parent) => Ok(execution_state(&tx, parent.as_str())?),
                            None => Ok(None),
                        }
                    }
                    (Some(id), Some(change)) => apply_change(&tx, id, change)?,
                    _ => Ok(None),
                };
                let parent = match applied {
                    Ok(parent) => parent,
                    Err(refused) => {
                        results.push(Err(refused));
                        continue;
                    }
                };
                let applied = accepted.job(id.as_ref(), entry, start_now.as_ref(), (index, parent), clearance);
                results.push(Ok(applied));
            }
            Job::Checkpoint { checkpoint, at, .. } => {
                insert_checkpoint(&tx, checkpoint, *at)?;
                results.push(Ok(no_entry(start)));
            }
            Job::Health { at, .. } => {
                tx.prepare_cached(
                    "INSERT INTO health (id, checked_at) VALUES (0, ?1) \
                     ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                )
                .and_then(|mut s| s.execute(params![at.seconds()]))
                .map_err(unavailable)?;
                results.push(Ok(no_entry(start)));
            }
        }
    }
    for (record, started) in authorized {
        insert_execution(&tx, record, started.as_ref())?;
    }
    let Accepted { entries, clearances } = accepted;
    if !entries.is_empty() {
        let mut insert = tx
            .prepare_cached("INSERT INTO log_entries (idx, entry, appended_at, execution_id) VALUES (?1, ?2, ?3, ?4)")
            .map_err(unavailable)?;
        for (i, e) in entries.iter().enumerate() {
            insert
                .execute(params![
                    int(start + i as u64)?,
                    e.entry,
                    e.time.seconds(),
                    e.execution.as_ref().map(ExecutionId::as_str)
                ])
                .map_err(unavailable)?;
        }
        drop(insert);
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(&e.entry)).collect();
        add_nodes(&tx, start, &leaves)?;
    }
    if !clearances.is_empty() {
        let mut insert = tx
            .prepare_cached("INSERT INTO clearances (execution_id, token) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
            .map_err(unavailable)?;
        for (id, token) in &clearances {
            insert.execute(params![id, token]).map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(results)
}

/// Store the nodes that leaves appended at `start` complete, from the tree's right edge.
fn add_nodes(tx: &rusqlite::Transaction<'_>, start: u64, leaves: &[Hash]) -> Result<(), StoreError> {
    let mut edge = HashMap::new();
    let mut select = tx
        .prepare_cached("SELECT hash FROM log_nodes WHERE level = ?1 AND idx = ?2")
        .map_err(unavailable)?;
    for id in clearance_log::frontier(start) {
        let hash: Option<Vec<u8>> = select
            .query_row(params![i64::from(id.level), int(id.index)?], |r| r.get(0))
            .optional()
            .map_err(unavailable)?;
        let hash: Hash = hash
            .ok_or_else(|| StoreError::NotFound(format!("log node ({}, {})", id.level, id.index)))?
            .try_into()
            .map_err(|_| corrupt("hash"))?;
        edge.insert(id, hash);
    }
    let nodes = clearance_log::append_nodes(start, &edge, leaves)
        .map_err(|id: NodeId| StoreError::Unavailable(format!("log node ({}, {}) is missing", id.level, id.index)))?;
    let mut insert = tx
        .prepare_cached("INSERT INTO log_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
        .map_err(unavailable)?;
    for (id, hash) in nodes {
        insert
            .execute(params![i64::from(id.level), int(id.index)?, &hash[..]])
            .map_err(unavailable)?;
    }
    Ok(())
}

fn insert_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    checkpoint: &StoredCheckpoint,
    at: Timestamp,
) -> Result<(), StoreError> {
    let size = int(checkpoint.size)?;
    tx.prepare_cached(
        "INSERT INTO checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (size) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![size, &checkpoint.root[..], checkpoint.note, at.seconds()]))
    .map_err(unavailable)?;
    Ok(())
}

fn insert_execution(
    tx: &rusqlite::Transaction<'_>,
    r: &ExecutionRecord,
    started: Option<&ExecutionStatus>,
) -> Result<(), StoreError> {
    let request = serde_json::json!({ "arguments": r.arguments, "context": r.context }).to_string();
    let delegation = r
        .delegation
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO executions (id, principal_id, parent_id, root_principal, depth, action, resource_type, \
             resource_id, request, arguments_digest, environment, delegation, kid, policy_version, issued_at, \
             expires_at, state, started_at, lease_until) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )
        .map_err(unavailable)?;
    insert
        .execute(params![
            r.id.as_str(),
            r.principal.as_str(),
            r.parent.as_ref().map(ExecutionId::as_str),
            r.root_principal.as_str(),
            i64::from(r.depth),
            r.action,
            r.resource.kind,
            r.resource.id,
            request,
            r.arguments_digest.to_string(),
            r.environment,
            delegation,
            r.kid,
            r.policy_version.to_string(),
            r.issued_at.seconds(),
            r.expires_at.seconds(),
            started.map_or(r.state, |s| s.state).as_str(),
            started.and_then(|s| s.started_at).map(Timestamp::seconds),
            started.and_then(|s| s.lease_until).map(Timestamp::seconds),
        ])
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Exists(format!("execution `{}`", r.id)),
            _ => unavailable(e),
        })?;
    Ok(())
}

fn execution_state(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<Option<ExecutionState>, StoreError> {
    let found: Option<String> = tx
        .prepare_cached("SELECT state FROM executions WHERE id = ?1")
        .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    found.as_deref().map(crate::sequencer::state).transpose()
}

/// One change of an existing execution, as `sql.rs`'s `apply_change`: the outer error is
/// storage failing, the inner one the change refused (nothing written).
fn apply_change(
    tx: &rusqlite::Transaction<'_>,
    id: &ExecutionId,
    change: &ExecutionChange,
) -> Result<Result<Option<ExecutionState>, StoreError>, StoreError> {
    let row: Option<StatusRow> = tx
        .prepare_cached(&format!("SELECT {STATUS_COLUMNS} FROM executions WHERE id = ?1"))
        .and_then(|mut s| {
            s.query_row(params![id.as_str()], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .optional()
        })
        .map_err(unavailable)?;
    let Some(row) = row else {
        return Ok(Err(StoreError::NotFound(format!("execution `{id}`"))));
    };
    let current = status(row)?;
    let next = match change.next(&current) {
        Ok(next) => next,
        Err(refused) => return Ok(Err(refused)),
    };
    tx.prepare_cached(
        "UPDATE executions SET state = ?1, started_at = ?2, lease_until = ?3, finished_at = ?4, \
         exit_code = ?5, reason = ?6 WHERE id = ?7",
    )
    .and_then(|mut s| {
        s.execute(params![
            next.state.as_str(),
            next.started_at.map(Timestamp::seconds),
            next.lease_until.map(Timestamp::seconds),
            next.finished_at.map(Timestamp::seconds),
            next.exit_code.map(i64::from),
            next.reason,
            id.as_str()
        ])
    })
    .map_err(unavailable)?;
    Ok(Ok(None))
}

/// The reads on the decision path and the log's read side, made with direct calls on the
/// calling task's thread: an environment or a parent execution by primary key, the log's
/// size, a proof's 2 log2 n tree nodes. Microseconds from SQLite's page cache, less than
/// a hand-off to sqlx's worker thread and back, and WAL readers never wait for the
/// writer. Connections are opened on demand and a few kept for reuse.
#[derive(Debug)]
pub(crate) struct DirectReads {
    path: std::path::PathBuf,
    busy_timeout: Duration,
    idle: std::sync::Mutex<Vec<Connection>>,
    /// The point reads' statements, built once rather than on every decision.
    environment_sql: String,
    execution_sql: String,
}

/// Connections kept between reads: enough for the runtime's workers.
const IDLE_READERS: usize = 4;

impl DirectReads {
    pub(crate) fn new(path: &Path, busy_timeout: Duration) -> Self {
        Self {
            path: path.to_owned(),
            busy_timeout,
            idle: std::sync::Mutex::default(),
            environment_sql: format!("SELECT {ENV_COLUMNS} FROM environments WHERE id = ?1"),
            execution_sql: format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"),
        }
    }

    fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let idle = || self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let reused = idle().pop();
        let conn = match reused {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| StoreError::Unavailable(format!("cannot open database `{}`: {e}", self.path.display())))?;
                c.busy_timeout(self.busy_timeout).map_err(unavailable)?;
                c.execute_batch("PRAGMA query_only = ON;").map_err(unavailable)?;
                c
            }
        };
        let out = read(&conn);
        // A connection that failed is not trusted again.
        if out.is_ok() {
            let mut idle = idle();
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
        out
    }

    /// The number of entries committed.
    pub(crate) fn log_size(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let next: i64 = c
                .prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(unavailable)?;
            u64::try_from(next).map_err(|_| corrupt("log size"))
        })
    }

    pub(crate) fn environment(&self, id: &str) -> Result<Option<EnvironmentRecord>, StoreError> {
        self.one(&self.environment_sql, id, |r| environment_row(r))
    }

    pub(crate) fn execution(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        self.one(&self.execution_sql, id.as_str(), |r| execution_row(r))
    }

    /// The row `sql` finds for `key`, if any, parsed by `parse`.
    fn one<T>(
        &self,
        sql: &str,
        key: &str,
        parse: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached(sql).map_err(unavailable)?;
            let mut rows = statement.query(params![key]).map_err(unavailable)?;
            match rows.next().map_err(unavailable)? {
                Some(row) => parse(row).map(Some),
                None => Ok(None),
            }
        })
    }

    /// The nodes asked for; a missing one is `NotFound`.
    pub(crate) fn log_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        self.with(|c| {
            let mut one = c
                .prepare_cached("SELECT hash FROM log_nodes WHERE level = ?1 AND idx = ?2")
                .map_err(unavailable)?;
            let mut out = HashMap::with_capacity(ids.len());
            for id in ids {
                let hash: Option<Vec<u8>> = one
                    .query_row(params![id.level, int(id.index)?], |r| r.get(0))
                    .optional()
                    .map_err(unavailable)?;
                let Some(hash) = hash else {
                    return Err(StoreError::NotFound(format!("log node ({}, {})", id.level, id.index)));
                };
                out.insert(*id, Hash::try_from(hash).map_err(|_| corrupt("node hash"))?);
            }
            Ok(out)
        })
    }
}
