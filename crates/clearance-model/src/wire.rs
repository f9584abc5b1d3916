//! JSON bodies of the HTTP API (DESIGN.md section 8). Unknown fields are rejected so
//! that a typo in a security-relevant field is an error, not a silent default.

use serde::{Deserialize, Serialize};

use crate::claims::ResourceRef;
use crate::ids::{ExecutionId, KeyId, LogIndex, PolicyVersion, PrincipalId};
use crate::reason::{Decision, DenyReason};
use crate::role::Role;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// An agent's declared intent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    pub action: String,
    pub resource: ResourceRef,
    /// The action's arguments, typed by the action's `arguments` context attribute.
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub arguments: serde_json::Value,
    /// Declared context, typed by the action's `context` context attribute.
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub context: serde_json::Value,
    /// Target environment id; becomes the clearance's `aud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Parent clearance (lineage): the child must fit inside the parent's `dlg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Authority the clearance may delegate to children (its `dlg` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<crate::execution::Delegation>,
}

/// `POST /v1/authorize/permitted`: which of `actions` on `resource` the active policy could
/// permit the caller, whatever the arguments (for showing an agent only what it may use;
/// every call is still decided in full).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PermittedRequest {
    pub resource: ResourceRef,
    pub actions: Vec<String>,
}

/// The actions of a [`PermittedRequest`] some permit policy's scope takes in for the
/// caller, in the order asked; none while no policy is active.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PermittedResponse {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub policy_version: Option<PolicyVersion>,
    pub permitted: Vec<String>,
}

/// The control plane's answer to an execution request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuthorizeResponse {
    pub decision: Decision,
    pub reasons: Vec<DenyReason>,
    /// The determining policy ids.
    pub policies: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub policy_version: Option<PolicyVersion>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub execution_id: ExecutionId,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub log_index: Option<LogIndex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearance: Option<String>,
    /// RFC 3339 expiry of the clearance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Every failure the API reports, in one shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code (a deny reason, or an API error code).
    pub code: crate::code::ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<DenyReason>,
    /// Set when the failed request was recorded as a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub execution_id: Option<ExecutionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub log_index: Option<LogIndex>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipal {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: PrincipalId,
    pub roles: Vec<Role>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PrincipalView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: PrincipalId,
    pub roles: Vec<Role>,
    pub created_at: String,
}

/// Who an API key belongs to (`GET /v1/whoami`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Whoami {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: PrincipalId,
    pub roles: Vec<Role>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PrincipalList {
    pub principals: Vec<PrincipalView>,
}

/// A newly issued API key. The key is shown here once and never again.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IssuedKey {
    pub key: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key_id: KeyId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub principal: PrincipalId,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &"<redacted>")
            .field("key_id", &self.key_id)
            .field("principal", &self.principal)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KeyView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key_id: KeyId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub principal: PrincipalId,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// A policy bundle: a Cedar schema and Cedar policies, both in Cedar's text syntax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyBundle {
    pub schema: String,
    pub policies: String,
}

/// `POST /v1/signing-keys/rotate`: the key that signs from now on, and the one it
/// replaced, published until every clearance it signed has expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SigningKeyRotated {
    pub kid: String,
    pub previous: String,
    /// Unix seconds until which the previous key stays in the JWKS.
    pub previous_published_until: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyPushed {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: PolicyVersion,
    /// False when the identical bundle had been pushed before.
    pub created: bool,
    pub policy_ids: Vec<String>,
    /// What is accepted but probably not meant, each with its place
    /// (`policies:LINE:COLUMN: ...`), such as a policy without `@id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyValidated {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: PolicyVersion,
    pub policy_ids: Vec<String>,
    pub actions: Vec<String>,
    /// As in [`PolicyPushed::warnings`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyView {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: PolicyVersion,
    pub created_at: String,
    pub active: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyList {
    pub policies: Vec<PolicyView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyActivated {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: PolicyVersion,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub log_index: LogIndex,
}

/// The format tag of an evidence bundle.
pub const EVIDENCE_FORMAT: &str = "clearance-evidence/v1";

/// One self-contained file proving an execution's story: its log entries with inclusion
/// proofs to a signed checkpoint, the clearance when one was issued, and the public keys
/// that check them. Hashes are standard base64, as in the log API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EvidenceBundle {
    pub format: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub execution_id: ExecutionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearance: Option<String>,
    pub entries: Vec<EvidenceEntry>,
    /// C2SP checkpoint note the proofs lead to.
    pub checkpoint: String,
    /// C2SP verifier key of the log.
    pub log_verifier_key: String,
    /// The control plane's JWKS, to check the clearance.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub jwks: serde_json::Value,
    /// Consistency proof from an earlier tree size to the checkpoint (or from the
    /// checkpoint to a later one), for auditors who kept a checkpoint of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<EvidenceConsistency>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EvidenceEntry {
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub index: LogIndex,
    /// Base64 of the exact entry bytes (RFC 8785 JSON).
    pub entry: String,
    /// Inclusion proof in the checkpoint's tree.
    pub proof: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EvidenceConsistency {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogEntries {
    pub entries: Vec<LogEntryView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogEntryView {
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub index: LogIndex,
    /// Base64 of the exact entry bytes.
    pub entry: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct InclusionProofView {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    pub proof: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ConsistencyProofView {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
}
