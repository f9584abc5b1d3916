//! `clearance log verify`: recompute the whole tree from the stored entries and check
//! every stored checkpoint against it. Reads only; trusts nothing the database derived.

use clearance_core::{StoreError, StoredCheckpoint};
use clearance_log::{Checkpoint, CompactTree, Hash, NoteVerifier, leaf_hash};

use std::collections::HashMap;

use std::sync::{Arc, Mutex, PoisonError};

use crate::sequencer::unavailable;

/// What `verify_log` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    pub entries: u64,
    pub checkpoints: usize,
    /// The first problem, if any.
    pub divergence: Option<Divergence>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The first index known to be wrong; when only a checkpoint reveals the change, the
    /// range `(from, to]` of indexes it can be in.
    pub first_index: u64,
    pub last_index: Option<u64>,
    pub reason: String,
}

const PAGE: u64 = 10_000;

/// A read-only view of a log in either backend, for `clearance log verify`. SQLite is
/// read with direct calls on a blocking thread: through sqlx every row would cross to its
/// worker thread and back.
#[derive(Debug, Clone)]
pub enum LogReader {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(sqlx::PgPool),
}

/// An entry's index, its leaf hash recomputed from the entry, and whether that matches
/// the leaf recorded when it was appended (`None`: nothing recorded).
type EntryRow = (u64, Hash, Option<bool>);

impl LogReader {
    /// A page of entries, hashed where they are read: on SQLite, on the reading thread,
    /// straight from SQLite's buffer, while the caller works on the page before.
    async fn entries(&self, start: u64, limit: u64) -> Result<Vec<EntryRow>, StoreError> {
        match self {
            Self::Sqlite(conn) => {
                let (start, limit) = (sql_int(start)?, sql_int(limit)?);
                read_sqlite(conn, move |c| {
                    // Two scans in index order, merged, rather than a join: a join looks
                    // each leaf up in the nodes' B-tree, row by row.
                    let mut page =
                        c.prepare_cached("SELECT idx, entry FROM log_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2")?;
                    let mut leaves = c.prepare_cached(
                        "SELECT idx, hash FROM log_nodes WHERE level = 0 AND idx >= ?1 ORDER BY idx LIMIT ?2",
                    )?;
                    let mut recorded = leaves.query(rusqlite::params![start, limit])?;
                    let advance = |recorded: &mut rusqlite::Rows<'_>| -> rusqlite::Result<Option<(i64, [u8; 32])>> {
                        Ok(match recorded.next()? {
                            // A stored leaf of another length never matches.
                            Some(r) => Some((r.get(0)?, r.get_ref(1)?.as_blob()?.try_into().unwrap_or([0; 32]))),
                            None => None,
                        })
                    };
                    let mut next_recorded = advance(&mut recorded)?;
                    let mut rows = page.query(rusqlite::params![start, limit])?;
                    let mut out = Vec::new();
                    while let Some(r) = rows.next()? {
                        // A negative index is refused as out of range, not wrapped.
                        let idx: u64 = r.get(0)?;
                        let leaf = leaf_hash(r.get_ref(1)?.as_blob()?);
                        while next_recorded.is_some_and(|(i, _)| u64::try_from(i).is_ok_and(|i| i < idx)) {
                            next_recorded = advance(&mut recorded)?;
                        }
                        let stored = next_recorded
                            .filter(|(i, _)| u64::try_from(*i).is_ok_and(|i| i == idx))
                            .map(|(_, h)| h == leaf);
                        out.push((idx, leaf, stored));
                    }
                    Ok(out)
                })
                .await
            }
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                let rows = crate::postgres::imp::entries_with_leaves(&mut conn, start, limit).await?;
                Ok(rows
                    .into_iter()
                    .map(|(idx, entry, stored)| {
                        let leaf = leaf_hash(&entry);
                        (idx, leaf, stored.map(|s| s == leaf))
                    })
                    .collect())
            }
        }
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        match self {
            Self::Sqlite(conn) => {
                let rows: Vec<(i64, Vec<u8>, String)> = read_sqlite(conn, |c| {
                    let mut all = c.prepare_cached("SELECT size, root, note FROM checkpoints ORDER BY size")?;
                    let rows = all.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    rows.collect()
                })
                .await?;
                rows.into_iter()
                    .map(|(size, root, note)| {
                        Ok(StoredCheckpoint {
                            size: u64::try_from(size).map_err(|_| corrupt("checkpoint size"))?,
                            root: root.try_into().map_err(|_| corrupt("checkpoint root"))?,
                            note,
                        })
                    })
                    .collect()
            }
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                crate::postgres::imp::all_checkpoints(&mut conn).await
            }
        }
    }

    /// The log origin fixed at first start.
    pub async fn origin(&self) -> Result<String, StoreError> {
        let found = match self {
            Self::Sqlite(conn) => {
                read_sqlite(conn, |c| {
                    use rusqlite::OptionalExtension as _;
                    c.query_row("SELECT value FROM meta WHERE key = 'log_origin'", [], |r| r.get(0))
                        .optional()
                })
                .await?
            }
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                crate::postgres::imp::meta(&mut conn, "log_origin").await?
            }
        };
        found.ok_or_else(|| StoreError::NotFound("the log origin".into()))
    }
}

/// Run a read on the SQLite connection, on a blocking thread.
async fn read_sqlite<T: Send + 'static>(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || read(&conn.lock().unwrap_or_else(PoisonError::into_inner)))
        .await
        .map_err(|e| StoreError::Unavailable(format!("reading the log: {e}")))?
        .map_err(|e| StoreError::Unavailable(format!("database: {e}")))
}

fn sql_int(i: u64) -> Result<i64, StoreError> {
    i64::try_from(i).map_err(|_| StoreError::Unavailable(format!("{i} is out of the database's range")))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt {what} in the database"))
}

/// Walk every entry in index order, then check every stored checkpoint.
pub async fn verify_log(
    log: &LogReader,
    verifier: &NoteVerifier,
    mut progress: impl FnMut(u64),
) -> Result<LogReport, StoreError> {
    // Checkpoints first: the entries read afterwards can only have grown, so a running
    // server signing a new checkpoint meanwhile cannot look like truncation.
    let checkpoints = log.checkpoints().await?;
    // The roots at the checkpointed sizes, computed as the walk passes them.
    let mut tree = CompactTree::default();
    let mut roots: HashMap<u64, Option<Hash>> = checkpoints.iter().map(|c| (c.size, None)).collect();
    if let Some(root) = roots.get_mut(&0) {
        *root = Some(tree.root());
    }
    let mut divergence = None;
    let mut next: u64 = 0;
    // The next page is read while this one is hashed.
    let fetch = |start: u64| {
        let log = log.clone();
        tokio::spawn(async move { log.entries(start, PAGE).await })
    };
    let mut reading = fetch(0);
    'pages: loop {
        let rows = reading
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading the log: {e}")))??;
        let Some(last) = rows.last().map(|(idx, _, _)| *idx) else {
            break;
        };
        reading = fetch(last.saturating_add(1));
        for (idx, leaf, recorded) in rows {
            let expected = tree.size();
            if idx != next {
                divergence = Some(Divergence {
                    first_index: expected,
                    last_index: None,
                    reason: format!("entry {expected} is missing (the next stored entry is {idx})"),
                });
                break 'pages;
            }
            if divergence.is_none() && recorded == Some(false) {
                divergence = Some(Divergence {
                    first_index: expected,
                    last_index: None,
                    reason: format!("entry {expected} does not hash to the leaf recorded when it was appended"),
                });
            }
            tree.push(leaf);
            next += 1;
            if let Some(root) = roots.get_mut(&next) {
                *root = Some(tree.root());
            }
        }
        progress(tree.size());
    }

    let mut last_good = 0u64;
    for StoredCheckpoint { size, root, note } in &checkpoints {
        let size = *size;
        let fail = |reason: String| Divergence {
            first_index: last_good,
            last_index: Some(size),
            reason,
        };
        let problem = match Checkpoint::open(note, verifier) {
            Err(e) => Some(fail(format!("the checkpoint at size {size} does not verify: {e}"))),
            Ok(cp) if cp.size != size || cp.root[..] != root[..] => Some(fail(format!(
                "the checkpoint row at size {size} does not match its signed note"
            ))),
            Ok(_) if size > tree.size() => Some(Divergence {
                first_index: tree.size(),
                last_index: Some(size),
                reason: format!(
                    "the log has {} entries but was checkpointed at size {size}: truncated",
                    tree.size()
                ),
            }),
            Ok(cp) if roots.get(&size).copied().flatten() != Some(cp.root) => Some(fail(format!(
                "the entries before index {size} do not hash to the root signed at size {size}"
            ))),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            // A finding from the entry walk names an exact index: keep it over a range.
            divergence.get_or_insert(p);
            break;
        }
        last_good = size;
    }
    Ok(LogReport {
        entries: tree.size(),
        checkpoints: checkpoints.len(),
        divergence,
    })
}
