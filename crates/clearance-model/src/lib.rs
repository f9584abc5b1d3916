#![doc = include_str!("../README.md")]
// The decision path and the checks auditors rely on: no index that can panic, and every
// lint exception says why.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::allow_attributes_without_reason)]

pub mod canonical;
pub mod claims;
pub mod code;
pub mod environment;
pub mod event;
pub mod execution;
pub mod ids;
pub mod limits;
pub mod reason;
pub mod role;
pub mod time;
pub mod wire;

pub use canonical::{CanonicalError, Digest, argument_digest, canonical_json};
pub use claims::{ClearanceClaims, ResourceRef};
pub use code::{ErrorCode, Refusal, StopReason};
pub use ids::{ExecutionId, IdError, KeyId, LogIndex, PolicyVersion, PrincipalId};
pub use reason::{Decision, DenyReason};
pub use role::Role;
pub use time::Timestamp;
