//! What the control plane needs from storage. Every write that changes governance state
//! commits together with its audit-log entry, or not at all.

use std::collections::HashMap;

use async_trait::async_trait;
use clearance_log::{Hash, NodeId};
use clearance_model::wire::PolicyBundle;
use clearance_model::{ExecutionId, KeyId, LogIndex, PolicyVersion, PrincipalId, Role, Timestamp};

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
