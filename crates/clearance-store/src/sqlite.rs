//! `Store` on SQLite.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use clearance_core::{
    Attestation, EnvironmentRecord, ExecutionChange, ExecutionRecord, KeyHash, KeyRecord, LogAppend, PolicyRecord,
    PrincipalRecord, Revocation, Store, StoreError, StoredCheckpoint,
};
use clearance_log::{Hash, NodeId, leaf_hash};
use clearance_model::execution::{RevocationKind, RevocationRecord};
use clearance_model::wire::PolicyBundle;
use clearance_model::{ExecutionId, KeyId, LogIndex, PolicyVersion, PrincipalId, Role, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::sequencer::{self, Job, append_leaves, insert_nodes_for_leaf, unavailable};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a writer waits for the database lock before giving up.
    pub busy_timeout: Duration,
    /// How long an append may take, from queueing to durable, before it is an error.
    pub append_timeout: Duration,
    /// Most entries in one group commit.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(2),
            append_timeout: Duration::from_secs(5),
            max_batch: 512,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    appends: mpsc::Sender<Job>,
    options: StoreOptions,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, apply migrations, and start the
    /// log sequencer. Must be called inside a Tokio runtime.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(options.append_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open database `{}`: {e}", path.display())))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("database migration failed: {e}")))?;
        backfill_nodes(&pool).await?;
        check_leaves(&pool).await?;
        let (appends, jobs) = mpsc::channel(16 * 1024);
        tokio::spawn(sequencer::run(
            pool.clone(),
            jobs,
            options.max_batch,
            options.append_timeout,
        ));
        Ok(Self { pool, appends, options })
    }

    /// Open an existing database for reading only (for `clearance log verify`): nothing is
    /// created, migrated or written.
    pub async fn open_read_only(path: &Path) -> Result<SqlitePool, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false);
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open database `{}`: {e}", path.display())))
    }

    /// Hand an entry (and its change) to the sequencer and wait until it is durable.
    async fn sequence(&self, entry: LogAppend, change: Option<ExecutionChange>) -> Result<LogIndex, StoreError> {
        let (reply, answer) = oneshot::channel();
        let wait = async {
            self.appends
                .send(Job::Append { entry, change, reply })
                .await
                .map_err(|_| StoreError::Unavailable("the log sequencer has stopped".into()))?;
            answer
                .await
                .map_err(|_| StoreError::Unavailable("the log sequencer dropped the append".into()))?
        };
        // The sequencer has its own timeout per batch; this bounds queueing as well.
        match tokio::time::timeout(self.options.append_timeout * 2, wait).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("log append timed out".into())),
        }
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(unavailable)
    }
}

/// Compute the Merkle nodes of entries written before the nodes table existed.
async fn backfill_nodes(pool: &SqlitePool) -> Result<(), StoreError> {
    let leaves: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_nodes WHERE level = 0")
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    let size: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_entries")
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    if leaves >= size {
        return Ok(());
    }
    tracing::info!(
        from = leaves,
        to = size,
        "computing Merkle nodes for existing log entries"
    );
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(unavailable)?;
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT idx, entry FROM log_entries WHERE idx >= ? ORDER BY idx")
        .bind(leaves)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
    for (idx, entry) in rows {
        let idx = u64::try_from(idx).map_err(|_| StoreError::Unavailable("negative log index".into()))?;
        insert_nodes_for_leaf(&mut tx, idx, leaf_hash(&entry)).await?;
    }
    tx.commit().await.map_err(unavailable)
}

/// Refuse a database whose entries no longer hash to the leaves recorded when they were
/// appended: one sequential pass at startup, so an altered log is never served.
async fn check_leaves(pool: &SqlitePool) -> Result<(), StoreError> {
    const PAGE: i64 = 10_000;
    let mut next: i64 = 0;
    loop {
        let rows: Vec<(i64, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT e.idx, e.entry, n.hash FROM log_entries e \
             LEFT JOIN log_nodes n ON n.level = 0 AND n.idx = e.idx \
             WHERE e.idx >= ? ORDER BY e.idx LIMIT ?",
        )
        .bind(next)
        .bind(PAGE)
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(());
        };
        for (idx, entry, leaf) in rows {
            if idx != next || leaf.as_deref() != Some(&leaf_hash(&entry)[..]) {
                return Err(StoreError::Unavailable(format!(
                    "log entry {next} is missing or no longer matches its recorded hash: the log was altered; \
                     run `clearance log verify` and restore the database from a backup"
                )));
            }
            next += 1;
        }
        next = last + 1;
    }
}

fn index_rows(rows: Vec<(i64, Vec<u8>)>) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError> {
    rows.into_iter()
        .map(|(i, e)| {
            u64::try_from(i)
                .map(|i| (LogIndex(i), e))
                .map_err(|_| StoreError::Unavailable("negative log index".into()))
        })
        .collect()
}

fn hash32(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Unavailable("stored hash is not 32 bytes".into()))
}

fn checkpoint_row((size, root, note): (i64, Vec<u8>, String)) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        size: u64::try_from(size).map_err(|_| StoreError::Unavailable("negative checkpoint size".into()))?,
        root: hash32(root)?,
        note,
    })
}

/// Append a governance event in the caller's write transaction and commit both.
async fn commit_with_event(
    mut tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    event: Vec<u8>,
    now: i64,
) -> Result<LogIndex, StoreError> {
    let idx = append_leaves(
        &mut tx,
        &[&LogAppend {
            entry: event,
            execution: None,
        }],
        now,
    )
    .await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(LogIndex(idx))
}

fn roles_json(roles: &[Role]) -> Result<String, StoreError> {
    serde_json::to_string(roles).map_err(|e| StoreError::Unavailable(e.to_string()))
}

fn principal_row(row: &sqlx::sqlite::SqliteRow) -> Result<PrincipalRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Unavailable(format!("corrupt principal row: {what}"));
    let id: String = row.try_get("id").map_err(unavailable)?;
    let roles: String = row.try_get("roles").map_err(unavailable)?;
    Ok(PrincipalRecord {
        id: id.parse().map_err(|_| corrupt("id"))?,
        roles: serde_json::from_str(&roles).map_err(|_| corrupt("roles"))?,
        created_at: Timestamp(row.try_get("created_at").map_err(unavailable)?),
    })
}

fn policy_version(s: &str) -> Result<PolicyVersion, StoreError> {
    PolicyVersion::from_str(s).map_err(|_| StoreError::Unavailable(format!("corrupt policy version `{s}`")))
}

fn conflict_or_unavailable(e: sqlx::Error, what: String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => unavailable(e),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn principal_by_key(&self, hash: &KeyHash) -> Result<Option<(PrincipalRecord, KeyHash)>, StoreError> {
        let row = sqlx::query(
            "SELECT p.id, p.roles, p.created_at, k.key_hash FROM api_keys k \
             JOIN principals p ON p.id = k.principal_id \
             WHERE k.key_hash = ? AND k.revoked_at IS NULL AND p.revoked_at IS NULL",
        )
        .bind(&hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = row.try_get("key_hash").map_err(unavailable)?;
        let stored =
            <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| StoreError::Unavailable("corrupt key hash".into()))?;
        Ok(Some((principal_row(&row)?, KeyHash(stored))))
    }

    async fn principal(&self, id: &PrincipalId) -> Result<Option<PrincipalRecord>, StoreError> {
        let row = sqlx::query("SELECT id, roles, created_at FROM principals WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(principal_row).transpose()
    }

    async fn principal_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, roles, created_at FROM principals ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(principal_row).collect()
    }

    async fn list_keys(&self, principal: &PrincipalId) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, principal_id, created_at, revoked_at FROM api_keys WHERE principal_id = ? ORDER BY created_at, key_id",
        )
        .bind(principal.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let key_id: String = r.try_get("key_id").map_err(unavailable)?;
                let owner: String = r.try_get("principal_id").map_err(unavailable)?;
                Ok(KeyRecord {
                    key_id: key_id
                        .parse()
                        .map_err(|_| StoreError::Unavailable("corrupt key id".into()))?,
                    principal: owner
                        .parse()
                        .map_err(|_| StoreError::Unavailable("corrupt principal id".into()))?,
                    created_at: Timestamp(r.try_get("created_at").map_err(unavailable)?),
                    revoked_at: r
                        .try_get::<Option<i64>, _>("revoked_at")
                        .map_err(unavailable)?
                        .map(Timestamp),
                })
            })
            .collect()
    }

    async fn key_hash_known(&self, hash: &KeyHash) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE key_hash = ?")
            .bind(&hash.0[..])
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn create_principal(&self, principal: &PrincipalRecord, event: Vec<u8>) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO principals (id, roles, created_at) VALUES (?, ?, ?)")
            .bind(principal.id.as_str())
            .bind(roles_json(&principal.roles)?)
            .bind(principal.created_at.seconds())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or_unavailable(e, format!("principal `{}`", principal.id)))?;
        commit_with_event(tx, event, principal.created_at.seconds()).await
    }

    async fn add_key(&self, key: &KeyRecord, hash: &KeyHash, event: Vec<u8>) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO api_keys (key_id, principal_id, key_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(key.key_id.as_str())
            .bind(key.principal.as_str())
            .bind(&hash.0[..])
            .bind(key.created_at.seconds())
            .execute(&mut *tx)
            .await
            // Never name the key in the message: a unique violation on the hash means the
            // same key was supplied twice.
            .map_err(|e| conflict_or_unavailable(e, "that API key".to_owned()))?;
        commit_with_event(tx, event, key.created_at.seconds()).await
    }

    async fn revoke_key(&self, key_id: &KeyId, at: Timestamp, event: Vec<u8>) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL")
            .bind(at.seconds())
            .bind(key_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("unrevoked key `{key_id}`")));
        }
        commit_with_event(tx, event, at.seconds()).await
    }

    async fn save_policy(
        &self,
        version: &PolicyVersion,
        bundle: &PolicyBundle,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO policy_versions (version, schema_text, policies_text, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(version.to_string())
        .bind(&bundle.schema)
        .bind(&bundle.policies)
        .bind(at.seconds())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn policy(&self, version: &PolicyVersion) -> Result<Option<PolicyBundle>, StoreError> {
        let row = sqlx::query("SELECT schema_text, policies_text FROM policy_versions WHERE version = ?")
            .bind(version.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            Ok(PolicyBundle {
                schema: r.try_get(0).map_err(unavailable)?,
                policies: r.try_get(1).map_err(unavailable)?,
            })
        })
        .transpose()
    }

    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.version, v.created_at, a.version IS NOT NULL AS active FROM policy_versions v \
             LEFT JOIN active_policy a ON a.version = v.version ORDER BY v.created_at, v.version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(PolicyRecord {
                    version: policy_version(&r.try_get::<String, _>(0).map_err(unavailable)?)?,
                    created_at: Timestamp(r.try_get(1).map_err(unavailable)?),
                    active: r.try_get(2).map_err(unavailable)?,
                })
            })
            .collect()
    }

    async fn activate_policy(
        &self,
        version: &PolicyVersion,
        at: Timestamp,
        event: Vec<u8>,
    ) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO active_policy (singleton, version, activated_at) VALUES (0, ?, ?) \
             ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, activated_at = excluded.activated_at",
        )
        .bind(version.to_string())
        .bind(at.seconds())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        commit_with_event(tx, event, at.seconds()).await
    }

    async fn active_policy(&self) -> Result<Option<(PolicyVersion, PolicyBundle)>, StoreError> {
        let row = sqlx::query(
            "SELECT v.version, v.schema_text, v.policies_text FROM active_policy a \
             JOIN policy_versions v ON v.version = a.version",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(|r| {
            Ok((
                policy_version(&r.try_get::<String, _>(0).map_err(unavailable)?)?,
                PolicyBundle {
                    schema: r.try_get(1).map_err(unavailable)?,
                    policies: r.try_get(2).map_err(unavailable)?,
                },
            ))
        })
        .transpose()
    }

    async fn append(&self, entry: LogAppend) -> Result<LogIndex, StoreError> {
        self.sequence(entry, None).await
    }

    async fn append_change(&self, entry: LogAppend, change: ExecutionChange) -> Result<LogIndex, StoreError> {
        self.sequence(entry, Some(change)).await
    }

    async fn execution(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        crate::executions::execution(&mut conn, id.as_str()).await
    }

    async fn lineage(&self, id: &ExecutionId) -> Result<(Vec<ExecutionRecord>, Vec<ExecutionRecord>), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        crate::executions::lineage(&mut conn, id.as_str()).await
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<Vec<RevocationRecord>, StoreError> {
        let mut tx = self.write_tx().await?;
        let (records, entries) = crate::executions::revoke(&mut tx, revocation).await?;
        let refs: Vec<&LogAppend> = entries.iter().collect();
        append_leaves(&mut tx, &refs, revocation.time.seconds()).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(records)
    }

    async fn revocations_since(&self, since: u64, limit: u32) -> Result<Vec<RevocationRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        crate::executions::revocations_since(&mut conn, since, limit).await
    }

    async fn latest_revocation(&self) -> Result<u64, StoreError> {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        u64::try_from(seq).map_err(|_| StoreError::Unavailable("negative revocation seq".into()))
    }

    async fn create_environment(
        &self,
        env: &EnvironmentRecord,
        at: Timestamp,
        event: Vec<u8>,
    ) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        crate::environments::insert(&mut tx, env, at).await?;
        commit_with_event(tx, event, at.seconds()).await
    }

    async fn update_environment(&self, env: &EnvironmentRecord, event: Vec<u8>) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        crate::environments::update(&mut tx, env).await?;
        commit_with_event(tx, event, Timestamp::now().seconds()).await
    }

    async fn environment(&self, id: &str) -> Result<Option<EnvironmentRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        Ok(crate::environments::get(&mut conn, Some(id)).await?.pop())
    }

    async fn list_environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        crate::environments::get(&mut conn, None).await
    }

    async fn release_environment(&self, id: &str, event: Vec<u8>) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        crate::environments::release(&mut tx, id).await?;
        commit_with_event(tx, event, Timestamp::now().seconds()).await
    }

    async fn save_challenge(&self, environment: &str, nonce: &str, expires: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        crate::environments::save_challenge(&mut tx, environment, nonce, expires).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn record_attestation(
        &self,
        environment: &str,
        nonce: &str,
        attestation: &Attestation,
        event: Vec<u8>,
    ) -> Result<LogIndex, StoreError> {
        let mut tx = self.write_tx().await?;
        crate::environments::consume_challenge(&mut tx, environment, nonce, attestation.time).await?;
        let idx = append_leaves(
            &mut tx,
            &[&LogAppend {
                entry: event,
                execution: None,
            }],
            attestation.time.seconds(),
        )
        .await?;
        let stored = Attestation {
            log_index: LogIndex(idx),
            ..attestation.clone()
        };
        crate::environments::store_attestation(&mut tx, environment, &stored).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(LogIndex(idx))
    }

    async fn is_revoked(&self, kind: RevocationKind, id: &str) -> Result<bool, StoreError> {
        let hit: Option<i64> = sqlx::query_scalar("SELECT seq FROM revocations WHERE kind = ? AND target = ? LIMIT 1")
            .bind(kind.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(hit.is_some())
    }

    async fn record_clearance(&self, execution: &ExecutionId, token: &str) -> Result<(), StoreError> {
        self.appends
            .try_send(Job::Clearance {
                execution_id: execution.as_str().to_owned(),
                token: token.to_owned(),
            })
            .map_err(|_| StoreError::Unavailable("the log sequencer is full or stopped".into()))
    }

    async fn clearance(&self, execution: &ExecutionId) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT token FROM clearances WHERE execution_id = ?")
            .bind(execution.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn log_size(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        u64::try_from(n).map_err(|_| StoreError::Unavailable("log size out of range".into()))
    }

    async fn log_entries(&self, start: u64, end: u64) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError> {
        let rows = sqlx::query_as("SELECT idx, entry FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx")
            .bind(i64::try_from(start).unwrap_or(i64::MAX))
            .bind(i64::try_from(end).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        index_rows(rows)
    }

    async fn execution_entries(&self, execution: &ExecutionId) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError> {
        let rows = sqlx::query_as("SELECT idx, entry FROM log_entries WHERE execution_id = ? ORDER BY idx")
            .bind(execution.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        index_rows(rows)
    }

    async fn log_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        // One query per chunk (a proof needs about 2 log2 n nodes); row values keep the
        // (level, idx) primary key usable.
        for chunk in ids.chunks(200) {
            let values = vec!["(?, ?)"; chunk.len()].join(", ");
            let sql = format!("SELECT level, idx, hash FROM log_nodes WHERE (level, idx) IN (VALUES {values})");
            let mut query = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(&sql);
            for id in chunk {
                query = query
                    .bind(i64::from(id.level))
                    .bind(i64::try_from(id.index).unwrap_or(i64::MAX));
            }
            for (level, index, hash) in query.fetch_all(&self.pool).await.map_err(unavailable)? {
                let id = NodeId {
                    level: u32::try_from(level).map_err(|_| StoreError::Unavailable("bad node level".into()))?,
                    index: u64::try_from(index).map_err(|_| StoreError::Unavailable("bad node index".into()))?,
                };
                out.insert(id, hash32(hash)?);
            }
        }
        if let Some(missing) = ids.iter().find(|id| !out.contains_key(id)) {
            return Err(StoreError::NotFound(format!(
                "log node ({}, {})",
                missing.level, missing.index
            )));
        }
        Ok(out)
    }

    async fn save_checkpoint(&self, checkpoint: &StoredCheckpoint, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING",
        )
        .bind(i64::try_from(checkpoint.size).unwrap_or(i64::MAX))
        .bind(&checkpoint.root[..])
        .bind(&checkpoint.note)
        .bind(at.seconds())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row: Option<(i64, Vec<u8>, String)> =
            sqlx::query_as("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        row.map(checkpoint_row).transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows: Vec<(i64, Vec<u8>, String)> =
            sqlx::query_as("SELECT size, root, note FROM checkpoints ORDER BY size")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.into_iter().map(checkpoint_row).collect()
    }

    async fn meta_or_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO health (id, checked_at) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at")
            .bind(Timestamp::now().seconds())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}
