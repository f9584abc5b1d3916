//! Rows read back into records, written once for both ways the store reads: sqlx rows
//! (PostgreSQL, and SQLite's pool) and rusqlite rows (SQLite's direct reads).

use std::str::FromStr as _;

use clearance_core::{Attestation, EnvironmentRecord, ExecutionRecord, StoreError};
use clearance_model::{Digest, LogIndex, PolicyVersion, ResourceRef, Timestamp};

use crate::sequencer::{corrupt, state};

/// Columns of a row by name: text or integer, either of which may be NULL.
pub(crate) trait Columns {
    fn text(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, name: &str) -> Result<Option<i64>, StoreError>;

    /// A NOT NULL text column.
    fn text_of(&self, name: &str) -> Result<String, StoreError> {
        self.text(name)?.ok_or_else(|| corrupt(name))
    }

    /// A NOT NULL integer column.
    fn int_of(&self, name: &str) -> Result<i64, StoreError> {
        self.int(name)?.ok_or_else(|| corrupt(name))
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.get(name)
            .map_err(|e| StoreError::Unavailable(format!("database: {e}")))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.get(name)
            .map_err(|e| StoreError::Unavailable(format!("database: {e}")))
    }
}

/// sqlx rows of both backends.
macro_rules! sqlx_columns {
    ($($row:ty),*) => {$(
        impl Columns for $row {
            fn text(&self, name: &str) -> Result<Option<String>, StoreError> {
                sqlx::Row::try_get(self, name).map_err(crate::sequencer::unavailable)
            }

            fn int(&self, name: &str) -> Result<Option<i64>, StoreError> {
                sqlx::Row::try_get(self, name).map_err(crate::sequencer::unavailable)
            }
        }
    )*};
}

sqlx_columns!(sqlx::sqlite::SqliteRow, sqlx::postgres::PgRow);

pub(crate) fn uint(i: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(i).map_err(|_| corrupt(what))
}

pub(crate) fn policy_version(s: &str) -> Result<PolicyVersion, StoreError> {
    PolicyVersion::from_str(s).map_err(|_| corrupt("policy version"))
}

pub(crate) const ENV_COLUMNS: &str = "id, attestation_key, expect, labels, quarantined_at, quarantine_reason, \
                                      attested_at, measurements, measurement_digest, matches, mismatched, \
                                      attestation_log_index, released_log_index";

pub(crate) fn environment_row(r: &impl Columns) -> Result<EnvironmentRecord, StoreError> {
    let attestation = match (
        r.int("attested_at")?,
        r.text("measurements")?,
        r.text("measurement_digest")?,
        r.int("attestation_log_index")?,
    ) {
        (Some(time), Some(m), Some(d), Some(idx)) => Some(Attestation {
            time: Timestamp(time),
            measurements: serde_json::from_str(&m).map_err(|_| corrupt("measurements"))?,
            measurement_digest: Digest::from_str(&d).map_err(|_| corrupt("measurement digest"))?,
            matches: r.int("matches")?.unwrap_or(0) == 1,
            mismatched: r
                .text("mismatched")?
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(|_| corrupt("mismatched measurements"))?
                .unwrap_or_default(),
            log_index: LogIndex(uint(idx, "log index")?),
        }),
        _ => None,
    };
    Ok(EnvironmentRecord {
        id: r.text_of("id")?,
        attestation_key: r.text_of("attestation_key")?,
        expect: serde_json::from_str(&r.text_of("expect")?).map_err(|_| corrupt("expectations"))?,
        labels: serde_json::from_str(&r.text_of("labels")?).map_err(|_| corrupt("labels"))?,
        quarantined: r.int("quarantined_at")?.is_some(),
        quarantine_reason: r.text("quarantine_reason")?,
        attestation,
        released: r
            .int("released_log_index")?
            .map(|i| uint(i, "log index").map(LogIndex))
            .transpose()?,
    })
}

pub(crate) const EXECUTION_COLUMNS: &str = "id, principal_id, parent_id, root_principal, depth, action, \
                                            resource_type, resource_id, request, arguments_digest, environment, \
                                            delegation, kid, policy_version, issued_at, expires_at, state, \
                                            lease_until, exit_code, reason";

pub(crate) fn execution_row(r: &impl Columns) -> Result<ExecutionRecord, StoreError> {
    let request: serde_json::Value =
        serde_json::from_str(&r.text_of("request")?).map_err(|_| corrupt("execution request"))?;
    Ok(ExecutionRecord {
        id: r.text_of("id")?.parse().map_err(|_| corrupt("execution id"))?,
        principal: r
            .text_of("principal_id")?
            .parse()
            .map_err(|_| corrupt("principal id"))?,
        parent: r
            .text("parent_id")?
            .map(|p| p.parse())
            .transpose()
            .map_err(|_| corrupt("parent id"))?,
        root_principal: r
            .text_of("root_principal")?
            .parse()
            .map_err(|_| corrupt("root principal"))?,
        depth: u32::try_from(r.int_of("depth")?).map_err(|_| corrupt("depth"))?,
        action: r.text_of("action")?,
        resource: ResourceRef::new(r.text_of("resource_type")?, r.text_of("resource_id")?),
        arguments: request.get("arguments").cloned().unwrap_or_default(),
        context: request.get("context").cloned().unwrap_or_default(),
        arguments_digest: Digest::from_str(&r.text_of("arguments_digest")?).map_err(|_| corrupt("arguments digest"))?,
        environment: r.text("environment")?,
        delegation: r
            .text("delegation")?
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|_| corrupt("execution delegation"))?,
        kid: r.text_of("kid")?,
        policy_version: policy_version(&r.text_of("policy_version")?)?,
        issued_at: Timestamp(r.int_of("issued_at")?),
        expires_at: Timestamp(r.int_of("expires_at")?),
        state: state(&r.text_of("state")?)?,
        lease_until: r.int("lease_until")?.map(Timestamp),
        exit_code: r
            .int("exit_code")?
            .map(|c| i32::try_from(c).map_err(|_| corrupt("exit code")))
            .transpose()?,
        reason: r.text("reason")?,
    })
}
