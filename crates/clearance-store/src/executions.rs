//! Executions and revocations on SQLite. Every change here runs inside a write
//! transaction that also appends its log entries, so state and log never disagree.

use std::str::FromStr;

use clearance_core::{ExecutionChange, ExecutionRecord, LogAppend, Revocation, StoreError};
use clearance_model::event::Event;
use clearance_model::execution::{ExecutionState, RevocationKind, RevocationRecord};
use clearance_model::{Digest, ExecutionId, PolicyVersion, ResourceRef, Timestamp};
use sqlx::{Row, SqliteConnection};

use crate::sequencer::unavailable;

const COLUMNS: &str = "id, principal_id, parent_id, root_principal, depth, action, resource_type, resource_id, \
                       request, arguments_digest, environment, delegation, kid, policy_version, issued_at, \
                       expires_at, state, lease_until, exit_code, reason";

/// Apply one change. The outer error is storage failing (the batch aborts); the inner
/// one is the change's precondition failing (only this job is refused). On success,
/// returns extra log entries the change caused (a revocation inherited from a parent).
pub(crate) async fn apply(
    tx: &mut SqliteConnection,
    change: &ExecutionChange,
    now: i64,
) -> Result<Result<Vec<LogAppend>, StoreError>, StoreError> {
    match change {
        ExecutionChange::Authorize(record) => authorize(tx, record, now).await.map(Ok),
        ExecutionChange::Start { id, now, lease_until } => {
            let done = sqlx::query(
                "UPDATE executions SET state = 'started', started_at = ?, lease_until = ? \
                 WHERE id = ? AND state = 'authorized' AND expires_at > ?",
            )
            .bind(now.seconds())
            .bind(lease_until.seconds())
            .bind(id.as_str())
            .bind(now.seconds())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            settle(tx, id, done.rows_affected()).await
        }
        ExecutionChange::Renew { id, now, lease_until } => {
            let done = sqlx::query(
                "UPDATE executions SET lease_until = ? WHERE id = ? AND state = 'started' AND lease_until > ?",
            )
            .bind(lease_until.seconds())
            .bind(id.as_str())
            .bind(now.seconds())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            settle(tx, id, done.rows_affected()).await
        }
        ExecutionChange::Complete { id, state, exit_code } => {
            // A started execution that was revoked may still report how it stopped,
            // once; its state stays revoked.
            let done = sqlx::query(
                "UPDATE executions SET state = CASE state WHEN 'revoked' THEN 'revoked' ELSE ? END, \
                 finished_at = COALESCE(finished_at, ?), exit_code = ?, lease_until = NULL WHERE id = ? AND \
                 (state = 'started' OR (state = 'revoked' AND started_at IS NOT NULL AND lease_until IS NOT NULL))",
            )
            .bind(state.as_str())
            .bind(now)
            .bind(exit_code)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            settle(tx, id, done.rows_affected()).await
        }
    }
}

/// After a conditional update: success, or the state that refused it.
async fn settle(
    tx: &mut SqliteConnection,
    id: &ExecutionId,
    changed: u64,
) -> Result<Result<Vec<LogAppend>, StoreError>, StoreError> {
    if changed == 1 {
        return Ok(Ok(Vec::new()));
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM executions WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
    Ok(Err(match state {
        Some(state) => StoreError::Conflict(state),
        None => StoreError::NotFound(format!("execution `{id}`")),
    }))
}

async fn authorize(tx: &mut SqliteConnection, r: &ExecutionRecord, now: i64) -> Result<Vec<LogAppend>, StoreError> {
    let request = serde_json::json!({ "arguments": r.arguments, "context": r.context }).to_string();
    let delegation = r
        .delegation
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    sqlx::query(
        "INSERT INTO executions (id, principal_id, parent_id, root_principal, depth, action, resource_type, \
         resource_id, request, arguments_digest, environment, delegation, kid, policy_version, issued_at, expires_at, \
         state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'authorized')",
    )
    .bind(r.id.as_str())
    .bind(r.principal.as_str())
    .bind(r.parent.as_ref().map(ExecutionId::as_str))
    .bind(r.root_principal.as_str())
    .bind(i64::from(r.depth))
    .bind(&r.action)
    .bind(&r.resource.kind)
    .bind(&r.resource.id)
    .bind(request)
    .bind(r.arguments_digest.to_string())
    .bind(r.environment.as_deref())
    .bind(delegation)
    .bind(&r.kid)
    .bind(r.policy_version.to_string())
    .bind(r.issued_at.seconds())
    .bind(r.expires_at.seconds())
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    // The parent was checked live before the decision; if a revocation committed since,
    // the child is born revoked rather than escaping the cascade.
    let Some(parent) = &r.parent else {
        return Ok(Vec::new());
    };
    let parent_state: Option<String> = sqlx::query_scalar("SELECT state FROM executions WHERE id = ?")
        .bind(parent.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
    if parent_state.as_deref() == Some("revoked") {
        let revocation = Revocation {
            kind: RevocationKind::Execution,
            id: r.id.to_string(),
            by: r.principal.clone(),
            reason: format!("parent execution `{parent}` was revoked"),
            time: Timestamp(now),
        };
        let (_, entries) = revoke_executions(tx, &[r.id.to_string()], &revocation).await?;
        return Ok(entries);
    }
    Ok(Vec::new())
}

/// Mark the given executions and their subtrees revoked (those not already finished or
/// revoked), one revocation record and log entry each.
async fn revoke_executions(
    tx: &mut SqliteConnection,
    roots: &[String],
    revocation: &Revocation,
) -> Result<(Vec<RevocationRecord>, Vec<LogAppend>), StoreError> {
    let mut records = Vec::new();
    let mut entries = Vec::new();
    for root in roots {
        let live: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION SELECT e.id FROM executions e JOIN sub ON e.parent_id = sub.id) \
             SELECT e.id FROM executions e JOIN sub ON e.id = sub.id \
             WHERE e.state IN ('authorized', 'started') ORDER BY e.depth, e.issued_at, e.id",
        )
        .bind(root)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        for id in live {
            let reason = if &id == root {
                revocation.reason.clone()
            } else {
                format!("ancestor execution `{root}` was revoked: {}", revocation.reason)
            };
            sqlx::query("UPDATE executions SET state = 'revoked', finished_at = ?, reason = ? WHERE id = ?")
                .bind(revocation.time.seconds())
                .bind(&reason)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            let (record, entry) = record_revocation(tx, RevocationKind::Execution, &id, &reason, revocation).await?;
            records.push(record);
            entries.push(entry);
        }
    }
    Ok((records, entries))
}

async fn record_revocation(
    tx: &mut SqliteConnection,
    kind: RevocationKind,
    target: &str,
    reason: &str,
    revocation: &Revocation,
) -> Result<(RevocationRecord, LogAppend), StoreError> {
    let seq: i64 =
        sqlx::query_scalar("INSERT INTO revocations (kind, target, reason, at) VALUES (?, ?, ?, ?) RETURNING seq")
            .bind(kind.as_str())
            .bind(target)
            .bind(reason)
            .bind(revocation.time.seconds())
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Unavailable("negative revocation seq".into()))?;
    let record = RevocationRecord {
        seq,
        kind,
        id: target.to_owned(),
        reason: reason.to_owned(),
        time: revocation.time.seconds(),
    };
    let event = Event::Revocation {
        time: record.time,
        seq,
        by: revocation.by.clone(),
        kind,
        id: record.id.clone(),
        reason: record.reason.clone(),
    };
    let entry = event
        .to_entry_bytes()
        .map_err(|e| StoreError::Unavailable(format!("log entry: {e}")))?;
    let execution = match kind {
        RevocationKind::Execution => Some(
            ExecutionId::from_str(target)
                .map_err(|_| StoreError::Unavailable(format!("corrupt execution id `{target}`")))?,
        ),
        RevocationKind::Principal | RevocationKind::SigningKey | RevocationKind::Environment => None,
    };
    Ok((record, LogAppend { entry, execution }))
}

/// Revoke a target and everything it covers. Returns the records and their log entries;
/// the caller appends the entries and commits.
pub(crate) async fn revoke(
    tx: &mut SqliteConnection,
    revocation: &Revocation,
) -> Result<(Vec<RevocationRecord>, Vec<LogAppend>), StoreError> {
    let target = revocation.id.as_str();
    match revocation.kind {
        RevocationKind::Execution => {
            let known: Option<String> = sqlx::query_scalar("SELECT id FROM executions WHERE id = ?")
                .bind(target)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            if known.is_none() {
                return Err(StoreError::NotFound(format!("execution `{target}`")));
            }
            revoke_executions(tx, &[target.to_owned()], revocation).await
        }
        RevocationKind::Principal => {
            let changed = sqlx::query("UPDATE principals SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(revocation.time.seconds())
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            if changed.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("principal `{target}`")));
            }
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE principal_id = ? AND revoked_at IS NULL")
                .bind(revocation.time.seconds())
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            let roots: Vec<String> =
                sqlx::query_scalar("SELECT id FROM executions WHERE principal_id = ? ORDER BY issued_at, id")
                    .bind(target)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            cover(tx, RevocationKind::Principal, "principal", roots, revocation).await
        }
        RevocationKind::SigningKey => {
            let roots: Vec<String> =
                sqlx::query_scalar("SELECT id FROM executions WHERE kid = ? ORDER BY issued_at, id")
                    .bind(target)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            cover(tx, RevocationKind::SigningKey, "signing key", roots, revocation).await
        }
        RevocationKind::Environment => {
            crate::environments::quarantine(tx, target, &revocation.reason, revocation.time).await?;
            let roots: Vec<String> =
                sqlx::query_scalar("SELECT id FROM executions WHERE environment = ? ORDER BY issued_at, id")
                    .bind(target)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            cover(tx, RevocationKind::Environment, "environment", roots, revocation).await
        }
    }
}

/// A principal or signing key: one record for the target itself, then its executions'
/// subtrees.
async fn cover(
    tx: &mut SqliteConnection,
    kind: RevocationKind,
    noun: &str,
    roots: Vec<String>,
    revocation: &Revocation,
) -> Result<(Vec<RevocationRecord>, Vec<LogAppend>), StoreError> {
    let already: Option<i64> = sqlx::query_scalar("SELECT seq FROM revocations WHERE kind = ? AND target = ? LIMIT 1")
        .bind(kind.as_str())
        .bind(&revocation.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
    let mut records = Vec::new();
    let mut entries = Vec::new();
    if already.is_none() || kind == RevocationKind::Environment {
        let (r, e) = record_revocation(tx, kind, &revocation.id, &revocation.reason, revocation).await?;
        records.push(r);
        entries.push(e);
    }
    let cascade = Revocation {
        reason: format!("{noun} `{}` was revoked: {}", revocation.id, revocation.reason),
        ..revocation.clone()
    };
    let (r, e) = revoke_executions(tx, &roots, &cascade).await?;
    records.extend(r);
    entries.extend(e);
    Ok((records, entries))
}

pub(crate) async fn execution(conn: &mut SqliteConnection, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM executions WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
    row.as_ref().map(execution_row).transpose()
}

pub(crate) async fn lineage(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<(Vec<ExecutionRecord>, Vec<ExecutionRecord>), StoreError> {
    let ancestors = sqlx::query(&format!(
        "WITH RECURSIVE up(id, parent_id) AS (SELECT id, parent_id FROM executions WHERE id = ? \
         UNION SELECT e.id, e.parent_id FROM executions e JOIN up ON e.id = up.parent_id) \
         SELECT {COLUMNS} FROM executions WHERE id IN (SELECT id FROM up) AND id != ? ORDER BY depth"
    ))
    .bind(id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(unavailable)?;
    let descendants = sqlx::query(&format!(
        "WITH RECURSIVE down(id) AS (SELECT id FROM executions WHERE parent_id = ? \
         UNION SELECT e.id FROM executions e JOIN down ON e.parent_id = down.id) \
         SELECT {COLUMNS} FROM executions WHERE id IN (SELECT id FROM down) ORDER BY depth, issued_at, id"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(unavailable)?;
    Ok((
        ancestors.iter().map(execution_row).collect::<Result<_, _>>()?,
        descendants.iter().map(execution_row).collect::<Result<_, _>>()?,
    ))
}

pub(crate) async fn revocations_since(
    conn: &mut SqliteConnection,
    since: u64,
    limit: u32,
) -> Result<Vec<RevocationRecord>, StoreError> {
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let rows: Vec<(i64, String, String, String, i64)> =
        sqlx::query_as("SELECT seq, kind, target, reason, at FROM revocations WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
    rows.into_iter()
        .map(|(seq, kind, id, reason, time)| {
            Ok(RevocationRecord {
                seq: u64::try_from(seq).map_err(|_| corrupt("revocation seq"))?,
                kind: RevocationKind::parse(&kind).ok_or_else(|| corrupt("revocation kind"))?,
                id,
                reason,
                time,
            })
        })
        .collect()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt {what} in the database"))
}

fn execution_row(row: &sqlx::sqlite::SqliteRow) -> Result<ExecutionRecord, StoreError> {
    let get_s = |name: &str| row.try_get::<String, _>(name).map_err(unavailable);
    let get_os = |name: &str| row.try_get::<Option<String>, _>(name).map_err(unavailable);
    let get_i = |name: &str| row.try_get::<i64, _>(name).map_err(unavailable);
    let request: serde_json::Value =
        serde_json::from_str(&get_s("request")?).map_err(|_| corrupt("execution request"))?;
    let delegation = get_os("delegation")?
        .map(|d| serde_json::from_str(&d))
        .transpose()
        .map_err(|_| corrupt("execution delegation"))?;
    Ok(ExecutionRecord {
        id: get_s("id")?.parse().map_err(|_| corrupt("execution id"))?,
        principal: get_s("principal_id")?.parse().map_err(|_| corrupt("principal id"))?,
        parent: get_os("parent_id")?
            .map(|p| p.parse())
            .transpose()
            .map_err(|_| corrupt("parent id"))?,
        root_principal: get_s("root_principal")?
            .parse()
            .map_err(|_| corrupt("root principal"))?,
        depth: u32::try_from(get_i("depth")?).map_err(|_| corrupt("depth"))?,
        action: get_s("action")?,
        resource: ResourceRef::new(get_s("resource_type")?, get_s("resource_id")?),
        arguments: request.get("arguments").cloned().unwrap_or_default(),
        context: request.get("context").cloned().unwrap_or_default(),
        arguments_digest: Digest::from_str(&get_s("arguments_digest")?).map_err(|_| corrupt("arguments digest"))?,
        environment: get_os("environment")?,
        delegation,
        kid: get_s("kid")?,
        policy_version: PolicyVersion::from_str(&get_s("policy_version")?).map_err(|_| corrupt("policy version"))?,
        issued_at: Timestamp(get_i("issued_at")?),
        expires_at: Timestamp(get_i("expires_at")?),
        state: ExecutionState::parse(&get_s("state")?).ok_or_else(|| corrupt("execution state"))?,
        lease_until: row
            .try_get::<Option<i64>, _>("lease_until")
            .map_err(unavailable)?
            .map(Timestamp),
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")
            .map_err(unavailable)?
            .map(|c| i32::try_from(c).map_err(|_| corrupt("exit code")))
            .transpose()?,
        reason: get_os("reason")?,
    })
}
