//! The ports on PostgreSQL, for several stateless `clearance serve` nodes on one database.
//!
//! What keeps one truth across nodes:
//! - every write that appends to the log (decisions, lifecycle changes, revocations,
//!   admin changes) first takes one transaction-scoped advisory lock, so log indexes and
//!   revocation sequence numbers are assigned in commit order, gap-free, whichever node
//!   writes; each node still batches its own appends into one commit (group commit);
//! - single use is the state machine's conditional change under that lock;
//! - the checkpointer role is a session-level advisory lock held on a dedicated
//!   connection: one node signs at a time, and a node that dies loses it with its
//!   connection;
//! - revocations and policy activations are announced with `NOTIFY` in the committing
//!   transaction, so every node hears of them as they commit (nodes also poll).

use std::str::FromStr as _;
use std::sync::Arc;

use clearance_core::{SharedChange, StoreError};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Postgres};
use tokio::sync::{Mutex, broadcast, mpsc};

use crate::sequencer::{self, Job, unavailable};
use crate::sqlite::StoreOptions;

/// Advisory lock numbers, under the key of this database and schema.
const LOG_WRITER_LOCK: i32 = 1;
const CHECKPOINTER_LOCK: i32 = 2;

/// Connection settings beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    pub store: StoreOptions,
    /// Keep every table in this schema (created if missing) instead of the URL's default
    /// search path: several control planes, or tests, can share one database.
    pub schema: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PgStore {
    db: PgDb,
    appends: mpsc::Sender<Job>,
    options: StoreOptions,
    /// The dedicated connection holding the checkpointer lock, when this node has one.
    leader: Arc<Mutex<Option<PgConnection>>>,
    changes: broadcast::Sender<SharedChange>,
}

/// The pool, and what the sequencer task keeps of the store.
#[derive(Debug, Clone)]
pub(crate) struct PgDb {
    pool: PgPool,
    /// Names this database and schema in advisory locks and the notification channel.
    key: i32,
}

impl PgDb {
    /// Every read goes through the pool: the database is across the network.
    #[expect(
        clippy::unused_self,
        reason = "the same interface as SQLite's, which has direct reads"
    )]
    const fn direct_reads(&self) -> Option<&crate::sqlite_writer::DirectReads> {
        None
    }

    /// A write transaction holding the log's write lock (until it ends, whichever way).
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(self.key)
            .bind(LOG_WRITER_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok(tx)
    }

    /// Delivered to every listening node when the transaction commits, not before.
    async fn announce(conn: &mut PgConnection, change: SharedChange) -> Result<(), StoreError> {
        let payload = match change {
            SharedChange::Revocation(seq) => format!("revocation:{seq}"),
            SharedChange::PolicyActivated => "policy".to_owned(),
            SharedChange::KeyRevoked => "key".to_owned(),
        };
        sqlx::query("SELECT pg_notify('clearance_' || current_schema(), $1)")
            .bind(payload)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl PgStore {
    /// Connect, apply migrations (serialized across nodes by sqlx's migration lock),
    /// refuse an altered log, and start this node's sequencer and change listener. Must be
    /// called inside a Tokio runtime.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let mut connect = parse_url(url)?;
        if let Some(schema) = &options.schema {
            check_schema_name(schema)?;
            let mut conn = PgConnection::connect_with(&connect).await.map_err(cannot_connect)?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut conn)
                .await
                .map_err(unavailable)?;
            conn.close().await.map_err(unavailable)?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(options.store.append_timeout)
            .after_release(|conn, _| Box::pin(async move { Ok(crate::sequencer::reusable(conn)) }))
            .connect_with(connect)
            .await
            .map_err(cannot_connect)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("database migration failed: {e}")))?;
        let key: i32 = sqlx::query_scalar("SELECT hashtext(current_database() || '.' || current_schema())")
            .fetch_one(&pool)
            .await
            .map_err(unavailable)?;
        let db = PgDb { pool, key };
        let mut conn = db.pool.acquire().await.map_err(unavailable)?;
        imp::check_leaves(&mut conn).await?;
        drop(conn);
        let (appends, jobs) = mpsc::channel(16 * 1024);
        let writer = db.clone();
        tokio::spawn(sequencer::run(
            jobs,
            options.store.max_batch,
            options.store.append_timeout,
            move |mut batch| {
                let writer = writer.clone();
                async move {
                    let outcome = imp::write_batch(&writer, &mut batch).await;
                    (batch, outcome)
                }
            },
        ));
        let (changes, _) = broadcast::channel(1024);
        spawn_listener(db.pool.clone(), changes.clone()).await?;
        Ok(Self {
            db,
            appends,
            options: options.store,
            leader: Arc::new(Mutex::new(None)),
            changes,
        })
    }

    /// Open the log for reading only (for `clearance log verify`): no migration, no
    /// sequencer, no listener, and every session read-only.
    pub async fn open_read_only(url: &str, schema: Option<&str>) -> Result<crate::LogReader, StoreError> {
        let mut connect = parse_url(url)?;
        connect = connect.options([("default_transaction_read_only", "on")]);
        if let Some(schema) = schema {
            check_schema_name(schema)?;
            connect = connect.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await
            .map_err(cannot_connect)?;
        Ok(crate::LogReader::Postgres(pool))
    }

    /// Take the checkpointer lock if nobody holds it, and check it is still held if this
    /// node does: the lock lives as long as its connection, so a lost connection is a
    /// lost role (and, for a node that died, the role is free for another).
    async fn hold_checkpointer_role(&self) -> Result<bool, StoreError> {
        let mut leader = self.leader.lock().await;
        if let Some(conn) = leader.as_mut() {
            let held: Result<bool, _> = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
                 AND classid = $1::oid AND objid = $2::oid AND granted)",
            )
            .bind(i64::from(self.db.key) & 0xffff_ffff)
            .bind(i64::from(CHECKPOINTER_LOCK))
            .fetch_one(&mut *conn)
            .await;
            match held {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the checkpointer connection failed: the role is given up");
                    *leader = None;
                    return Ok(false);
                }
            }
        }
        let conn = match leader.as_mut() {
            Some(conn) => conn,
            None => leader.insert(self.db.pool.acquire().await.map_err(unavailable)?.detach()),
        };
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(self.db.key)
            .bind(CHECKPOINTER_LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                *leader = None;
                unavailable(e)
            })?;
        if got {
            tracing::info!("this node holds the checkpointer role");
        }
        Ok(got)
    }

    fn subscribe_changes(&self) -> Option<broadcast::Receiver<SharedChange>> {
        Some(self.changes.subscribe())
    }
}

/// Follow the notification channel; reconnects by itself (sqlx re-listens), and callers
/// poll as well, so a notification lost while reconnecting is only late.
async fn spawn_listener(pool: PgPool, changes: broadcast::Sender<SharedChange>) -> Result<(), StoreError> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&pool)
        .await
        .map_err(unavailable)?;
    let mut listener = PgListener::connect_with(&pool).await.map_err(unavailable)?;
    listener
        .listen(&format!("clearance_{schema}"))
        .await
        .map_err(unavailable)?;
    tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let change = match n.payload().split_once(':') {
                        Some(("revocation", seq)) => seq.parse().ok().map(SharedChange::Revocation),
                        _ if n.payload() == "policy" => Some(SharedChange::PolicyActivated),
                        _ if n.payload() == "key" => Some(SharedChange::KeyRevoked),
                        _ => None,
                    };
                    if let Some(change) = change {
                        // No receiver yet is fine.
                        let _ = changes.send(change);
                    }
                }
                // The connection dropped; the next call reconnects. Anything committed
                // meanwhile is caught by the followers' polling.
                Ok(None) => tracing::warn!("lost the change notification connection; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "change notifications failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(())
}

fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Unavailable(format!(
            "the database URL is not a valid PostgreSQL URL: {}",
            redact(&e)
        ))
    })
}

fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "schema `{schema}` must be 1 to 63 characters of [a-z0-9_], not starting with a digit"
        )))
    }
}

fn cannot_connect(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot connect to PostgreSQL: {}", redact(&e)))
}

/// sqlx's messages can quote the URL, password included: never pass one on.
fn redact(e: &sqlx::Error) -> String {
    let text = e.to_string();
    match (text.split_once("://"), text.rsplit_once('@')) {
        (Some((before, _)), Some((_, after))) => format!("{before}://***@{after}"),
        _ => text,
    }
}

pub(crate) mod imp {
    use super::{PgDb, PgStore};
    crate::sql::store_impl!(PgStore, PgDb, sqlx::Postgres);
}
