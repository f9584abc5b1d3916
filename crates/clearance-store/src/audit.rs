//! `clearance log verify`: recompute the whole tree from the stored entries and check
//! every stored checkpoint against it. Reads only; trusts nothing the database derived.

use std::path::Path;

use clearance_core::StoreError;
use clearance_log::{Checkpoint, MemoryTree, NoteVerifier, leaf_hash};
use sqlx::Row as _;

use crate::SqliteStore;
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

const PAGE: i64 = 10_000;

/// Walk every entry in index order, then check every stored checkpoint.
pub async fn verify_log(
    db: &Path,
    verifier: &NoteVerifier,
    mut progress: impl FnMut(u64),
) -> Result<LogReport, StoreError> {
    let pool = SqliteStore::open_read_only(db).await?;
    // Checkpoints first: the entries read afterwards can only have grown, so a running
    // server signing a new checkpoint meanwhile cannot look like truncation.
    let checkpoints: Vec<(i64, Vec<u8>, String)> =
        sqlx::query_as("SELECT size, root, note FROM checkpoints ORDER BY size")
            .fetch_all(&pool)
            .await
            .map_err(unavailable)?;
    let mut tree = MemoryTree::default();
    let mut divergence = None;
    let mut next: i64 = 0;
    'pages: loop {
        let rows = sqlx::query(
            "SELECT e.idx, e.entry, n.hash FROM log_entries e \
             LEFT JOIN log_nodes n ON n.level = 0 AND n.idx = e.idx \
             WHERE e.idx >= ? ORDER BY e.idx LIMIT ?",
        )
        .bind(next)
        .bind(PAGE)
        .fetch_all(&pool)
        .await
        .map_err(unavailable)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let idx: i64 = row.try_get(0).map_err(unavailable)?;
            let entry: Vec<u8> = row.try_get(1).map_err(unavailable)?;
            let stored: Option<Vec<u8>> = row.try_get(2).map_err(unavailable)?;
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
    for (size, root, note) in &checkpoints {
        let size = u64::try_from(*size).map_err(|_| StoreError::Unavailable("negative checkpoint size".into()))?;
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

/// The log origin fixed at first start.
pub async fn log_origin(pool: &sqlx::SqlitePool) -> Result<String, StoreError> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = 'log_origin'")
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::NotFound("the log origin".into()))
}
