//! Environments, challenges and attestations on SQLite.

use std::collections::BTreeMap;
use std::str::FromStr;

use clearance_core::{Attestation, EnvironmentRecord, StoreError};
use clearance_model::environment::Measurements;
use clearance_model::{Digest, LogIndex, Timestamp};
use sqlx::{Row, SqliteConnection};

use crate::sequencer::unavailable;

const COLUMNS: &str = "id, attestation_key, expect, labels, quarantined_at, quarantine_reason, attested_at, \
                       measurements, measurement_digest, matches, mismatched, attestation_log_index";

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt {what} in the database"))
}

fn json(v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Unavailable(e.to_string()))
}

pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    e: &EnvironmentRecord,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO environments (id, attestation_key, expect, labels, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&e.id)
        .bind(&e.attestation_key)
        .bind(json(&e.expect)?)
        .bind(json(&e.labels)?)
        .bind(at.seconds())
        .execute(&mut *conn)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(format!("environment `{}`", e.id))
            }
            _ => unavailable(err),
        })?;
    Ok(())
}

pub(crate) async fn update(conn: &mut SqliteConnection, e: &EnvironmentRecord) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE environments SET expect = ?, labels = ? WHERE id = ?")
        .bind(json(&e.expect)?)
        .bind(json(&e.labels)?)
        .bind(&e.id)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("environment `{}`", e.id)));
    }
    Ok(())
}

pub(crate) async fn release(conn: &mut SqliteConnection, id: &str) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE environments SET quarantined_at = NULL, quarantine_reason = NULL WHERE id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("environment `{id}`")));
    }
    Ok(())
}

/// Mark quarantined (inside a revocation's transaction). NotFound if unknown.
pub(crate) async fn quarantine(
    conn: &mut SqliteConnection,
    id: &str,
    reason: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE environments SET quarantined_at = ?, quarantine_reason = ? WHERE id = ?")
        .bind(at.seconds())
        .bind(reason)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("environment `{id}`")));
    }
    Ok(())
}

pub(crate) async fn get(conn: &mut SqliteConnection, id: Option<&str>) -> Result<Vec<EnvironmentRecord>, StoreError> {
    let rows = match id {
        Some(id) => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM environments WHERE id = ?"))
                .bind(id)
                .fetch_all(&mut *conn)
                .await
        }
        None => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM environments ORDER BY id"))
                .fetch_all(&mut *conn)
                .await
        }
    }
    .map_err(unavailable)?;
    rows.iter().map(row).collect()
}

fn row(r: &sqlx::sqlite::SqliteRow) -> Result<EnvironmentRecord, StoreError> {
    let s = |n: &str| r.try_get::<String, _>(n).map_err(unavailable);
    let os = |n: &str| r.try_get::<Option<String>, _>(n).map_err(unavailable);
    let oi = |n: &str| r.try_get::<Option<i64>, _>(n).map_err(unavailable);
    let expect: Measurements = serde_json::from_str(&s("expect")?).map_err(|_| corrupt("expectations"))?;
    let labels: BTreeMap<String, String> = serde_json::from_str(&s("labels")?).map_err(|_| corrupt("labels"))?;
    let attestation = match (
        oi("attested_at")?,
        os("measurements")?,
        os("measurement_digest")?,
        oi("attestation_log_index")?,
    ) {
        (Some(time), Some(m), Some(d), Some(idx)) => Some(Attestation {
            time: Timestamp(time),
            measurements: serde_json::from_str(&m).map_err(|_| corrupt("measurements"))?,
            measurement_digest: Digest::from_str(&d).map_err(|_| corrupt("measurement digest"))?,
            matches: oi("matches")?.unwrap_or(0) == 1,
            mismatched: os("mismatched")?
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(|_| corrupt("mismatched"))?
                .unwrap_or_default(),
            log_index: LogIndex(u64::try_from(idx).map_err(|_| corrupt("log index"))?),
        }),
        _ => None,
    };
    Ok(EnvironmentRecord {
        id: s("id")?,
        attestation_key: s("attestation_key")?,
        expect,
        labels,
        quarantined: oi("quarantined_at")?.is_some(),
        quarantine_reason: os("quarantine_reason")?,
        attestation,
    })
}

pub(crate) async fn save_challenge(
    conn: &mut SqliteConnection,
    environment: &str,
    nonce: &str,
    expires: Timestamp,
) -> Result<(), StoreError> {
    // Old challenges are of no use to anyone: drop them as new ones come.
    sqlx::query("DELETE FROM challenges WHERE expires_at < ?")
        .bind(expires.seconds() - 3600)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    sqlx::query("INSERT INTO challenges (nonce, environment, expires_at) VALUES (?, ?, ?)")
        .bind(nonce)
        .bind(environment)
        .bind(expires.seconds())
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::NotFound(format!("environment `{environment}`"))
            }
            _ => unavailable(e),
        })?;
    Ok(())
}

/// Consume a challenge inside the caller's transaction.
pub(crate) async fn consume_challenge(
    conn: &mut SqliteConnection,
    environment: &str,
    nonce: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE challenges SET used_at = ? WHERE nonce = ? AND environment = ? AND used_at IS NULL AND expires_at > ?",
    )
    .bind(now.seconds())
    .bind(nonce)
    .bind(environment)
    .bind(now.seconds())
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let found: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT environment, used_at FROM challenges WHERE nonce = ?")
            .bind(nonce)
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
    Err(StoreError::Conflict(
        match found {
            Some((env, _)) if env != environment => "challenge_unknown",
            Some((_, Some(_))) => "challenge_replayed",
            Some((_, None)) => "challenge_expired",
            None => "challenge_unknown",
        }
        .to_owned(),
    ))
}

pub(crate) async fn store_attestation(
    conn: &mut SqliteConnection,
    environment: &str,
    a: &Attestation,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE environments SET attested_at = ?, measurements = ?, measurement_digest = ?, matches = ?, \
         mismatched = ?, attestation_log_index = ? WHERE id = ?",
    )
    .bind(a.time.seconds())
    .bind(json(&a.measurements)?)
    .bind(a.measurement_digest.to_string())
    .bind(i64::from(a.matches))
    .bind(json(&a.mismatched)?)
    .bind(i64::try_from(a.log_index.0).map_err(|_| corrupt("log index"))?)
    .bind(environment)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}
