#![doc = include_str!("../README.md")]

mod apikey;
mod engine;
mod error;
mod executions;
mod log;
mod service;
mod store;

pub use apikey::{API_KEY_PREFIX, ApiKey, KeyHash};
pub use engine::{Caller, DecisionEngine, EngineConfig, ParentCheck, ParentFacts, Placement, Verdict};
pub use error::CoreError;
pub use executions::MAX_REVOCATIONS_PER_PAGE;
pub use log::MAX_ENTRIES_PER_PAGE;
pub use service::{Clock, ControlPlane, PolicyState, Readiness, SystemClock};
pub use store::{
    ExecutionChange, ExecutionRecord, KeyRecord, LogAppend, PolicyRecord, PrincipalRecord, Revocation, Store,
    StoreError, StoredCheckpoint,
};

#[cfg(test)]
mod tests;
