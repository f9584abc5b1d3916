#![doc = include_str!("../README.md")]

mod compile;
mod context;
mod evaluate;

pub use compile::{CompiledPolicy, PolicyError, policy_version};
pub use evaluate::{EnvironmentFacts, Lineage, PolicyOutcome, PolicyRequest};

/// The entity type (inside the schema's namespace) of the principal of every request.
pub const PRINCIPAL_TYPE: &str = "Agent";

#[cfg(test)]
mod tests;
