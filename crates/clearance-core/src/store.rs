//! What the control plane needs from storage, as narrow ports by concern. Storage stores:
//! the rules (the execution state machine, the revocation cascade, event bytes, the clock)
//! are core's, and a backend only runs the primitives below, each write committing together
//! with its audit-log entries or not at all. Every backend passes one conformance suite
//! (`clearance-store/tests/conformance.rs`).

use std::collections::HashMap;

use async_trait::async_trait;
use clearance_log::{Hash, NodeId};
use clearance_model::execution::{Delegation, ExecutionState, RevocationKind, RevocationRecord};
use clearance_model::wire::PolicyBundle;
use clearance_model::{Digest, ExecutionId, KeyId, LogIndex, PolicyVersion, PrincipalId, ResourceRef, Role, Timestamp};

use crate::apikey::KeyHash;

/// Storage failures and refused preconditions. Every refusal core acts on is a variant,
/// never a string to parse back; the strings carried are messages for people.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The thing named (in words, for the message) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The thing named already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// A conditional change of an execution found it in a state that refuses the change.
    #[error("the execution is {found}")]
    ExecutionState { found: ExecutionState },
    /// An attestation's one-time challenge could not be consumed.
    #[error("the challenge is {}", .0.as_str())]
    Challenge(ChallengeRefusal),
    /// Storage failed or timed out: nothing was written.
    #[error("{0}")]
    Unavailable(String),
}

/// Why an attestation challenge was not consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRefusal {
    /// Never issued, or issued for another environment.
    Unknown,
    /// Already answered by an attestation.
    Replayed,
    /// Past its expiry at the attestation's time.
    Expired,
}

impl ChallengeRefusal {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Replayed => "replayed",
            Self::Expired => "expired",
        }
    }
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

/// One entry for the audit log: its exact bytes, when it was appended (the event's own
/// time: the store reads no clock) and, when it concerns an execution, which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    pub entry: Vec<u8>,
    pub time: Timestamp,
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

/// The mutable part of an execution: what the state machine reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionStatus {
    pub state: ExecutionState,
    pub expires_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub lease_until: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

/// A state change of an execution that commits together with its log entry. The store
/// reads the execution's [`ExecutionStatus`] inside its write transaction, asks
/// [`ExecutionChange::next`] (the state machine, here in core) for the new status, and
/// writes it; a refused change writes nothing and fails with
/// [`StoreError::ExecutionState`] (or `NotFound`).
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionChange {
    /// Record the execution an allow decision authorizes. The store reports the state of
    /// its parent as found in the same transaction (see [`Applied::parent`]).
    Authorize(Box<ExecutionRecord>),
    /// `authorized` to `started`, only while the clearance is unexpired at `now`: this is
    /// what consumes a clearance, exactly once.
    Start { now: Timestamp, lease_until: Timestamp },
    /// Extend the lease of a `started` execution whose lease has not lapsed.
    Renew { now: Timestamp, lease_until: Timestamp },
    /// `started` to `completed` or `failed`. A started execution that was revoked may
    /// still report how it stopped, once; it stays revoked.
    Complete {
        now: Timestamp,
        state: ExecutionState,
        exit_code: Option<i32>,
    },
    /// A live (authorized or started) execution is revoked.
    Revoke { now: Timestamp, reason: String },
}

impl ExecutionChange {
    /// The state machine: the status after this change, or the state that refuses it.
    /// `Authorize` creates rather than changes, so it refuses every existing status.
    pub fn next(&self, current: &ExecutionStatus) -> Result<ExecutionStatus, StoreError> {
        let refuse = || StoreError::ExecutionState { found: current.state };
        let mut next = current.clone();
        match self {
            Self::Authorize(_) => return Err(refuse()),
            Self::Start { now, lease_until } => {
                if current.state != ExecutionState::Authorized || current.expires_at <= *now {
                    return Err(refuse());
                }
                next.state = ExecutionState::Started;
                next.started_at = Some(*now);
                next.lease_until = Some(*lease_until);
            }
            Self::Renew { now, lease_until } => {
                if current.state != ExecutionState::Started || current.lease_until.is_none_or(|l| l <= *now) {
                    return Err(refuse());
                }
                next.lease_until = Some(*lease_until);
            }
            Self::Complete { now, state, exit_code } => {
                let revoked_while_running = current.state == ExecutionState::Revoked
                    && current.started_at.is_some()
                    && current.lease_until.is_some();
                if current.state != ExecutionState::Started && !revoked_while_running {
                    return Err(refuse());
                }
                if !revoked_while_running {
                    next.state = *state;
                }
                next.finished_at = Some(current.finished_at.unwrap_or(*now));
                next.exit_code = *exit_code;
                next.lease_until = None;
            }
            Self::Revoke { now, reason } => {
                if !matches!(current.state, ExecutionState::Authorized | ExecutionState::Started) {
                    return Err(refuse());
                }
                next.state = ExecutionState::Revoked;
                next.finished_at = Some(*now);
                next.reason = Some(reason.clone());
            }
        }
        Ok(next)
    }
}

/// What an append with an execution change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The index of the job's own entry.
    pub index: LogIndex,
    /// For `Authorize` of a child: its parent's state as found in the same transaction
    /// (a revocation may have committed since the parent was checked).
    pub parent: Option<ExecutionState>,
    /// What the job's [`Seal`] signed, stored in the same commit as the entry; handed
    /// back only once that commit succeeded.
    pub clearance: Option<String>,
    /// With a [`StartNow`]: the index of the start's entry, right after the job's own.
    pub started: Option<LogIndex>,
}

/// An execution started in the commit that authorizes it (authorize-and-start, for an
/// enforcement point that asks for a clearance and runs the call at once): the start's
/// own entry, written right after the decision's, and the lease. The store applies
/// [`ExecutionChange::Start`] to the new execution in that commit, through the same state
/// machine as a later start; if it refuses, nothing of the job is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartNow {
    pub entry: LogAppend,
    pub now: Timestamp,
    pub lease_until: Timestamp,
}

impl StartNow {
    /// The status of `record`, just authorized, once started.
    pub fn status(&self, record: &ExecutionRecord) -> Result<ExecutionStatus, StoreError> {
        let authorized = ExecutionStatus {
            state: record.state,
            expires_at: record.expires_at,
            started_at: None,
            lease_until: record.lease_until,
            finished_at: None,
            exit_code: record.exit_code,
            reason: record.reason.clone(),
        };
        ExecutionChange::Start {
            now: self.now,
            lease_until: self.lease_until,
        }
        .next(&authorized)
    }
}

/// Signs an allowed decision's clearance once its entry's log index is known: the store
/// runs it inside the transaction that writes the entry and stores what it returns in
/// the same commit, so a decision and its clearance are durable together, in one
/// commit. The token leaves the store only in [`Applied::clearance`], after the commit;
/// if the commit fails, it never leaves at all. An error refuses the job: neither the
/// entry nor the execution is written.
pub type Seal = Box<dyn FnOnce(LogIndex) -> Result<String, String> + Send>;

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
    /// The log index of the entry that last released it from quarantine.
    pub released: Option<LogIndex>,
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

/// Something another node (or this one) committed that every node's in-memory copy of
/// deciding state must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedChange {
    /// A revocation committed (its sequence number).
    Revocation(u64),
    /// A policy version was activated.
    PolicyActivated,
    /// An API key was revoked by itself (a principal's revocation is a [`Self::Revocation`]).
    KeyRevoked,
}

/// The audit log: appends (group commit is the store's business), reads, Merkle nodes and
/// checkpoints.
#[async_trait]
pub trait LogPort: Send + Sync {
    /// Append an entry and return once it is durable. An error means it is not in the log.
    async fn append(&self, entry: LogAppend) -> Result<LogIndex, StoreError>;
    /// Append an entry together with a change of execution `id`, through the same group
    /// commit. Writes neither if the change is refused.
    async fn append_change(
        &self,
        id: &ExecutionId,
        entry: LogAppend,
        change: ExecutionChange,
    ) -> Result<Applied, StoreError>;
    /// Append an allowed decision's entry, authorize its execution (`change` is
    /// [`ExecutionChange::Authorize`]) and store the clearance `seal` signs, all in one
    /// group commit; with `start`, start the execution in that commit too. Writes nothing
    /// if the change, the start or the seal is refused.
    async fn append_sealed(
        &self,
        id: &ExecutionId,
        entry: LogAppend,
        change: ExecutionChange,
        seal: Seal,
        start: Option<StartNow>,
    ) -> Result<Applied, StoreError>;
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
    async fn clearance(&self, execution: &ExecutionId) -> Result<Option<String>, StoreError>;
}

/// Principals and their API keys. Every change commits with its log entry.
#[async_trait]
pub trait PrincipalPort: Send + Sync {
    /// The principal owning the unrevoked key with this hash, and the stored hash (which
    /// the caller compares in constant time).
    async fn principal_by_key(&self, hash: &KeyHash) -> Result<Option<(PrincipalRecord, KeyHash)>, StoreError>;
    async fn principal(&self, id: &PrincipalId) -> Result<Option<PrincipalRecord>, StoreError>;
    async fn principal_count(&self) -> Result<u64, StoreError>;
    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError>;
    async fn list_keys(&self, principal: &PrincipalId) -> Result<Vec<KeyRecord>, StoreError>;
    async fn key_hash_known(&self, hash: &KeyHash) -> Result<bool, StoreError>;
    /// Create a principal (`Exists` if it does) and append `event`, atomically.
    async fn create_principal(&self, principal: &PrincipalRecord, event: LogAppend) -> Result<LogIndex, StoreError>;
    /// Store a key's hash and append `event`, atomically.
    async fn add_key(&self, key: &KeyRecord, hash: &KeyHash, event: LogAppend) -> Result<LogIndex, StoreError>;
    /// Revoke a key (`NotFound` if unknown or already revoked) and append `event`,
    /// atomically; every node hears of it ([`SharedChange::KeyRevoked`]).
    async fn revoke_key(&self, key_id: &KeyId, event: LogAppend) -> Result<LogIndex, StoreError>;
    /// How many keys are revoked, by themselves or with their principal: it grows with
    /// every change that can make a valid key invalid, and is cheap enough to poll.
    async fn revoked_key_count(&self) -> Result<u64, StoreError>;
}

/// Policy versions and which one is active.
#[async_trait]
pub trait PolicyPort: Send + Sync {
    /// Store a bundle under its version. Returns false if it was already stored.
    async fn save_policy(
        &self,
        version: &PolicyVersion,
        bundle: &PolicyBundle,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    async fn policy(&self, version: &PolicyVersion) -> Result<Option<PolicyBundle>, StoreError>;
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;
    /// Make `version` the active one and append `event`, atomically; every node hears of
    /// it ([`SharedChange::PolicyActivated`]).
    async fn activate_policy(&self, version: &PolicyVersion, event: LogAppend) -> Result<LogIndex, StoreError>;
    async fn active_policy(&self) -> Result<Option<(PolicyVersion, PolicyBundle)>, StoreError>;
    /// Only the active version's name: cheap enough to poll.
    async fn active_policy_version(&self) -> Result<Option<PolicyVersion>, StoreError>;
}

/// The environment registry, one-time challenges and attestations.
#[async_trait]
pub trait EnvironmentPort: Send + Sync {
    /// Register an environment and append `event`, atomically (`Exists` if it does).
    async fn create_environment(&self, env: &EnvironmentRecord, event: LogAppend) -> Result<LogIndex, StoreError>;
    /// Replace expectations and labels and append `event`, atomically.
    async fn update_environment(&self, env: &EnvironmentRecord, event: LogAppend) -> Result<LogIndex, StoreError>;
    async fn environment(&self, id: &str) -> Result<Option<EnvironmentRecord>, StoreError>;
    async fn list_environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError>;
    /// Lift a quarantine and append `event` (quarantine itself is a revocation); the
    /// event's index becomes the record's `released`.
    async fn release_environment(&self, id: &str, event: LogAppend) -> Result<LogIndex, StoreError>;
    async fn save_challenge(&self, environment: &str, nonce: &str, expires: Timestamp) -> Result<(), StoreError>;
    /// Consume the challenge (unused, unexpired at `attestation.time`, for this
    /// environment) and store the attestation with its log entry, atomically. A challenge
    /// that does not qualify is [`StoreError::Challenge`] and nothing is written.
    async fn record_attestation(
        &self,
        environment: &str,
        nonce: &str,
        attestation: &Attestation,
        event: LogAppend,
    ) -> Result<LogIndex, StoreError>;
}

/// Executions, their lineage and the revocation records pushed to enforcement points.
#[async_trait]
pub trait ExecutionPort: Send + Sync {
    async fn execution(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Ancestors (root first) and descendants (breadth first) of an execution.
    async fn lineage(&self, id: &ExecutionId) -> Result<(Vec<ExecutionRecord>, Vec<ExecutionRecord>), StoreError>;
    /// A write transaction for one revocation and its cascade, planned by core.
    async fn begin_revocation(&self) -> Result<Box<dyn RevocationTx>, StoreError>;
    /// Revocation records with `seq > since`, in order, at most `limit`.
    async fn revocations_since(&self, since: u64, limit: u32) -> Result<Vec<RevocationRecord>, StoreError>;
    /// The latest revocation sequence number (0 when none).
    async fn latest_revocation(&self) -> Result<u64, StoreError>;
    /// Whether a principal, signing key or environment has a revocation record.
    async fn is_revoked(&self, kind: RevocationKind, id: &str) -> Result<bool, StoreError>;
}

/// The primitives of one revocation, inside one write transaction that also appends the
/// log entries; nothing is visible before [`RevocationTx::commit`]. Sequence numbers are
/// assigned in commit order (the transaction holds the log's write lock from its start),
/// so an enforcement point reading "everything after seq N" never misses one.
#[async_trait]
pub trait RevocationTx: Send {
    /// Mark a principal and all its keys revoked. False if the principal is unknown.
    async fn revoke_principal(&mut self, id: &str, at: Timestamp) -> Result<bool, StoreError>;
    /// Mark an environment quarantined. False if it is unknown.
    async fn quarantine_environment(&mut self, id: &str, reason: &str, at: Timestamp) -> Result<bool, StoreError>;
    async fn execution_exists(&mut self, id: &ExecutionId) -> Result<bool, StoreError>;
    /// Whether `target` of `kind` already has a revocation record.
    async fn has_revocation(&mut self, kind: RevocationKind, target: &str) -> Result<bool, StoreError>;
    /// The executions a principal, signing key or environment covers (by `principal`,
    /// `kid` or `environment`), oldest first.
    async fn executions_of(&mut self, kind: RevocationKind, target: &str) -> Result<Vec<ExecutionId>, StoreError>;
    /// The live (authorized or started) executions of the subtree rooted at `root`,
    /// `root` included, shallowest first.
    async fn live_subtree(&mut self, root: &ExecutionId) -> Result<Vec<ExecutionId>, StoreError>;
    /// Apply a state change to one execution, as [`LogPort::append_change`] does.
    async fn change(&mut self, id: &ExecutionId, change: &ExecutionChange) -> Result<(), StoreError>;
    /// Add a revocation record; returns its sequence number.
    async fn add_revocation(
        &mut self,
        kind: RevocationKind,
        target: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<u64, StoreError>;
    /// Append entries at the next indexes; returns the first.
    async fn append(&mut self, entries: &[LogAppend]) -> Result<LogIndex, StoreError>;
    /// Commit everything, or nothing.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// What several nodes sharing one database coordinate through it.
#[async_trait]
pub trait ClusterPort: Send + Sync {
    /// The value of a setting fixed at first start: `value` is stored if the key is
    /// absent, and the stored value is returned either way.
    async fn meta_or_init(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Whether storage accepts writes right now, asked through the same writer and commit
    /// as the log's appends (so a stopped or stuck writer is not ready).
    async fn check_writable(&self, at: Timestamp) -> Result<(), StoreError>;
    /// Try to hold (or keep holding) the checkpointer role; true while this node holds
    /// it. At most one node holds it at a time; a node that dies loses it.
    async fn hold_checkpointer(&self) -> Result<bool, StoreError>;
    /// Changes committed by any node, as they are announced (best effort: callers also
    /// poll). `None` when this store is the only writer of its database.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<SharedChange>>;
    /// True once the task that writes the log has ended while the store is still open:
    /// nothing can be decided from then on, and the process should stop for its
    /// supervisor to start it again.
    fn writer_stopped(&self) -> bool;
}

/// Everything the control plane needs: one backend implements every port.
pub trait Store:
    LogPort + PrincipalPort + PolicyPort + EnvironmentPort + ExecutionPort + ClusterPort + 'static
{
}

impl<T> Store for T where
    T: LogPort + PrincipalPort + PolicyPort + EnvironmentPort + ExecutionPort + ClusterPort + 'static
{
}
