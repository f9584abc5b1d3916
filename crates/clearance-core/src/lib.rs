#![doc = include_str!("../README.md")]

mod apikey;
mod engine;
mod error;
mod log;
mod service;
mod store;

pub use apikey::{API_KEY_PREFIX, ApiKey, KeyHash};
pub use engine::{Caller, DecisionEngine, EngineConfig, Verdict};
pub use error::CoreError;
pub use log::MAX_ENTRIES_PER_PAGE;
pub use service::{Clock, ControlPlane, PolicyState, Readiness, SystemClock};
pub use store::{KeyRecord, LogAppend, PolicyRecord, PrincipalRecord, Store, StoreError, StoredCheckpoint};

#[cfg(test)]
mod tests;
