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
    /// Parent clearance (lineage). Not supported by this version: rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Authority to delegate to children. Not supported by this version: rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub delegate: Option<serde_json::Value>,
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
    pub code: String,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyPushed {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: PolicyVersion,
    /// False when the identical bundle had been pushed before.
    pub created: bool,
    pub policy_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyValidated {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: PolicyVersion,
    pub policy_ids: Vec<String>,
    pub actions: Vec<String>,
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
