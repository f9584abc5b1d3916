#![doc = include_str!("../README.md")]

mod apikey;
mod engine;
mod error;
mod service;
mod store;

pub use apikey::{API_KEY_PREFIX, ApiKey, KeyHash};
pub use engine::{Caller, DecisionEngine, EngineConfig, Verdict};
pub use error::CoreError;
pub use service::{Clock, ControlPlane, PolicyState, Readiness, SystemClock};
pub use store::{KeyRecord, PolicyRecord, PrincipalRecord, Store, StoreError};

#[cfg(test)]
mod tests;
