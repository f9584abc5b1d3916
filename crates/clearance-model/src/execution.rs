//! Executions, lineage and revocation (DESIGN.md section 4): delegable authority, the
//! lifecycle calls an enforcement point makes, and the revocation records it consumes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::canonical::Digest;
use crate::claims::ResourceRef;
use crate::ids::{ExecutionId, LogIndex, PrincipalId};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Default bound on lineage depth (a root is depth 0).
pub const DEFAULT_MAX_LINEAGE_DEPTH: u32 = 8;
/// Default lease an execution gets on start and on each renewal.
pub const DEFAULT_LEASE_SECONDS: u64 = 30;
/// Default age past which an enforcement point's revocation view is stale.
pub const DEFAULT_REVOCATION_STALENESS_SECONDS: u64 = 30;

fn one() -> u32 {
    1
}

/// Authority the holder of a clearance may hand to child executions (the `dlg` claim).
/// Absent means nothing may be delegated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// Actions a child may perform. Must not be empty.
    pub actions: Vec<String>,
    /// Resources a child may act on; absent means only the parent's own resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<ResourceRef>>,
    /// Longest lifetime a child clearance may have; absent means up to the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// How many generations below the holder may exist (1 = children, no grandchildren).
    #[serde(default = "one")]
    pub depth: u32,
}

/// Where an execution is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    /// A clearance was issued; nobody started it yet.
    Authorized,
    /// An enforcement point consumed the clearance and holds a lease.
    Started,
    /// Finished and reported success.
    Completed,
    /// Finished and reported failure (including being stopped).
    Failed,
    /// Revoked, directly or through an ancestor, principal or signing key.
    Revoked,
    /// Never started before its clearance expired, or its lease ran out.
    Expired,
}

impl ExecutionState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Started => "started",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "authorized" => Self::Authorized,
            "started" => Self::Started,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "revoked" => Self::Revoked,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an execution ended, as its enforcement point reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CompletionStatus {
    Succeeded,
    Failed,
    /// The enforcement point stopped it (revocation, lost lease).
    Stopped,
}

impl CompletionStatus {
    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// `POST /v1/executions/{id}/start`: the enforcement point presents the clearance it
/// verified; the control plane consumes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub clearance: String,
    /// Wanted lease; bounded by the server's lease and the clearance's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
}

/// The header in which an enforcement point passes on the API key of the agent it acts
/// for (`POST /v1/executions/authorize-and-start`): the bare key, no scheme.
pub const AGENT_KEY_HEADER: &str = "clearance-agent-key";

/// `POST /v1/executions/authorize-and-start`: an enforcement point that asks for a
/// clearance on an agent's behalf and runs the call at once has the control plane decide
/// and start in one request and one commit. The enforcer authenticates as the caller; the
/// agent's API key travels in the `Clearance-Agent-Key` header, never in the body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuthorizeAndStartRequest {
    /// The agent's request, exactly as `POST /v1/authorize` takes it.
    pub request: crate::wire::AuthorizeRequest,
    /// Wanted lease; bounded by the server's lease and the clearance's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
}

/// The decision, as `POST /v1/authorize` answers it, and on allow the lease of the
/// execution, already started: its clearance is consumed, so it cannot be started again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuthorizeAndStartResponse {
    pub authorization: crate::wire::AuthorizeResponse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// A lease on a started execution: the executor may run until `lease_expires_at` and
/// must renew before then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Lease {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub execution_id: ExecutionId,
    /// Seconds since the Unix epoch.
    pub lease_expires: i64,
    pub lease_expires_at: String,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub log_index: LogIndex,
}

/// `POST /v1/executions/{id}/renew`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
}

/// The answer to a renewal: a new lease, or why the executor must stop now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RenewResponse {
    pub renewed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Why not (`execution_revoked`, `parent_revoked`, `policy_denied`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::code::StopReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/executions/{id}/complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub status: CompletionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// SHA-256 of the output (`sha256:` + hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub output_digest: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Completed {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub execution_id: ExecutionId,
    pub state: ExecutionState,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub log_index: LogIndex,
}

/// What a revocation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    Execution,
    Principal,
    SigningKey,
    /// A quarantined environment: every clearance bound to it.
    Environment,
}

impl RevocationKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Execution => "execution",
            Self::Principal => "principal",
            Self::SigningKey => "signing_key",
            Self::Environment => "environment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "execution" => Self::Execution,
            "principal" => Self::Principal,
            "signing_key" => Self::SigningKey,
            "environment" => Self::Environment,
            _ => return None,
        })
    }
}

/// `POST /v1/executions/{id}/revoke`, `/v1/principals/{id}/revoke`,
/// `/v1/signing-keys/{kid}/revoke`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One revocation as enforcement points receive it. `seq` increases by one per record
/// and never repeats, so a consumer resumes with `since=<last seq>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevocationRecord {
    pub seq: u64,
    pub kind: RevocationKind,
    /// Execution id, principal id or signing key id (`kid`).
    pub id: String,
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RevocationList {
    pub revocations: Vec<RevocationRecord>,
    /// The highest sequence number the control plane has issued.
    pub latest: u64,
}

/// One execution in a lineage view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub execution_id: ExecutionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub parent: Option<ExecutionId>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub principal: PrincipalId,
    pub depth: u32,
    pub action: String,
    pub resource: ResourceRef,
    pub state: ExecutionState,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/executions/{id}/lineage`: ancestors root first, then the execution, then
/// every descendant (breadth first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LineageView {
    pub execution: ExecutionView,
    pub ancestors: Vec<ExecutionView>,
    pub descendants: Vec<ExecutionView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Revoked {
    pub revocations: Vec<RevocationRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegation_depth_defaults_to_one() -> Result<(), serde_json::Error> {
        let d: Delegation = serde_json::from_str(r#"{"actions":["refund"]}"#)?;
        assert_eq!(d.depth, 1);
        assert!(d.resources.is_none() && d.ttl_seconds.is_none());
        Ok(())
    }

    #[test]
    fn states_round_trip() {
        for s in [
            ExecutionState::Authorized,
            ExecutionState::Started,
            ExecutionState::Completed,
            ExecutionState::Failed,
            ExecutionState::Revoked,
            ExecutionState::Expired,
        ] {
            assert_eq!(ExecutionState::parse(s.as_str()), Some(s));
        }
        assert_eq!(RevocationKind::parse("signing_key"), Some(RevocationKind::SigningKey));
        assert_eq!(RevocationKind::parse("everything"), None);
    }
}
