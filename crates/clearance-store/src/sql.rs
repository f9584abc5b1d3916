//! The SQL both backends run, written once. `store_impl!` expands it for one sqlx
//! database type and one store type, implementing every port of `clearance_core`: the
//! statements use `$N` placeholders, which SQLite and PostgreSQL both bind by number, and
//! only column types both share (64-bit integers, text, bytes).
//!
//! The database handle type (`$handle`, what the sequencer task keeps) provides:
//! - `pool: sqlx::Pool<DB>`;
//! - `async fn write_tx(&self) -> Result<Transaction<'static, DB>, StoreError>`: a write
//!   transaction that already holds the log's write lock (SQLite: `BEGIN IMMEDIATE`;
//!   PostgreSQL: a transaction-scoped advisory lock), so log indexes and revocation
//!   sequence numbers are assigned in commit order, one writer at a time;
//! - `async fn announce(conn, change: SharedChange)`: tell other nodes, on commit.
//!
//! The store type provides `db: $handle`, `appends: mpsc::Sender<Job>`,
//! `options: StoreOptions`, `async fn hold_checkpointer_role(&self)` and
//! `fn subscribe_changes(&self)` (the cluster port).
//!
//! A macro rather than generic functions because sqlx's encode and decode bounds would
//! have to be repeated on every function; each expansion is type-checked on its own.

macro_rules! store_impl {
    ($store:ty, $handle:ty, $db:ty) => {
        use std::collections::HashMap;

        use async_trait::async_trait;
        use clearance_core::{
            Applied, Attestation, ChallengeRefusal, ClusterPort, EnvironmentPort, EnvironmentRecord, ExecutionChange,
            ExecutionPort, ExecutionRecord, KeyHash, KeyRecord, LogAppend, LogPort, PolicyPort,
            PolicyRecord, PrincipalPort, PrincipalRecord, RevocationTx, Seal, SharedChange, StartNow, StoreError,
            StoredCheckpoint,
        };
        use clearance_log::{Hash, NodeId, leaf_hash};
        use clearance_model::execution::{ExecutionState, RevocationKind, RevocationRecord};
        use clearance_model::wire::PolicyBundle;
        use clearance_model::{ExecutionId, KeyId, LogIndex, PolicyVersion, PrincipalId, Timestamp};
        use sqlx::Row as _;
        use tokio::sync::oneshot;

        use crate::rows::{
            ENV_COLUMNS, EXECUTION_COLUMNS, environment_row, execution_row, policy_version, uint,
        };
        use crate::sequencer::{Accepted, Job, NewExecution, no_entry, started_status, state, unavailable};


        type Conn = <$db as sqlx::Database>::Connection;
        type DbRow = <$db as sqlx::Database>::Row;

        fn corrupt(what: &str) -> StoreError {
            StoreError::Unavailable(format!("corrupt {what} in the database"))
        }

        fn int(i: u64) -> Result<i64, StoreError> {
            i64::try_from(i).map_err(|_| StoreError::Unavailable(format!("{i} is out of the database's range")))
        }

        fn json(v: &impl serde::Serialize) -> Result<String, StoreError> {
            serde_json::to_string(v).map_err(|e| StoreError::Unavailable(e.to_string()))
        }

        fn unique_or(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
            match &e {
                sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Exists(what()),
                _ => unavailable(e),
            }
        }

        fn hash32(bytes: Vec<u8>) -> Result<Hash, StoreError> {
            bytes.try_into().map_err(|_| corrupt("hash"))
        }

        // ---- the log -------------------------------------------------------------------

        /// The next free index. Inside a write transaction, so no other writer takes it.
        async fn log_size_in(conn: &mut Conn) -> Result<u64, StoreError> {
            let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
                .fetch_one(&mut *conn)
                .await
                .map_err(unavailable)?;
            uint(next, "log size")
        }

        /// The nodes asked for, one query per chunk; a missing one is `NotFound`.
        async fn nodes_in(conn: &mut Conn, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
            let mut out = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(100) {
                let clauses: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(level = ${} AND idx = ${})", 2 * i + 1, 2 * i + 2))
                    .collect();
                let sql = format!("SELECT level, idx, hash FROM log_nodes WHERE {}", clauses.join(" OR "));
                let mut query = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(&sql);
                for id in chunk {
                    query = query.bind(i64::from(id.level)).bind(int(id.index)?);
                }
                for (level, index, hash) in query.fetch_all(&mut *conn).await.map_err(unavailable)? {
                    let id = NodeId {
                        level: u32::try_from(level).map_err(|_| corrupt("node level"))?,
                        index: uint(index, "node index")?,
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

        /// Append entries at the next indexes with every Merkle node they complete, inside
        /// the caller's write transaction: the right edge of the tree is read once and the
        /// new nodes computed in memory. Returns the first index.
        pub(crate) async fn append_leaves(conn: &mut Conn, entries: &[&LogAppend]) -> Result<u64, StoreError> {
            let start = log_size_in(conn).await?;
            append_leaves_at(conn, start, entries).await?;
            Ok(start)
        }

        /// Write `entries` from index `start` (the log's size, read in this transaction):
        /// all of them in one statement per 200, then the Merkle nodes they complete.
        async fn append_leaves_at(conn: &mut Conn, start: u64, entries: &[&LogAppend]) -> Result<(), StoreError> {
            if entries.is_empty() {
                return Ok(());
            }
            let mut next = start;
            for chunk in entries.chunks(200) {
                let sql = format!(
                    "INSERT INTO log_entries (idx, entry, appended_at, execution_id) VALUES {}",
                    placeholders(chunk.len(), 4)
                );
                let mut query = sqlx::query(&sql);
                for e in chunk {
                    query = query
                        .bind(int(next)?)
                        .bind(&e.entry)
                        .bind(e.time.seconds())
                        .bind(e.execution.as_ref().map(ExecutionId::as_str));
                    next += 1;
                }
                query.execute(&mut *conn).await.map_err(unavailable)?;
            }
            let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(&e.entry)).collect();
            add_nodes(conn, start, &leaves).await
        }

        /// `($1, $2), ($3, $4), ...`: `rows` rows of `columns` numbered placeholders.
        fn placeholders(rows: usize, columns: usize) -> String {
            let mut out = String::with_capacity(rows * columns * 5);
            for row in 0..rows {
                if row > 0 {
                    out.push_str(", ");
                }
                out.push('(');
                for column in 0..columns {
                    if column > 0 {
                        out.push_str(", ");
                    }
                    out.push('$');
                    out.push_str(&(row * columns + column + 1).to_string());
                }
                out.push(')');
            }
            out
        }

        /// Store the nodes that leaves appended at `start` complete.
        pub(crate) async fn add_nodes(conn: &mut Conn, start: u64, leaves: &[Hash]) -> Result<(), StoreError> {
            let edge = nodes_in(conn, &clearance_log::frontier(start)).await?;
            let nodes = clearance_log::append_nodes(start, &edge, leaves)
                .map_err(|id| StoreError::Unavailable(format!("log node ({}, {}) is missing", id.level, id.index)))?;
            for chunk in nodes.chunks(200) {
                let sql = format!("INSERT INTO log_nodes (level, idx, hash) VALUES {}", placeholders(chunk.len(), 3));
                let mut query = sqlx::query(&sql);
                for (id, hash) in chunk {
                    query = query.bind(i64::from(id.level)).bind(int(id.index)?).bind(hash.to_vec());
                }
                query.execute(&mut *conn).await.map_err(unavailable)?;
            }
            Ok(())
        }

        async fn insert_checkpoint(conn: &mut Conn, checkpoint: &StoredCheckpoint, at: Timestamp) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (size) DO NOTHING",
            )
            .bind(int(checkpoint.size)?)
            .bind(checkpoint.root.to_vec())
            .bind(checkpoint.note.as_str())
            .bind(at.seconds())
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
            Ok(())
        }

        /// One transaction for a whole batch of appends (group commit). Returns one result
        /// per job, in order: what its append did, or the refusal that kept it out.
        pub(crate) async fn write_batch(
            db: &$handle,
            batch: &mut [Job],
        ) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
            let mut tx = db.write_tx().await?;
            let start = log_size_in(&mut tx).await?;
            let mut accepted = Accepted::default();
            let mut authorized: Vec<NewExecution<'_>> = Vec::new();
            let mut results = Vec::with_capacity(batch.len());
            for job in batch.iter_mut() {
                match job {
                    Job::Append { id, entry, change, seal, start: start_now, .. } => {
                        let index = accepted.next_index(start);
                        // Signed first: a seal that fails refuses the job before anything
                        // of it is written.
                        let clearance = match crate::sequencer::seal(seal, index) {
                            Ok(token) => token,
                            Err(refused) => {
                                results.push(Err(refused));
                                continue;
                            }
                        };
                        let applied = match (&*id, &*change) {
                            // Authorizations are inserted together after the loop: nothing
                            // later in the batch can refer to them, since their clearances
                            // leave only after the commit.
                            (Some(_), Some(ExecutionChange::Authorize(record))) => {
                                match started_status(record, start_now.as_ref()) {
                                    Ok(started) => authorized.push((&**record, started)),
                                    Err(refused) => {
                                        results.push(Err(refused));
                                        continue;
                                    }
                                }
                                match &record.parent {
                                    Some(parent) => Ok(execution_state(&mut tx, parent.as_str()).await?),
                                    None => Ok(None),
                                }
                            }
                            (Some(id), Some(change)) => apply_change(&mut tx, id, change).await?,
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
                        insert_checkpoint(&mut tx, checkpoint, *at).await?;
                        results.push(Ok(no_entry(start)));
                    }
                    Job::Health { at, .. } => {
                        sqlx::query(
                            "INSERT INTO health (id, checked_at) VALUES (0, $1) \
                             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                        )
                        .bind(at.seconds())
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                        results.push(Ok(no_entry(start)));
                    }
                }
            }
            insert_executions(&mut tx, &authorized).await?;
            append_leaves_at(&mut tx, start, &accepted.entries).await?;
            for chunk in accepted.clearances.chunks(200) {
                let sql = format!(
                    "INSERT INTO clearances (execution_id, token) VALUES {} ON CONFLICT DO NOTHING",
                    placeholders(chunk.len(), 2)
                );
                let mut query = sqlx::query(&sql);
                for (id, token) in chunk {
                    query = query.bind(*id).bind(token.as_str());
                }
                query.execute(&mut *tx).await.map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(results)
        }

        /// Hand an entry (and its change) to the sequencer and wait until it is durable.
        async fn sequence(
            store: &$store,
            id: Option<ExecutionId>,
            entry: LogAppend,
            change: Option<ExecutionChange>,
            seal: Option<Seal>,
            start: Option<StartNow>,
        ) -> Result<Applied, StoreError> {
            let (reply, answer) = oneshot::channel();
            let job = Job::Append {
                id,
                entry,
                change,
                seal,
                start,
                reply,
            };
            submit(store, job, answer).await
        }

        /// Queue a job for the writer and wait for its answer.
        async fn submit(
            store: &$store,
            job: Job,
            answer: oneshot::Receiver<Result<Applied, StoreError>>,
        ) -> Result<Applied, StoreError> {
            let wait = async {
                store
                    .appends
                    .send(job)
                    .await
                    .map_err(|_| StoreError::Unavailable("the log sequencer has stopped".into()))?;
                answer
                    .await
                    .map_err(|_| StoreError::Unavailable("the log sequencer dropped the append".into()))?
            };
            // The sequencer bounds each batch; this bounds queueing as well.
            match tokio::time::timeout(store.options.append_timeout * 2, wait).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable("log append timed out".into())),
            }
        }

        /// Append a governance event in the caller's write transaction and commit both.
        async fn commit_with_event(
            mut tx: sqlx::Transaction<'static, $db>,
            event: &LogAppend,
        ) -> Result<LogIndex, StoreError> {
            let idx = append_leaves(&mut tx, &[event]).await?;
            tx.commit().await.map_err(unavailable)?;
            Ok(LogIndex(idx))
        }

        fn index_rows(rows: Vec<(i64, Vec<u8>)>) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError> {
            rows.into_iter()
                .map(|(i, e)| Ok((LogIndex(uint(i, "log index")?), e)))
                .collect()
        }

        fn checkpoint_row((size, root, note): (i64, Vec<u8>, String)) -> Result<StoredCheckpoint, StoreError> {
            Ok(StoredCheckpoint {
                size: uint(size, "checkpoint size")?,
                root: hash32(root)?,
                note,
            })
        }

        /// Refuse a database whose entries no longer hash to the leaves recorded when
        /// they were appended: one sequential pass at startup, so an altered log is never
        /// served.
        pub(crate) async fn check_leaves(conn: &mut Conn) -> Result<(), StoreError> {
            const PAGE: u64 = 10_000;
            let mut next: u64 = 0;
            loop {
                let rows = entries_with_leaves(conn, next, PAGE).await?;
                if rows.is_empty() {
                    return Ok(());
                }
                for (idx, entry, leaf) in rows {
                    if idx != next || leaf.as_deref() != Some(&leaf_hash(&entry)[..]) {
                        return Err(crate::sequencer::altered(next));
                    }
                    next += 1;
                }
            }
        }

        /// Entries `[start, start + limit)` with the leaf hash recorded at append time,
        /// for `clearance log verify`.
        pub(crate) async fn entries_with_leaves(
            conn: &mut Conn,
            start: u64,
            limit: u64,
        ) -> Result<Vec<(u64, Vec<u8>, Option<Vec<u8>>)>, StoreError> {
            let rows: Vec<(i64, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT e.idx, e.entry, n.hash FROM log_entries e \
                 LEFT JOIN log_nodes n ON n.level = 0 AND n.idx = e.idx \
                 WHERE e.idx >= $1 ORDER BY e.idx LIMIT $2",
            )
            .bind(int(start)?)
            .bind(int(limit)?)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
            rows.into_iter()
                .map(|(i, e, h)| Ok((uint(i, "log index")?, e, h)))
                .collect()
        }

        pub(crate) async fn all_checkpoints(conn: &mut Conn) -> Result<Vec<StoredCheckpoint>, StoreError> {
            let rows: Vec<(i64, Vec<u8>, String)> =
                sqlx::query_as("SELECT size, root, note FROM checkpoints ORDER BY size")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(unavailable)?;
            rows.into_iter().map(checkpoint_row).collect()
        }

        pub(crate) async fn meta(conn: &mut Conn, key: &str) -> Result<Option<String>, StoreError> {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)
        }

        #[async_trait]
        impl LogPort for $store {
            async fn append(&self, entry: LogAppend) -> Result<LogIndex, StoreError> {
                sequence(self, None, entry, None, None, None).await.map(|a| a.index)
            }

            async fn append_change(
                &self,
                id: &ExecutionId,
                entry: LogAppend,
                change: ExecutionChange,
            ) -> Result<Applied, StoreError> {
                sequence(self, Some(id.clone()), entry, Some(change), None, None).await
            }

            async fn append_sealed(
                &self,
                id: &ExecutionId,
                entry: LogAppend,
                change: ExecutionChange,
                seal: Seal,
                start: Option<StartNow>,
            ) -> Result<Applied, StoreError> {
                sequence(self, Some(id.clone()), entry, Some(change), Some(seal), start).await
            }

            async fn log_size(&self) -> Result<u64, StoreError> {
                if let Some(direct) = self.db.direct_reads() {
                    return direct.log_size();
                }
                let mut conn = self.db.pool.acquire().await.map_err(unavailable)?;
                log_size_in(&mut conn).await
            }

            async fn log_entries(&self, start: u64, end: u64) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError> {
                let rows = sqlx::query_as("SELECT idx, entry FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                    .bind(i64::try_from(start).unwrap_or(i64::MAX))
                    .bind(i64::try_from(end).unwrap_or(i64::MAX))
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                index_rows(rows)
            }

            async fn execution_entries(&self, execution: &ExecutionId) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError> {
                let rows = sqlx::query_as("SELECT idx, entry FROM log_entries WHERE execution_id = $1 ORDER BY idx")
                    .bind(execution.as_str())
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                index_rows(rows)
            }

            async fn log_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
                if let Some(direct) = self.db.direct_reads() {
                    return direct.log_nodes(ids);
                }
                let mut conn = self.db.pool.acquire().await.map_err(unavailable)?;
                nodes_in(&mut conn, ids).await
            }

            async fn save_checkpoint(&self, checkpoint: &StoredCheckpoint, at: Timestamp) -> Result<(), StoreError> {
                let (reply, answer) = oneshot::channel();
                let job = Job::Checkpoint {
                    checkpoint: checkpoint.clone(),
                    at,
                    reply,
                };
                submit(self, job, answer).await.map(|_| ())
            }

            async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
                let row: Option<(i64, Vec<u8>, String)> =
                    sqlx::query_as("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1")
                        .fetch_optional(&self.db.pool)
                        .await
                        .map_err(unavailable)?;
                row.map(checkpoint_row).transpose()
            }

            async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
                let mut conn = self.db.pool.acquire().await.map_err(unavailable)?;
                all_checkpoints(&mut conn).await
            }

            async fn clearance(&self, execution: &ExecutionId) -> Result<Option<String>, StoreError> {
                sqlx::query_scalar("SELECT token FROM clearances WHERE execution_id = $1")
                    .bind(execution.as_str())
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(unavailable)
            }
        }

        // ---- principals, keys and policies ---------------------------------------------

        fn principal_row(row: &DbRow) -> Result<PrincipalRecord, StoreError> {
            let id: String = row.try_get("id").map_err(unavailable)?;
            let roles: String = row.try_get("roles").map_err(unavailable)?;
            Ok(PrincipalRecord {
                id: id.parse().map_err(|_| corrupt("principal id"))?,
                roles: serde_json::from_str(&roles).map_err(|_| corrupt("principal roles"))?,
                created_at: Timestamp(row.try_get("created_at").map_err(unavailable)?),
            })
        }

        #[async_trait]
        impl PrincipalPort for $store {
            async fn principal_by_key(&self, hash: &KeyHash) -> Result<Option<(PrincipalRecord, KeyHash)>, StoreError> {
                let row = sqlx::query(
                    "SELECT p.id, p.roles, p.created_at, k.key_hash FROM api_keys k \
                     JOIN principals p ON p.id = k.principal_id \
                     WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND p.revoked_at IS NULL",
                )
                .bind(hash.0.to_vec())
                .fetch_optional(&self.db.pool)
                .await
                .map_err(unavailable)?;
                let Some(row) = row else { return Ok(None) };
                let stored: Vec<u8> = row.try_get("key_hash").map_err(unavailable)?;
                let stored = <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| corrupt("key hash"))?;
                Ok(Some((principal_row(&row)?, KeyHash(stored))))
            }

            async fn principal(&self, id: &PrincipalId) -> Result<Option<PrincipalRecord>, StoreError> {
                let row = sqlx::query("SELECT id, roles, created_at FROM principals WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                row.as_ref().map(principal_row).transpose()
            }

            async fn principal_count(&self) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals")
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                uint(n, "principal count")
            }

            async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
                let rows = sqlx::query("SELECT id, roles, created_at FROM principals ORDER BY id")
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                rows.iter().map(principal_row).collect()
            }

            async fn list_keys(&self, principal: &PrincipalId) -> Result<Vec<KeyRecord>, StoreError> {
                let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT key_id, principal_id, created_at, revoked_at FROM api_keys WHERE principal_id = $1 \
                     ORDER BY created_at, key_id",
                )
                .bind(principal.as_str())
                .fetch_all(&self.db.pool)
                .await
                .map_err(unavailable)?;
                rows.into_iter()
                    .map(|(key_id, owner, created_at, revoked_at)| {
                        Ok(KeyRecord {
                            key_id: key_id.parse().map_err(|_| corrupt("key id"))?,
                            principal: owner.parse().map_err(|_| corrupt("principal id"))?,
                            created_at: Timestamp(created_at),
                            revoked_at: revoked_at.map(Timestamp),
                        })
                    })
                    .collect()
            }

            async fn key_hash_known(&self, hash: &KeyHash) -> Result<bool, StoreError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE key_hash = $1")
                    .bind(hash.0.to_vec())
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(n > 0)
            }

            async fn create_principal(&self, principal: &PrincipalRecord, event: LogAppend) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                sqlx::query("INSERT INTO principals (id, roles, created_at) VALUES ($1, $2, $3)")
                    .bind(principal.id.as_str())
                    .bind(json(&principal.roles)?)
                    .bind(principal.created_at.seconds())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| unique_or(e, || format!("principal `{}`", principal.id)))?;
                commit_with_event(tx, &event).await
            }

            async fn add_key(&self, key: &KeyRecord, hash: &KeyHash, event: LogAppend) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                sqlx::query("INSERT INTO api_keys (key_id, principal_id, key_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(key.key_id.as_str())
                    .bind(key.principal.as_str())
                    .bind(hash.0.to_vec())
                    .bind(key.created_at.seconds())
                    .execute(&mut *tx)
                    .await
                    // Never name the key: a unique violation on the hash means the same
                    // key was supplied twice.
                    .map_err(|e| unique_or(e, || "that API key".to_owned()))?;
                commit_with_event(tx, &event).await
            }

            async fn revoke_key(&self, key_id: &KeyId, event: LogAppend) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL")
                    .bind(event.time.seconds())
                    .bind(key_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("unrevoked key `{key_id}`")));
                }
                <$handle>::announce(&mut tx, SharedChange::KeyRevoked).await?;
                commit_with_event(tx, &event).await
            }

            async fn revoked_key_count(&self) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NOT NULL")
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                uint(n, "revoked key count")
            }
        }

        #[async_trait]
        impl PolicyPort for $store {
            async fn save_policy(
                &self,
                version: &PolicyVersion,
                bundle: &PolicyBundle,
                at: Timestamp,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO policy_versions (version, schema_text, policies_text, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING",
                )
                .bind(version.to_string())
                .bind(bundle.schema.as_str())
                .bind(bundle.policies.as_str())
                .bind(at.seconds())
                .execute(&self.db.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn policy(&self, version: &PolicyVersion) -> Result<Option<PolicyBundle>, StoreError> {
                let row: Option<(String, String)> =
                    sqlx::query_as("SELECT schema_text, policies_text FROM policy_versions WHERE version = $1")
                        .bind(version.to_string())
                        .fetch_optional(&self.db.pool)
                        .await
                        .map_err(unavailable)?;
                Ok(row.map(|(schema, policies)| PolicyBundle { schema, policies }))
            }

            async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
                let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
                    "SELECT v.version, v.created_at, a.version FROM policy_versions v \
                     LEFT JOIN active_policy a ON a.version = v.version ORDER BY v.created_at, v.version",
                )
                .fetch_all(&self.db.pool)
                .await
                .map_err(unavailable)?;
                rows.into_iter()
                    .map(|(version, created_at, active)| {
                        Ok(PolicyRecord {
                            version: policy_version(&version)?,
                            created_at: Timestamp(created_at),
                            active: active.is_some(),
                        })
                    })
                    .collect()
            }

            async fn activate_policy(&self, version: &PolicyVersion, event: LogAppend) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                sqlx::query(
                    "INSERT INTO active_policy (singleton, version, activated_at) VALUES (0, $1, $2) \
                     ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, \
                     activated_at = excluded.activated_at",
                )
                .bind(version.to_string())
                .bind(event.time.seconds())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                <$handle>::announce(&mut tx, SharedChange::PolicyActivated).await?;
                commit_with_event(tx, &event).await
            }

            async fn active_policy(&self) -> Result<Option<(PolicyVersion, PolicyBundle)>, StoreError> {
                let row: Option<(String, String, String)> = sqlx::query_as(
                    "SELECT v.version, v.schema_text, v.policies_text FROM active_policy a \
                     JOIN policy_versions v ON v.version = a.version",
                )
                .fetch_optional(&self.db.pool)
                .await
                .map_err(unavailable)?;
                row.map(|(version, schema, policies)| Ok((policy_version(&version)?, PolicyBundle { schema, policies })))
                    .transpose()
            }

            async fn active_policy_version(&self) -> Result<Option<PolicyVersion>, StoreError> {
                let version: Option<String> = sqlx::query_scalar("SELECT version FROM active_policy")
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                version.as_deref().map(policy_version).transpose()
            }
        }

        // ---- environments --------------------------------------------------------------

        #[async_trait]
        impl EnvironmentPort for $store {
            async fn create_environment(&self, e: &EnvironmentRecord, event: LogAppend) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                sqlx::query(
                    "INSERT INTO environments (id, attestation_key, expect, labels, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(e.id.as_str())
                .bind(e.attestation_key.as_str())
                .bind(json(&e.expect)?)
                .bind(json(&e.labels)?)
                .bind(event.time.seconds())
                .execute(&mut *tx)
                .await
                .map_err(|err| unique_or(err, || format!("environment `{}`", e.id)))?;
                commit_with_event(tx, &event).await
            }

            async fn update_environment(&self, e: &EnvironmentRecord, event: LogAppend) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                let done = sqlx::query("UPDATE environments SET expect = $1, labels = $2 WHERE id = $3")
                    .bind(json(&e.expect)?)
                    .bind(json(&e.labels)?)
                    .bind(e.id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("environment `{}`", e.id)));
                }
                commit_with_event(tx, &event).await
            }

            async fn environment(&self, id: &str) -> Result<Option<EnvironmentRecord>, StoreError> {
                if let Some(direct) = self.db.direct_reads() {
                    return direct.environment(id);
                }
                let row = sqlx::query(&format!("SELECT {ENV_COLUMNS} FROM environments WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                row.as_ref().map(environment_row).transpose()
            }

            async fn list_environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {ENV_COLUMNS} FROM environments ORDER BY id"))
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                rows.iter().map(environment_row).collect()
            }

            async fn release_environment(&self, id: &str, event: LogAppend) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE environments SET quarantined_at = NULL, quarantine_reason = NULL WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("environment `{id}`")));
                }
                let idx = append_leaves(&mut tx, &[&event]).await?;
                sqlx::query("UPDATE environments SET released_log_index = $1 WHERE id = $2")
                    .bind(int(idx)?)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                Ok(LogIndex(idx))
            }

            async fn save_challenge(&self, environment: &str, nonce: &str, expires: Timestamp) -> Result<(), StoreError> {
                let mut tx = self.db.pool.begin().await.map_err(unavailable)?;
                // Old challenges are of no use to anyone: drop them as new ones come.
                sqlx::query("DELETE FROM challenges WHERE expires_at < $1")
                    .bind(expires.seconds() - 3600)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                sqlx::query("INSERT INTO challenges (nonce, environment, expires_at) VALUES ($1, $2, $3)")
                    .bind(nonce)
                    .bind(environment)
                    .bind(expires.seconds())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                            StoreError::NotFound(format!("environment `{environment}`"))
                        }
                        _ => unavailable(e),
                    })?;
                tx.commit().await.map_err(unavailable)
            }

            async fn record_attestation(
                &self,
                environment: &str,
                nonce: &str,
                a: &Attestation,
                event: LogAppend,
            ) -> Result<LogIndex, StoreError> {
                let mut tx = self.db.write_tx().await?;
                let done = sqlx::query(
                    "UPDATE challenges SET used_at = $1 WHERE nonce = $2 AND environment = $3 \
                     AND used_at IS NULL AND expires_at > $4",
                )
                .bind(a.time.seconds())
                .bind(nonce)
                .bind(environment)
                .bind(a.time.seconds())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                if done.rows_affected() != 1 {
                    let found: Option<(String, Option<i64>)> =
                        sqlx::query_as("SELECT environment, used_at FROM challenges WHERE nonce = $1")
                            .bind(nonce)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                    return Err(StoreError::Challenge(match found {
                        Some((env, _)) if env != environment => ChallengeRefusal::Unknown,
                        Some((_, Some(_))) => ChallengeRefusal::Replayed,
                        Some((_, None)) => ChallengeRefusal::Expired,
                        None => ChallengeRefusal::Unknown,
                    }));
                }
                let idx = append_leaves(&mut tx, &[&event]).await?;
                sqlx::query(
                    "UPDATE environments SET attested_at = $1, measurements = $2, measurement_digest = $3, \
                     matches = $4, mismatched = $5, attestation_log_index = $6 WHERE id = $7",
                )
                .bind(a.time.seconds())
                .bind(json(&a.measurements)?)
                .bind(a.measurement_digest.to_string())
                .bind(i64::from(a.matches))
                .bind(json(&a.mismatched)?)
                .bind(int(idx)?)
                .bind(environment)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                Ok(LogIndex(idx))
            }
        }

        // ---- executions and revocations ------------------------------------------------

        /// Insert executions, one statement per 100.
        async fn insert_executions(conn: &mut Conn, records: &[NewExecution<'_>]) -> Result<(), StoreError> {
            for chunk in records.chunks(100) {
                let sql = format!(
                    "INSERT INTO executions (id, principal_id, parent_id, root_principal, depth, action, resource_type, \
                     resource_id, request, arguments_digest, environment, delegation, kid, policy_version, issued_at, \
                     expires_at, state, started_at, lease_until) VALUES {}",
                    placeholders(chunk.len(), 19)
                );
                let mut query = sqlx::query(&sql);
                for (r, started) in chunk {
                    let state = started.as_ref().map_or(r.state, |s| s.state);
                    let request = serde_json::json!({ "arguments": r.arguments, "context": r.context }).to_string();
                    let delegation = r.delegation.as_ref().map(json).transpose()?;
                    query = query
                        .bind(r.id.as_str())
                        .bind(r.principal.as_str())
                        .bind(r.parent.as_ref().map(ExecutionId::as_str))
                        .bind(r.root_principal.as_str())
                        .bind(i64::from(r.depth))
                        .bind(r.action.as_str())
                        .bind(r.resource.kind.as_str())
                        .bind(r.resource.id.as_str())
                        .bind(request)
                        .bind(r.arguments_digest.to_string())
                        .bind(r.environment.as_deref())
                        .bind(delegation)
                        .bind(r.kid.as_str())
                        .bind(r.policy_version.to_string())
                        .bind(r.issued_at.seconds())
                        .bind(r.expires_at.seconds())
                        .bind(state.as_str())
                        .bind(started.as_ref().and_then(|s| s.started_at).map(Timestamp::seconds))
                        .bind(started.as_ref().and_then(|s| s.lease_until).map(Timestamp::seconds));
                }
                query.execute(&mut *conn).await.map_err(|e| unique_or(e, || "an execution id".to_owned()))?;
            }
            Ok(())
        }

        async fn execution_state(conn: &mut Conn, id: &str) -> Result<Option<ExecutionState>, StoreError> {
            let found: Option<String> = sqlx::query_scalar("SELECT state FROM executions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)?;
            found.as_deref().map(state).transpose()
        }

        /// Apply one change inside a write transaction. The outer error is storage
        /// failing (the batch aborts); the inner one is the change being refused (only
        /// this job is). `Authorize` reports its parent's state.
        async fn apply_change(
            conn: &mut Conn,
            id: &ExecutionId,
            change: &ExecutionChange,
        ) -> Result<Result<Option<ExecutionState>, StoreError>, StoreError> {
            if let ExecutionChange::Authorize(record) = change {
                insert_executions(conn, &[(&**record, None)]).await?;
                return match &record.parent {
                    Some(parent) => Ok(Ok(execution_state(conn, parent.as_str()).await?)),
                    None => Ok(Ok(None)),
                };
            }
            let sql = format!("SELECT {} FROM executions WHERE id = $1", crate::sequencer::STATUS_COLUMNS);
            let row: Option<crate::sequencer::StatusRow> = sqlx::query_as(&sql)
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(unavailable)?;
            let Some(row) = row else {
                return Ok(Err(StoreError::NotFound(format!("execution `{id}`"))));
            };
            let current = crate::sequencer::status(row)?;
            let next = match change.next(&current) {
                Ok(next) => next,
                Err(refused) => return Ok(Err(refused)),
            };
            sqlx::query(
                "UPDATE executions SET state = $1, started_at = $2, lease_until = $3, finished_at = $4, \
                 exit_code = $5, reason = $6 WHERE id = $7",
            )
            .bind(next.state.as_str())
            .bind(next.started_at.map(Timestamp::seconds))
            .bind(next.lease_until.map(Timestamp::seconds))
            .bind(next.finished_at.map(Timestamp::seconds))
            .bind(next.exit_code.map(i64::from))
            .bind(next.reason.as_deref())
            .bind(id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
            Ok(Ok(None))
        }

        fn execution_ids(ids: Vec<String>) -> Result<Vec<ExecutionId>, StoreError> {
            ids.into_iter()
                .map(|id| id.parse().map_err(|_| corrupt("execution id")))
                .collect()
        }

        /// One revocation's write transaction (see [`RevocationTx`]).
        pub(crate) struct Revoking {
            tx: sqlx::Transaction<'static, $db>,
            last_seq: Option<u64>,
        }

        #[async_trait]
        impl RevocationTx for Revoking {
            async fn revoke_principal(&mut self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
                let changed = sqlx::query("UPDATE principals SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                    .bind(at.seconds())
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(unavailable)?;
                if changed.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE principal_id = $2 AND revoked_at IS NULL")
                    .bind(at.seconds())
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(unavailable)?;
                Ok(true)
            }

            async fn quarantine_environment(&mut self, id: &str, reason: &str, at: Timestamp) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE environments SET quarantined_at = $1, quarantine_reason = $2 WHERE id = $3")
                    .bind(at.seconds())
                    .bind(reason)
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn execution_exists(&mut self, id: &ExecutionId) -> Result<bool, StoreError> {
                Ok(execution_state(&mut self.tx, id.as_str()).await?.is_some())
            }

            async fn has_revocation(&mut self, kind: RevocationKind, target: &str) -> Result<bool, StoreError> {
                let hit: Option<i64> =
                    sqlx::query_scalar("SELECT seq FROM revocations WHERE kind = $1 AND target = $2 LIMIT 1")
                        .bind(kind.as_str())
                        .bind(target)
                        .fetch_optional(&mut *self.tx)
                        .await
                        .map_err(unavailable)?;
                Ok(hit.is_some())
            }

            async fn executions_of(&mut self, kind: RevocationKind, target: &str) -> Result<Vec<ExecutionId>, StoreError> {
                let column = match kind {
                    RevocationKind::Principal => "principal_id",
                    RevocationKind::SigningKey => "kid",
                    RevocationKind::Environment => "environment",
                    RevocationKind::Execution => "id",
                };
                let ids: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT id FROM executions WHERE {column} = $1 ORDER BY issued_at, id"))
                        .bind(target)
                        .fetch_all(&mut *self.tx)
                        .await
                        .map_err(unavailable)?;
                execution_ids(ids)
            }

            async fn live_subtree(&mut self, root: &ExecutionId) -> Result<Vec<ExecutionId>, StoreError> {
                let ids: Vec<String> = sqlx::query_scalar(
                    "WITH RECURSIVE sub(id) AS (SELECT CAST($1 AS TEXT) \
                     UNION SELECT e.id FROM executions e JOIN sub ON e.parent_id = sub.id) \
                     SELECT e.id FROM executions e JOIN sub ON e.id = sub.id \
                     WHERE e.state IN ('authorized', 'started') ORDER BY e.depth, e.issued_at, e.id",
                )
                .bind(root.as_str())
                .fetch_all(&mut *self.tx)
                .await
                .map_err(unavailable)?;
                execution_ids(ids)
            }

            async fn change(&mut self, id: &ExecutionId, change: &ExecutionChange) -> Result<(), StoreError> {
                apply_change(&mut self.tx, id, change).await?.map(|_| ())
            }

            async fn add_revocation(
                &mut self,
                kind: RevocationKind,
                target: &str,
                reason: &str,
                at: Timestamp,
            ) -> Result<u64, StoreError> {
                // Under the log's write lock: numbers follow commit order, without gaps.
                let seq: i64 = sqlx::query_scalar(
                    "INSERT INTO revocations (seq, kind, target, reason, at) \
                     SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4 FROM revocations RETURNING seq",
                )
                .bind(kind.as_str())
                .bind(target)
                .bind(reason)
                .bind(at.seconds())
                .fetch_one(&mut *self.tx)
                .await
                .map_err(unavailable)?;
                let seq = uint(seq, "revocation seq")?;
                self.last_seq = Some(seq);
                Ok(seq)
            }

            async fn append(&mut self, entries: &[LogAppend]) -> Result<LogIndex, StoreError> {
                let refs: Vec<&LogAppend> = entries.iter().collect();
                append_leaves(&mut self.tx, &refs).await.map(LogIndex)
            }

            async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
                if let Some(seq) = self.last_seq {
                    <$handle>::announce(&mut self.tx, SharedChange::Revocation(seq)).await?;
                }
                self.tx.commit().await.map_err(unavailable)
            }
        }

        #[async_trait]
        impl ExecutionPort for $store {
            async fn execution(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
                if let Some(direct) = self.db.direct_reads() {
                    return direct.execution(id);
                }
                let row = sqlx::query(&format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                row.as_ref().map(execution_row).transpose()
            }

            async fn lineage(&self, id: &ExecutionId) -> Result<(Vec<ExecutionRecord>, Vec<ExecutionRecord>), StoreError> {
                let ancestors = sqlx::query(&format!(
                    "WITH RECURSIVE up(id, parent_id) AS (SELECT id, parent_id FROM executions WHERE id = $1 \
                     UNION SELECT e.id, e.parent_id FROM executions e JOIN up ON e.id = up.parent_id) \
                     SELECT {EXECUTION_COLUMNS} FROM executions WHERE id IN (SELECT id FROM up) AND id != $1 \
                     ORDER BY depth"
                ))
                .bind(id.as_str())
                .fetch_all(&self.db.pool)
                .await
                .map_err(unavailable)?;
                let descendants = sqlx::query(&format!(
                    "WITH RECURSIVE down(id) AS (SELECT id FROM executions WHERE parent_id = $1 \
                     UNION SELECT e.id FROM executions e JOIN down ON e.parent_id = down.id) \
                     SELECT {EXECUTION_COLUMNS} FROM executions WHERE id IN (SELECT id FROM down) \
                     ORDER BY depth, issued_at, id"
                ))
                .bind(id.as_str())
                .fetch_all(&self.db.pool)
                .await
                .map_err(unavailable)?;
                Ok((
                    ancestors.iter().map(execution_row).collect::<Result<_, _>>()?,
                    descendants.iter().map(execution_row).collect::<Result<_, _>>()?,
                ))
            }

            async fn begin_revocation(&self) -> Result<Box<dyn RevocationTx>, StoreError> {
                Ok(Box::new(Revoking {
                    tx: self.db.write_tx().await?,
                    last_seq: None,
                }))
            }

            async fn revocations_since(&self, since: u64, limit: u32) -> Result<Vec<RevocationRecord>, StoreError> {
                let rows: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
                    "SELECT seq, kind, target, reason, at FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(i64::try_from(since).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.db.pool)
                .await
                .map_err(unavailable)?;
                rows.into_iter()
                    .map(|(seq, kind, id, reason, time)| {
                        Ok(RevocationRecord {
                            seq: uint(seq, "revocation seq")?,
                            kind: RevocationKind::parse(&kind).ok_or_else(|| corrupt("revocation kind"))?,
                            id,
                            reason,
                            time,
                        })
                    })
                    .collect()
            }

            async fn latest_revocation(&self) -> Result<u64, StoreError> {
                let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                uint(seq, "revocation seq")
            }

            async fn is_revoked(&self, kind: RevocationKind, id: &str) -> Result<bool, StoreError> {
                let hit: Option<i64> =
                    sqlx::query_scalar("SELECT seq FROM revocations WHERE kind = $1 AND target = $2 LIMIT 1")
                        .bind(kind.as_str())
                        .bind(id)
                        .fetch_optional(&self.db.pool)
                        .await
                        .map_err(unavailable)?;
                Ok(hit.is_some())
            }
        }

        #[async_trait]
        impl ClusterPort for $store {
            async fn meta_or_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&self.db.pool)
                    .await
                    .map_err(unavailable)?;
                let mut conn = self.db.pool.acquire().await.map_err(unavailable)?;
                meta(&mut conn, key)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("setting `{key}`")))
            }

            async fn check_writable(&self, at: Timestamp) -> Result<(), StoreError> {
                let (reply, answer) = oneshot::channel();
                submit(self, Job::Health { at, reply }, answer).await.map(|_| ())
            }

            async fn hold_checkpointer(&self) -> Result<bool, StoreError> {
                <$store>::hold_checkpointer_role(self).await
            }

            fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<SharedChange>> {
                <$store>::subscribe_changes(self)
            }

            fn writer_stopped(&self) -> bool {
                self.appends.is_closed()
            }
        }
    };
}

pub(crate) use store_impl;
