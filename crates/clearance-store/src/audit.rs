//! `clearance log verify`: recompute the whole tree from the stored entries and check
//! every stored checkpoint against it. Reads only; trusts nothing the database derived.

use clearance_core::{StoreError, StoredCheckpoint};
use clearance_log::{Checkpoint, MemoryTree, NoteVerifier, leaf_hash};

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

/// A read-only view of a log in either backend, for `clearance log verify`.
#[derive(Debug, Clone)]
pub enum LogReader {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl LogReader {
    async fn entries(&self, start: u64, limit: u64) -> Result<Vec<(u64, Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        match self {
            Self::Sqlite(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                crate::sqlite::imp::entries_with_leaves(&mut conn, start, limit).await
            }
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                crate::postgres::imp::entries_with_leaves(&mut conn, start, limit).await
            }
        }
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        match self {
            Self::Sqlite(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                crate::sqlite::imp::all_checkpoints(&mut conn).await
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
            Self::Sqlite(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                crate::sqlite::imp::meta(&mut conn, "log_origin").await?
            }
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                crate::postgres::imp::meta(&mut conn, "log_origin").await?
            }
        };
        found.ok_or_else(|| StoreError::NotFound("the log origin".into()))
    }
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
    let mut tree = MemoryTree::default();
    let mut divergence = None;
    let mut next: u64 = 0;
    'pages: loop {
        let rows = log.entries(next, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for (idx, entry, stored) in rows {
            let expected = tree.size();
            if idx != next {
                divergence = Some(Divergence {
                    first_index: expected,
                    last_index: None,
                    reason: format!("entry {expected} is missing (the next stored entry is {idx})"),
                });
                break 'pages;
            }
            let leaf = leaf_hash(&entry);
            if divergence.is_none() && stored.as_deref().is_some_and(|s| s != leaf) {
                divergence = Some(Divergence {
                    first_index: expected,
                    last_index: None,
                    reason: format!("entry {expected} does not hash to the leaf recorded when it was appended"),
                });
            }
            tree.push(leaf);
            next += 1;
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
            Ok(cp) if tree.root(size) != Some(cp.root) => Some(fail(format!(
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
