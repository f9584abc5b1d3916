//! Governance events: the entries of the audit log, stored as RFC 8785 canonical JSON.

use serde::{Deserialize, Serialize};

use crate::canonical::{CanonicalError, Digest, canonical_json};
use crate::claims::ResourceRef;
use crate::environment::Measurements;
use crate::execution::{CompletionStatus, RevocationKind};
use crate::ids::{ExecutionId, KeyId, PolicyVersion, PrincipalId};
use crate::reason::{Decision, DenyReason};
use crate::role::Role;

/// One audit-log entry. Secrets never appear here: API keys only by id, arguments only
/// by digest (they may carry personal data; the digest is what the clearance binds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    Decision(Box<DecisionEvent>),
    PolicyActivated {
        time: i64,
        by: PrincipalId,
        version: PolicyVersion,
    },
    PrincipalCreated {
        time: i64,
        by: PrincipalId,
        principal: PrincipalId,
        roles: Vec<Role>,
    },
    KeyIssued {
        time: i64,
        by: PrincipalId,
        principal: PrincipalId,
        key_id: KeyId,
    },
    KeyRevoked {
        time: i64,
        by: PrincipalId,
        key_id: KeyId,
    },
    /// An enforcement point consumed the clearance and holds a lease until `lease_expires`.
    ExecutionStarted {
        time: i64,
        execution_id: ExecutionId,
        by: PrincipalId,
        lease_expires: i64,
    },
    /// The lease was extended after the execution, its lineage and the active policy
    /// were checked again.
    ExecutionRenewed {
        time: i64,
        execution_id: ExecutionId,
        by: PrincipalId,
        lease_expires: i64,
    },
    ExecutionCompleted {
        time: i64,
        execution_id: ExecutionId,
        by: PrincipalId,
        status: CompletionStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_digest: Option<Digest>,
    },
    EnvironmentRegistered {
        time: i64,
        by: PrincipalId,
        environment: String,
        attestation_key: String,
        expect: Measurements,
        labels: std::collections::BTreeMap<String, String>,
    },
    EnvironmentUpdated {
        time: i64,
        by: PrincipalId,
        environment: String,
        expect: Measurements,
        labels: std::collections::BTreeMap<String, String>,
    },
    EnvironmentReleased {
        time: i64,
        by: PrincipalId,
        environment: String,
    },
    /// A verified attestation: the signature and challenge checked out; `matches` says
    /// whether the measurements equalled the expectations.
    EnvironmentAttested {
        time: i64,
        by: PrincipalId,
        environment: String,
        measurements: Measurements,
        measurement_digest: Digest,
        matches: bool,
        mismatched: Vec<String>,
    },
    /// One revocation record, as pushed to enforcement points under `seq`. A revoked
    /// execution's subtree gets one entry per execution.
    Revocation {
        time: i64,
        seq: u64,
        by: PrincipalId,
        kind: RevocationKind,
        id: String,
        reason: String,
    },
}

impl Event {
    /// The exact bytes the log stores and hashes.
    pub fn to_entry_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        canonical_json(self)
    }
}

/// The record of one authorization decision, allow and deny alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionEvent {
    pub time: i64,
    pub execution_id: ExecutionId,
    pub principal: PrincipalId,
    pub action: String,
    pub resource: ResourceRef,
    pub arguments: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The parent execution, for a child request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ExecutionId>,
    /// The log entry of the attestation the environment check relied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::ids::LogIndex>,
    /// The attested measurement digest bound into the clearance (`env` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurements: Option<Digest>,
    pub decision: Decision,
    pub reasons: Vec<DenyReason>,
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<PolicyVersion>,
    /// When the clearance issued for this decision expires (allow only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}
