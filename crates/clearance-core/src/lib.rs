#![doc = include_str!("../README.md")]
// The decision path and the checks auditors rely on: no index that can panic, and every
// lint exception says why.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![deny(clippy::allow_attributes_without_reason)]

mod apikey;
mod engine;
mod environments;
mod error;
mod executions;
mod keycache;
mod keyring;
mod log;
mod service;
mod store;

pub use apikey::{API_KEY_PREFIX, ApiKey, KeyHash};
pub use engine::{
    AttestedEnvironment, Caller, DecisionEngine, EngineConfig, EnvironmentCheck, ParentCheck, ParentFacts, Placement,
    Recorded, Unsealed, Verdict,
};
pub use environments::{check_evidence, parse_attestation_key};
pub use error::CoreError;
pub use executions::MAX_REVOCATIONS_PER_PAGE;
pub use keyring::{RetiredKey, SigningKeyStore};
pub use log::MAX_ENTRIES_PER_PAGE;
pub use service::{Clock, ControlPlane, PolicyState, Readiness, SystemClock};
pub use store::{
    Applied, Attestation, ChallengeRefusal, ClusterPort, EnvironmentPort, EnvironmentRecord, ExecutionChange,
    ExecutionPort, ExecutionRecord, ExecutionStatus, KeyRecord, LogAppend, LogPort, PolicyPort, PolicyRecord,
    PrincipalPort, PrincipalRecord, RevocationTx, Seal, SharedChange, StartNow, Store, StoreError, StoredCheckpoint,
};

#[cfg(test)]
mod tests;
