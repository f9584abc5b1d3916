//! What the control plane needs from storage. Every write that changes governance state
//! commits together with its audit-log entry, or not at all.

use std::collections::HashMap;

use async_trait::async_trait;
use clearance_log::{Hash, NodeId};
use clearance_model::execution::{Delegation, ExecutionState, RevocationKind, RevocationRecord};
use clearance_model::wire::PolicyBundle;
use clearance_model::{Digest, ExecutionId, KeyId, LogIndex, PolicyVersion, PrincipalId, ResourceRef, Role, Timestamp};

use crate::apikey::KeyHash;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    pub id: PrincipalId,
    pub roles: Vec<Role>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: KeyId,
    pub principal: PrincipalId,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub version: PolicyVersion,
    pub created_at: Timestamp,
    pub active: bool,
}

/// One entry for the audit log: its exact bytes and, when it concerns an execution, which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    pub entry: Vec<u8>,
    pub execution: Option<ExecutionId>,
}

/// One execution as the control plane tracks it, from its allow decision on.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub id: ExecutionId,
    pub principal: PrincipalId,
    pub parent: Option<ExecutionId>,
    /// The principal that asked for the root of this lineage.
    pub root_principal: PrincipalId,
    pub depth: u32,
    pub action: String,
    pub resource: ResourceRef,
    /// The request's arguments and declared context, kept so renewals can evaluate the
    /// policy again.
    pub arguments: serde_json::Value,
    pub context: serde_json::Value,
    pub arguments_digest: Digest,
    pub environment: Option<String>,
    pub delegation: Option<Delegation>,
    /// The `kid` of the key that signed the clearance.
    pub kid: String,
    pub policy_version: PolicyVersion,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub state: ExecutionState,
    pub lease_until: Option<Timestamp>,
    pub exit_code: Option<i32>,
    /// Why it was revoked, when it was.
    pub reason: Option<String>,
}

/// A state change of an execution that commits together with its log entry. If the
/// precondition does not hold, nothing is written and the append fails with
/// `StoreError::Conflict(<current state>)` (or `NotFound`).
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionChange {
    /// Record the execution an allow decision authorizes. If its parent has been revoked
    /// in the meantime, it is recorded revoked (with its own revocation record).
    Authorize(Box<ExecutionRecord>),
    /// `authorized` to `started`, only while the clearance is unexpired at `now`: this is
    /// what consumes a clearance, exactly once.
    Start {
        id: ExecutionId,
        now: Timestamp,
        lease_until: Timestamp,
    },
    /// Extend the lease of a `started` execution whose lease has not lapsed.
    Renew {
        id: ExecutionId,
        now: Timestamp,
        lease_until: Timestamp,
    },
    /// `started` to `completed` or `failed`.
    Complete {
        id: ExecutionId,
        state: ExecutionState,
        exit_code: Option<i32>,
    },
}

/// What to revoke, by whom and why. Revoking cascades to every execution below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub id: String,
    pub by: PrincipalId,
    pub reason: String,
    pub time: Timestamp,
}

/// A registered environment, with its latest accepted attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub id: String,
    pub attestation_key: String,
    pub expect: clearance_model::environment::Measurements,
    pub labels: std::collections::BTreeMap<String, String>,
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
    pub attestation: Option<Attestation>,
}

/// An accepted attestation as stored (freshness is the control plane's to judge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub time: Timestamp,
    pub measurements: clearance_model::environment::Measurements,
    pub measurement_digest: Digest,
    pub matches: bool,
    pub mismatched: Vec<String>,
    pub log_index: LogIndex,
}

/// A checkpoint the log signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The signed note, verbatim.
    pub note: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The principal owning the unrevoked key with this hash, and the stored hash (which
    /// the caller compares in constant time).
    async fn principal_by_key(&self, hash: &KeyHash) -> Result<Option<(PrincipalRecord, KeyHash)>, StoreError>;
    async fn principal(&self, id: &PrincipalId) -> Result<Option<PrincipalRecord>, StoreError>;
    async fn principal_count(&self) -> Result<u64, StoreError>;
    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError>;
    async fn list_keys(&self, principal: &PrincipalId) -> Result<Vec<KeyRecord>, StoreError>;
    async fn key_hash_known(&self, hash: &KeyHash) -> Result<bool, StoreError>;

    /// Create a principal (Conflict if it exists) and append `event`, atomically.
    async fn create_principal(&self, principal: &PrincipalRecord, event: Vec<u8>) -> Result<LogIndex, StoreError>;
    /// Store a key's hash and append `event`, atomically.
    async fn add_key(&self, key: &KeyRecord, hash: &KeyHash, event: Vec<u8>) -> Result<LogIndex, StoreError>;
    /// Revoke a key (NotFound if unknown or already revoked) and append `event`, atomically.
    async fn revoke_key(&self, key_id: &KeyId, at: Timestamp, event: Vec<u8>) -> Result<LogIndex, StoreError>;

    /// Store a bundle under its version. Returns false if it was already stored.
    async fn save_policy(
        &self,
        version: &PolicyVersion,
        bundle: &PolicyBundle,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn policy(&self, version: &PolicyVersion) -> Result<Option<PolicyBundle>, StoreError>;
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;
    /// Make `version` the active one and append `event`, atomically.
    async fn activate_policy(
        &self,
        version: &PolicyVersion,
        at: Timestamp,
        event: Vec<u8>,
    ) -> Result<LogIndex, StoreError>;
    async fn active_policy(&self) -> Result<Option<(PolicyVersion, PolicyBundle)>, StoreError>;

    /// Append a decision entry and return once it is durable (group commit is the
    /// store's business). An error means the entry is not in the log.
    async fn append(&self, entry: LogAppend) -> Result<LogIndex, StoreError>;
    /// Append an entry together with an execution state change, through the same group
    /// commit as [`Store::append`]. Fails without writing either if the change's
    /// precondition does not hold.
    async fn append_change(&self, entry: LogAppend, change: ExecutionChange) -> Result<LogIndex, StoreError>;
    async fn execution(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Ancestors (root first) and descendants (breadth first) of an execution.
    async fn lineage(&self, id: &ExecutionId) -> Result<(Vec<ExecutionRecord>, Vec<ExecutionRecord>), StoreError>;
    /// Revoke the target and, atomically, every live execution it covers and their
    /// subtrees; each revocation gets a sequence number and a log entry. Returns the
    /// records created (none when everything was already revoked). `NotFound` for an
    /// unknown execution or principal.
    async fn revoke(&self, revocation: &Revocation) -> Result<Vec<RevocationRecord>, StoreError>;
    /// Revocation records with `seq > since`, in order, at most `limit`.
    async fn revocations_since(&self, since: u64, limit: u32) -> Result<Vec<RevocationRecord>, StoreError>;
    async fn latest_revocation(&self) -> Result<u64, StoreError>;
    /// Whether a principal or signing key has a revocation record.
    async fn is_revoked(&self, kind: RevocationKind, id: &str) -> Result<bool, StoreError>;

    /// Register an environment and append `event`, atomically (Conflict if it exists).
    async fn create_environment(
        &self,
        env: &EnvironmentRecord,
        at: Timestamp,
        event: Vec<u8>,
    ) -> Result<LogIndex, StoreError>;
    /// Replace expectations and labels and append `event`, atomically.
    async fn update_environment(&self, env: &EnvironmentRecord, event: Vec<u8>) -> Result<LogIndex, StoreError>;
    async fn environment(&self, id: &str) -> Result<Option<EnvironmentRecord>, StoreError>;
    async fn list_environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError>;
    /// Lift a quarantine and append `event` (quarantine itself is a revocation).
    async fn release_environment(&self, id: &str, event: Vec<u8>) -> Result<LogIndex, StoreError>;
    async fn save_challenge(&self, environment: &str, nonce: &str, expires: Timestamp) -> Result<(), StoreError>;
    /// Consume the challenge (unused, unexpired at `attestation.time`, for this
    /// environment) and store the attestation with its log entry, atomically. A challenge
    /// that does not qualify is `Conflict("challenge_unknown" | "challenge_replayed" |
    /// "challenge_expired")` and nothing is written.
    async fn record_attestation(
        &self,
        environment: &str,
        nonce: &str,
        attestation: &Attestation,
        event: Vec<u8>,
    ) -> Result<LogIndex, StoreError>;

    /// Keep an issued clearance for evidence bundles; best effort, not awaited durable.
    async fn record_clearance(&self, execution: &ExecutionId, token: &str) -> Result<(), StoreError>;
    async fn clearance(&self, execution: &ExecutionId) -> Result<Option<String>, StoreError>;

    /// Number of entries in the log.
    async fn log_size(&self) -> Result<u64, StoreError>;
    /// Entries `[start, end)`, in order.
    async fn log_entries(&self, start: u64, end: u64) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError>;
    /// The entries that concern one execution, in order.
    async fn execution_entries(&self, execution: &ExecutionId) -> Result<Vec<(LogIndex, Vec<u8>)>, StoreError>;
    /// Perfect-subtree hashes; a missing one is an error.
    async fn log_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError>;

    /// Store a signed checkpoint (a second one at the same size is ignored).
    async fn save_checkpoint(&self, checkpoint: &StoredCheckpoint, at: Timestamp) -> Result<(), StoreError>;
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;
    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// The value of a setting fixed at first start: `value` is stored if the key is
    /// absent, and the stored value is returned either way.
    async fn meta_or_init(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Whether storage accepts writes right now.
    async fn check_writable(&self) -> Result<(), StoreError>;
}
