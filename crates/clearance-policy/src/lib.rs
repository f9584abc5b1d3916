#![doc = include_str!("../README.md")]
// The decision path and the checks auditors rely on: no index that can panic, and every
// lint exception says why.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::allow_attributes_without_reason)]

mod compile;
mod context;
mod evaluate;
mod located;
mod schemas;

pub use compile::{CompiledPolicy, PolicyError, policy_version};
pub use evaluate::{EnvironmentFacts, Lineage, PolicyOutcome, PolicyRequest};
pub use located::{POLICIES_SOURCE, SCHEMA_SOURCE};
pub use schemas::merge_schemas;

/// The entity type (inside the schema's namespace) of the principal of every request.
pub const PRINCIPAL_TYPE: &str = "Agent";

#[cfg(test)]
mod tests;
