//! The ports on SQLite: the embedded default, one process per database file.

use std::path::Path;
use std::time::Duration;

use clearance_core::{SharedChange, StoreError};
use clearance_log::leaf_hash;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::mpsc;

use crate::sequencer::{self, Job, unavailable};

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
    db: SqliteDb,
    appends: mpsc::Sender<Job>,
    options: StoreOptions,
}

/// The pool, and what the sequencer task keeps of the store.
#[derive(Debug, Clone)]
pub(crate) struct SqliteDb {
    pool: SqlitePool,
    direct: std::sync::Arc<crate::sqlite_writer::DirectReads>,
}

impl SqliteDb {
    /// The decision path's reads (the log's size and tree nodes, an environment, an
    /// execution), made directly rather than through the pool.
    fn direct_reads(&self) -> Option<&crate::sqlite_writer::DirectReads> {
        Some(&self.direct)
    }

    /// `BEGIN IMMEDIATE` takes the database's write lock up front: writers queue rather
    /// than fail on a stale snapshot, and log indexes follow commit order.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(unavailable)
    }

    /// One process owns the file: there is nobody else to tell.
    async fn announce(_conn: &mut sqlx::SqliteConnection, _change: SharedChange) -> Result<(), StoreError> {
        Ok(())
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, apply migrations, and start the
    /// log sequencer. Must be called inside a Tokio runtime.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        create_private(path)?;
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
            .after_release(|conn, _| Box::pin(async move { Ok(crate::sequencer::reusable(conn)) }))
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open database `{}`: {e}", path.display())))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("database migration failed: {e}")))?;
        let db = SqliteDb {
            pool,
            direct: std::sync::Arc::new(crate::sqlite_writer::DirectReads::new(path, options.busy_timeout)),
        };
        backfill_nodes(&db).await?;
        let checked = path.to_owned();
        tokio::task::spawn_blocking(move || crate::sqlite_writer::check_leaves(&checked))
            .await
            .map_err(|e| StoreError::Unavailable(format!("checking the log: {e}")))??;
        let (appends, jobs) = mpsc::channel(16 * 1024);
        let writer = crate::sqlite_writer::Writer::start(path, options.busy_timeout)?;
        tokio::spawn(sequencer::run(
            jobs,
            options.max_batch,
            options.append_timeout,
            move |batch| {
                let writer = writer.clone();
                async move { writer.write(batch).await }
            },
        ));
        Ok(Self { db, appends, options })
    }

    /// Open an existing database for reading only (for `clearance log verify`): nothing is
    /// created, migrated or written.
    pub async fn open_read_only(path: &Path) -> Result<crate::LogReader, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot open database `{}`: {e}", path.display())))?;
        Ok(crate::LogReader::Sqlite(std::sync::Arc::new(std::sync::Mutex::new(
            conn,
        ))))
    }

    /// One process at a time writes a SQLite file: it is always the checkpointer.
    async fn hold_checkpointer_role(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn subscribe_changes(&self) -> Option<tokio::sync::broadcast::Receiver<SharedChange>> {
        None
    }
}

/// Create the database file readable by its owner only, like the keys beside it; SQLite
/// gives its `-wal` and `-shm` files the same mode. An existing file keeps its mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create database `{}`: {e}",
            path.display()
        ))),
    }
}

/// Compute the Merkle nodes of entries written before the nodes table existed.
async fn backfill_nodes(db: &SqliteDb) -> Result<(), StoreError> {
    let leaves: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_nodes WHERE level = 0")
        .fetch_one(&db.pool)
        .await
        .map_err(unavailable)?;
    let size: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_entries")
        .fetch_one(&db.pool)
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
    let mut tx = db.write_tx().await?;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT entry FROM log_entries WHERE idx >= $1 ORDER BY idx")
        .bind(leaves)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
    let hashes: Vec<_> = rows.iter().map(|e| leaf_hash(e)).collect();
    let start = u64::try_from(leaves).map_err(|_| StoreError::Unavailable("negative node count".into()))?;
    imp::add_nodes(&mut tx, start, &hashes).await?;
    tx.commit().await.map_err(unavailable)
}

#[expect(
    dead_code,
    reason = "on SQLite, group commits go through the log writer thread (sqlite_writer.rs); the shared \
              batch code serves PostgreSQL"
)]
pub(crate) mod imp {
    use super::{SqliteDb, SqliteStore};
    crate::sql::store_impl!(SqliteStore, SqliteDb, sqlx::Sqlite);
}
