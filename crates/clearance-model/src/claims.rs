//! The claims of a clearance (DESIGN.md section 3).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::canonical::Digest;
use crate::environment::EnvBinding;
use crate::execution::Delegation;
use crate::ids::{ExecutionId, LogIndex, PolicyVersion};

/// The resource an action is performed on: a Cedar entity type and id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl ResourceRef {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{:?}", self.kind, self.id)
    }
}

/// The payload of a clearance JWS. Field names are the registered JWT names where one
/// exists (RFC 7519 section 4.1) and short private names otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearanceClaims {
    /// The control plane's configured origin.
    pub iss: String,
    /// The principal that asked.
    pub sub: String,
    /// The environment that may execute it; absent when the request named none, and
    /// then only an enforcement point bound to no environment accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    pub jti: ExecutionId,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub act: String,
    pub res: ResourceRef,
    /// SHA-256 of the RFC 8785 canonical JSON of the arguments.
    pub args: Digest,
    /// The environment and the digest of its attested measurements, which the executor
    /// recomputes before running; absent when the request named no environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvBinding>,
    pub pol: PolicyVersion,
    /// Audit-log index of the decision entry.
    pub log: LogIndex,
    /// The parent execution's id; absent for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub par: Option<ExecutionId>,
    /// Lineage depth; a root execution is 0.
    pub dep: u32,
    /// What the holder may delegate to children; absent means nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlg: Option<Delegation>,
}
