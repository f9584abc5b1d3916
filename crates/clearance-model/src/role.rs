//! What a principal may do on the control plane API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages principals, keys and policies.
    Admin,
    /// Asks for clearances.
    Agent,
    /// Decides pending approvals.
    Approver,
    /// Runs executions under clearances (executors and proxies).
    Enforcer,
    /// Reads the log, decisions and evidence.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [Self::Admin, Self::Agent, Self::Approver, Self::Enforcer, Self::Auditor];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Approver => "approver",
            Self::Enforcer => "enforcer",
            Self::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role `{0}`: expected one of admin, agent, approver, enforcer, auditor")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(40).collect()))
    }
}
